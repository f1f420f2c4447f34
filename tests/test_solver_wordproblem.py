"""The solver, its app and `mathnb-chat` on a word-problem model: any task, not only arithmetic.

The model directories are built here without a training run: a BPE tokenizer trained on a few hundred generated word
problems, a tiny GPT with a 256-token context, `save_model(..., task={'kind': 'wordproblem'})`. One is left untrained
(its answers are noise: the tests check the plumbing); the other is fitted for a few seconds to one worked answer,
with one right and one wrong calculator step, so that steps and both kinds of check appear."""
import os, random, re, shutil, socket, subprocess, json
from pathlib import Path
import pytest, torch

os.environ.setdefault('MPLBACKEND', 'Agg')
from conftest import fit_to, cli, assert_user_error

QUESTION = ('Ann buys 12 bags of marbles with 3 marbles in each bag and gives 5 marbles to Ben. '
            'How many are left?')
# what the fitted model writes for QUESTION: a right step, a wrong one (36-5 is 31), and the answer
WORKING = 'Ann buys 12*3=<<12*3=36>>36 marbles. She keeps 36-5=<<36-5=30>>30 marbles.\n#### 30<end>'


def word_problem_dir(path, fit:bool=False) -> Path:
    "A word-problem model directory at `path`: untrained, or (`fit`) fitted to write WORKING for QUESTION."
    from mathnb.data import task_from_dict
    from mathnb.model import GPT, get_config, save_model
    from mathnb.tokenizer import BPETokenizer
    task, rng = task_from_dict({'kind': 'wordproblem'}), random.Random(0)
    rows = [task.sample(rng) for _ in range(300)]
    tok = BPETokenizer.train([r['prompt'] + r['target'] for r in rows], vocab_size=512)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = GPT(get_config('tiny', tok.vocab_size, block_size=256))
        if fit: fit_to(model, tok.encode(task.pose(QUESTION)['prompt'] + WORKING), steps=300)
    return save_model(model.eval(), tok, Path(path), task={'kind': 'wordproblem'})


@pytest.fixture(scope='module')
def untrained(tmp_path_factory) -> Path: return word_problem_dir(tmp_path_factory.mktemp('wp')/'untrained')


@pytest.fixture(scope='module')
def fitted(tmp_path_factory) -> Path: return word_problem_dir(tmp_path_factory.mktemp('wp')/'fitted', fit=True)


def chat(model_dir, text:str, *args, env=None) -> subprocess.CompletedProcess:
    "`mathnb-chat --model model_dir ARGS` in a fresh process, with `text` piped in."
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', **(env or {})}
    return subprocess.run(cli('mathnb-chat') + ['--model', str(model_dir), *args], input=text, capture_output=True,
                          text=True, encoding='utf-8', errors='replace', timeout=240, env=env)

# --- mathnb-chat in a fresh process ----------------------------------------------------------------------------

def test_chat_checks_the_steps_of_a_typed_question(fitted):
    r = chat(fitted, f'{QUESTION}\nquit\n')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    out = r.stdout
    assert out.startswith(f'Question: {QUESTION}\nAnswer:\n{WORKING}'), out
    assert re.search(r'step 1 +12\*3=36 +✓ +p=\d\.\d\d\n', out), out
    assert re.search(r'step 2 +36-5=30 +✗ +p=\d\.\d\d +36-5 is 31, not 30\n', out), out
    assert re.search(r'answer +30 +· no reference answer to check against\n', out), out


def test_chat_ascii_terminal(fitted):
    "A terminal that cannot show ✓ ✗ · gets ASCII marks, not a crash or question marks."
    r = chat(fitted, f'{QUESTION}\n', env={'PYTHONIOENCODING': 'ascii'})
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    assert re.search(r'step 1 +12\*3=36 +ok ', r.stdout) and re.search(r'step 2 +36-5=30 +X ', r.stdout), r.stdout
    assert '. no reference answer' in r.stdout and not set('✓✗·?') & set(r.stdout.split('#### 30')[1]), r.stdout


