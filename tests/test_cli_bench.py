"`mathnb-bench` run as a user runs it: a separate process, arguments on the command line."
import json, os, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get('MATHNB_DATA', REPO/'../shared/data'))
GSM = DATA/'gsm8k'/'test.jsonl'
needs_data = pytest.mark.skipif(not GSM.exists(), reason=f'no benchmark files in {DATA}')
CMD = [sys.executable, '-c', 'from mathnb.bench import mathnb_bench_cli; mathnb_bench_cli()']


def bench(*args, cwd=None):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, cwd=cwd, timeout=120)


def summary_of(out: Path) -> dict:
    return json.loads((out.parent/'summary.json').read_text())


@needs_data
def test_gsm8k_gold_is_perfect(tmp_path):
    out = tmp_path/'preds.jsonl'
    r = bench('--dataset', GSM, '--gold', '--out', out)
    assert r.returncode == 0, r.stderr
    assert 'strict   100.00%' in r.stdout and 'flexible 100.00%' in r.stdout
    s = summary_of(out)
    assert (s['n'], s['strict'], s['flexible']) == (1319, 1.0, 1.0)
    assert s['control']['strict'] < 0.05
    rows = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(rows) == 1319 and all(r['strict'] and r['flexible'] for r in rows)
    assert {'prompt', 'completion', 'strict_answer', 'flexible_answer', 'expected'} <= rows[0].keys()


@needs_data
def test_named_dataset_from_data_dir(tmp_path):
    r = bench('--dataset', 'mathqa', '--data-dir', DATA, '--gold', '--n', 50)
    assert r.returncode == 0, r.stderr
    assert 'n=50' in r.stdout and 'strict   100.00%' in r.stdout
    assert 'gold option as text: flexible 100.00%' in r.stdout


def _generic(path: Path):
    rows = [dict(q='Ann has 3 apples and buys 4 more. How many apples?', a=7),
            dict(q='What is half of 5?', a='2.5'), dict(q='How much is 1,000 plus 1?', a='$1,001')]
    path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return path


def test_generic_jsonl_with_named_fields(tmp_path):
    f, out = _generic(tmp_path/'mine.jsonl'), tmp_path/'p.jsonl'
    r = bench('--dataset', f, '--gold', '--question-field', 'q', '--answer-field', 'a', '--out', out)
    assert r.returncode == 0, r.stderr
    s = summary_of(out)
    assert (s['dataset'], s['n'], s['strict'], s['flexible']) == ('mine', 3, 1.0, 1.0)


def test_mathnb_model_with_calculator(tmp_path):
    "A (random) mathnb model directory runs end to end, with the calculator on."
    import random, torch
    from mathnb.tokenizer import train_bpe
    from mathnb.model import GPT, get_config, save_model
    from mathnb.wordtask import WordProblemTask
    task = WordProblemTask()
    tok = train_bpe([r['prompt'] + r['target'] for r in (task.sample(random.Random(i)) for i in range(200))], 300)
    torch.manual_seed(0)
    save_model(GPT(get_config('tiny', tok.vocab_size, block_size=96)), tok, tmp_path/'m', task=task.to_dict())
    f, out = _generic(tmp_path/'mine.jsonl'), tmp_path/'p.jsonl'
    r = bench('--model', tmp_path/'m', '--dataset', f, '--question-field', 'q', '--answer-field', 'a',
              '--calculator', '--max-new-tokens', 8, '--out', out)
    assert r.returncode == 0, r.stderr
    assert summary_of(out)['n'] == 3 and len(out.read_text().splitlines()) == 3


