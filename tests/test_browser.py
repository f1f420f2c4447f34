"""`mathnb-app` in a real browser: serve the app with Voila on loopback, open it in headless Chromium, solve a problem
(the shipped arithmetic model, and a word-problem model).

Uses the system Chromium (/usr/bin/chromium) through playwright; no browser download. With
MATHNB_SLOW=1 the screenshot is also saved to figures/solver_app.png for the docs."""
import os, shutil, signal, socket, subprocess, sys, time, urllib.error, urllib.request
from contextlib import contextmanager
from pathlib import Path
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from conftest import cli, ROOT

CHROMIUM = Path('/usr/bin/chromium')
ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
        '--disable-component-update', '--disable-sync']


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def wait_http(url: str, proc, timeout: float = 90) -> None:
    "Wait until the server at `url` answers (any HTTP status), or fail if it dies or `timeout` passes."
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None: raise AssertionError(f'mathnb-app exited with status {proc.returncode}')
        try:
            with urllib.request.urlopen(url, timeout=5): return
        except urllib.error.HTTPError: return
        except OSError: time.sleep(0.5)
    raise AssertionError(f'{url} did not answer within {timeout:.0f}s')


@contextmanager
def serve(tmp_path, *args):
    "`mathnb-app --port <free port> ARGS`, killed (with its kernels) on leaving; yields its URL."
    port = free_port()
    log = open(tmp_path/'server.log', 'w')
    proc = subprocess.Popen(cli('mathnb-app') + ['--port', str(port), *map(str, args)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try: wait_http(f'http://127.0.0.1:{port}/voila/static/favicon.ico', proc)   # static: starts no kernel
        except AssertionError as e: raise AssertionError(f"{e}\n{(tmp_path/'server.log').read_text()[-3000:]}") from None
        yield f'http://127.0.0.1:{port}/'
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)        # Voila, and the kernels it started in its session
            try: proc.wait(15)
            except subprocess.TimeoutExpired: os.killpg(proc.pid, signal.SIGKILL); proc.wait(10)
        log.close()


@pytest.fixture
def server(tmp_path):
    "The app on the shipped model."
    with serve(tmp_path) as url: yield url


def test_listens_on_loopback_only(server):
    url = server
    port = int(url.rstrip('/').rsplit(':', 1)[1])
    addrs = {a[4][0] for a in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)} - {'127.0.0.1'}
    for host in addrs:                                   # not reachable on the machine's other addresses
        with socket.socket() as s:
            s.settimeout(2)
            assert s.connect_ex((host, port)) != 0, f'app reachable on {host}'


def test_solve_in_browser(server, tmp_path):
    "Type a problem, click Solve: the shipped model's answer and every step check appear."
    if not CHROMIUM.exists(): pytest.skip(f'{CHROMIUM} not found (apt-get install chromium)')
    from playwright.sync_api import sync_playwright, expect
    from mathnb.solver import Solver
    solver, url = Solver(), server
    shot = tmp_path/'solver_app.png'
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1000, 'height': 900})
            page.goto(url, timeout=90_000)
            box = page.locator('.widget-text input').first      # appears once the kernel has run the app
            box.wait_for(state='visible', timeout=90_000)
            for prompt in ['23+45=', '658+189=']:
                sol = solver.solve(prompt)
                assert sol.correct, sol.report()
                img = page.locator('.widget-output img').first
                old = img.get_attribute('src') if img.count() else None
                box.fill(prompt)
                page.locator('button', has_text='Solve').first.click()
                answer = page.locator('.mathnb-answer').first
                expect(answer).to_contain_text(f'{prompt[:-1]} = {sol.expected}', timeout=60_000)
                expect(answer).to_contain_text('✓ correct')
                steps = page.locator('.mathnb-steps').first
                for st in sol.steps: expect(steps).to_contain_text(st.text)
                assert '✗' not in steps.inner_text()
                expect(img).to_be_visible(timeout=30_000)                      # the attention heatmap, redrawn
                page.wait_for_function('([sel, old]) => { const i = document.querySelector(sel); '
                                       'return i && i.getAttribute("src") !== old; }',
                                       arg=['.widget-output img', old], timeout=30_000)
            page.screenshot(path=str(shot), full_page=True)
        finally: browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get('MATHNB_SLOW') == '1':
        (ROOT/'figures').mkdir(exist_ok=True)
        shutil.copy(shot, ROOT/'figures'/'solver_app.png')


def test_word_problem_in_browser(tmp_path):
    "A word-problem model served by mathnb-app: type a question, see its steps checked and no reference answer."
    if not CHROMIUM.exists(): pytest.skip(f'{CHROMIUM} not found (apt-get install chromium)')
    from playwright.sync_api import sync_playwright, expect
    from test_solver_wordproblem import word_problem_dir, QUESTION
    model = word_problem_dir(tmp_path/'wordproblem', fit=True)
    with serve(tmp_path, '--model', model) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={'width': 1000, 'height': 900})
            page.goto(url, timeout=90_000)
            box = page.locator('.widget-text input').first
            box.wait_for(state='visible', timeout=90_000)
            box.fill(QUESTION)
            page.locator('button', has_text='Solve').first.click()
            answer = page.locator('.mathnb-answer').first
            expect(answer).to_contain_text('no reference answer to check against', timeout=60_000)
            steps = page.locator('.mathnb-steps').first
            for text in ('12*3=36', '✓', '36-5=30', '✗', '36-5 is 31, not 30'): expect(steps).to_contain_text(text)
            expect(page.locator('.widget-output img').first).to_be_visible(timeout=30_000)   # the attention heatmap
            page.screenshot(path=str(tmp_path/'wordproblem_app.png'), full_page=True)
        finally: browser.close()
    assert (tmp_path/'wordproblem_app.png').stat().st_size > 10_000
