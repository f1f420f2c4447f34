"End-to-end tests of `mathnb-data` and `mathnb-train` as a user runs them from a terminal."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

SMALL = ['--quiet', '--set', 'digits=2', 'n_val=50', 'n_test=100', 'eval_every=25', 'batch_size=64']

def run(*args, check=True, timeout=300):
    r = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check: assert r.returncode == 0, r.stderr
    return r

def rows(path): return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]

def test_data_writes_exact_disjoint_correct_splits(tmp_path):
    run('mathnb-data', '--task', 'add', '--digits', '3', '--format', 'think', '--n-train', '3000', '--out', str(tmp_path))
    tr, va, te = (rows(tmp_path/f'{k}.jsonl') for k in ('train', 'val', 'test'))
    assert (len(tr), len(va), len(te)) == (3000, 500, 2000)
    p = [{r['prompt'] for r in s} for s in (tr, va, te)]
    assert len(p[0]) == 3000 and not (p[0] & p[1]) and not (p[0] & p[2]) and not (p[1] & p[2])
    for r in tr + va + te:
        assert int(r['answer']) == r['a'] + r['b'] and r['prompt'] == f"{r['a']}+{r['b']}="
        assert r['target'].endswith(f"</think>{r['answer']}<end>")

@pytest.mark.parametrize('args,msg', [
    (['--digits', 'x3'], "bad digit spec 'x3'"),
    (['--task', 'div'], "unknown task 'div'"),
    (['--format', 'latex'], "unknown format 'latex'"),
    (['--digits', '1', '--n-train', '200'], 'only 100'),
    (['--exclude', 'no/such/file.jsonl'], 'no such file'),
])
def test_data_bad_specs_exit_2(tmp_path, args, msg):
    r = run('mathnb-data', '--out', str(tmp_path), *args, check=False)
    assert r.returncode == 2
    assert msg in r.stderr and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1

def test_train_bad_input_exit_2(tmp_path):
    for args, msg in [(['--preset', 'add4'], "unknown preset 'add4'"), (['--set', 'nlayers=3'], "unknown option(s) ['nlayers']"),
                      (['--resume'], 'nothing to resume'), (['--set', 'digits=x'], 'bad digit spec')]:
        r = run('mathnb-train', '--out', str(tmp_path/'m'), *args, check=False)
        assert r.returncode == 2, r.stderr
        assert msg in r.stderr and 'Traceback' not in r.stderr

def test_train_excludes_problems(tmp_path):
    excl = tmp_path/'excl.jsonl'
    # every 2-digit problem whose first operand is below 50 is excluded
    excl.write_text(''.join(json.dumps({'prompt': f'{a}+{b}='}) + '\n' for a in range(10, 50) for b in range(10, 100)))
    out = tmp_path/'m'
    run('mathnb-train', '--out', str(out), '--steps', '20', '--n-train', '1000', '--exclude', str(excl), *SMALL)
    seen = {r['prompt'] for k in ('train', 'val', 'test') for r in rows(out/f'{k}.jsonl')}
    assert len(seen) == 1150 and all(int(p.split('+')[0]) >= 50 for p in seen)
    ev = json.loads((out/'eval.json').read_text())
    assert ev['n'] == 100

def test_train_survives_sigkill_and_resumes(tmp_path):
    out = tmp_path/'m'
    cmd = ['mathnb-train', '--out', str(out), '--steps', '150', *SMALL, 'ckpt_every=10']
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    state = out/'checkpoint'/'state.json'
    t0 = time.time()
    try:
        while time.time() - t0 < 240:
            if state.exists():
                try:
                    if json.loads(state.read_text())['step'] >= 30: break
                except ValueError: pass
            time.sleep(0.2)
        else: pytest.fail('no checkpoint written')
    finally:
        p.send_signal(signal.SIGKILL); p.wait()
    killed_at = json.loads(state.read_text())['step']
    assert 30 <= killed_at < 150 and not (out/'eval.json').exists()
    r = run(*cmd, '--resume')
    assert 'test exact match' in r.stdout
    steps = [m['step'] for m in rows(out/'metrics.jsonl')]
    assert steps == sorted(set(steps)) and steps[-1] == 150
    assert json.loads((out/'config.json').read_text())['summary']['steps'] == 150
    for f in ('model.safetensors', 'tokenizer.json', 'eval.json', 'figures/loss.png', 'figures/accuracy.png'): assert (out/f).exists()
