"The word-problem plug-in tasks as other tools meet them: by kind, in a fresh process, through task_from_dict."
import json, os, subprocess, sys
from pathlib import Path
import pytest

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get('MATHNB_DATA', REPO/'../shared/data'))
needs_data = pytest.mark.skipif(not (DATA/'gsm8k'/'train.jsonl').exists(), reason=f'no GSM8K files in {DATA}')


def fresh(code:str) -> subprocess.CompletedProcess:
    "Run `code` in a new interpreter that has imported nothing of mathnb yet."
    return subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)


def test_kinds_resolve_without_importing_their_chapters():
    r = fresh("import sys\nfrom mathnb.data import task_from_dict\n"
              "assert 'mathnb.wordtask' not in sys.modules and 'mathnb.benchmarks' not in sys.modules\n"
              "w = task_from_dict({'kind': 'wordproblem'})\n"
              "b = task_from_dict({'kind': 'benchmark', 'dataset': 'gsm8k'})\n"
              "print(type(w).__module__, type(b).__module__, b.to_dict()['dataset'])")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ['mathnb.wordtask', 'mathnb.benchmarks', 'gsm8k']


def test_benchmark_task_settings_are_checked():
    from mathnb.data import task_from_dict, DataSpecError
    with pytest.raises(DataSpecError, match='dataset'): task_from_dict({'kind': 'benchmark', 'dataset': 3})
    with pytest.raises(DataSpecError, match='bad benchmark task settings'):
        task_from_dict({'kind': 'benchmark', 'nope': 1})


@needs_data
def test_gsm8k_splits_for_fine_tuning():
    "What mathnb-lora --dataset gsm8k asks for: all training rows, the first test rows, nothing shared."
    from mathnb.data import task_from_dict
    task = task_from_dict({'kind': 'benchmark', 'dataset': 'gsm8k'})
    s = task.splits(None, 0, 100, seed=0)
    assert (len(s['train']), len(s['val']), len(s['test'])) == (7473, 0, 100)
    assert not {r['prompt'] for r in s['train']} & {r['prompt'] for r in s['test']}
    assert all(r['target'].endswith('<end>') and '####' in r['target'] for r in s['train'][:50])
    held = s['test'][0]['prompt']
    s2 = task.splits(10, 5, 100, seed=1, exclude=[s['train'][0]['prompt']])
    assert s2['test'][0]['prompt'] == held and s['train'][0]['prompt'] not in {r['prompt'] for r in s2['train']}
    g = task.grade(s['test'][0], 'so she makes 18 dollars.\n#### 18')
    assert (g['correct'], g['answer'], g['expected'], g['flexible']) == (True, '18', '18', True)


def test_wordproblem_run_test_file_benchmarks(tmp_path):
    "A word-problem run's test.jsonl grades with mathnb-bench as the 09c Results say."
    from mathnb.wordtask import WordProblemTask
    rows = WordProblemTask().splits(0, 0, 5)['test']
    f = tmp_path/'test.jsonl'
    f.write_text(''.join(json.dumps(r) + '\n' for r in rows))
    r = subprocess.run([sys.executable, '-c', 'from mathnb.bench import mathnb_bench_cli; mathnb_bench_cli()',
                        '--dataset', str(f), '--gold', '--question-field', 'question', '--answer-field', 'answer'],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert 'n=5' in r.stdout and 'strict   100.00%' in r.stdout
