"""The figures the library writes are byte-for-byte reproducible: the same inputs give the same PNG file.

A reader's Run All regenerates the committed figures in `figures/`; a rerun must not rewrite them with new bytes."""
import json
import numpy as np, pytest, torch
from mathnb.model import load_model
from mathnb.probing import model_task, probe_dataset, probe_report, sample_problems, torch_threads


def pngs(folder) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.glob('*.png'))}


@pytest.fixture(scope='module')
def probed(model_dir, tmp_path_factory):
    "The probing report of the small test model, written twice."
    net, tok = load_model(model_dir)
    task, outs = model_task(model_dir), []
    for run in range(2):
        out = tmp_path_factory.mktemp(f'probe{run}')
        with torch.no_grad(): probe_report(net, tok, task, n=32, seed=0, out=out)
        outs.append(pngs(out))
    return outs


def test_probe_figures_are_reproducible(probed):
    first, again = probed
    assert sorted(first) == ['attention.png', 'faithfulness.png', 'patching.png', 'probes.png']
    for name in first: assert first[name] == again[name], f'{name} differs between two identical runs'


def test_probe_figures_carry_no_version_stamp(probed):
    for name, data in probed[0].items():
        assert data[:8] == b'\x89PNG\r\n\x1a\n' and b'Matplotlib' not in data, name


def test_probed_activations_do_not_depend_on_threads(model_dir):
    "What the probes are fitted on is bitwise the same on one torch thread or two."
    net, tok = load_model(model_dir)
    probs = sample_problems(32, 2, seed=0)
    acts = []
    for threads in (1, 2):
        with torch_threads(threads), torch.no_grad(): acts.append(probe_dataset(net, tok, probs)['X'])
    for n, by_var in acts[0].items():
        for v, by_pos in by_var.items():
            for k, x in by_pos.items(): assert np.array_equal(x, acts[1][n][v][k]), (n, v, k)


def test_training_curves_are_reproducible(tmp_path):
    from mathnb.training import save_curves
    rows = [dict(step=s, loss=3 / (s + 1), val_loss=3.2 / (s + 1), val_acc=s / 40) for s in range(0, 41, 10)]
    (tmp_path/'metrics.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    first = [p.read_bytes() for p in save_curves(tmp_path)]
    assert first == [p.read_bytes() for p in save_curves(tmp_path)]


def test_distillation_and_lora_plots_are_reproducible(tmp_path):
    from mathnb.distillation import plot_distillation
    from mathnb.lora import plot_lora
    runs = [dict(n_train=n, method=m, seed=s, curve=[(0, 0.0), (50, 0.1 * s + 0.2), (100, 0.5)])
            for n in (None, 300) for m in ('scratch', 'KD fkl') for s in (0, 1)]
    rows = [dict(method='base', r=None, trainable=0, sub=0.0, add=1.0),
            dict(method='LoRA attn', r=4, trainable=8192, sub=0.1, add=0.2),
            dict(method='full', r=None, trainable=408192, sub=0.3, add=0.0)]
    import matplotlib.pyplot as plt
    for draw, name in ((lambda p: plot_distillation(runs, p), 'distillation.png'), (lambda p: plot_lora(rows, p), 'lora.png')):
        plt.close(draw(tmp_path/'a'/name))
        plt.close(draw(tmp_path/'b'/name))
        assert (tmp_path/'a'/name).read_bytes() == (tmp_path/'b'/name).read_bytes(), name
