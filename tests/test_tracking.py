"""Experiment tracking that really runs: `TrainConfig(log_to=...)` writes TensorBoard event files and an
offline W&B run inside the run folder, with the same numbers as `metrics.jsonl`, and closes them on errors
too."""
import json, math, tempfile, time
from pathlib import Path
import pytest, torch
from mathnb.data import ArithmeticTask
from mathnb.model import GPT, get_config
from mathnb.tokenizer import CharTokenizer
from mathnb.training import TaskData, TrainConfig, next_token_loss, read_metrics, train
from conftest import run_cli, assert_user_error

STEPS, LOG_EVERY = 20, 5


def tiny_train(out, log_to, loss_fn=None) -> dict:
    "Train a one-layer model on 2-digit addition for `STEPS` steps (a second or two on a CPU)."
    tok, task = CharTokenizer(), ArithmeticTask('add', '2')
    cfg = TrainConfig(steps=STEPS, batch_size=32, n_val=16, n_test=16, eval_every=10, log_every=LOG_EVERY,
                      ckpt_every=STEPS, progress=False, device='cpu', log_to=log_to)
    torch.manual_seed(0)
    model = GPT(get_config('tiny', tok.vocab_size, n_layer=1, n_embd=64))
    return train(model, TaskData.from_config(task, tok, cfg), cfg, out=out, loss_fn=loss_fn)


def numbers(row:dict) -> dict:
    return {k: v for k, v in row.items() if k != 'step' and type(v) in (int, float) and math.isfinite(v)}


def tb_scalars(folder) -> dict:
    "{tag: {step: value}} of the TensorBoard event files in `folder`, read with TensorBoard's own reader."
    ea_mod = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    ea = ea_mod.EventAccumulator(str(folder), size_guidance={ea_mod.SCALARS: 0}).Reload()
    return {tag: {e.step: e.value for e in ea.Scalars(tag)} for tag in ea.Tags()['scalars']}


def test_tensorboard_events_match_metrics(tmp_path):
    pytest.importorskip('tensorboard', reason='TensorBoard is not installed (pip install "mathnb[tracking]")')
    out = tmp_path/'run'
    tiny_train(out, ('tensorboard',))
    rows = read_metrics(out)
    assert [r['step'] for r in rows] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    assert any('val_acc' in r for r in rows)
    got = tb_scalars(out/'tb')
    assert set(got) == {k for r in rows for k in numbers(r)}
    for r in rows:
        for k, v in numbers(r).items():
            assert got[k][r['step']] == pytest.approx(v, rel=1e-6, abs=1e-6), (k, r['step'])
    assert sorted(p.name for p in out.iterdir()) == ['checkpoint', 'metrics.jsonl', 'tb']


def failing_loss(at:int=13):
    "`next_token_loss` raising on its `at`-th call, as a data loader or a device that fails mid-run would."
    calls = []
    def loss_fn(model, batch):
        calls.append(1)
        if len(calls) == at: raise RuntimeError('the data went away')
        return next_token_loss(model, batch)
    return loss_fn


def test_tensorboard_closed_when_training_fails(tmp_path, monkeypatch):
    "A run that dies at step 13 closes its writer (in `train`'s finally), so its steps 5 and 10 are on disk."
    pytest.importorskip('tensorboard', reason='TensorBoard is not installed (pip install "mathnb[tracking]")')
    from torch.utils.tensorboard import SummaryWriter
    closed, close = [], SummaryWriter.close
    monkeypatch.setattr(SummaryWriter, 'close', lambda self: closed.append(self.log_dir) or close(self))
    with pytest.raises(RuntimeError, match='the data went away'):
        tiny_train(tmp_path/'run', ('tensorboard',), loss_fn=failing_loss())
    assert closed == [str(tmp_path/'run'/'tb')]
    got = tb_scalars(tmp_path/'run'/'tb')
    assert sorted(got['loss']) == [5, 10]
    assert got['loss'][10] == pytest.approx(read_metrics(tmp_path/'run')[1]['loss'], rel=1e-6)


def test_tensorboard_without_output_folder(tmp_path, monkeypatch):
    "No run folder: the events go to a temporary folder named in a warning, and nothing lands in the CWD."
    pytest.importorskip('tensorboard', reason='TensorBoard is not installed (pip install "mathnb[tracking]")')
    cwd, tmp = tmp_path/'cwd', tmp_path/'tmp'
    cwd.mkdir()
    tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, 'tempdir', str(tmp))
    with pytest.warns(UserWarning, match='no output folder: TensorBoard logs go to') as w:
        tiny_train(None, ('tensorboard',))
    assert list(cwd.iterdir()) == []
    [folder] = list(tmp.iterdir())
    assert str(folder) in str([x.message for x in w])
    assert sorted(tb_scalars(folder/'tb')['loss']) == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))


