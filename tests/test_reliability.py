"""The commands as a careful user breaks them: bad options, damaged files, diverging runs, reruns. Each bad input gets
one line on stderr and exit status 2, before anything is written; no work is ever lost."""
import json, re, shutil
from pathlib import Path
import pytest
from hypothesis import given, settings, strategies as st
from conftest import run_cli, assert_user_error, MODULES

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
    (['--steps', '0'], 'steps must be a whole number >= 1, got 0'),
    (['--steps', '-3'], 'steps must be a whole number >= 1, got -3'),
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


# ---- models, data and typed text from any user (the second reliability pass) ----

def snapshot(d:Path) -> dict:
    "Every file under `d` with its bytes and modification time: what 'nothing written' compares."
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(Path(d).rglob('*')) if p.is_file()}

def copy_model(src, dst, edit_model=None, weights=None) -> Path:
    shutil.copytree(src, dst)
    if edit_model:
        c = json.loads((dst/'config.json').read_text())
        c['model'].update(edit_model)
        (dst/'config.json').write_text(json.dumps(c))
    if weights:
        from safetensors.torch import load_file, save_file
        save_file({k: weights(v) for k, v in load_file(dst/'model.safetensors').items()}, dst/'model.safetensors')
    return dst

@pytest.fixture(scope='module')
def nan_model(model_dir, tmp_path_factory):
    return copy_model(model_dir, tmp_path_factory.mktemp('nan')/'m', weights=lambda v: v * float('nan'))

@pytest.mark.parametrize('cmd', ['solve', 'eval', 'chat', 'probe', 'distill', 'bench'])
def test_a_model_with_nan_weights_is_broken(nan_model, tmp_path, cmd):
    "NaN weights used to answer 'no answer' with exit 0 (or crash in sklearn): now one line, before anything is written."
    args = {'solve': ['--model', nan_model, '12+34'], 'eval': ['--model', nan_model, '--out', tmp_path/'o'/'p.jsonl'],
            'chat': ['--model', nan_model], 'probe': ['--model', nan_model, '--out', tmp_path/'o'],
            'distill': ['--teacher', nan_model, '--out', tmp_path/'o', '--steps', '5'],
            'bench': ['--model', nan_model, '--dataset', 'gsm8k', '--n', '2', '--out', tmp_path/'o'/'p.jsonl']}[cmd]
    before = snapshot(nan_model)
    assert_user_error(run_cli(f'mathnb-{cmd}', *args, input='12+34\n'), 'weights are not finite', 'the model is broken')
    assert not (tmp_path/'o').exists() and snapshot(nan_model) == before

@pytest.mark.parametrize('edit,msg', [
    ({'n_layer': 10**12}, 'n_layer=1000000000000: too large'),
    ({'n_layer': 20_000}, 'holds 2 blocks, but config.json has n_layer=20000'),
    ({'n_embd': 2**24, 'n_head': 1}, 'would need about'),
    ({'mlp_ratio': 1e300}, 'MLP size'),
])
@pytest.mark.parametrize('cmd', ['solve', 'eval'])
def test_oversized_configs_are_refused_by_estimate(model_dir, tmp_path, edit, msg, cmd):
    "A small config.json asking for a huge model is refused in seconds, before anything is allocated or written."
    import time
    d = copy_model(model_dir, tmp_path/'m', edit_model=edit)
    t0 = time.time()
    args = ['12+34'] if cmd == 'solve' else ['--out', tmp_path/'o'/'p.jsonl']
    assert_user_error(run_cli(f'mathnb-{cmd}', '--model', d, *args, timeout=60), msg)
    assert time.time() - t0 < 30 and not (tmp_path/'o').exists()

def test_training_a_model_that_cannot_fit_is_refused(tmp_path):
    assert_user_error(train('--out', tmp_path/'m', '--set', 'n_layer=100000000', '--steps', '5'),
                      'training this model would need about', 'available')
    assert not (tmp_path/'m').exists()

def test_data_requests_are_refused_by_estimate(tmp_path):
    r = run_cli('mathnb-data', '--digits', '12', '--n-train', '1000000000000', '--out', tmp_path/'d', timeout=60)
    assert_user_error(r, '1,000,000,002,500 rows would need about')
    assert not (tmp_path/'d').exists()

