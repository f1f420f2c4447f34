"Tests of the `mathnb-probe` command, run as a user would run it."
import json, subprocess, sys
from pathlib import Path
import pytest, torch
from mathnb.model import default_model_dir, GPT, get_config
from mathnb.tokenizer import CharTokenizer

CMD = [sys.executable, '-c', 'from mathnb.probing import mathnb_probe_cli; mathnb_probe_cli()']
MODEL = default_model_dir()

def run(*args, timeout=240):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, timeout=timeout)

@pytest.mark.skipif(MODEL is None, reason='no pretrained model ships with this install')
def test_probe_writes_report(tmp_path):
    out = tmp_path/'probe'
    r = run('--model', MODEL, '--n', 64, '--out', out)
    assert r.returncode == 0, r.stderr
    rep = json.loads((out/'probe.json').read_text())
    assert rep['n'] == 64
    best = rep['probes']['carry_out']['best']
    assert {'hook', 'position', 'accuracy', 'control_accuracy', 'selectivity'} <= set(best)
    assert abs(best['accuracy'] - best['control_accuracy'] - best['selectivity']) < 1e-3
    assert set(rep['probes']['carry_out']['accuracy_by_layer']) == {'computable', 'eq', 'written'}
    for mode in ('forced', 'continue'):
        f = rep['faithfulness'][mode]
        assert abs(f['follow'] + f['ignore'] + f['other'] - 1) < 1e-3 and f['n'] > 0
        assert set(f['by_carry_flip']) == {'false', 'true'} and f['by_step']
    e = rep['early_answering']
    assert len(e['kept_steps']) == len(e['accuracy'])
    assert 0 <= rep['filler']['accuracy'] <= 1
    pt = rep['patching']
    assert 'recovery' in pt and pt['exact_clean'] > pt['exact_corrupted']
    for f in rep['figures'].values(): assert (out/f).stat().st_size > 0

@pytest.mark.parametrize('args, msg', [(['--model', '/nonexistent/model'], 'not a model directory'),
                                       (['--n', '3'], '--n must be at least 32')])
def test_bad_input(tmp_path, args, msg):
    out = tmp_path/'o'
    r = run(*args, '--out', out)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mathnb-probe: error:') and msg in lines[0]
    assert 'Traceback' not in r.stderr and not out.exists()

def test_unreadable_model(tmp_path):
    d = tmp_path/'m'
    d.mkdir()
    (d/'config.json').write_text('{not json')
    r = run('--model', d, '--out', tmp_path/'o')
    assert r.returncode == 2 and 'Traceback' not in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path/'o').exists()

def _hooks_left(m): return sum(len(x._forward_hooks) + len(x._forward_pre_hooks) for x in m.modules())

def test_hooks_removed_on_error():
    from mathnb.probing import patching, ablate, sample_problems, corrupt, cache_activations
    import random
    tok = CharTokenizer()
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(get_config('tiny', tok.vocab_size, pos='learned')).eval()
    probs = sample_problems(4, 2)
    rng = random.Random(0)
    pairs = [(a, corrupt(a, rng)) for a in probs]
    calls, after = [], [0]
    def boom(*a):
        calls.append(1)
        if len(calls) > after[0]: raise RuntimeError('boom')
    h = model.ln_f.register_forward_hook(lambda m, i, o: boom())
    for k, f in ((2, lambda: patching(model, tok, pairs)),
                 (0, lambda: ablate(model, tok, probs, '0.1', 'mean')),
                 (0, lambda: ablate(model, tok, probs, '1.mlp', 'zero')),
                 (2, lambda: cache_activations(model, tok, probs, 'blocks.0.hook_resid_pre', batch_size=1))):
        calls.clear()
        after[0] = k
        with pytest.raises(RuntimeError): f()
        assert _hooks_left(model) == 1
    h.remove()
    assert _hooks_left(model) == 0

def test_refuses_a_word_problem_model(tmp_path):
    "Probing labels are columns of an addition: a word-problem model directory is refused in one line, exit 2."
    from mathnb.tokenizer import BPETokenizer
    from mathnb.model import save_model
    texts = [f'Question: Ann has {a} apples and gets {b} more. How many?\nAnswer:\n{a}+{b}=<<{a}+{b}={a + b}>>{a + b}'
             for a in range(10, 40) for b in range(3, 9)]
    tok = BPETokenizer.train(texts, vocab_size=300)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(get_config('tiny', tok.vocab_size, block_size=256))
    d = save_model(model, tok, tmp_path/'wordproblem', task={'kind': 'wordproblem'})
    r = run('--model', d, '--out', tmp_path/'o')
    assert r.returncode == 2 and 'Traceback' not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mathnb-probe: error:'), lines
    assert 'probing reads arithmetic models; this one was trained on wordproblem problems' in lines[0]
    assert not (tmp_path/'o').exists()
