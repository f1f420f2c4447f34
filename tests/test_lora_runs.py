"""`mathnb-lora` runs as the reliability backlog asked: a Hugging Face base on GSM8K without --exclude, `--resume --out
DIR` alone (mathnb and Hugging Face bases), and data-parallel under torchrun (2 processes, one adapter directory)."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from conftest import ROOT, assert_user_error, cli

BASE = ROOT/'mathnb'/'pretrained'/'add3-cot'
SMALL = ['--quiet', '--target', 'attn', '--set', 'n_val=0', 'n_test=8', 'batch_size=16', 'warmup=1', 'ckpt_every=2',
         'log_every=1']


def env() -> dict:
    return {**os.environ, 'PYTHONIOENCODING': 'utf-8', 'MPLBACKEND': 'Agg', 'OMP_NUM_THREADS': '1'}


def lora(*args, timeout=300):
    return subprocess.run(cli('mathnb-lora') + [str(a) for a in args], capture_output=True, text=True,
                          encoding='utf-8', env=env(), timeout=timeout, cwd=ROOT)


def tiny_llama(d:Path) -> Path:
    "A random 1-layer Llama with a BPE tokenizer trained on a few GSM8K solutions, saved the transformers way."
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from mathnb.tokenizer import train_bpe
    from mathnb.data import task_from_dict
    rows = task_from_dict({'kind': 'benchmark', 'dataset': 'gsm8k'}).rows('train')[:32]
    htok = train_bpe([r['prompt'] + r['solution'] for r in rows], 300).to_hf()
    torch.manual_seed(0)
    c = LlamaConfig(vocab_size=len(htok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                    num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                    pad_token_id=htok.pad_token_id, bos_token_id=htok.bos_token_id, eos_token_id=htok.eos_token_id)
    LlamaForCausalLM(c).save_pretrained(d)
    htok.save_pretrained(d)
    return d


def test_hf_base_on_gsm8k_without_exclude_then_resume_with_out_only(tmp_path):
    base, out = tiny_llama(tmp_path/'base'), tmp_path/'ad'
    hf = ['--set', 'n_train=8', 'n_test=2', 'batch_size=2', 'max_new_tokens=4', 'ckpt_every=2', 'max_len=1024',
          'log_every=1']
    r = lora('--base', base, '--dataset', 'gsm8k', '--steps', 2, '--out', out, '--quiet', *hf)
    assert r.returncode == 0, r.stderr                       # no --exclude: once a TypeError in read_prompts(None)
    assert 'test exact match' in r.stdout and 'held-out loss' in r.stdout
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['adapter']['base_kind'] == 'hf' and cfg['task']['dataset'] == 'gsm8k' and cfg['summary']['steps'] == 2
    r = lora('--resume', '--out', out, '--steps', 4, '--quiet')
    assert r.returncode == 0, r.stderr
    ev = json.loads((out/'eval.json').read_text())
    assert ev['train_steps'] == 4 and ev['n'] == 2 and 'strict' in ev and 'accuracy' in ev
    assert [json.loads(l)['step'] for l in (out/'metrics.jsonl').read_text().splitlines()][-1] == 4
    from mathnb.lora import load_adapter
    pm, tok = load_adapter(out)
    assert type(pm).__name__.startswith('Peft')


def test_resume_with_out_only(tmp_path):
    out = tmp_path/'sub'
    r = lora('--base', BASE, '--preset', 'sub3-cot', '--r', 2, '--steps', 2, '--out', out, *SMALL)
    assert r.returncode == 0, r.stderr
    assert_user_error(lora('--resume', '--out', out, '--r', 4), 'drop --r')
    assert_user_error(lora('--resume', '--out', tmp_path/'none'), 'nothing to resume')
    assert_user_error(lora('--base', BASE, '--preset', 'sub3-cot', '--out', out, *SMALL), '--resume', '--overwrite')
    r = lora('--resume', '--out', out, '--steps', 4, '--quiet')
    assert r.returncode == 0, r.stderr
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['summary']['steps'] == 4 and cfg['adapter']['lora']['r'] == 2 and cfg['task']['task'] == 'sub'


def test_two_processes_write_one_adapter(tmp_path):
    out = tmp_path/'ddp'
    torchrun = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python']
    r = subprocess.run(torchrun + cli('mathnb-lora') + ['--base', str(BASE), '--preset', 'sub3-cot', '--steps', '3',
                                                        '--out', str(out), *SMALL],
                       capture_output=True, text=True, env=env(), timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('test exact match') == 1 and '2 process(es)' in r.stdout
    assert (out/'adapter_model.safetensors').exists() and not list(tmp_path.glob('*/merged'))
    steps = [json.loads(l)['step'] for l in (out/'metrics.jsonl').read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 3
    from mathnb.model import load_model
    model, tok = load_model(out)
    assert type(model).__name__.startswith('Peft') and json.loads((out/'eval.json').read_text())['n'] == 8
