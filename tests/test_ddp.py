"""Data-parallel training under torchrun on CPU (gloo): 2 processes follow the 1-process loss curve, write one model
directory, resume with 1 process; two launchers on 127.0.0.1 (the multi-machine recipe) agree too; a killed rank ends the
job with a clear message in bounded time, and torchrun's --max-restarts resumes from the checkpoint."""
import json, os, signal, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest
from conftest import run_cli, cli

SMALL = ['--quiet', '--set', 'digits=2', 'n_val=40', 'n_test=40', 'eval_every=10', 'batch_size=32', 'log_every=1',
         'ckpt_every=5']
TORCHRUN = [str(Path(sys.executable).parent/'torchrun')]


def env(**kw) -> dict:
    return {**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8', **kw}


def losses(d) -> dict:
    return {r['step']: r['loss'] for r in map(json.loads, (Path(d)/'metrics.jsonl').read_text().splitlines())}


def torchrun(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(TORCHRUN + [str(a) for a in args], capture_output=True, text=True, env=env(), timeout=timeout,
                          **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def one(tmp_path_factory) -> Path:
    "The 1-process reference run: 20 steps."
    d = tmp_path_factory.mktemp('ddp')/'one'
    r = subprocess.run(cli('mathnb-train') + ['--out', str(d), '--steps', '20', *SMALL], capture_output=True, text=True,
                       env=env(), timeout=300)
    assert r.returncode == 0, r.stderr
    return d


def test_two_processes_follow_one_and_resume_with_one(one, tmp_path):
    d = tmp_path/'two'
    r = torchrun('--standalone', '--nproc_per_node', 2, '--no-python', *cli('mathnb-train'), '--out', d, '--steps', 20,
                 *SMALL)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(one), losses(d)
    assert sorted(a) == sorted(b) == list(range(1, 21))                 # one metrics file, each step once
    assert abs(a[20] - b[20]) / a[20] < 1e-4, (a[20], b[20])
    assert r.stdout.count('test exact match') == 1                       # rank 0 reports, the other does not
    assert sorted(p.name for p in d.iterdir()) == sorted(p.name for p in one.iterdir())
    rows = [json.loads(l) for l in (d/'metrics.jsonl').read_text().splitlines()]
    assert rows[-1]['val_processes'] == 2 and 'mfu' in rows[-1]
    # a checkpoint written by 2 processes resumes in 1
    r = run_cli('mathnb-train', '--resume', '--out', d, '--steps', 25, '--quiet')
    assert r.returncode == 0, r.stderr
    assert max(losses(d)) == 25 and 'test exact match' in r.stdout


def test_two_launchers_like_two_machines(one, tmp_path):
    "The multi-machine recipe on one machine: two torchrun launchers, one process each, meeting on 127.0.0.1."
    d, port = tmp_path/'nodes', free_port()
    cmd = lambda rank: TORCHRUN + ['--nnodes', '2', '--node-rank', str(rank), '--nproc-per-node', '1',
                                   '--rdzv-backend', 'c10d', '--rdzv-endpoint', f'127.0.0.1:{port}', '--no-python',
                                   *cli('mathnb-train'), '--out', str(d), '--steps', '20', *SMALL]
    ps = [subprocess.Popen(cmd(rank), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
          for rank in (0, 1)]
    outs = [p.communicate(timeout=300) for p in ps]
    assert [p.returncode for p in ps] == [0, 0], [o[1][-2000:] for o in outs]
    a, b = losses(one), losses(d)
    assert abs(a[20] - b[20]) / a[20] < 1e-4, (a[20], b[20])


def rank_pid(tag:str, rank:int) -> int|None:
    "The pid of the training process of rank `rank` among the processes started with MATHNB_TEST_TAG=tag."
    for p in Path('/proc').iterdir():
        try: e = dict(x.split('=', 1) for x in (p/'environ').read_text().split('\0') if '=' in x)
        except (OSError, ValueError): continue
        if e.get('MATHNB_TEST_TAG') == tag and e.get('RANK') == str(rank) and 'TORCHELASTIC_RUN_ID' in e:
            return int(p.name)
    return None


def start_and_kill(out:Path, *extra, steps=400) -> tuple[subprocess.Popen, float]:
    "Start a 2-process run, kill rank 1 with SIGKILL once a checkpoint exists; return the launcher and the kill time."
    tag = uuid.uuid4().hex
    p = subprocess.Popen(TORCHRUN + [*extra, '--standalone', '--nproc_per_node', '2', '--no-python', *cli('mathnb-train'),
                                     '--out', str(out), '--steps', str(steps), *SMALL],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env(MATHNB_TEST_TAG=tag))
    t0 = time.time()
    while not (out/'checkpoint'/'state.json').exists():
        assert p.poll() is None and time.time() - t0 < 120, 'the run did not reach its first checkpoint'
        time.sleep(0.2)
    time.sleep(1)
    pid = rank_pid(tag, 1)
    assert pid, 'rank 1 not found'
    os.kill(pid, signal.SIGKILL)
    return p, time.time()


def test_killed_rank_ends_the_job_and_resume_continues(tmp_path):
    d = tmp_path/'killed'
    p, t_kill = start_and_kill(d)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert time.time() - t_kill < 60                                      # a clear failure, not a hang
    assert 'rank      : 1' in err or 'rank 1' in err, err[-3000:]          # the launcher names the dead rank
    assert 'rank 0 of 2: stopped at step' in err and '--resume' in err, err[-3000:]
    step = json.loads((d/'checkpoint'/'state.json').read_text())['step']
    r = run_cli('mathnb-train', '--resume', '--out', d, '--steps', step + 5, '--quiet')
    assert r.returncode == 0, r.stderr
    assert max(losses(d)) == step + 5


def test_max_restarts_resumes_on_start(tmp_path):
    d = tmp_path/'restarted'
    p, _ = start_and_kill(d, '--max-restarts', '1', steps=60)
    out, err = p.communicate(timeout=300)
    assert p.returncode == 0, err[-3000:]
    assert max(losses(d)) == 60 and (d/'model.safetensors').exists()
