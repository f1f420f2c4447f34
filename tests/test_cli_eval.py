"End-to-end tests of `mathnb-eval` and `mathnb-solve`, run as subprocesses on a small model trained once per session."
import json, os, re, subprocess, sys
from pathlib import Path
import pytest

FIELDS = ('prompt', 'prediction', 'answer', 'expected', 'correct')

def _cmd(name:str) -> list:
    "The installed console script `name`, or the same entry point through `python -c` if it is not installed."
    exe = Path(sys.executable).parent/name
    if exe.exists(): return [str(exe)]
    fn = name.replace('-', '_') + '_cli'
    return [sys.executable, '-c', f'from mathnb.evaluation import {fn}; {fn}()']

def run(name:str, *args) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8'}
    return subprocess.run(_cmd(name) + [str(a) for a in args], capture_output=True, text=True, encoding='utf-8', env=env, timeout=300)

def assert_user_error(r, *contains):
    "Exit status 2, one line on stderr, no traceback."
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    for c in contains: assert c in err, (c, err)
    return err

@pytest.fixture(scope='session')
def model_dir(tmp_path_factory):
    from mathnb.training import TrainConfig, run_training
    d = tmp_path_factory.mktemp('models')/'add2'
    cfg = TrainConfig(digits='2', steps=150, batch_size=64, eval_every=150, n_val=50, n_test=100, progress=False)
    run_training(cfg, d, log=lambda *a: None)
    return d

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

def test_solve_needs_model():
    assert_user_error(run('mathnb-solve', '1+2='), '--model')

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
