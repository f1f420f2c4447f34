"""The commands on symbolic problems (DeepMind's mathematics_dataset modules), run as a user runs them.

`mathnb-solve`, `mathnb-chat`, `mathnb-eval` and `mathnb-bench` meet the symbolic tasks only through the plug-in
registries (`TASK_MODULES`, `FILE_KINDS`, `model_for`). The model directory is built here without a training run:
a byte-level BPE tokenizer trained on a few posed problems, a tiny GPT fitted for a few seconds to write the worked
solution of one problem (so the steps and both verdicts are real), saved with the task `{'kind': 'symbolic'}`.
Tests that need the shared data (../shared/data/mathematics_dataset, or $MATHNB_DATA) or the shipped model
(mathnb/pretrained/symbolic) skip cleanly without them."""
import json, os, re, subprocess
from pathlib import Path
import pytest, torch

import mathnb
from conftest import fit_to, cli, run_cli, assert_user_error

DATA = Path(os.environ.get('MATHNB_DATA', Path(__file__).resolve().parents[1]/'../shared/data'))/'mathematics_dataset'
MODULES = ['calculus__differentiate', 'algebra__linear_1d', 'polynomials__collect', 'polynomials__expand',
           'polynomials__evaluate']
needs_data = pytest.mark.skipif(not (DATA/'interpolate'/f'{MODULES[0]}.txt').exists(), reason=f'no data in {DATA}')
SHIPPED = Path(mathnb.__file__).parent/'pretrained'/'symbolic'
needs_shipped = pytest.mark.skipif(not (SHIPPED/'config.json').exists(), reason='mathnb/pretrained/symbolic not shipped')

DERIV = 'Find the derivative of f(x) = x³ - 2x² + 4x - 1'
TYPED = [DERIV, 'Solve 3x + 5 = 20 for x', 'Expand (x+1)(x-2)', 'Collect the terms in 3*y + 2 - y + 5',
         'Let f(t) = t**2 - 3*t + 7. What is f(4)?', 'What is the second derivative of 5*a**4 - a wrt a?']
# a few problems in the v1.0 layout (question and answer on alternating lines), in no shared file
LINES = ('What is the derivative of 3*z**2 - 7*z + 2?\n6*z - 7\n'
         'Find the second derivative of 4*c**3 + c wrt c.\n24*c\n'
         'Differentiate -5*w**4 + 2*w**2 - w with respect to w.\n-20*w**3 + 4*w - 1\n')


@pytest.fixture(scope='module')
def fitted(tmp_path_factory) -> Path:
    "A symbolic model directory whose GPT writes the worked solution of DERIV (and noise for anything else)."
    from mathnb.data import task_from_dict
    from mathnb.model import GPT, get_config, save_model
    from mathnb.tokenizer import BPETokenizer
    task = task_from_dict({'kind': 'symbolic'})
    rows = [task.pose(t) for t in TYPED]
    tok = BPETokenizer.train([r['prompt'] + r['target'] for r in rows] * 4, vocab_size=300)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(get_config('tiny', tok.vocab_size, block_size=256, n_head=2))   # the adder has 4 heads
        fit_to(model, tok.encode(rows[0]['prompt'] + rows[0]['target']))
    return save_model(model.eval(), tok, tmp_path_factory.mktemp('sym')/'symbolic', task=task.to_dict())


def files_under(d:Path) -> set:
    return {(p, p.stat().st_mtime_ns) for p in Path(d).rglob('*')}

# --- mathnb-solve ------------------------------------------------------------------------------------------------

def test_solve_derivative_steps_checked(fitted):
    r = run_cli('mathnb-solve', '--model', fitted, DERIV, check=True)
    lines = r.stdout.splitlines()
    assert lines[0] == 'Find the first derivative of x**3 - 2*x**2 + 4*x - 1 wrt x.', r.stdout
    assert [l.split()[-1] for l in lines[1:4]] == ['✓'] * 3 and 'd/dx x**3 = 3*x**2' in lines[1], r.stdout
    assert lines[-1] == 'answer: 3*x**2 - 4*x + 4  ✓ right' and r.stderr == '', (r.stdout, r.stderr)


