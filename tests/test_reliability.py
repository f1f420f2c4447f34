"""The commands as a careful user breaks them: bad options, damaged files, diverging runs, reruns. Each bad input gets
one line on stderr and exit status 2, before anything is written; no work is ever lost."""
import json, re, shutil
from pathlib import Path
import pytest
from hypothesis import given, settings, strategies as st
from conftest import run_cli, assert_user_error

TINY = ['--quiet', '--set', 'digits=2', 'n_val=20', 'n_test=20', 'eval_every=10', 'batch_size=16', 'target_acc=null']

def train(*args, check=False): return run_cli('mathnb-train', *args, check=check)

@pytest.mark.parametrize('args,msg', [
    (['--device', 'tpu'], "unknown device 'tpu'"),
    (['--device', 'cuda'], 'CUDA is not available'),
    (['--set', 'n_head=3'], 'n_embd=128 is not divisible by n_head=3'),
    (['--lr', '-1'], 'lr must be a number > 0'),
    (['--set', 'betas=1'], 'betas must be two numbers'),
    (['--set', 'weight_decay=abc'], 'weight_decay must be a number'),
    (['--set', 'block_size=8'], 'block_size=8 is too small'),
    (['--set', 'format=xml'], "unknown format 'xml'"),
    (['--set', 'lr'], "bad --set 'lr'"),
])
def test_train_bad_options_write_nothing(tmp_path, args, msg):
    out = tmp_path/'m'
    assert_user_error(train('--out', out, *args), msg)
    assert not out.exists()

def test_train_out_is_a_file(tmp_path):
    (tmp_path/'f').write_text('x')
    assert_user_error(train('--out', tmp_path/'f'), 'exists and is not a folder')

def test_nan_never_reaches_a_checkpoint(tmp_path):
    "A run forced to diverge stops with exit 2 and keeps a finite checkpoint; --resume starts from it."
    from safetensors.torch import load_file
    import torch
    out = tmp_path/'x'
    r = train('--out', out, '--steps', '150', '--quiet', '--set', 'lr=1e4', 'grad_clip=1e9', 'ckpt_every=1', 'batch_size=32',
              'n_val=50', 'n_test=50')
    err = assert_user_error(r, 'at step')
    state = json.loads((out/'checkpoint'/'state.json').read_text())
    for f in ('model.safetensors', 'optimizer.safetensors'):
        assert all(torch.isfinite(v).all() for v in load_file(out/'checkpoint'/f).values()), f
    if state['step']: assert f"(step {state['step']})" in err
    r2 = train('--out', out, '--resume', '--quiet')
    if r2.returncode:                                             # diverges again, but only after the kept step
        step = int(re.search(r'at step (\d+)', r2.stderr)[1])
        assert step >= state['step'], r2.stderr

@pytest.fixture(scope='module')
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp('runs')/'m'
    run_cli('mathnb-train', '--out', out, '--steps', '20', *TINY, 'ckpt_every=10', check=True)
    return out

def test_rerun_refuses_to_delete_a_checkpoint(finished, tmp_path):
    before = (finished/'metrics.jsonl').read_text()
    assert_user_error(train('--out', finished, '--steps', '20', *TINY), '--resume', '--overwrite')
    assert (finished/'checkpoint'/'state.json').exists() and (finished/'metrics.jsonl').read_text() == before

def test_resume_alone_keeps_the_run(finished):
    r = train('--out', finished, '--resume', '--quiet', check=True)
    assert '(20 steps' in r.stdout
    assert json.loads((finished/'checkpoint'/'state.json').read_text())['config']['steps'] == 20

def test_resume_refuses_other_settings(finished):
    assert_user_error(train('--out', finished, '--resume', '--lr', '0.1'), 'with its own settings')

