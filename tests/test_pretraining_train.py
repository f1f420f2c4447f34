"""Language-model pre-training on a corpus through `mathnb-train --task corpus`: the validation loss falls, 2 processes
under torchrun follow 1, a checkpoint of 2 resumes with 1, and `--init` fine-tunes the pre-trained model on word problems."""
import json, random, subprocess
from pathlib import Path
import pytest
from conftest import run_cli, assert_user_error, cli
from test_ddp import torchrun, env, losses

LM = ['--quiet', '--set', 'n_layer=1', 'n_embd=64', 'n_head=4', 'n_kv_head=2', 'context=32', 'block_size=128',
      'batch_size=8', 'eval_every=10', 'log_every=1', 'ckpt_every=5', 'n_val=16']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory) -> Path:
    "A small corpus of templated word problems with their worked answers, tokenized by its own BPE tokenizer."
    from mathnb.wordtask import WordProblemTask
    from mathnb.pretraining import documents, train_tokenizer, build_corpus
    d = tmp_path_factory.mktemp('corpus')
    rng, task = random.Random(0), WordProblemTask()
    rows = [task.sample(rng) for _ in range(1500)]
    (d/'wp.jsonl').write_text(''.join(json.dumps({'text': r['prompt'] + r['target']}) + '\n' for r in rows))
    train_tokenizer(documents([d/'wp.jsonl']), 400).save(d/'tok')
    build_corpus(d/'tok', [d/'wp.jsonl'], d/'c', val_fraction=0.05, progress=False)
    return d/'c'


@pytest.fixture(scope='module')
def pretrained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('lm')/'one'
    r = run_cli('mathnb-train', '--task', 'corpus', '--data', corpus, '--out', out, '--steps', 30, *LM, env=env())
    assert r.returncode == 0, r.stderr
    return out


def test_pretraining_lowers_validation_loss(pretrained):
    val = [r['val_loss'] for r in map(json.loads, (pretrained/'metrics.jsonl').read_text().splitlines()) if 'val_loss' in r]
    ev = json.loads((pretrained/'eval.json').read_text())
    assert len(val) == 3 and val[-1] < val[0] - 0.3, val
    assert ev['val_loss'] == val[-1] and abs(ev['val_ppl'] - 2.718281828 ** val[-1]) < 1e-3 * ev['val_ppl']


def test_two_processes_follow_one_and_resume_with_one(corpus, pretrained, tmp_path):
    d = tmp_path/'two'
    r = torchrun('--standalone', '--nproc_per_node', 2, '--no-python', *cli('mathnb-train'), '--task', 'corpus',
                 '--data', corpus, '--out', d, '--steps', 30, *LM)
    assert r.returncode == 0, r.stderr[-3000:]
    a, b = losses(pretrained), losses(d)
    assert sorted(a) == sorted(b) == list(range(1, 31))
    assert all(abs(a[s] - b[s]) / a[s] < 1e-4 for s in a), [(a[s], b[s]) for s in (1, 30)]
    r = run_cli('mathnb-train', '--resume', '--out', d, '--steps', 35, '--quiet', env=env())
    assert r.returncode == 0, r.stderr
    assert max(losses(d)) == 35 and 'validation loss' in r.stdout


def test_fine_tuning_from_the_pretrained_model(pretrained, tmp_path):
    out = tmp_path/'ft'
    r = run_cli('mathnb-train', '--task', 'wordproblem', '--init', pretrained, '--out', out, '--steps', 10, '--quiet',
                '--set', 'n_val=10', 'n_test=10', 'eval_every=10', 'batch_size=8', 'log_every=1', env=env())
    assert r.returncode == 0, r.stderr
    c = json.loads((out/'config.json').read_text())
    assert c['init']['path'] == str(pretrained) and c['model']['n_layer'] == 1
    assert (out/'tokenizer.json').read_bytes() == (pretrained/'tokenizer.json').read_bytes()
    first = losses(out)[1]
    scratch = run_cli('mathnb-train', '--task', 'wordproblem', '--tokenizer', pretrained/'tokenizer.json', '--out',
                      tmp_path/'scratch', '--steps', 1, '--quiet', '--set', 'n_val=10', 'n_test=10', 'batch_size=8', 'log_every=1',
                      'n_layer=1', 'n_embd=64', 'n_head=4', 'n_kv_head=2', 'block_size=128', 'model=llama-tiny', env=env())
    assert scratch.returncode == 0, scratch.stderr
    assert first < losses(tmp_path/'scratch')[1]           # pre-training on the same kind of text helps from step 1