def _bad_cases(tmp):
    f = _generic(tmp/'mine.jsonl')
    broken = tmp/'broken.jsonl'
    broken.write_text('{"question": "q", "answer": "x\\n#### 1"}\n{"question": "q", "answer": \n')
    nofinal = tmp/'nofinal.jsonl'
    nofinal.write_text('{"question": "q", "answer": "#### 1"}\n{"question": "q2", "answer": "no final line"}\n')
    qa = ['--question-field', 'q', '--answer-field', 'a']
    (tmp/'hfbroken').mkdir()
    (tmp/'hfbroken'/'config.json').write_text('{"model_type": "llama"}')
    (tmp/'notamodel').mkdir()
    (tmp/'notamodel'/'config.json').write_text('{"task": "add"}')
    return {
        'no dataset': ([], '--dataset is required'),
        'unknown name': (['--dataset', 'nope', '--gold'], 'unknown data set'),
        'unknown format': (['--dataset', f, '--gold'], 'mine.jsonl:1: unknown format'),
        'missing field': (['--dataset', f, '--gold', '--question-field', 'q', '--answer-field', 'ans'],
                          "mine.jsonl:1: missing field 'ans'"),
        'bad json line': (['--dataset', broken, '--gold'], 'broken.jsonl:2:'),
        'no final answer': (['--dataset', nofinal, '--gold'], 'nofinal.jsonl:2:'),
        'n zero': (['--dataset', f, '--gold', '--n', 0, *qa], '--n must be an integer >= 1'),
        'no model': (['--dataset', f, *qa], '--model'),
        'missing model': (['--dataset', f, '--model', tmp/'nomodel', *qa], 'nomodel'),
        'data dir': (['--dataset', 'gsm8k', '--gold', '--data-dir', tmp/'nodata'], 'not found'),
        'bad split': (['--dataset', 'gsm8k', '--gold', '--split', 'dev'], 'no split'),
        'out is a dir': (['--dataset', f, '--gold', '--out', tmp, *qa], 'is a directory'),
        'broken hf model': (['--dataset', f, '--model', tmp/'hfbroken', *qa],
                            'hfbroken: cannot load a Hugging Face causal LM'),
        'not a model config': (['--dataset', f, '--model', tmp/'notamodel', *qa], 'no "model" section'),
    }


CASES = ['no dataset', 'unknown name', 'unknown format', 'missing field', 'bad json line', 'no final answer', 'n zero',
         'no model', 'missing model', 'data dir', 'bad split', 'out is a dir', 'broken hf model',
         'not a model config']


@pytest.mark.parametrize('case', CASES)
def test_bad_input_is_one_line_exit_2(tmp_path, case):
    args, msg = _bad_cases(tmp_path)[case]
    out = tmp_path/'sub'/'never.jsonl'
    if '--out' not in args: args = [*args, '--out', out]
    before = set(tmp_path.rglob('*'))
    r = bench(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert 'Traceback' not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('mathnb-bench: error:'), r.stderr
    assert msg in lines[0], lines[0]
    assert set(tmp_path.rglob('*')) == before, 'nothing may be written'


@needs_data
@pytest.mark.parametrize('kind', ['hf-llama', 'mathnb'])
def test_models_on_20_gsm8k_problems(tmp_path, kind):
    "A tiny Hugging Face Llama (saved with save_pretrained, mathnb's BPE tokenizer) and a mathnb model run end to end."
    import torch
    from mathnb.tokenizer import train_bpe
    from mathnb.benchmarks import load_file
    rows = load_file(GSM)[:200]
    tok = train_bpe([r['question'] + ' ' + r['solution'] for r in rows], vocab_size=400)
    d = tmp_path/kind
    with torch.random.fork_rng():
        torch.manual_seed(0)
        if kind == 'hf-llama':
            from transformers import LlamaConfig, LlamaForCausalLM
            cfg = LlamaConfig(vocab_size=tok.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                              pad_token_id=tok.pad_id, bos_token_id=tok.bos_id, eos_token_id=tok.end_id)
            LlamaForCausalLM(cfg).save_pretrained(d)
            tok.to_hf().save_pretrained(d)
        else:
            from mathnb.model import GPT, get_config, save_model
            from mathnb.wordtask import WordProblemTask
            save_model(GPT(get_config('tiny', tok.vocab_size, block_size=1024, pos='rope')), tok, d,
                       task=WordProblemTask().to_dict())
    out = tmp_path/'preds.jsonl'
    r = bench('--model', d, '--dataset', GSM, '--n', 20, '--out', out)
    assert r.returncode == 0, r.stderr
    preds = [json.loads(l) for l in out.read_text().splitlines()]
    assert len(preds) == 20 and all('completion' in p for p in preds)
    s = summary_of(out)
    assert s['n'] == 20 and 0 <= s['strict'] <= 1 and 0 <= s['flexible'] <= 1 and 'ci95' in s