@pytest.mark.parametrize('damage,msg', [
    (lambda d: (d/'checkpoint'/'state.json').write_text('{"step": '), 'state.json: not valid JSON'),
    (lambda d: (d/'checkpoint'/'state.json').write_text('{"config": {}}'), "no 'step' field"),
    (lambda d: (d/'checkpoint'/'state.json').write_text(
        (d/'checkpoint'/'state.json').read_text().replace('"step": 20', '"step": "20"')), "bad 'step' field"),
    (lambda d: (d/'run.json').write_text('[' * 100_000), 'run.json: JSON nested too deeply'),
    (lambda d: (d/'run.json').unlink(), 'run.json: missing'),
])
def test_damaged_run_files(finished, tmp_path, damage, msg):
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    damage(d)
    assert_user_error(train('--out', d, '--resume', '--steps', '30'), msg)

def test_resume_tolerates_a_torn_metrics_line(finished, tmp_path):
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    with open(d/'metrics.jsonl', 'a') as f: f.write('{"step": 21, "lo')
    r = train('--out', d, '--resume', '--steps', '30', '--quiet', check=True)
    steps = [json.loads(l)['step'] for l in (d/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 30
    ev = json.loads((d/'eval.json').read_text())
    assert ev['train_steps'] == 30

@pytest.mark.parametrize('edit,msg', [
    (lambda c: c['task'].update(format='xml'), "config.json: field \"task\": unknown format 'xml'"),
    (lambda c: c['task'].update(digits='x'), "config.json: field \"task\": bad digit spec 'x'"),
])
def test_bad_config_fields(finished, tmp_path, edit, msg):
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    c = json.loads((d/'config.json').read_text())
    edit(c)
    (d/'config.json').write_text(json.dumps(c))
    assert_user_error(run_cli('mathnb-eval', '--model', d), msg)

def test_nested_json(finished, tmp_path):
    f = tmp_path/'deep.jsonl'
    f.write_text('[' * 100_000 + '\n')
    assert_user_error(run_cli('mathnb-eval', '--model', finished, '--data', f), 'deep.jsonl:1: JSON nested too deeply')
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    (d/'config.json').write_text('{"model": ' + '[' * 100_000)
    assert_user_error(run_cli('mathnb-eval', '--model', d), 'config.json: JSON nested too deeply')

def test_bad_tokenizer_files(finished, tmp_path):
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    t = (d/'tokenizer.json').read_text()
    (d/'tokenizer.json').write_text(t.replace('<think>', '<thought>'))
    assert_user_error(run_cli('mathnb-eval', '--model', d), 'tokenizer.json: field "special_tokens"')
    (d/'tokenizer.json').write_text(json.dumps(dict(json.loads(t), alphabet=5)))
    assert_user_error(run_cli('mathnb-eval', '--model', d), 'tokenizer.json: field "alphabet"')

def test_data_is_a_directory(finished, tmp_path):
    assert_user_error(run_cli('mathnb-eval', '--model', finished, '--data', tmp_path), 'is a directory')

def test_bom_and_line_separator_load(finished, tmp_path):
    f = tmp_path/'odd.jsonl'
    f.write_bytes(b'\xef\xbb\xbf' + json.dumps({'prompt': '12+34=', 'answer': '46', 'note': 'a\u2028b'},
                                               ensure_ascii=False).encode() + b'\n')
    r = run_cli('mathnb-eval', '--model', finished, '--data', f, '--out', tmp_path/'p.jsonl')
    assert r.returncode == 0, r.stderr
    assert '(1 problems)' in r.stdout

@settings(max_examples=150, deadline=None)
@given(st.one_of(st.binary(max_size=200), st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=5),
                                                       lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                                                       max_leaves=8).map(lambda v: (json.dumps(v) + '\n').encode())))
def test_jsonl_reader_never_crashes(tmp_path_factory, data):
    "Arbitrary bytes and arbitrary JSON give rows or a `file:line: reason` UserError, never another exception."
    from mathnb.core import read_jsonl, UserError
    f = tmp_path_factory.mktemp('j')/'x.jsonl'
    f.write_bytes(data)
    try: rows = read_jsonl(f, required=('prompt',))
    except UserError as e: assert str(e).startswith(str(f)), e
    else: assert all(isinstance(r, dict) and isinstance(r['prompt'], str) for r in rows)