def wandb_records(path) -> list:
    "The protobuf records of a `.wandb` file: a LevelDB-style log of 32 KiB blocks after a 7-byte header."
    pb = pytest.importorskip('wandb.proto.wandb_internal_pb2')
    data, block = Path(path).read_bytes(), 32768
    assert data[:4] == b':W&B'
    pos, buf, out = 7, b'', []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:                                    # a block's tail too short for a header is padding
            pos += left
            continue
        n, kind = int.from_bytes(data[pos + 4:pos + 6], 'little'), data[pos + 6]
        buf += data[pos + 7:pos + 7 + n]
        pos += 7 + n
        if kind in (1, 4):                              # a full record, or the last piece of one
            rec = pb.Record()
            rec.ParseFromString(buf)
            out.append(rec)
            buf = b''
    return out


@pytest.fixture
def wandb_offline(tmp_path, monkeypatch):
    "W&B offline, with its home, config and cache folders under `tmp_path`: nothing reaches the network."
    pytest.importorskip('wandb', reason='wandb is not installed (pip install "mathnb[tracking]")')
    for k in ('WANDB_API_KEY', 'WANDB_BASE_URL', 'WANDB_PROJECT', 'WANDB_ENTITY', 'WANDB_RUN_ID'):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path/'home'
    env = dict(WANDB_MODE='offline', WANDB_SILENT='true', WANDB_DIR=home/'wandb-dir', HOME=home,
               WANDB_CONFIG_DIR=home/'config', WANDB_CACHE_DIR=home/'cache', WANDB_DATA_DIR=home/'data')
    for k, v in env.items(): monkeypatch.setenv(k, str(v))
    return home


def kind(rec) -> str: return rec.WhichOneof('record_type')


def wandb_run(out, wait:float=30) -> list:
    """The records of the one offline W&B run in run folder `out`, once its `exit` record is on disk.
    wandb-core writes the file asynchronously: `finish()` sends the exit record, and the file has it a moment
    later; a run that nobody finished gets it only at interpreter exit, so the wait would time out."""
    [run_dir] = list((Path(out)/'wandb').glob('offline-run-*'))
    [log] = list(run_dir.glob('run-*.wandb'))
    deadline = time.time() + wait
    recs = wandb_records(log)
    while 'exit' not in [kind(r) for r in recs] and time.time() < deadline:
        time.sleep(0.2)
        recs = wandb_records(log)
    return recs


def test_wandb_offline_run_in_run_folder(tmp_path, wandb_offline):
    out = tmp_path/'run'
    tiny_train(out, ('wandb',))
    recs = wandb_run(out)
    assert 'exit' in [kind(r) for r in recs]              # finish() ran: the run is complete
    [run] = [r.run for r in recs if kind(r) == 'run']
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config['steps'] == STEPS and config['log_to'] == ['wandb'], config
    assert run.display_name == 'run' and run.project == 'mathnb'
    history = {r.history.step.num: {'.'.join(i.nested_key) or i.key: json.loads(i.value_json)
                                    for i in r.history.item} for r in recs if kind(r) == 'history'}
    rows = read_metrics(out)
    assert sorted(history) == [r['step'] for r in rows]
    for r in rows:
        for k, v in numbers(r).items():
            assert history[r['step']][k] == pytest.approx(v, rel=1e-9), (k, r['step'])
    assert not list(wandb_offline.rglob('*.wandb'))      # the run is in the run folder, not in WANDB_DIR


def test_wandb_finished_when_training_fails(tmp_path, wandb_offline):
    with pytest.raises(RuntimeError, match='the data went away'):
        tiny_train(tmp_path/'run', ('wandb',), loss_fn=failing_loss())
    recs = wandb_run(tmp_path/'run')
    assert 'exit' in [kind(r) for r in recs]
    assert sorted(r.history.step.num for r in recs if kind(r) == 'history') == [5, 10]


def test_unknown_logger_refused_by_the_cli(tmp_path):
    "`TrainConfig` refuses an unknown tracker (tested in the notebook); the CLI says so in one line, status 2"
    r = run_cli('mathnb-train', '--steps', 1, '--out', tmp_path/'run', '--set', 'log_to=mlflow', timeout=120)
    assert_user_error(r, "unknown logger(s) ['mlflow']")
    assert not (tmp_path/'run'/'metrics.jsonl').exists()
