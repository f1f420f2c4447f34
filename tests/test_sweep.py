"mathnb-sweep: bad specs, two workers on one study, a killed sweep resumed, pruning, and PostgreSQL shared storage."
import json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time
from pathlib import Path
import pytest
from conftest import run_cli, cli, assert_user_error

pytest.importorskip('optuna')
# 1-digit addition on a one-layer model: each trial takes a few seconds
FAST = {'digits': 1, 'n_layer': 1, 'n_embd': 32, 'n_head': 2, 'batch_size': 32, 'warmup': 2, 'eval_every': 10,
        'n_val': 20, 'n_test': 20, 'steps': 30, 'log_every': 10, 'ckpt_every': 1000}


def write_spec(d:Path, spec:dict, name='spec.json') -> Path:
    p = d/name
    p.write_text(json.dumps(spec) if name.endswith('.json') else spec)
    return p


def trials(out:Path) -> list[dict]:
    import optuna
    st = optuna.load_study(study_name='sweep', storage=f'sqlite:///{out}/study.db')
    return [dict(number=t.number, state=t.state.name, params=t.params, seed=t.user_attrs.get('seed'),
                 empty=t.user_attrs.get('empty', False)) for t in st.get_trials()]


def finished_keys(ts) -> list:
    return sorted(json.dumps([t['params'], t['seed']], sort_keys=True) for t in ts if t['state'] in ('COMPLETE', 'PRUNED'))


@pytest.mark.parametrize('spec,field', [
    ({'preset': 'add3-cot', 'grid': {'fmt': ['think', 'bogus']}}, "'grid.fmt'"),
    ({'preset': 'add3-cot', 'grid': {'n_layers': [1, 2]}}, "'grid.n_layers'"),
    ({'preset': 'add3-cot', 'grdi': {'fmt': ['think']}}, "['grdi']"),
    ({'preset': 'add3-cot', 'search': {'lr': {'type': 'float', 'low': 1e-2, 'high': 1e-4}}, 'trials': 3}, "'search.lr'"),
    ({'preset': 'add3-cot', 'search': {'lr': [1e-3, 1e-2]}}, "'trials'"),
    ({'preset': 'add3-cot', 'objective': 'time_to_target'}, "'target'"),
    ({'preset': 'add3-cot', 'objective': 'accuracy'}, "'objective'"),
    ({'preset': 'add3-cot', 'seeds': [0, 0]}, "'seeds'"),
    ({'preset': 'add3-cot', 'budget': {'hours': 1}}, "'budget'"),
    ({'preset': 'add3-cot', 'set': {'steps': 0}}, "'set'"),
    ({'task': 'nosuchtask'}, "'task'"),
    ({'grid': {'fmt': ['think']}}, "'preset'"),
    ([1, 2], 'object'),
])
def test_bad_spec_names_the_field(spec, field):
    from mathnb.sweep import check_spec, SpecError
    with pytest.raises(SpecError, match=re.escape(field)): check_spec(spec)


@pytest.mark.parametrize('spec,field', [({'preset': 'add3-cot', 'grid': {'fmt': ['think', 'bogus']}}, "'grid.fmt'"),
                                        ([1, 2], 'object')])
def test_bad_spec_one_line_nothing_written(tmp_path, spec, field):
    out = tmp_path/'out'
    r = run_cli('mathnb-sweep', write_spec(tmp_path, spec), '--out', out)
    assert_user_error(r, field)
    assert not out.exists()


def test_bad_files_and_flags(tmp_path):
    out = tmp_path/'out'
    assert_user_error(run_cli('mathnb-sweep', tmp_path/'missing.yaml', '--out', out), 'missing.yaml')
    assert_user_error(run_cli('mathnb-sweep', write_spec(tmp_path, 'preset: [unclosed', 's.yaml'), '--out', out), 'YAML')
    assert_user_error(run_cli('mathnb-sweep', write_spec(tmp_path, '{"preset": ', 's.json'), '--out', out))
    good = write_spec(tmp_path, {'preset': 'add3-cot', 'set': FAST})
    assert_user_error(run_cli('mathnb-sweep', good, '--out', out, '--workers', '0'), '--workers')
    assert_user_error(run_cli('mathnb-sweep', good, '--out', out, '--wokers', '2'), 'wokers')
    assert_user_error(run_cli('mathnb-sweep', good, '--out', out, '--storage', 'nosuchdb://x/y'), '--storage')
    assert not out.exists()


