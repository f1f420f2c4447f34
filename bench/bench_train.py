"""Time to accuracy on 3-digit chain-of-thought addition (operands 0-999): `mathnb-train` against a straightforward
nanoGPT-style trainer (bench/baseline_nanogpt.py), side by side in one run, plus the machine's fp32
matmul peak and the share of it that mathnb's training reaches.

    python bench/bench_train.py                 # both trainers (the baseline takes several minutes)
    python bench/bench_train.py --skip-baseline
"""
import argparse, json, os, re, subprocess, sys, tempfile, time
from pathlib import Path
import torch

def matmul_peak(n=1024, reps=20) -> float:
    "fp32 matmul GFLOP/s on this machine (best of a few runs)."
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3): a @ b
    best = float('inf')
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps): a @ b
        best = min(best, (time.perf_counter() - t) / reps)
    return 2 * n**3 / best / 1e9

def timed(cmd) -> tuple[float, str]:
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: sys.exit(f'{cmd[0]} failed:\n{r.stderr[-2000:]}')
    return time.time() - t, r.stdout

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--target-acc', type=float, default=0.99)
    ap.add_argument('--skip-baseline', action='store_true')
    ap.add_argument('--out', default=None, help='model directory for the mathnb run (default: a temporary one)')
    a = ap.parse_args()
    peak = matmul_peak()
    print(f'fp32 matmul peak: {peak:.0f} GFLOP/s ({torch.get_num_threads()} threads)')
    with tempfile.TemporaryDirectory() as d:
        out = a.out or str(Path(d)/'add3')
        exe = str(Path(sys.executable).parent/'mathnb-train')
        wall, log = timed([exe, '--preset', 'add3-cot', '--target-acc', str(a.target_acc), '--out', out, '--quiet'])
        ev = json.loads((Path(out)/'eval.json').read_text())
        cfg = json.loads((Path(out)/'config.json').read_text())
        s = cfg['summary']
        from mathnb.model import GPTConfig, count_params
        mc = GPTConfig(**cfg['model'])
        by_cell = ev.get('by_cell', {})
        N = count_params(mc, non_embedding=True)
        # matmul FLOPs per input token: 6N (forward + backward) + attention (6 * 2 * n_layer * T * d, T ~ 36 avg context / 2)
        T = 36
        flops_per_tok = 6 * N + 6 * 2 * mc.n_layer * (T / 2) * mc.n_embd + 6 * mc.n_embd * mc.vocab_size
        tokens_in = s['steps'] * cfg['train']['batch_size'] * T
        gflops = flops_per_tok * tokens_in / s['train_time'] / 1e9
    print(f"mathnb-train add3-cot: {wall:.1f}s whole process, {s['train_time']:.1f}s training, {s['steps']} steps, "
          f"test exact match {100 * ev['accuracy']:.2f}% on {ev['n']} held-out problems")
    print(f'  training throughput ~{gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% of the fp32 matmul peak')
    print('  by digit cell: ' + ', '.join(f"{k} {100 * v['accuracy']:.1f}% of {v['n']}" for k, v in by_cell.items()))
    rows = [('mathnb-train --preset add3-cot', wall, ev['accuracy'])]
    if not a.skip_baseline:
        bwall, blog = timed([sys.executable, str(Path(__file__).parent/'baseline_nanogpt.py'), '--target-acc', str(a.target_acc)])
        b = json.loads(blog.strip().splitlines()[-1])
        print(f"baseline nanoGPT-style ({b['params']:,} params): {bwall:.1f}s whole process ({b['eval_time']:.0f}s of it evaluating), "
              f"{b['steps']} steps, held-out acc {100 * b['accuracy']:.2f}%")
        rows.append(('baseline (4x128, batch 256, lr 3e-3)', bwall, b['accuracy']))
        print(f'speedup: {bwall / wall:.1f}x (whole process); mathnb needs {wall / bwall:.2f} of the baseline\'s time; '
              f'{(bwall - b["eval_time"]) / wall:.1f}x against the baseline without its evaluation time')
    print('\n| trainer | wall time to target | accuracy |\n|---|---|---|')
    for name, w, acc in rows: print(f'| {name} | {w:.0f} s | {100 * acc:.2f}% |')

if __name__ == '__main__': main()
