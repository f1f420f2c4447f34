"""`mathnb-distill` data-parallel under torchrun on CPU: 2 processes write one model directory (and one seq-KD cache),
print one summary, and the student loads with `load_model`."""
import json, os, subprocess, sys
from pathlib import Path
from conftest import ROOT, cli

SMALL = ['--quiet', '--set', 'digits=2', 'n_val=10', 'n_test=10', 'eval_every=2', 'batch_size=16', 'n_layer=1',
         'n_embd=32', 'n_head=2', 'warmup=1', 'ckpt_every=2', 'log_every=1']


def test_two_processes_write_one_student(tmp_path):
    out = tmp_path/'s'
    torchrun = [str(Path(sys.executable).parent/'torchrun'), '--standalone', '--nproc_per_node', '2', '--no-python']
    args = ['--out', str(out), '--steps', '4', '--hidden-weight', '1', '--seq-kd', *SMALL]
    r = subprocess.run(torchrun + cli('mathnb-distill') + args, capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, 'OMP_NUM_THREADS': '1', 'PYTHONIOENCODING': 'utf-8', 'MPLBACKEND': 'Agg'})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count('test exact match') == 1 and '2 process(es)' in r.stdout
    steps = [json.loads(l)['step'] for l in (out/'metrics.jsonl').read_text().splitlines()]
    assert steps == [1, 2, 3, 4]                                         # one metrics file, each step once
    prompts = [json.loads(l)['prompt'] for l in (out/'seq_kd.jsonl').read_text().splitlines()]
    assert prompts and len(prompts) == len(set(prompts))                  # one process writes the cache
    cfg = json.loads((out/'config.json').read_text())
    assert cfg['distillation']['hidden_weight'] == 1.0 and cfg['summary']['steps'] == 4
    assert json.loads((out/'distill.json').read_text())['seq_kd'] is True
    from mathnb.model import load_model
    model, tok = load_model(out)
    assert model.config.n_embd == 32