def test_chat_untrained_model(untrained):
    "Noise in, plumbing out: help, a question answered with its checks said, bad lines answered and skipped."
    long = ' '.join(['Ann has 123456 apples and 654321 pears.'] * 20)
    r = chat(untrained, f'\nhelp\n{QUESTION}\n{"x" * 1001}\n{long}\n')
    assert r.returncode == 0 and 'Traceback' not in r.stderr, r.stderr
    out = r.stdout
    assert 'type a problem such as ' in out and f'Question: {QUESTION}' in out
    assert re.search(r'^ +(\(no steps found\)|step 1 )', out, re.M) and 'no reference answer to check against' in out
    assert 'too long: 1001 characters' in out
    assert re.search(r'too long: the question takes \d+ tokens; this model reads at most 256', out), out


@pytest.mark.parametrize('args,msg', [(['--temperature', '-1'], '--temperature must be a number >= 0'),
                                      (['--max-new-tokens', '0'], '--max-new-tokens must be an integer >= 1')])
def test_chat_bad_options(untrained, args, msg):
    assert_user_error(chat(untrained, '', *args), msg)


def test_unknown_task_kind(untrained, tmp_path):
    "A model directory of a task kind nobody knows: one line from every tool, exit status 2."
    bad = tmp_path/'bad'
    shutil.copytree(untrained, bad)
    cfg = json.loads((bad/'config.json').read_text())
    (bad/'config.json').write_text(json.dumps(cfg | {'task': {'kind': 'poetry'}}))
    assert_user_error(chat(bad, 'hello\n'), "unknown task kind 'poetry'")
    r = subprocess.run(cli('mathnb-app') + ['--model', str(bad)], capture_output=True, text=True, timeout=120)
    assert_user_error(r, "unknown task kind 'poetry'")


def test_app_command_takes_a_word_problem_model(untrained):
    "mathnb-app checks the model and its task before serving: it gets as far as the (busy) port."
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        s.listen()
        r = subprocess.run(cli('mathnb-app') + ['--model', str(untrained), '--port', str(s.getsockname()[1])],
                           capture_output=True, text=True, timeout=120)
    assert_user_error(r, 'is in use')

# --- the Solver and the SolverApp widget -----------------------------------------------------------------------

def test_solver_texts_and_rows(fitted):
    from mathnb.solver import Solver
    s = Solver(fitted)
    row = s.sample(random.Random(1))
    typed, sampled, empty = s.solve_batch([QUESTION, row, '   '])
    assert [(st.text, st.check) for st in typed.steps] == [('12*3=36', 'ok'), ('36-5=30', 'wrong')]
    assert typed.answer == '30' and typed.expected is None and not typed.correct and typed.grade == {}
    assert sampled.expected == row['answer'] and sampled.grade and sampled.text == row['prompt']
    assert empty.error and not empty.steps
    attn, read = s.attention(typed)
    assert attn.shape[-1] == len(read) == len(s.tok.encode(typed.prompt)) + len(typed.ids) - 1


def test_app_widget(fitted):
    from mathnb.solver import SolverApp
    app = SolverApp(fitted, seed=0)
    app.problem.value = QUESTION
    sol = app.solution
    assert [st.check for st in sol.steps] == ['ok', 'wrong'] and app.result_text() == sol.report()
    assert '✓' in app.steps_view.value and '✗' in app.steps_view.value and '36-5 is 31, not 30' in app.steps_view.value
    assert 'no reference answer to check against' in app.answer_view.value
    assert [label for label, _ in app.step_select.options] == ['step 1: 12*3=36', 'step 2: 36-5=30', 'answer: 30']
    assert app.attention_fig.axes[0].get_title().startswith('step 1: 12*3=36')
    app.step_select.value = 2
    assert app.attention_fig.axes[0].get_title().startswith('answer: 30')
    app.random_button.click()                                   # a generated problem comes with its answer
    row = app.solution.row
    assert app.problem.value == row['question'] and app.solution.expected == row['answer']
    assert 'no reference answer' not in app.answer_view.value
    app.problem.value = '<script>alert(1)</script>'
    assert '<script>' not in app.answer_view.value + app.tokens_view.value + app.steps_view.value
    app.problem.value = ''
    assert app.solution is None and app.step_select.options == () and 'empty' in app.result_text()