def test_data_is_not_replaced_without_overwrite(tmp_path):
    d = tmp_path/'d'
    run_cli('mathnb-data', '--digits', '2', '--n-train', '50', '--n-val', '5', '--n-test', '5', '--out', d, check=True)
    before = snapshot(d)
    assert_user_error(run_cli('mathnb-data', '--digits', '3', '--n-train', '60', '--out', d), 'already holds',
                      '--overwrite')
    assert snapshot(d) == before
    run_cli('mathnb-data', '--digits', '2', '--n-train', '60', '--n-val', '5', '--n-test', '5', '--out', d,
            '--overwrite', check=True)
    assert len((d/'train.jsonl').read_text().splitlines()) == 60

def test_a_huge_operand_gets_a_short_message(model_dir):
    err = assert_user_error(run_cli('mathnb-solve', '--model', model_dir, '1' * 10_000 + '+1'), 'longer than 40 digits')
    assert len(err) < 200 and '(10,002 characters)' in err

@pytest.mark.parametrize('typed', ['12+34', '１２+３４', '١٢+٣٤', '१२+३४'])
def test_digits_of_any_script_read_alike(model_dir, tmp_path, typed):
    "One rule (NFKC, then any script's digits to ASCII) in solve, eval and chat."
    plain = run_cli('mathnb-solve', '--model', model_dir, '12+34', check=True).stdout
    assert run_cli('mathnb-solve', '--model', model_dir, typed, check=True).stdout == plain
    f = tmp_path/'rows.jsonl'
    f.write_text(json.dumps({'prompt': typed + '=', 'answer': '٤٦'}, ensure_ascii=False) + '\n', encoding='utf-8')
    r = run_cli('mathnb-eval', '--model', model_dir, '--data', f, '--out', tmp_path/'p.jsonl', check=True)
    assert '(1 problems)' in r.stdout
    r = run_cli('mathnb-chat', '--model', model_dir, input=typed + '\n', check=True)
    assert '46' in r.stdout

@pytest.mark.parametrize('args,msg', [
    (['--temperature', 'nan'], '--temperature must be a number >= 0, got nan'),
    (['--temperature', 'inf'], '--temperature must be a number >= 0, got inf'),
    (['--temperature', '-1'], '--temperature must be a number >= 0, got -1'),
    (['--max-new-tokens', '-3'], '--max-new-tokens must be an integer >= 1, got -3'),
    (['--max-new-tokens', '0'], '--max-new-tokens must be an integer >= 1, got 0'),
])
def test_chat_options(model_dir, args, msg):
    assert_user_error(run_cli('mathnb-chat', '--model', model_dir, *args, input='12+34\n'), msg)

@pytest.mark.parametrize('args,msg', [
    (['--max-new-tokens', '0'], '--max-new-tokens must be an integer >= 1, got 0'),
    (['--batch-size', '0'], '--batch-size must be an integer >= 1, got 0'),
    (['--n', '0'], '--n must be an integer >= 1, got 0'),
])
def test_bench_options(model_dir, tmp_path, args, msg):
    assert_user_error(run_cli('mathnb-bench', '--model', model_dir, '--dataset', 'gsm8k', *args,
                              '--out', tmp_path/'p.jsonl'), msg)
    assert not (tmp_path/'p.jsonl').exists()

def test_offline_hub_fails_fast(model_dir, tmp_path):
    "No retry noise before the error: one line at once when the hub cannot be reached."
    env = {'HF_HUB_OFFLINE': '1'}
    r = run_cli('mathnb-bench', '--gold', '--dataset', 'gsm8k', '--hub', '--data-dir', tmp_path, '--n', '2',
                '--out', tmp_path/'p.jsonl', env=env, timeout=60)
    assert_user_error(r, 'the Hugging Face hub cannot be reached')
    r = run_cli('mathnb-lora', '--base', 'no-such-org/no-such-model', '--dataset', 'gsm8k', '--out', tmp_path/'l', '--steps', '2',
                env=env, timeout=60)
    assert_user_error(r, 'the Hugging Face hub cannot be reached')
    assert not (tmp_path/'l').exists()

