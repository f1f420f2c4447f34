"End-to-end tests of `mathnb-data` and `mathnb-train` as a user runs them from a terminal (no venv activated)."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest
from conftest import cli, run_cli, assert_user_error

SMALL = ['--quiet', '--set', 'digits=2', 'n_val=50', 'n_test=100', 'eval_every=25', 'batch_size=64', 'target_acc=null']

def run(*args, check=True, timeout=300):
    return run_cli(args[0], *args[1:], check=check, timeout=timeout)

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
    # "3-digit" means operands up to 3 digits: short operands are common in training, and the test set is
    # uniform over 0-999 x 0-999 like the field's standard test sets
    assert sum(r['digits_a'] == 1 for r in tr) > 700              # about a third (fewer: short problems repeat)
    assert 0.75 < sum(r['digits_a'] == r['digits_b'] == 3 for r in te) / len(te) < 0.87

def test_data_exact_digits(tmp_path):
    run('mathnb-data', '--digits', '3-3', '--n-train', '100', '--n-val', '0', '--n-test', '10', '--out', str(tmp_path))
    assert all(r['digits_a'] == r['digits_b'] == 3 for r in rows(tmp_path/'train.jsonl'))

@pytest.mark.parametrize('args,msg', [
    (['--digits', 'x3'], "bad digit spec 'x3'"),
    (['--task', 'div'], "unknown task 'div'"),
    (['--format', 'latex'], "unknown format 'latex'"),
    (['--digits', '1', '--n-train', '200'], 'only 100'),
    (['--exclude', 'no/such/file.jsonl'], 'no such file'),
    (['--sampling', 'zipf'], "unknown sampling 'zipf'"),
])
def test_data_bad_specs_exit_2(tmp_path, args, msg):
    assert_user_error(run('mathnb-data', '--out', str(tmp_path/'o'), *args, check=False), msg)
    assert not (tmp_path/'o').exists()

def test_data_out_is_a_file(tmp_path):
    (tmp_path/'f').write_text('x')
    assert_user_error(run('mathnb-data', '--out', str(tmp_path/'f'), check=False), 'exists and is not a folder')
    assert_user_error(run('mathnb-data', '--out', '/dev/null/x', check=False), '/dev/null is a file')

def test_train_bad_input_exit_2(tmp_path):
    for args, msg in [(['--preset', 'add4'], "unknown preset 'add4'"), (['--set', 'nlayers=3'], "unknown option(s) ['nlayers']"),
                      (['--resume'], 'nothing to resume'), (['--set', 'digits=x'], 'bad digit spec')]:
        assert_user_error(run('mathnb-train', '--out', str(tmp_path/'m'), *args, check=False), msg)
    assert not (tmp_path/'m').exists()

def test_train_excludes_problems(tmp_path):
    excl = tmp_path/'excl.jsonl'
    # every problem whose first operand is 10-49 is excluded
    excl.write_text(''.join(json.dumps({'prompt': f'{a}+{b}='}) + '\n' for a in range(10, 50) for b in range(0, 100)))
    out = tmp_path/'m'
    run('mathnb-train', '--out', str(out), '--steps', '20', '--n-train', '1000', '--exclude', str(excl), *SMALL)
    seen = {r['prompt'] for k in ('train', 'val', 'test') for r in rows(out/f'{k}.jsonl')}
    assert len(seen) == 1150 and not any(10 <= int(p.split('+')[0]) < 50 for p in seen)
    assert json.loads((out/'eval.json').read_text())['n'] == 100

def test_train_survives_sigkill_and_resumes(tmp_path):
    "Killed mid-run, `--resume` alone (no other flag) finishes the same run and lands on the same weights."
    from safetensors.torch import load_file
    ref, out = tmp_path/'ref', tmp_path/'m'
    cmd = ['--steps', '120', *SMALL, 'ckpt_every=10', 'dropout=0.1']
    run('mathnb-train', '--out', str(ref), *cmd)
    p = subprocess.Popen(cli('mathnb-train') + ['--out', str(out), *cmd], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
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
        p.send_signal(signal.SIGKILL)
        p.wait()
    killed_at = json.loads(state.read_text())['step']
    assert 30 <= killed_at < 120 and not (out/'eval.json').exists()
    r = run('mathnb-train', '--out', str(out), '--resume', '--quiet')
    assert 'test exact match' in r.stdout
    steps = [m['step'] for m in rows(out/'metrics.jsonl')]
    assert steps == sorted(set(steps)) and steps[-1] == 120
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['summary']['steps'] == 120 and cfg['train']['steps'] == 120
    a, b = load_file(ref/'model.safetensors'), load_file(out/'model.safetensors')
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), 'resume did not reproduce the uninterrupted run'
    for f in ('model.safetensors', 'tokenizer.json', 'eval.json', 'figures/loss.png', 'figures/accuracy.png'): assert (out/f).exists()
