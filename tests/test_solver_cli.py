"""The solver as people use it: the SolverApp driven through its widgets, and the `mathnb-chat` / `mathnb-app` commands.

The tests train a small model once (cached in the temp folder, reused by tests/test_browser.py);
MATHNB_TEST_MODEL=DIR uses an existing model directory instead."""
import os, re, signal, subprocess, sys, tempfile, time, uuid
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
import mathnb
from mathnb.data import parse_problem
from conftest import cli, ROOT


def run(args, input=None, timeout=120, **kw):
    return subprocess.run(args, input=input, capture_output=True, text=True, timeout=timeout, **kw)

# --- the app, driven as a person would -------------------------------------------------------

@pytest.fixture(scope='module')
def app(model_dir):
    from mathnb.solver import SolverApp
    return SolverApp(model_dir, seed=0)


def test_app_right_answer(app):
    app.problem.value = '23+45='
    app.solve_button.click()
    text = app.result_text()
    assert text.startswith('23+45=<think>'), text
    assert '23+45 = 68' in text                         # the true value is always shown
    sol = app.solution
    assert text.splitlines()[-1].strip().startswith(f'answer  {sol.answer}')
    assert ('✓ correct' in text) == (sol.answer == '68')
    assert len(sol.probs) == len(sol.tokens) and app.attention_fig is not None
    assert 'mathnb-confidence' in app.tokens_view.value


def test_app_finds_a_problem_it_solves(app):
    "The model gets most 2-digit additions right; the app marks them correct."
    right = 0
    for prompt in ['12+34=', '50+21=', '33+44=', '61+17=', '42+15=']:
        app.problem.value = prompt
        app.solve_button.click()
        right += '✓ correct' in app.result_text()
    assert right >= 3, app.result_text()


@pytest.mark.parametrize('bad,why', [('12a+3', "unexpected 'a' at 2"), ('', 'empty problem'), ('hello', "cannot read 'hello'"),
                                     ('7' * 40 + '+1', 'too long'), ('x' * 1001, 'too long: 1001 characters'),
                                     ('__import__("os").system("ls")', "cannot read")])
def test_app_bad_input(app, bad, why):
    app.problem.value = bad
    app.solve_button.click()                           # never raises
    assert why in app.result_text()
    assert app.solution is None and app.step_select.options == ()


def test_app_random_problem(app):
    before = app.problem.value
    app.random_button.click()
    p = parse_problem(app.problem.value)
    assert app.problem.value != before and p.a < 100 and p.b < 100 and p.op == '+'   # the model's range: up to 2 digits
    assert app.result_text().startswith(p.prompt) and f'= {p.value}' in app.result_text()


def test_app_enter_solves(app):
    "Changing the value (Enter in the text box) solves without a click."
    app.problem.value = '31+27='
    assert app.result_text().startswith('31+27=<think>')


def test_app_max_tokens_cuts_off(app):
    app.max_new_tokens.value = 5
    try:
        app.problem.value = '19+28='
        app.solve_button.click()
        assert 'no answer' in app.result_text() and 'allow more' in app.result_text()
    finally: app.max_new_tokens.value = app.max_new_tokens.max

# --- mathnb-chat -------------------------------------------------------------------------------

def test_chat_piped(model_dir):
    r = run(cli('mathnb-chat') + ['--model', str(model_dir)], input='23+45=\n12a+3\n\n  7 + 5 \nquit\n99+99=\n')
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.search(r'^23\+45=<think>.*<end>$', out, re.M), out
    assert re.search(r'step 1 +\S+ +[✓✗·]', out) and '23+45 = 68' in out
    assert "unexpected 'a' at 2" in out and '7+5=<think>' in out and '7+5 = 12' in out
    assert '99+99' not in out and 'Traceback' not in out + r.stderr


def test_chat_end_of_input(model_dir):
    r = run(cli('mathnb-chat') + ['--model', str(model_dir)], input='12+34=')
    assert r.returncode == 0 and '12+34 = 46' in r.stdout and 'Traceback' not in r.stderr


def test_chat_ctrl_c(model_dir):
    p = subprocess.Popen(cli('mathnb-chat') + ['--model', str(model_dir)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        p.stdin.write('12+34=\n'); p.stdin.flush()
        deadline = time.time() + 120
        while time.time() < deadline:                  # wait until it has answered, so it sits waiting for input
            line = p.stdout.readline()
            if 'answer' in line or not line: break
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None: p.kill(); p.wait(10)
    assert p.returncode == 0 and 'Traceback' not in err, err


def test_chat_bad_model(tmp_path):
    r = run(cli('mathnb-chat') + ['--model', str(tmp_path/'nope')])
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not a model directory' in r.stderr, r.stderr

# --- mathnb-app (serving is tested in tests/test_browser.py) ----------------------------------

def test_app_cli_bad_model(tmp_path):
    r = run(cli('mathnb-app') + ['--model', str(tmp_path/'nope'), '--port', '1'])
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'not a model directory' in r.stderr, r.stderr


def test_app_cli_without_voila(model_dir):
    code = ("import sys; sys.modules['voila'] = None; sys.argv = ['mathnb-app', '--model', sys.argv[1]]; "
            "from mathnb.solver import mathnb_app_cli; mathnb_app_cli()")
    r = run([sys.executable, '-c', code, str(model_dir)])
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'pip install "mathnb[app]"' in r.stderr, r.stderr


def test_app_cli_port_in_use(model_dir):
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); s.listen()
        r = run(cli('mathnb-app') + ['--model', str(model_dir), '--port', str(s.getsockname()[1])])
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'is in use' in r.stderr, r.stderr


def test_no_model_message(monkeypatch):
    import mathnb.model as model
    from mathnb.model import ModelLoadError
    monkeypatch.setattr(model, 'default_model_dir', lambda: None)    # as if no pretrained model were shipped
    with pytest.raises(ModelLoadError, match='mathnb-train'): model.resolve_model_dir()


def test_shipped_model_solves():
    from mathnb.solver import Solver
    from mathnb.model import default_model_dir
    assert default_model_dir() is not None, 'the package ships mathnb/pretrained/add3-cot'
    s = Solver()
    for prob, ans in [('658+189=', '847'), ('23+45=', '68'), ('5+981=', '986'), ('0+0=', '0')]:
        sol = s.solve(prob)
        assert sol.answer == ans and sol.correct and sol.note is None, sol.report()