@settings(max_examples=60, deadline=None)
@given(st.data())
def test_config_json_loads_or_names_the_field(model_dir, tmp_path_factory, data):
    "Arbitrary JSON in a model's config.json loads or gives one line naming the file, within bounded time and memory."
    import resource, time
    from mathnb.core import UserError
    from mathnb.model import load_model
    leaf = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=6)
    value = st.recursive(leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=4), c, max_size=3),
                         max_leaves=6)
    c = json.loads((model_dir/'config.json').read_text())
    keys = sorted(c['model'])
    how = data.draw(st.sampled_from(['field', 'drop', 'add', 'section', 'whole']))
    if how == 'field': c['model'][data.draw(st.sampled_from(keys))] = data.draw(value)
    if how == 'drop': del c['model'][data.draw(st.sampled_from(keys))]
    if how == 'add': c['model'][data.draw(st.text(max_size=8))] = data.draw(value)
    if how == 'section': c[data.draw(st.sampled_from(['model', 'task', 'tokenizer', 'adapter']))] = data.draw(value)
    if how == 'whole': c = data.draw(value)
    d = tmp_path_factory.mktemp('cfg')
    for f in ('tokenizer.json', 'model.safetensors'): shutil.copy(model_dir/f, d/f)
    (d/'config.json').write_text(json.dumps(c, allow_nan=True))
    rss, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.time()
    try: load_model(d)
    except UserError as e: assert '\n' not in str(e) and str(d) in str(e), e
    assert time.time() - t0 < 10
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 500_000        # KiB

def test_two_training_runs_are_bitwise_equal(tmp_path):
    "The same command with the same seed gives the same weights, byte for byte, and the same losses."
    for name in ('a', 'b'):
        train('--out', tmp_path/name, '--steps', '12', *TINY, 'n_layer=1', 'n_embd=32', check=True)
    assert (tmp_path/'a'/'model.safetensors').read_bytes() == (tmp_path/'b'/'model.safetensors').read_bytes()
    loss = lambda d: [json.loads(l).get('loss') for l in (d/'metrics.jsonl').read_text().splitlines()]
    assert loss(tmp_path/'a') == loss(tmp_path/'b')

def _damage_optimizer(d, edit):
    from safetensors.torch import load_file, save_file
    f = d/'checkpoint'/'optimizer.safetensors'
    ot = load_file(f)
    edit(ot)
    save_file(ot, f)

@pytest.mark.parametrize('edit,msg', [
    (lambda ot: ot.pop('rng.torch'), 'no usable random-number state'),
    (lambda ot: ot.update({'0.exp_avg': ot['0.exp_avg'][:1]}), '0.exp_avg is'),
    (lambda ot: ot.update({'nonsense': ot['0.step'].clone()}), "unexpected tensor 'nonsense'"),
    (lambda ot: ot.update({'999.exp_avg': ot['0.exp_avg'].clone()}), "unexpected tensor '999.exp_avg'"),
])
def test_damaged_optimizer_state_writes_nothing(finished, tmp_path, edit, msg):
    "Optimizer tensors that cannot fit are found before a resume writes anything (AdamW itself would accept them)."
    d = tmp_path/'copy'
    shutil.copytree(finished, d)
    _damage_optimizer(d, edit)
    before = snapshot(d)
    assert_user_error(train('--out', d, '--resume', '--steps', '30', '--quiet'), 'optimizer.safetensors', msg)
    assert snapshot(d) == before

@pytest.mark.parametrize('cmd', ['distill', 'bench', 'probe', 'lora'])
def test_deeply_nested_config_is_one_line(model_dir, tmp_path, cmd):
    d = copy_model(model_dir, tmp_path/'m')
    (d/'config.json').write_text('[' * 200_000)
    args = {'distill': ['--teacher', d, '--out', tmp_path/'o', '--steps', '5'],
            'bench': ['--model', d, '--dataset', 'gsm8k', '--n', '2', '--out', tmp_path/'o'/'p.jsonl'],
            'probe': ['--model', d, '--out', tmp_path/'o'],
            'lora': ['--base', d, '--preset', 'sub3-cot', '--out', tmp_path/'o', '--steps', '2']}[cmd]
    assert_user_error(run_cli(f'mathnb-{cmd}', *args), 'config.json: JSON nested too deeply')
    assert not (tmp_path/'o').exists()


@pytest.mark.parametrize('name', sorted(MODULES))
def test_a_wrong_flag_is_one_line(name):
    "Every command answers an unknown flag in one line (not argparse's usage block), exit status 2."
    assert_user_error(run_cli(name, '--no-such-flag', 1), 'unrecognized arguments: --no')
