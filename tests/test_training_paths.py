"""The GPU paths of the training loop, exercised on a CPU with a tiny config: bf16 autocast, activation checkpointing and
torch.compile each train, and each gives the run that plain fp32 eager training gives (exactly, or within precision)."""
import torch
import pytest
from mathnb.training import TrainConfig, TaskData, train, memory_estimate
from mathnb.model import GPT, get_config
from mathnb.tokenizer import CharTokenizer
from mathnb.data import ArithmeticTask

TOK, TASK = CharTokenizer(), ArithmeticTask('add', '2')


def run(**kw):
    cfg = TrainConfig(steps=4, batch_size=8, n_val=8, n_test=0, eval_every=4, warmup=1, progress=False, device='cpu',
                      **kw)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        m = GPT(get_config('tiny', TOK.vocab_size, n_layer=2, n_embd=32, n_head=2))
    s = train(m, TaskData.from_config(TASK, TOK, cfg), cfg)
    return m, s


@pytest.fixture(scope='module')
def plain(): return run()


def test_grad_checkpointing_gives_the_same_weights(plain):
    m, s = run(grad_checkpointing=True)
    assert all(torch.equal(a, b) for a, b in zip(plain[0].state_dict().values(), m.state_dict().values()))
    assert m.grad_checkpointing                             # the run switched it on
    est = memory_estimate(m, TrainConfig(batch_size=8, grad_checkpointing=True), 20)
    assert est['activations'] < memory_estimate(m, TrainConfig(batch_size=8), 20)['activations']


def test_bf16_autocast_trains_close_to_fp32(plain):
    m, s = run(dtype='bf16')
    assert abs(s['val_loss'] - plain[1]['val_loss']) < 0.05, (s, plain[1])
    assert m.lm_head.weight.dtype == torch.float32          # master weights stay fp32


def test_compile_trains_like_eager(plain):
    m, s = run(compile=True)
    assert abs(s['val_loss'] - plain[1]['val_loss']) < 1e-3, (s, plain[1])
