"Shared helpers: the console scripts of this environment, and a small model trained once and cached."
import os, subprocess, sys, tempfile, uuid
from pathlib import Path
import pytest

os.environ.setdefault('MPLBACKEND', 'Agg')
ROOT = Path(__file__).resolve().parents[1]
MODULES = {'mathnb-data': 'data', 'mathnb-train': 'training', 'mathnb-eval': 'evaluation', 'mathnb-solve': 'evaluation',
           'mathnb-chat': 'solver', 'mathnb-app': 'solver', 'mathnb-probe': 'probing', 'mathnb-bench': 'bench', 'mathnb-distill': 'distillation', 'mathnb-lora': 'lora',
           'mathnb-tokenizer': 'pretraining', 'mathnb-corpus': 'pretraining',
           'mathnb-symbolic-check': 'symbolic', 'mathnb-sweep': 'sweep', 'mathnb-quantize': 'quantize'}


def cli(name:str) -> list[str]:
    "The console script `name` of this environment (found beside the interpreter, so no venv need be activated)."
    exe = Path(sys.executable).parent/name
    if exe.exists(): return [str(exe)]
    fn = name.replace('-', '_') + '_cli'
    return [sys.executable, '-c', f'from mathnb.{MODULES.get(name, "evaluation")} import {fn}; {fn}()']


def run_cli(name:str, *args, check:bool=False, timeout:int=300, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONIOENCODING': 'utf-8', **kw.pop('env', {})}
    r = subprocess.run(cli(name) + [str(a) for a in args], capture_output=True, text=True, encoding='utf-8', env=env,
                       timeout=timeout, **kw)
    if check: assert r.returncode == 0, r.stderr
    return r


def assert_user_error(r, *contains) -> str:
    "Exit status 2, one line on stderr, no traceback."
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    err = r.stderr.strip()
    assert err.count('\n') == 0 and 'Traceback' not in err, err
    for c in contains: assert c in err, (c, err)
    return err


def small_model() -> Path:
    "A small CoT addition model (operands up to 2 digits), trained on first use and cached under the temp folder."
    if os.environ.get('MATHNB_TEST_MODEL'): return Path(os.environ['MATHNB_TEST_MODEL'])
    import mathnb, torch
    from mathnb.model import GPT, get_config, save_model, load_model, ModelLoadError
    from mathnb.tokenizer import CharTokenizer
    from mathnb.data import ArithmeticTask, write_jsonl
    from mathnb.training import TrainConfig, TaskData, train
    d = Path(tempfile.gettempdir())/'mathnb-test-models'/f'add2-cot-{mathnb.__version__}-v2'
    try:
        load_model(d)
        return d
    except ModelLoadError: pass
    tok, task = CharTokenizer(), ArithmeticTask('add', '2')
    cfg = TrainConfig(steps=300, batch_size=128, n_val=100, n_test=100, eval_every=300, progress=False)
    data = TaskData.from_config(task, tok, cfg)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = GPT(get_config('tiny', tok.vocab_size, pos='learned'))
    train(m, data, cfg)
    tmp = d.with_name(f'{d.name}.{uuid.uuid4().hex}')
    save_model(m, tok, tmp, task=task.to_dict())
    write_jsonl(data.test, tmp/'test.jsonl')
    try: os.replace(tmp, d)
    except OSError: pass                      # another process cached it first
    return d


@pytest.fixture(scope='session')
def model_dir() -> Path: return small_model()


def fit_to(model, ids:list[int], steps:int=400):
    "Fit `model` to the one sequence `ids` (a few seconds on one thread; a tiny model is slower on more)."
    import torch
    x, threads = torch.tensor([ids]), torch.get_num_threads()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    torch.set_num_threads(1)
    try:
        for _ in range(steps):
            loss = torch.nn.functional.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[0, 1:])
            opt.zero_grad()
            loss.backward()
            opt.step()
            if loss.item() < 0.005: break
    finally: torch.set_num_threads(threads)
