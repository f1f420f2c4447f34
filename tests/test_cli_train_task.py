"""Any registered task through one command: `mathnb-train --task wordproblem` trains a word-problem model (BPE tokenizer
built from the task's text); mathnb-eval, mathnb-solve and mathnb-chat open it in fresh processes; --resume continues it."""
import json
from pathlib import Path
import pytest
from conftest import run_cli, assert_user_error

TINY = ['--quiet', '--set', 'n_layer=1', 'n_embd=32', 'n_head=2', 'batch_size=8', 'n_val=4', 'n_test=8', 'eval_every=10',
        'ckpt_every=5']


@pytest.fixture(scope='module')
def wp(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp('task')/'wp'
    r = run_cli('mathnb-train', '--task', 'wordproblem', '--out', d, '--steps', 10, *TINY, timeout=600)
    assert r.returncode == 0, r.stderr
    assert 'test exact match' in r.stdout and 'mathnb-solve --model' in r.stdout
    return d


def test_the_run_is_a_word_problem_model(wp):
    cfg = json.loads((wp/'config.json').read_text())
    assert cfg['task']['kind'] == 'wordproblem' and cfg['tokenizer'] == 'bpe'
    assert json.loads((wp/'run.json').read_text())['task']['kind'] == 'wordproblem'
    assert json.loads((wp/'eval.json').read_text())['n'] == 8
    rows = [json.loads(l) for l in (wp/'test.jsonl').read_text().splitlines()]
    assert rows and all(r['prompt'].startswith('Question:') for r in rows)


def test_eval_solve_and_chat_open_it(wp):
    r = run_cli('mathnb-eval', '--model', wp)
    assert r.returncode == 0, r.stderr
    assert 'exact match' in r.stdout and (wp/'preds-test.jsonl').exists()
    r = run_cli('mathnb-solve', '--model', wp, 'Ann has 3 bags of 4 eggs. How many eggs does she have?')
    assert r.returncode == 0, r.stderr
    assert 'Question: Ann has 3 bags' in r.stdout and 'no reference answer' in r.stdout
    r = run_cli('mathnb-chat', '--model', wp, input='Ben has 5 apples and buys 7 more. How many apples now?\nquit\n')
    assert r.returncode == 0, r.stderr
    assert 'Ben has 5 apples' in r.stdout and 'Traceback' not in r.stderr


def test_resume_continues_it(wp):
    r = run_cli('mathnb-train', '--resume', '--out', wp, '--steps', 15, '--quiet', timeout=600)
    assert r.returncode == 0, r.stderr
    steps = [json.loads(l)['step'] for l in (wp/'metrics.jsonl').read_text().splitlines()]
    assert max(steps) == 15 and steps == sorted(set(steps))


def test_bad_task_options(tmp_path):
    assert_user_error(run_cli('mathnb-train', '--task', 'poetry', '--out', tmp_path/'a'), "unknown task kind 'poetry'")
    assert_user_error(run_cli('mathnb-train', '--task', 'wordproblem', '--out', tmp_path/'b', '--set', 'digits=2'),
                      "unknown option(s) ['digits']")
    assert_user_error(run_cli('mathnb-train', '--task', 'wordproblem', '--preset', 'add3-cot', '--out', tmp_path/'c'),
                      'trains arithmetic tasks, not wordproblem')
    assert_user_error(run_cli('mathnb-train', '--out', tmp_path/'d', '--tokenizer', tmp_path/'none.json'),
                      'no such tokenizer file')
    assert not any((tmp_path/x).exists() for x in 'abcd')