def test_solve_with_model_its_task_cannot_pose(fitted):
    assert_user_error(run_cli('mathnb-solve', '--model', fitted, '658+189='), 'not a symbolic problem')


@pytest.mark.parametrize('text', ["__import__('os').system('touch pwned')", '(1).__class__.__mro__', '9**9**9',
                                  'Expand ' + '(' * 500 + 'x' + ')' * 500])
def test_solve_injection_is_one_line(fitted, tmp_path, text):
    for args in (['--model', fitted, text], [text]):             # with the model, and picked among the shipped
        r = run_cli('mathnb-solve', *args, cwd=tmp_path)
        assert_user_error(r)
    assert not list(tmp_path.iterdir()), 'nothing may be written'


def test_solve_random_draws_from_the_models_task(fitted, tmp_path):
    r = run_cli('mathnb-solve', '--random', '--model', fitted, '--seed', 5, env={'MATHNB_DATA': str(DATA.parent)})
    if not (DATA/'train').exists():
        return assert_user_error(r, 'no train file')              # the generator draws from the train files
    assert r.returncode == 0, r.stderr
    again = run_cli('mathnb-solve', '--random', '--model', fitted, '--seed', 5, env={'MATHNB_DATA': str(DATA.parent)})
    assert r.stdout == again.stdout and r.stdout.splitlines()[-1].startswith('answer: '), r.stdout


def test_solve_random_needs_a_generator(tmp_path):
    d = tmp_path/'fixed'
    d.mkdir()
    (d/'config.json').write_text(json.dumps({'model': {}, 'task': {'kind': 'benchmark', 'dataset': 'x.jsonl'}}))
    assert_user_error(run_cli('mathnb-solve', '--random', '--model', d), 'its task draws no problems')
    assert_user_error(run_cli('mathnb-solve', '--random', '1+1='), 'give a problem or --random, not both')
    assert_user_error(run_cli('mathnb-solve', '--seed', 1, '1+1='), '--seed goes with --random')


def test_solve_random_without_model():
    r = run_cli('mathnb-solve', '--random', '--seed', 0)
    assert r.returncode == 0 and r.stdout.splitlines()[-1].startswith('answer: '), (r.stdout, r.stderr)


@needs_shipped
@pytest.mark.parametrize('text', [DERIV, 'Solve 3x + 5 = 20 for x', 'Expand (x+1)(x-2)'])
def test_solve_picks_the_shipped_symbolic_model(text):
    r = run_cli('mathnb-solve', text, check=True)
    from mathnb.data import load_task
    assert r.stdout.splitlines()[0] == load_task(SHIPPED).pose(text)['prompt'], r.stdout
    assert r.stdout.splitlines()[-1].startswith('answer: '), r.stdout


def test_solve_arithmetic_still_picks_the_adder():
    r = run_cli('mathnb-solve', '658+189=', check=True)
    assert r.stdout.splitlines()[0] == '658+189=' and r.stdout.strip().endswith('answer: 847  ✓ right'), r.stdout

# --- mathnb-chat and the app ---------------------------------------------------------------------------------------