def test_yaml_grid_two_workers_no_duplicates(tmp_path):
    spec = write_spec(tmp_path, f"""preset: add3-cot
set: {json.dumps(FAST)}
grid:
  fmt: [think, plain]
  lr: [0.003, 0.01]
seeds: [0]
""", 'grid.yaml')
    out = tmp_path/'sweep'
    r = run_cli('mathnb-sweep', spec, '--out', out, '--workers', 2, check=True, timeout=600)
    ts = trials(out)
    done = [t for t in ts if t['state'] == 'COMPLETE']
    assert len(done) == 4 and len(set(finished_keys(ts))) == len(finished_keys(ts)) == 4
    assert all(t['empty'] for t in ts if t['state'] != 'COMPLETE')          # only empty trials besides the four
    import pandas as pd
    df = pd.read_csv(out/'results.csv')
    assert len(df) == 4 and set(df.state) == {'complete'}
    assert {'trial', 'state', 'pruned_at', 'fmt', 'lr', 'seed', 'value', 'best', 'steps_run', 'wall_time', 'commit',
            'data_hash'} <= set(df.columns)
    assert df.value.between(0, 1).all() and (df.steps_run == 30).all()
    assert (out/'sweep.png').stat().st_size > 1000 and '| fmt' in (out/'summary.md').read_text()
    assert len(list((out/'workers').glob('worker-*.log'))) == 2
    assert 'completed' in r.stdout


