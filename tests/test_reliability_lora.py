"""`mathnb-lora` held to issue 18: the same command gives bitwise the same adapter (mathnb and Hugging Face
bases), a killed run resumes with `--resume --out DIR` alone to the adapter an uninterrupted run writes,
a Hugging Face base trains on GSM8K without `--exclude`, and a damaged checkpoint or a resume with other
settings is refused in one line with exit status 2 before anything in OUT is written."""
import hashlib, json, os, shutil, signal, subprocess, time
from pathlib import Path
import pytest
from conftest import ROOT, assert_user_error, cli

BASE = ROOT/'mathnb'/'pretrained'/'add3-cot'
MATHNB = ['--base', BASE, '--preset', 'sub3-cot', '--r', '4', '--quiet',
          '--set', 'batch_size=8', 'n_val=0', 'n_test=8', 'log_every=1', 'ckpt_every=2']
HF_SET = ['--set', 'n_train=8', 'n_test=2', 'batch_size=2', 'max_new_tokens=4', 'max_len=1024', 'log_every=1',
          'ckpt_every=2']


def env(**kw) -> dict:
    return {**os.environ, 'PYTHONIOENCODING': 'utf-8', 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1', **kw}


def lora(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cli('mathnb-lora') + [str(a) for a in args], capture_output=True, text=True,
                          encoding='utf-8', env=env(**kw), timeout=timeout, cwd=ROOT)


def tiny_llama(d:Path) -> Path:
    "A random 1-layer Llama built from a config (no hub), a BPE tokenizer trained on a few GSM8K solutions."
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from mathnb.tokenizer import train_bpe
    from mathnb.data import task_from_dict
    rows = task_from_dict({'kind': 'benchmark', 'dataset': 'gsm8k'}).rows('train')[:32]
    htok = train_bpe([r['prompt'] + r['solution'] for r in rows], 300).to_hf()
    c = LlamaConfig(vocab_size=len(htok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                    pad_token_id=htok.pad_token_id, bos_token_id=htok.bos_token_id,
                    eos_token_id=htok.eos_token_id)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        LlamaForCausalLM(c).save_pretrained(d)
    htok.save_pretrained(d)
    return d


@pytest.fixture(scope='module')
def hf_base(tmp_path_factory) -> Path: return tiny_llama(tmp_path_factory.mktemp('hf')/'llama')


def hf_args(base:Path) -> list:
    return ['--base', base, '--dataset', 'gsm8k', '--quiet', *HF_SET]


def snapshot(d:Path) -> dict:
    "Bytes and modification time of every file under `d`."
    return {str(f.relative_to(d)): (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_mtime_ns)
            for f in sorted(d.rglob('*')) if f.is_file()}


def losses(d:Path) -> list:
    rows = [json.loads(l) for l in (d/'metrics.jsonl').read_text().splitlines()]
    return [(r['step'], r['loss'], r.get('grad_norm')) for r in rows if 'loss' in r]


def tensors(f:Path) -> dict:
    from safetensors.torch import load_file
    return load_file(f)


def assert_same_run(a:Path, b:Path):
    "Bitwise-equal adapters and checkpoints, equal losses, equal held-out splits and grades."
    assert (a/'adapter_model.safetensors').read_bytes() == (b/'adapter_model.safetensors').read_bytes()
    ta, tb = tensors(a/'checkpoint'/'model.safetensors'), tensors(b/'checkpoint'/'model.safetensors')
    assert ta.keys() == tb.keys() and all((ta[k] == tb[k]).all() for k in ta)
    assert losses(a) == losses(b) and losses(a)
    assert (a/'test.jsonl').read_bytes() == (b/'test.jsonl').read_bytes()
    ea, eb = (json.loads((d/'eval.json').read_text()) for d in (a, b))
    untimed = lambda e: {k: v for k, v in e.items() if 'time' not in k}
    assert untimed(ea) == untimed(eb)


def test_mathnb_base_same_command_same_adapter(tmp_path):
    "Two fresh runs (in processes with different string hashing) agree bit for bit."
    for d, h in (('a', '1'), ('b', '2')):
        r = lora(*MATHNB, '--steps', 20, '--out', tmp_path/d, PYTHONHASHSEED=h)
        assert r.returncode == 0, r.stderr
    assert_same_run(tmp_path/'a', tmp_path/'b')


def test_hf_base_same_command_same_adapter(tmp_path, hf_base):
    "A tiny Llama on GSM8K, no --exclude (once a TypeError in read_prompts(None)): two runs, bitwise equal."
    for d, h in (('a', '1'), ('b', '2')):
        r = lora(*hf_args(hf_base), '--steps', 6, '--out', tmp_path/d, PYTHONHASHSEED=h)
        assert r.returncode == 0, r.stderr
        assert 'test exact match' in r.stdout and 'held-out loss' in r.stdout
    assert_same_run(tmp_path/'a', tmp_path/'b')
    assert json.loads((tmp_path/'a'/'config.json').read_text())['task']['dataset'] == 'gsm8k'


def test_adapter_depends_on_the_seed_alone(tmp_path):
    """In one process, whatever the global RNG held before: the same adapter, the global RNG left as it was;
    another seed, another adapter."""
    import torch
    from mathnb.lora import mathnb_lora
    args = dict(base=str(BASE), preset='sub3-cot', r=4, steps=4, quiet=True,
                set=['batch_size=8', 'n_val=0', 'n_test=4', 'eval_every=100'])
    for d, seed in (('a', 1), ('b', 2)):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        mathnb_lora(out=str(tmp_path/d), **args)
        assert torch.equal(before, torch.get_rng_state())
    assert (tmp_path/'a'/'adapter_model.safetensors').read_bytes() == \
           (tmp_path/'b'/'adapter_model.safetensors').read_bytes()
    mathnb_lora(out=str(tmp_path/'s1'), **{**args, 'set': args['set'] + ['seed=1']})
    a, s1 = (tensors(tmp_path/d/'adapter_model.safetensors') for d in ('a', 's1'))
    assert any(not (a[k] == s1[k]).all() for k in a)                  # the seed is the run's, not a constant


def start_and_kill(args:list, out:Path, at:int) -> int:
    "Start `mathnb-lora ARGS --out OUT`, SIGKILL it once a checkpoint of step >= `at` exists; that step."
    p = subprocess.Popen(cli('mathnb-lora') + [str(a) for a in args] + ['--out', str(out)], env=env(),
                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    state, t0 = out/'checkpoint'/'state.json', time.time()
    try:
        while time.time() - t0 < 240 and p.poll() is None:
            try:
                if json.loads(state.read_text())['step'] >= at: break
            except (OSError, ValueError, KeyError): pass
            time.sleep(0.05)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    return json.loads(state.read_text())['step']


@pytest.mark.parametrize('kind', ['mathnb', 'hf'])
def test_killed_run_resumes_with_out_alone_to_the_same_adapter(tmp_path, kind, request):
    if kind == 'mathnb': args = [*MATHNB, '--steps', 60]
    else: args = [*hf_args(request.getfixturevalue('hf_base')), '--steps', 40]
    r = lora(*args, '--out', tmp_path/'ref')
    assert r.returncode == 0, r.stderr
    killed_at = start_and_kill(args, tmp_path/'k', 2)
    assert killed_at >= 2 and not (tmp_path/'k'/'eval.json').exists()
    r = lora('--resume', '--out', tmp_path/'k')             # nothing but --out: the run's own settings
    assert r.returncode == 0, r.stderr
    assert_same_run(tmp_path/'ref', tmp_path/'k')


@pytest.fixture(scope='module')
def runs(tmp_path_factory, hf_base) -> dict:
    "A finished short run of each kind, with its checkpoint, to damage copies of."
    d = tmp_path_factory.mktemp('runs')
    for kind, args in (('mathnb', MATHNB), ('hf', hf_args(hf_base))):
        r = lora(*args, '--steps', 2, '--out', d/kind)
        assert r.returncode == 0, r.stderr
    return {'mathnb': d/'mathnb', 'hf': d/'hf'}


def _edit_json(f:Path, fn): f.write_text(json.dumps(fn(json.loads(f.read_text()))))
def _drop(k): return lambda d: {x: v for x, v in d.items() if x != k}
def _set(o:Path, **kw): _edit_json(o/'lora.json', lambda s: {**s, **kw})

def _tensor_of_other_rank(o:Path):
    "Checkpoint tensors of the right names but another shape (as from a run with another rank)."
    from safetensors.torch import save_file
    t = tensors(o/'checkpoint'/'model.safetensors')
    save_file({k: v[:1] if 'lora_A' in k else v for k, v in t.items()}, o/'checkpoint'/'model.safetensors')


def _truncate(f:Path): f.write_bytes(f.read_bytes()[:200])

DAMAGE = {                                          # what is damaged: (how, what the one line says)
    'state.json not JSON': (lambda o: (o/'checkpoint'/'state.json').write_text('{"step": 2,'), 'state.json'),
    'state.json without step': (lambda o: _edit_json(o/'checkpoint'/'state.json', _drop('step')), "'step'"),
    'checkpoint tensors garbage': (lambda o: (o/'checkpoint'/'model.safetensors').write_bytes(b'\x07' * 40),
                                   'unreadable checkpoint'),
    'checkpoint tensors truncated': (lambda o: _truncate(o/'checkpoint'/'model.safetensors'), 'checkpoint'),
    'checkpoint of another shape': (_tensor_of_other_rank, 'do not fit'),
    'optimizer truncated': (lambda o: _truncate(o/'checkpoint'/'optimizer.safetensors'), 'checkpoint'),
    'lora.json not JSON': (lambda o: (o/'lora.json').write_text('[[['), 'lora.json'),
    'lora.json without load_4bit': (lambda o: _edit_json(o/'lora.json', _drop('load_4bit')), "'load_4bit'"),
    'lora.json bad exclude': (lambda o: _set(o, exclude=5), "'exclude'"),
    'lora.json bad rank': (lambda o: _set(o, lora={'r': 'x'}), 'rank'),
    'lora.json names no model': (lambda o: _set(o, base='/no/such/model'), '/no/such/model'),
}
CASES = [(k, d) for d in DAMAGE for k in (('mathnb', 'hf') if 'checkpoint' in d or 'state' in d else
                                           ('mathnb',) if 'rank' in d or 'model' in d else ('hf',))]


@pytest.mark.parametrize('kind,damage', CASES)
def test_resume_of_a_damaged_run_writes_nothing(runs, tmp_path, kind, damage):
    out = tmp_path/'o'
    shutil.copytree(runs[kind], out)
    spoil, msg = DAMAGE[damage]
    spoil(out)
    before = snapshot(out)
    assert_user_error(lora('--resume', '--out', out, '--steps', 4), msg)
    assert snapshot(out) == before


@pytest.mark.parametrize('extra', [['--base', BASE], ['--r', '2'], ['--set', 'lr=1'],
                                   ['--dataset', 'gsm8k'], ['--exclude', 'x.jsonl']])
def test_resume_with_other_settings_is_refused(runs, tmp_path, extra):
    "--resume continues the run with its own settings: nothing else given may rewrite what OUT says it is."
    out = tmp_path/'o'
    shutil.copytree(runs['hf'], out)
    before = snapshot(out)
    assert_user_error(lora('--resume', '--out', out, *extra), 'with its own settings', f'drop {extra[0]}')
    assert snapshot(out) == before


def test_resume_needs_out_and_a_run(tmp_path):
    assert_user_error(lora('--resume'), '--resume needs --out')
    assert_user_error(lora('--resume', '--out', tmp_path/'none'), 'nothing to resume')
    assert not (tmp_path/'none').exists()


@pytest.mark.parametrize('kind,extra,msg', [
    ('mathnb', ['n_layer=1', 'n_embd=32'], "n_embd, n_layer: the model of a LoRA run is its base's"),
    ('mathnb', ['dropout=0.1'], '--dropout'),
    ('hf', ['max_len=abc'], 'max_len must be a whole number'),
    ('hf', ['max_new_tokens=0'], 'max_new_tokens must be a whole number'),
])
def test_bad_settings_of_a_new_run_write_nothing(tmp_path, hf_base, kind, extra, msg):
    args = [*MATHNB] if kind == 'mathnb' else hf_args(hf_base)
    assert_user_error(lora(*args, *extra, '--steps', 2, '--out', tmp_path/'o'), msg)
    assert not (tmp_path/'o').exists()


def test_failed_overwrite_keeps_the_old_run(runs, hf_base, tmp_path):
    "--overwrite clears the old checkpoint only once the new run has passed its checks (here: no row fits)."
    out = tmp_path/'o'
    shutil.copytree(runs['hf'], out)
    before = snapshot(out)
    assert_user_error(lora(*hf_args(hf_base), 'max_len=5', '--steps', 2, '--out', out, '--overwrite'),
                      'no training row fits max_len=5')
    assert snapshot(out) == before
