"End-to-end tests of `mathnb-lora` as a user runs it: adapter directory, merge, base untouched, bad input exits 2."
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, assert_user_error

BASE = ROOT/'mathnb'/'pretrained'/'add3-cot'
CMD = [sys.executable, '-c', 'from mathnb.lora import mathnb_lora_cli; mathnb_lora_cli()']
SMALL = ['--steps', '20', '--quiet', '--set', 'n_val=20', 'n_test=20', 'batch_size=32', 'eval_every=20', 'warmup=2']


def lora(*args, timeout=240):
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, encoding='utf-8', env=env,
                          timeout=timeout, cwd=ROOT)


def hashes(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(Path(d).iterdir()) if f.is_file()}


def test_adapter_dir_merge_and_untouched_base(tmp_path):
    before, out = hashes(BASE), tmp_path/'sub'
    r = lora('--base', BASE, '--preset', 'sub3-cot', '--target', 'attn', '--r', '4', '--out', out, '--merge', *SMALL)
    assert r.returncode == 0, r.stderr
    assert hashes(BASE) == before                                   # the base's files never change
    for f in ('adapter_config.json', 'adapter_model.safetensors', 'config.json', 'eval.json', 'merged/model.safetensors'):
        assert (out/f).exists(), f
    cfg = json.loads((out/'config.json').read_text())
    a = cfg['adapter']
    assert a['base'] == str(BASE.resolve()) and a['base_kind'] == 'mathnb'
    assert 0 < a['share'] < 0.10 and a['trainable'] == 2 * 4 * 4 * 256
    assert cfg['task']['task'] == 'sub'
    ev = json.loads((out/'eval.json').read_text())
    assert ev['n'] == 20 and ev['train_steps'] == 20

    import torch
    from mathnb.lora import load_adapter
    from mathnb.model import load_model
    pm, tok = load_adapter(out)
    merged, _ = load_model(out/'merged')
    base, _ = load_model(BASE)
    x = torch.tensor([tok.encode('658-189=<think>9-8=1 5-8')])
    with torch.no_grad():
        la, lm, lb = pm(x), merged(x), base(x)
    assert torch.allclose(la, lm, atol=1e-5)                        # merged = base + adapter
    assert not torch.allclose(la, lb, atol=1e-4)                    # and the adapter did something
    assert json.loads((out/'merged'/'config.json').read_text())['task']['task'] == 'sub'


def test_unknown_target_exits_2_naming_it(tmp_path):
    r = lora('--base', BASE, '--preset', 'sub3-cot', '--target', 'q_proj,qkv_proj', '--out', tmp_path/'o', *SMALL)
    assert_user_error(r, "'qkv_proj'", 'matches no layer')
    assert not (tmp_path/'o').exists()


def test_tied_head_and_bad_base_exit_2(tmp_path):
    r = lora('--base', BASE, '--preset', 'sub3-cot', '--target', 'lm_head', '--out', tmp_path/'o', *SMALL)
    assert_user_error(r, 'lm_head', 'tok_emb')
    r = lora('--base', tmp_path/'no-such-model', '--preset', 'sub3-cot', '--out', tmp_path/'o', *SMALL)
    assert_user_error(r, 'no-such-model')
    (tmp_path/'empty').mkdir()
    r = lora('--base', tmp_path/'empty', '--preset', 'sub3-cot', '--out', tmp_path/'o', *SMALL)
    assert_user_error(r, 'not a model directory')
    assert not (tmp_path/'o').exists()


@pytest.mark.skipif(__import__('torch').cuda.is_available(), reason='checks the refusal on machines without CUDA')
def test_4bit_without_cuda_exits_2(tmp_path):
    r = lora('--base', BASE, '--dataset', 'gsm8k', '--4bit', '--out', tmp_path/'o')
    assert_user_error(r, '--4bit', 'CUDA')
    assert not (tmp_path/'o').exists()