def test_killed_sweep_resumes(tmp_path):
    spec = write_spec(tmp_path, {'preset': 'add3-cot', 'set': FAST | {'steps': 400, 'eval_every': 100},
                                 'grid': {'lr': [0.003, 0.005, 0.01]}})
    out = tmp_path/'sweep'
    p = subprocess.Popen(cli('mathnb-sweep') + [str(spec), '--out', str(out)], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    t0 = time.time()
    while not (out/'trials'/'0001'/'run.json').exists():          # trial 0 finished, trial 1 started
        assert p.poll() is None and time.time() - t0 < 300, p.stdout.read().decode() if p.poll() is not None else 'slow'
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    r = run_cli('mathnb-sweep', spec, '--out', out, check=True, timeout=600)
    assert 'queued again 1 trial' in r.stdout
    ts = trials(out)
    assert sorted(t['params']['lr'] for t in ts if t['state'] == 'COMPLETE') == [0.003, 0.005, 0.01]
    assert [t['params']['lr'] for t in ts if t['state'] == 'FAIL'] == [0.005]      # the killed trial, run again


def test_search_prunes_and_reruns(tmp_path):
    spec = write_spec(tmp_path, {'preset': 'add3-cot', 'set': FAST | {'steps': 60},
                                 'search': {'lr': {'type': 'float', 'low': 1e-5, 'high': 3e-2, 'log': True}},
                                 'trials': 8, 'prune': True, 'seeds': [0, 1, 2], 'rerun': {'top': 1}})
    out = tmp_path/'sweep'
    run_cli('mathnb-sweep', spec, '--out', out, check=True, timeout=600)
    import pandas as pd
    df = pd.read_csv(out/'results.csv')
    search = df[df.seed == 0]
    assert len(df) == 8 + 2                                       # 8 search trials, the best re-run with seeds 1 and 2
    pruned = df[df.state == 'pruned']
    assert len(pruned) >= 1 and (pruned.pruned_at < 60).all() and (pruned.steps_run == pruned.pruned_at).all()
    s = pd.read_csv(out/'summary.csv')
    best = s[s.n == 3]
    assert len(best) == 1 and best.ci95.notna().all()             # mean and interval over three seeds
    assert len(search) == 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _pg_bin() -> Path|None:
    for d in sorted(Path('/usr/lib/postgresql').glob('*/bin'), reverse=True):
        if (d/'initdb').exists(): return d
    return None


@pytest.fixture
def postgres(tmp_path):
    "A throwaway PostgreSQL cluster on a free port (skipped where it cannot start); yields its URL."
    pytest.importorskip('psycopg2')
    bin_ = _pg_bin()
    if bin_ is None: pytest.skip('PostgreSQL is not installed (apt-get install postgresql)')
    run_as = []
    if os.geteuid() == 0:                                       # initdb refuses to run as root
        if shutil.which('runuser') is None or subprocess.run(['id', 'postgres'], capture_output=True).returncode:
            pytest.skip('running as root without a postgres user: cannot start a PostgreSQL server')
        run_as = ['runuser', '-u', 'postgres', '--']
    data, port = Path(tempfile.mkdtemp(prefix='mathnb-pg-')), _free_port()
    if run_as: shutil.chown(data, 'postgres')
    r = subprocess.run(run_as + [str(bin_/'initdb'), '-D', str(data/'db'), '-U', 'mathnb', '--auth=trust'],
                       capture_output=True, text=True)
    if r.returncode: pytest.skip(f'initdb failed: {r.stderr.strip()[-200:]}')
    r = subprocess.run(run_as + [str(bin_/'pg_ctl'), '-D', str(data/'db'), '-o', f'-p {port} -k {data} -c listen_addresses=127.0.0.1',
                                 '-l', str(data/'log'), '-w', 'start'], capture_output=True, text=True)
    if r.returncode: pytest.skip(f'PostgreSQL did not start: {r.stderr.strip()[-200:]}')
    try:
        subprocess.run(run_as + [str(bin_/'createdb'), '-h', '127.0.0.1', '-p', str(port), '-U', 'mathnb', 'sweeps'],
                       check=True, capture_output=True)
        yield f'postgresql+psycopg2://mathnb@127.0.0.1:{port}/sweeps'
    finally:
        subprocess.run(run_as + [str(bin_/'pg_ctl'), '-D', str(data/'db'), '-m', 'immediate', 'stop'], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


def test_two_machines_share_a_postgres_study(tmp_path, postgres):
    spec = write_spec(tmp_path, {'preset': 'add3-cot', 'set': FAST, 'grid': {'lr': [0.002, 0.003, 0.005, 0.01]},
                                 'seeds': [0]})
    # two launchers, as on two machines: their own folders, one study in the database
    ps = [subprocess.Popen(cli('mathnb-sweep') + [str(spec), '--out', str(tmp_path/f'm{i}'), '--storage', postgres],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in ps]
    assert all(p.returncode == 0 for p in ps), outs
    import optuna
    st = optuna.load_study(study_name='sweep', storage=postgres)
    done = [t for t in st.get_trials() if t.state.name == 'COMPLETE']
    assert sorted(t.params['lr'] for t in done) == [0.002, 0.003, 0.005, 0.01]
    ran = [len(list((tmp_path/f'm{i}'/'trials').glob('*'))) for i in range(2)]
    assert sum(ran) == 4 and all(ran), ran                      # both machines trained, nothing twice


def test_lee_small_spec_prints_lee_beside_mathnb(tmp_path):
    "The shipped small version of the Lee et al. spec: mathnb's table with Lee's column, on a fixed excluded test set."
    out = tmp_path/'lee'
    r = run_cli('mathnb-sweep', Path(__file__).parents[1]/'sweeps'/'lee2023-small.yaml', '--out', out, check=True,
                timeout=600)
    assert 'Lee et al. 2023' in r.stdout and '0.928' in r.stdout and '0.811' in r.stdout
    import pandas as pd
    df = pd.read_csv(out/'results.csv')
    assert sorted(df.fmt) == ['plain', 'scratchpad'] and df.value.between(0, 1).all()
    test = {json.loads(l)['prompt'] for l in (out/'test_set.jsonl').read_text().splitlines()}
    assert len(test) == 500
    for run in df.run:                                          # no test problem was trained on
        train = {json.loads(l)['prompt'] for l in (Path(run)/'train.jsonl').read_text().splitlines()}
        assert train and not train & test


def test_add3_500_preset_draws_500_problems_outside_the_excluded_file(tmp_path):
    test = tmp_path/'test.jsonl'
    rows = [{'prompt': f'{a}+{b}=', 'answer': str(a + b)} for a in range(100, 1000, 7) for b in range(100, 1000, 97)]
    test.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    out = tmp_path/'run'
    run_cli('mathnb-train', '--preset', 'add3-500', '--exclude', test, '--out', out, '--steps', 2, '--quiet',
            '--set', 'n_val=20', 'n_test=20', check=True)
    train = [json.loads(l)['prompt'] for l in (out/'train.jsonl').read_text().splitlines()]
    assert len(train) == len(set(train)) == 500
    assert not set(train) & {r['prompt'] for r in rows}
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['task']['format'] == 'scratchpad' and cfg['train']['n_train'] == 500
