"End-to-end tests of `mathnb-eval` and `mathnb-solve`, run as subprocesses on a small model trained once per session."
import json, os, re, subprocess, sys
from pathlib import Path
import pytest
from conftest import run_cli, assert_user_error

FIELDS = ('prompt', 'prediction', 'answer', 'expected', 'correct')

def run(name:str, *args) -> subprocess.CompletedProcess: return run_cli(name, *args)

def read_preds(path) -> list[dict]: return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]

def test_eval_writes_predictions(model_dir, tmp_path):
    out = tmp_path/'preds.jsonl'
    r = run('mathnb-eval', '--model', model_dir, '--out', out)
    assert r.returncode == 0, r.stderr
    preds = read_preds(out)
    n_in = len(read_preds(model_dir/'test.jsonl'))
    assert len(preds) == n_in == 100
    for p in preds:
        assert all(k in p for k in FIELDS), p
        assert p['correct'] == (p['answer'] == p['expected'])
    m = re.search(r'exact match ([\d.]+)% \((\d+)/(\d+)\)', r.stdout)
    assert m, r.stdout
    assert (int(m[2]), int(m[3])) == (sum(p['correct'] for p in preds), len(preds))
    assert abs(float(m[1]) - 100 * sum(p['correct'] for p in preds) / len(preds)) < 0.051
    assert 'by carries' in r.stdout and 'token accuracy' in r.stdout

def test_eval_external_file(model_dir):
    "Rows with only prompt and answer (one that is not a problem), the default output path, a small batch size."
    rows = [dict(prompt='12+34=', answer='46'), dict(prompt='99+99=', answer='198'), dict(prompt='1+2+3=', answer='6')]
    f = model_dir/'ext.jsonl'
    f.write_text(''.join(json.dumps(x) + '\n' for x in rows))
    r = run('mathnb-eval', '--model', model_dir, '--data', f, '--batch-size', 2)
    assert r.returncode == 0, r.stderr
    preds = read_preds(model_dir/'preds-ext.jsonl')
    assert [p['prompt'] for p in preds] == [x['prompt'] for x in rows]
    assert '1 unparsed' in r.stdout

def test_solve(model_dir):
    r = run('mathnb-solve', '--model', model_dir, '47+38=')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert lines[0] == '47+38='
    assert any(l.rstrip().endswith(('✓', '✗')) or '(due:' in l for l in lines[1:-1]), r.stdout   # checked steps
    assert lines[-1].startswith('answer: ') or lines[-2].startswith('answer: ')
    assert ('right' in r.stdout) != ('wrong: 47+38=85' in r.stdout)

def test_solve_unknown_characters(model_dir):
    assert_user_error(run('mathnb-solve', '--model', model_dir, '3×4='), "'×'")

def test_solve_without_model_uses_the_shipped_one():
    r = run('mathnb-solve', '23+45=')
    assert r.returncode == 0 and r.stdout.strip().endswith('answer: 68  ✓ right') and r.stderr == '', (r.stdout, r.stderr)

def test_solve_notes_out_of_range_operands(model_dir):
    r = run('mathnb-solve', '--model', model_dir, '23+456=')
    assert r.returncode == 0
    assert r.stderr.strip() == 'note: this model was trained on operands of up to 2 digits; expect guesses outside that range'

def test_eval_grades_any_completion(model_dir, tmp_path):
    "Completions with `</think>` but no `<think>` (or worse) are scored wrong, not a crash."
    from mathnb.data import load_task
    task = load_task(model_dir)
    for comp in ['66+981=</think>1047<end>', '<think><think>', '</think>', '1<think>6+8=11 6+8</think>1468182<end>']:
        g = task.grade(dict(prompt='66+81=', answer='147'), comp)
        assert g['correct'] is False

def test_eval_bad_json_line(model_dir, tmp_path):
    f = tmp_path/'bad.jsonl'
    f.write_text('{"prompt": "12+34=", "answer": "46"}\n{"prompt": "1+2=", "answer": \n')
    assert_user_error(run('mathnb-eval', '--model', model_dir, '--data', f), f'{f}:2', 'not valid JSON')

def test_eval_unknown_characters_in_file(model_dir, tmp_path):
    f = tmp_path/'chars.jsonl'
    f.write_text('{"prompt": "12+34=", "answer": "46"}\n{"prompt": "3×4=", "answer": "12"}\n')
    assert_user_error(run('mathnb-eval', '--model', model_dir, '--data', f), f'{f}:2', "'×'")

def test_eval_missing_field(model_dir, tmp_path):
    f = tmp_path/'nofield.jsonl'
    f.write_text('{"prompt": "12+34="}\n')
    assert_user_error(run('mathnb-eval', '--model', model_dir, '--data', f), f'{f}:1', "'answer'")

def test_eval_missing_model_dir(tmp_path):
    assert_user_error(run('mathnb-eval', '--model', tmp_path/'nope'), 'nope')

def test_truncated_weights(model_dir, tmp_path):
    broken = tmp_path/'broken'
    broken.mkdir()
    for f in ('config.json', 'tokenizer.json', 'test.jsonl'): (broken/f).write_bytes((model_dir/f).read_bytes())
    w = (model_dir/'model.safetensors').read_bytes()
    (broken/'model.safetensors').write_bytes(w[:len(w) // 2])
    assert_user_error(run('mathnb-eval', '--model', broken), 'model.safetensors')
    assert_user_error(run('mathnb-solve', '--model', broken, '1+2='), 'model.safetensors')