@pytest.mark.parametrize('args,msg', [
    (['--task', 'corpus', '--data', 'nowhere'], 'nowhere'),
    (['--task', 'corpus', '--data', '{corpus}', '--set', 'context=64', 'block_size=32', 'model=llama-tiny'], 'too small for the corpus'),
    (['--task', 'corpus', '--data', '{corpus}', '--exclude', '{corpus}/meta.json'], 'a corpus holds its text out'),
    (['--task', 'wordproblem', '--init', '{pretrained}', '--resume'], '--init starts a new run'),
    (['--task', 'wordproblem', '--init', 'nowhere'], 'nowhere: not a model directory'),
    (['--task', 'arithmetic', '--data', '{corpus}'], 'data'),
])
def test_bad_pretraining_options_write_nothing(corpus, pretrained, tmp_path, args, msg):
    args = [a.format(corpus=corpus, pretrained=pretrained) for a in args]
    assert_user_error(run_cli('mathnb-train', *args, '--out', tmp_path/'o', '--steps', 2, '--quiet'), msg)
    assert not (tmp_path/'o').exists()


def test_init_refuses_another_tokenizer(pretrained, corpus, tmp_path):
    other = tmp_path/'other.json'
    from mathnb.tokenizer import BPETokenizer
    BPETokenizer.train(['a b c d'] * 20, 300).save(tmp_path/'ot')
    r = run_cli('mathnb-train', '--task', 'wordproblem', '--init', pretrained, '--tokenizer', tmp_path/'ot'/'tokenizer.json',
                '--out', tmp_path/'o', '--steps', 2)
    assert_user_error(r, 'is not the tokenizer of --init')
    assert not (tmp_path/'o').exists()


@pytest.mark.parametrize('model', ['gpt2-124m', 'mathgpt-751m'])
def test_large_presets_at_a_tiny_size(corpus, tmp_path, model):
    "The 'Math Nano GPT' sizes train from a corpus with bf16 autocast and activation checkpointing (full size needs a GPU)."
    r = run_cli('mathnb-train', '--preset', 'pretrain', '--model', model, '--data', corpus, '--out', tmp_path/'m',
                '--steps', 3, '--quiet', '--set', 'n_layer=1', 'n_embd=48', 'n_head=2', 'context=32', 'block_size=64',
                'batch_size=4', 'dtype=bf16', 'grad_checkpointing=true', 'n_val=4', env=env())
    assert r.returncode == 0, r.stderr
    assert 'memory estimate per process' in r.stdout and 'validation loss' in r.stdout
    c = json.loads((tmp_path/'m'/'config.json').read_text())
    assert c['model']['pos'] == 'learned' and c['model']['n_layer'] == 1


def test_fine_tuning_data_from_a_question_answer_file(pretrained, tmp_path):
    "Orca-Math-style rows (`question`, `answer`) are fine-tuning data: all of a fixed file's rows, not a stream."
    f = tmp_path/'orca.jsonl'
    rng = random.Random(0)
    pairs = [(rng.randrange(100), rng.randrange(100)) for _ in range(60)]
    f.write_text(''.join(json.dumps({'question': f'What is {a} plus {b}?', 'answer': str(a + b)}) + '\n' for a, b in pairs))
    r = run_cli('mathnb-train', '--task', 'benchmark', '--set', f'dataset={f}', 'question_field=question',
                'answer_field=answer', 'n_val=5', 'n_test=10', 'batch_size=8', 'eval_every=4', '--init', pretrained,
                '--out', tmp_path/'o', '--steps', 4, '--quiet', env=env())
    assert r.returncode == 0, r.stderr
    assert json.loads((tmp_path/'o'/'eval.json').read_text())['n'] == 10
    assert len((tmp_path/'o'/'train.jsonl').read_text().splitlines()) == 45       # every row not held out
