"End-to-end tests of `mathnb-distill` as a user runs it: a tiny distillation, resume, evaluation, bad input."
import json, os, subprocess, sys
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
SMALL = ['--quiet', '--set', 'digits=2', 'n_val=20', 'n_test=20', 'eval_every=3', 'batch_size=16', 'n_layer=1',
         'n_embd=32', 'n_head=2', 'warmup=1', 'ckpt_every=2', 'decay_steps=4']

def distill(*args, timeout=300):
    cmd = [sys.executable, '-c', 'from mathnb.distillation import mathnb_distill_cli; mathnb_distill_cli()']
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', 'OMP_NUM_THREADS': '1'}
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)

def evaluate(*args):
    cmd = [sys.executable, '-c', 'from mathnb.evaluation import mathnb_eval_cli; mathnb_eval_cli()']
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, 'OMP_NUM_THREADS': '1'})

def assert_user_error(r, *contains):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    for c in contains: assert c in err, (c, err)

def test_distill_resume_and_eval(tmp_path):
    kd = ['--hidden-weight', '1', '--seq-kd', '--on-policy', '0.3', '--loss', 'jsd', '--temperature', '2']
    r = distill('--out', tmp_path/'a', '--steps', '6', *kd, *SMALL)
    assert r.returncode == 0, r.stderr
    assert 'test exact match' in r.stdout
    r = distill('--out', tmp_path/'b', '--steps', '4', *kd, *SMALL)
    assert r.returncode == 0, r.stderr
    cached = (tmp_path/'b'/'seq_kd.jsonl').read_text().splitlines()
    r = distill('--out', tmp_path/'b', '--resume', '--steps', '6', '--quiet')
    assert r.returncode == 0, r.stderr
    from safetensors.torch import load_file
    a, b = load_file(tmp_path/'a'/'model.safetensors'), load_file(tmp_path/'b'/'model.safetensors')
    assert a.keys() == b.keys() and all((a[k] - b[k]).abs().max() < 1e-5 for k in a)       # resume is exact
    lines = (tmp_path/'b'/'seq_kd.jsonl').read_text().splitlines()
    assert lines[:len(cached)] == cached                                                   # the cache was kept
    prompts = [json.loads(l)['prompt'] for l in lines]
    assert len(prompts) == len(set(prompts))                                               # each asked once
    cfg = json.loads((tmp_path/'b'/'config.json').read_text())
    assert cfg['distillation']['loss'] == 'jsd' and cfg['distillation']['seq_kd'] is True
    assert cfg['summary']['steps'] == 6
    r = evaluate('--model', tmp_path/'b')
    assert r.returncode == 0, r.stderr
    assert 'exact match' in r.stdout and (tmp_path/'b'/'preds-test.jsonl').exists()

def test_distill_bad_input_exit_2(tmp_path):
    import torch
    from mathnb.model import GPT, get_config, save_model
    from mathnb.tokenizer import CharTokenizer
    tok = CharTokenizer('0123456789+-*/()=.')                  # no space: a different vocabulary
    save_model(GPT(get_config('tiny', tok.vocab_size, n_layer=1, n_embd=32, n_head=2)), tok, tmp_path/'other')
    (tmp_path/'junk').mkdir()
    (tmp_path/'junk'/'config.json').write_text('not json')
    out = tmp_path/'o'
    for args, msg in [(['--teacher', tmp_path/'nope'], 'not a model directory'),
                      (['--teacher', tmp_path/'junk'], 'cannot load'),
                      (['--weights', '0.7', '0.3'], '2 weights for 1 teachers'),
                      (['--teacher', tmp_path/'other'], 'tokenizer differs'),
                      (['--loss', 'kl'], "unknown distillation loss 'kl'")]:
        assert_user_error(distill('--out', out, '--steps', '2', *args, *SMALL), msg)
        assert not out.exists()
    assert_user_error(distill('--out', out, '--resume'), 'nothing to resume')
    assert not out.exists()

def test_distill_from_hugging_face_teacher(tmp_path):
    "A `to_hf` export with mathnb's tokenizer beside it teaches by logits and by its greedy completions."
    import torch
    from mathnb.model import GPT, complete, get_config, to_hf
    from mathnb.tokenizer import CharTokenizer
    tok = CharTokenizer()
    torch.manual_seed(0)
    teacher = GPT(get_config('llama-tiny', tok.vocab_size, n_layer=1, n_embd=32, n_head=4, n_kv_head=2)).eval()
    with torch.no_grad():
        for p in teacher.parameters():
            if p.dim() >= 2: p.normal_(0, 0.3)                     # decided argmaxes, no near-ties
    to_hf(teacher, tok).save_pretrained(tmp_path/'hf')
    tok.save(tmp_path/'hf')
    r = distill('--out', tmp_path/'s', '--steps', '2', '--teacher', tmp_path/'hf', '--seq-kd', *SMALL)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(l) for l in (tmp_path/'s'/'seq_kd.jsonl').read_text().splitlines()]
    settings = json.loads((tmp_path/'s'/'config.json').read_text())['distillation']
    assert rows and settings['teachers'] == [str(tmp_path/'hf')]
    for row in rows:                               # the targets are the mathnb original's greedy completions
        n = len(tok.encode(row['target']))
        assert row['target'] == complete(teacher, tok, [row['prompt']], n)[0], row