def test_chat_checks_the_steps(fitted):
    r = subprocess.run(cli('mathnb-chat') + ['--model', str(fitted)], input=f'{DERIV}\nhello\n', capture_output=True,
                       text=True, encoding='utf-8', timeout=240, env={**os.environ, 'PYTHONIOENCODING': 'utf-8'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert len(re.findall(r'step \d +d/dx .* +✓ +p=', r.stdout)) == 3, r.stdout
    assert re.search(r'answer +3\*x\*\*2 - 4\*x \+ 4 +✓ correct: the answer is 3\*x\*\*2 - 4\*x \+ 4', r.stdout), r.stdout
    assert 'not a symbolic problem' in r.stdout                   # the bad line answered, the loop goes on


def test_chat_without_model_picks_per_line():
    lines = 'Solve 3x + 5 = 20 for x\n658+189=\n'
    r = subprocess.run(cli('mathnb-chat'), input=lines, capture_output=True, text=True, encoding='utf-8', timeout=240,
                       env={**os.environ, 'PYTHONIOENCODING': 'utf-8'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert '658+189=<think>' in r.stdout and '✓ correct: 658+189 = 847' in r.stdout, r.stdout
    if (SHIPPED/'config.json').exists(): assert 'Solve 3*x + 5 = 20 for x.' in r.stdout, r.stdout
    else: assert "cannot read 'Solve 3x + 5 = 20 for x'" in r.stdout, r.stdout


def test_app_picks_the_model_per_problem(fitted):
    "The app over two models unlike each other: each problem to its own, the heads and the token slider follow."
    from mathnb.model import default_model_dir
    from mathnb.solver import SolverApp, AutoSolver
    app = SolverApp(AutoSolver([default_model_dir(), fitted]), seed=0)
    assert app.max_new_tokens.max == 256                          # the larger context of the two
    for text, first, heads in [('23+45=', '23+45=<think>', 4), (DERIV, 'Find the first derivative', 2),
                               ('658+189=', '658+189=<think>', 4)]:
        app.head_select.value = 3 if heads == 2 else 'max'       # a head the next model lacks
        app.problem.value = text
        assert app.result_text().startswith(first), app.result_text()
        assert app.solution.correct and app.solution.steps_ok, app.result_text()
        assert [v for _, v in app.head_select.options] == ['max', 'mean', *range(heads)]
        assert app.attention_fig is not None and app.head_select.value in ('max', 'mean', *range(heads))
    app.problem.value = "__import__('os')"
    assert app.solution is None and 'cannot read' in app.result_text(), app.result_text()

# --- mathnb-bench and mathnb-eval on v1.0 text files --------------------------------------------------------------

@needs_data
@pytest.mark.parametrize('module', MODULES)
def test_bench_gold_is_perfect(module, tmp_path):
    out = tmp_path/'gold.jsonl'
    r = run_cli('mathnb-bench', '--dataset', DATA/'interpolate'/f'{module}.txt', '--gold', '--out', out, check=True)
    assert r.stdout.startswith(f'{module} interpolate (gold solutions), n=1000\n'), r.stdout
    assert 'exact match 100.00%' in r.stdout and 'equivalence 100.00%' in r.stdout, r.stdout
    s = json.loads((tmp_path/'summary.json').read_text())
    assert (s['exact_match'], s['equivalence'], s['step_validity']) == (1.0, 1.0, 1.0), s
    assert len(out.read_text().splitlines()) == 1000


@needs_data
def test_bench_model_prints_both_accuracies(fitted, tmp_path):
    out = tmp_path/'preds.jsonl'
    r = run_cli('mathnb-bench', '--dataset', DATA/'interpolate'/'calculus__differentiate.txt', '--model', fitted,
                '--n', 6, '--max-new-tokens', 12, '--out', out, check=True)
    assert re.search(r'^exact match \d+\.\d\d% \[', r.stdout, re.M) and re.search(r'^equivalence \d+\.\d\d% \[',
                                                                                     r.stdout, re.M), r.stdout
    s = json.loads((tmp_path/'summary.json').read_text())
    assert s['n'] == 6 and s['model'] == str(fitted) and 0 <= s['exact_match'] <= s['equivalence'] <= 1, s
    p = json.loads(out.read_text().splitlines()[0])
    assert {'prompt', 'completion', 'correct', 'equivalent', 'expected', 'module'} <= p.keys(), p


def test_eval_reads_a_text_file(fitted, tmp_path):
    f = tmp_path/'calculus__differentiate.txt'
    f.write_text(LINES + 'Find the first derivative of x**3 - 2*x**2 + 4*x - 1 wrt x.\n3*x**2 - 4*x + 4\n')
    r = run_cli('mathnb-eval', '--model', fitted, '--data', f, '--out', tmp_path/'p.jsonl', '--device', 'cpu',
                check=True)
    assert f'on {f} (4 problems)' in r.stdout and 'equivalent answers ' in r.stdout, r.stdout
    assert 'steps that check ' in r.stdout and 'task symbolic ' in r.stdout, r.stdout
    preds = [json.loads(l) for l in (tmp_path/'p.jsonl').read_text().splitlines()]
    assert len(preds) == 4 and preds[-1]['correct'] and preds[-1]['equivalent'], preds[-1]


def _bad_files(d:Path) -> dict:
    "Malformed v1.0 text files, each with the message its one line must hold."
    cases = {'odd.txt': ('Expand (x + 1)*(x - 2).\nx**2 - x - 2\nExpand 3*(y - 1).\n', 'alternate lines'),
             'empty.txt': ('', 'empty file'), 'blank.txt': ('\n\n', 'empty file'),
             'gap.txt': ('Expand (x + 1)*(x - 2).\n\nExpand 3*(y - 1).\n3*y - 3\n', 'empty answer'),
             'binary.txt': (b'\xff\xfe\x00\x01', 'UTF-8')}
    for name, (text, _) in cases.items():
        (d/name).write_bytes(text if isinstance(text, bytes) else text.encode())
    return {name: msg for name, (_, msg) in cases.items()}


@pytest.mark.parametrize('cmd', ['mathnb-bench', 'mathnb-eval'])
def test_bad_files_are_one_line_exit_2(fitted, tmp_path, cmd):
    before = files_under(fitted)
    for name, msg in _bad_files(tmp_path).items():
        seen = files_under(tmp_path)
        out = tmp_path/'out'/'preds.jsonl'
        flag = '--dataset' if cmd == 'mathnb-bench' else '--data'
        assert_user_error(run_cli(cmd, '--model', fitted, flag, tmp_path/name, '--out', out), name, msg)
        assert files_under(tmp_path) == seen, f'{cmd} wrote something for {name}'
    assert_user_error(run_cli(cmd, '--model', fitted, flag, tmp_path/'missing.txt'), 'missing.txt')
    assert files_under(fitted) == before


def test_bench_bad_flags(fitted, tmp_path):
    f = tmp_path/'algebra__linear_1d.txt'
    f.write_text('Solve 3*x + 5 = 20 for x.\n5\n')
    assert_user_error(run_cli('mathnb-bench', '--dataset', f, '--model', fitted, '--shots', 2), '--shots needs')
    assert_user_error(run_cli('mathnb-bench', '--dataset', f, '--gold', '--n', 0), '--n must be')
    assert_user_error(run_cli('mathnb-bench', '--dataset', f, '--gold', '--max-new-tokens', 0), '--max-new-tokens')
    assert_user_error(run_cli('mathnb-bench', '--dataset', f, '--gold', '--frobnicate'))
    assert_user_error(run_cli('mathnb-eval', '--model', fitted, '--data', f, '--frobnicate'))
    assert not (tmp_path/'summary.json').exists() and not list(Path(fitted).glob('preds-*'))


def test_bench_gold_on_a_small_file(tmp_path):
    "The gold self-test without the shared data: a file of a few problems of one module."
    f = tmp_path/'interpolate'/'calculus__differentiate.txt'
    f.parent.mkdir()
    f.write_text(LINES)
    r = run_cli('mathnb-bench', '--dataset', f, '--gold', check=True)
    assert r.stdout.splitlines() == ['calculus__differentiate interpolate (gold solutions), n=3',
                                     'exact match 100.00% [43.9%, 100.0%]', 'equivalence 100.00% [43.9%, 100.0%]',
                                     'steps that check 100.00% (in equivalent answers 100.00%)'], r.stdout
