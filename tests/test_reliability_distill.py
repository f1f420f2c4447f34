"""`mathnb-distill` as a careless user breaks it: damaged run files, adapter and broken teachers, bad steps.
Each bad input gets one line on stderr and exit status 2 before anything in --out is written or rewritten;
two runs of the same command give the same model, bit for bit."""
import json, os, shutil
from pathlib import Path
import pytest
from conftest import run_cli, assert_user_error

os.environ['OMP_NUM_THREADS'] = '1'                     # the subprocesses inherit it
TINY = ['--quiet', '--set', 'digits=2', 'n_val=10', 'n_test=10', 'eval_every=2', 'batch_size=8', 'n_layer=1',
        'n_embd=32', 'n_head=2', 'ckpt_every=2']

def distill(*args): return run_cli('mathnb-distill', *args)

def snapshot(d:Path) -> dict:
    "Every file under `d`: its bytes and modification time (a rewrite with equal bytes still shows)."
    files = sorted(p for p in d.rglob('*') if p.is_file())
    return {str(p.relative_to(d)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}

def assert_untouched(d:Path, before:dict, r, *contains):
    "`r` is a one-line user error and no file of run folder `d` changed since `before` was taken."
    err = assert_user_error(r, *contains)
    after = snapshot(d)
    assert after == before, sorted(k for k in after.keys() | before.keys() if after.get(k) != before.get(k))
    return err

@pytest.fixture(scope='module')
def run(model_dir, tmp_path_factory):
    "A finished 4-step distillation with checkpoints, to copy and damage."
    out = tmp_path_factory.mktemp('distill')/'run'
    r = distill('--teacher', model_dir, '--out', out, '--steps', '4', *TINY)
    assert r.returncode == 0, r.stderr
    return out

def damaged(run:Path, tmp_path:Path, damage) -> tuple[Path, dict]:
    "A copy of `run` with `damage` done to it, and the snapshot of its files."
    d = tmp_path/'copy'
    shutil.copytree(run, d)
    damage(d)
    return d, snapshot(d)

DROP = object()

def edit_json(f:Path, **kw):
    "Set the fields `kw` of JSON file `f` (remove those set to `DROP`)."
    v = json.loads(f.read_text())
    f.write_text(json.dumps({k: x for k, x in (v | kw).items() if x is not DROP}))

@pytest.mark.parametrize('damage,msg', [
    (lambda d: edit_json(d/'distill.json', teacher=5), "distill.json: field 'teacher': 5 is not a list"),
    (lambda d: edit_json(d/'distill.json', temperature='hot'), "field 'temperature': 'hot' is not a"),
    (lambda d: edit_json(d/'distill.json', alpha=DROP), "distill.json: field 'alpha': missing"),
    (lambda d: edit_json(d/'distill.json', alpha=3), 'distill.json: --alpha must be in [0, 1], got 3'),
    (lambda d: edit_json(d/'distill.json', weights=[1, 1]), 'distill.json: 2 weights for 1 teachers'),
    (lambda d: (d/'distill.json').write_text('not json'), 'distill.json: not valid JSON'),
    (lambda d: (d/'distill.json').write_text('[' * 100_000), 'distill.json: JSON nested too deeply'),
    (lambda d: (d/'distill.json').write_text('[]'), 'distill.json: expected a JSON dict'),
    (lambda d: (d/'distill.json').unlink(), 'distill.json: missing'),
], ids=['teacher-5', 'temperature-hot', 'no-alpha', 'alpha-3', 'weights', 'not-json', 'nested', 'list',
        'missing'])
def test_resume_with_damaged_distill_json(run, tmp_path, damage, msg):
    d, before = damaged(run, tmp_path, damage)
    assert_untouched(d, before, distill('--out', d, '--resume', '--quiet'), msg)

@pytest.mark.parametrize('damage,msg', [
    (lambda d: (d/'checkpoint'/'state.json').write_text('{"step": '), 'state.json: not valid JSON'),
    (lambda d: (d/'checkpoint'/'state.json').unlink(), 'state.json: missing'),
    (lambda d: (d/'run.json').write_text('{"task": 3}'), 'run.json: damaged'),
    (lambda d: shutil.rmtree(d/'checkpoint'), 'nothing to resume'),
], ids=['state-not-json', 'state-missing', 'run-json', 'no-checkpoint'])
def test_resume_with_damaged_checkpoint(run, tmp_path, damage, msg):
    d, before = damaged(run, tmp_path, damage)
    assert_untouched(d, before, distill('--out', d, '--resume', '--quiet'), msg)

@pytest.mark.parametrize('damage,msg', [
    pytest.param(lambda d: (d/'checkpoint'/'model.safetensors').unlink(), 'model.safetensors: missing'),
    pytest.param(lambda d: (d/'checkpoint'/'model.safetensors').write_bytes(b'xx'), 'unreadable checkpoint'),
    pytest.param(lambda d: (d/'checkpoint'/'optimizer.safetensors').unlink(),
                 'optimizer.safetensors: missing'),
], ids=['model-missing', 'model-truncated', 'optimizer-missing'])
def test_resume_with_damaged_checkpoint_tensors(run, tmp_path, damage, msg):
    d, before = damaged(run, tmp_path, damage)
    assert_untouched(d, before, distill('--out', d, '--resume', '--quiet'), msg)

@pytest.mark.parametrize('steps', ['0', '-3'])
def test_bad_steps_refused_before_writing(model_dir, tmp_path, steps):
    out = tmp_path/'o'
    assert_user_error(distill('--teacher', model_dir, '--out', out, '--steps', steps, *TINY),
                      f'steps must be a whole number >= 1, got {steps}')
    assert not out.exists()

def test_resume_steps_below_the_run(run, tmp_path):
    d, before = damaged(run, tmp_path, lambda d: None)
    r = distill('--out', d, '--resume', '--steps', '0', '--quiet')
    assert_untouched(d, before, r, 'already at step 4')

def test_nan_teacher_refused_before_writing(model_dir, tmp_path):
    from safetensors.torch import load_file, save_file
    import torch
    nan = tmp_path/'nan'
    shutil.copytree(model_dir, nan)
    sd = load_file(nan/'model.safetensors')
    save_file({k: torch.full_like(v, float('nan')) for k, v in sd.items()}, nan/'model.safetensors')
    out = tmp_path/'o'
    assert_user_error(distill('--teacher', nan, '--out', out, '--steps', '2', *TINY), 'not finite', str(nan))
    assert not out.exists()

def test_adapter_teacher(model_dir, tmp_path):
    "An adapter directory made by mathnb-lora teaches as its base with the adapter merged in."
    ad, out = tmp_path/'adapter', tmp_path/'o'
    r = run_cli('mathnb-lora', '--base', model_dir, '--preset', 'add3-cot', '--r', '2', '--steps', '2',
                '--out', ad, '--quiet', '--set', 'digits=2', 'n_val=10', 'n_test=10', 'batch_size=8')
    assert r.returncode == 0, r.stderr
    r = distill('--teacher', ad, '--out', out, '--steps', '2', *TINY)
    assert r.returncode == 0, r.stderr
    assert json.loads((out/'config.json').read_text())['distillation']['teachers'] == [str(ad)]
    assert json.loads((out/'distill.json').read_text())['teacher'] == [str(ad)]

def test_same_command_same_model(model_dir, tmp_path):
    "Two fresh runs of the same command with the same seed give bitwise-equal weights."
    args = ['--teacher', model_dir, '--steps', '20', '--seed', '3', '--hidden-weight', '1', *TINY]
    for name in ('a', 'b'):
        r = distill('--out', tmp_path/name, *args)
        assert r.returncode == 0, r.stderr
    a, b = ((tmp_path/n/'model.safetensors').read_bytes() for n in 'ab')
    assert a == b
