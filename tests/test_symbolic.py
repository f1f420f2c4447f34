"Symbolic tasks on DeepMind's mathematics_dataset: every sampled question gets a chain whose steps sympy confirms, an edited step is caught, and mathnb-symbolic-check takes bad input in one line."
import json, random, re
from pathlib import Path
import pytest
from conftest import run_cli, assert_user_error
from mathnb.symbolic import (MODULES, SymbolicTask, check_chains, check_symbolic_step, module_files, question_of,
                             read_pairs, solve)

DATA = Path(__file__).resolve().parents[1].parent/'shared'/'data'/'mathematics_dataset'
pytestmark = pytest.mark.skipif(not DATA.exists(), reason='../shared/data/mathematics_dataset is not here')


def sample_pairs(module, split='train', n=60, seed=0):
    pairs = read_pairs(module_files(module, split, DATA)[0])
    return random.Random(seed).sample(pairs, n)


@pytest.mark.parametrize('module', MODULES)
def test_chains_verify_and_answers_match(module):
    "Every sampled training question reads, sympy's answer prints as the dataset's, every step verifies."
    c = check_chains(sample_pairs(module))
    assert c['rows'] == 60 and c['unread'] == 0 and c['answer_mismatch'] == 0, c
    assert c['steps'] > 0 and c['steps_ok'] == c['steps'], c


@pytest.mark.parametrize('module', MODULES)
def test_an_edited_step_is_caught(module):
    "Change one digit on the right of one step: check_step says wrong; the other steps stay ok."
    rng, caught, tried = random.Random(1), 0, 0
    for q_text, _ in sample_pairs(module, n=30, seed=2):
        q = question_of(q_text)
        steps = solve(q)[0]
        i = rng.randrange(len(steps))
        lhs, eq, rhs = steps[i].rpartition('=')
        digits = [m.start() for m in re.finditer(r'\d', rhs)]
        if not digits: continue
        j = rng.choice(digits)
        edited = lhs + eq + rhs[:j] + str((int(rhs[j]) + 1) % 10) + rhs[j + 1:]
        tried += 1
        caught += check_symbolic_step(q, edited) == 'wrong'
        assert all(check_symbolic_step(q, s) == 'ok' for k, s in enumerate(steps) if k != i)
    assert tried >= 20 and caught == tried, (caught, tried)


def test_held_out_rows_come_from_interpolate_only():
    "Test and validation rows are interpolate questions; training rows never are."
    task = SymbolicTask(data_dir=DATA)
    s = task.splits(200, 50, 100)
    inter = {q for m in MODULES for q, _ in read_pairs(module_files(m, 'interpolate', DATA)[0])}
    assert {r['prompt'] for r in s['test'] + s['val']} <= inter
    assert not {r['prompt'] for r in s['train']} & inter
    rng = random.Random(0)
    assert not {task.sample(rng)['prompt'] for _ in range(300)} & inter


def test_symbolic_check_cli(tmp_path):
    out = tmp_path/'chains.json'
    r = run_cli('mathnb-symbolic-check', '--split', 'interpolate', '--n', 5, '--data_dir', DATA, '--out', out, check=True)
    res = json.loads(out.read_text())
    assert set(res) == set(MODULES) and all(v['rows'] == 5 and v['steps_ok'] == v['steps'] for v in res.values())
    assert_user_error(run_cli('mathnb-symbolic-check', '--split', 'nope'), 'unknown split')
    assert_user_error(run_cli('mathnb-symbolic-check', '--n', 0, '--data_dir', DATA), '--n')
    assert_user_error(run_cli('mathnb-symbolic-check', '--data_dir', tmp_path/'none'), 'no train file')
    assert_user_error(run_cli('mathnb-symbolic-check', '--bogus', 1), 'bogus')


def test_malformed_file_is_one_line(tmp_path):
    "An odd number of lines, an empty file or an empty answer: one line, exit 2, from the reader of files."
    for name, text in [('odd.txt', 'Expand (x+1)(x-2).\nx**2 - x - 2\nExpand x.\n'), ('empty.txt', ''),
                       ('blank.txt', 'Expand x.\n\n')]:
        d = tmp_path/name.split('.')[0]/'train'
        d.mkdir(parents=True)
        (d/'calculus__differentiate.txt').write_text(text)
        assert_user_error(run_cli('mathnb-symbolic-check', '--data_dir', d.parent), 'calculus__differentiate.txt')


SHIPPED = Path(__file__).resolve().parents[1]/'mathnb'/'pretrained'/'symbolic'


@pytest.mark.skipif(not (SHIPPED/'config.json').exists(), reason='no shipped symbolic model')
def test_shipped_model_differentiates_the_seed_problem():
    "The shipped model, picked by mathnb-solve for a typed derivative, writes every step right and the right answer."
    r = run_cli('mathnb-solve', 'Find the derivative of f(x) = x³ - 2x² + 4x - 1', check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == 'Find the first derivative of x**3 - 2*x**2 + 4*x - 1 wrt x.', r.stdout
    assert len(lines) == 5 and all(l.strip().startswith('d/dx') and '✓' in l for l in lines[1:4]), r.stdout
    assert lines[-1].startswith('answer: 3*x**2 - 4*x + 4') and '✓ right' in lines[-1], r.stdout
