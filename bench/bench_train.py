"""Time to accuracy on 3-digit chain-of-thought addition (operands 0-999): one or more `mathnb-train` presets
against a straightforward nanoGPT-style trainer (bench/baseline_nanogpt.py), side by side in one run, plus the
machine's fp32 matmul peak and the share of it that mathnb's training reaches.

    python bench/bench_train.py                                 # add3-cot and the baseline
    python bench/bench_train.py --presets add3-cot add3-fast    # the old and a new preset, and the baseline
    python bench/bench_train.py --skip-baseline
    python bench/bench_train.py --smoke                         # a tiny run that only checks the plumbing

For every trainer it prints the whole-process time (interpreter start to exit, measured around the process),
the training time (the training loop with the validations in it, as each trainer counts it), the steps, and
the ratios against the baseline's whole-process and training times and against the first preset's.
Trainers run one after the other, so run it on a quiet machine; `--smoke` caps the steps and lowers the target.
"""
import argparse, json, subprocess, sys, tempfile, time
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
    "Wall time of the whole process `cmd`, and its stdout."
    t = time.time()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode: sys.exit(f'{" ".join(map(str, cmd[:3]))} ... failed:\n{r.stderr[-2000:]}')
    return time.time() - t, r.stdout

def train_cmd() -> list[str]:
    "The `mathnb-train` console script beside this interpreter, or its function where the script is not installed."
    exe = Path(sys.executable).parent/'mathnb-train'
    if exe.exists(): return [str(exe)]
    return [sys.executable, '-c', 'from mathnb.training import mathnb_train_cli; mathnb_train_cli()']

def train_gflops(cfg:dict) -> float:
    "Matmul GFLOP/s of a mathnb run: 6N per token plus attention, over its training time (36 tokens, mean context 18)."
    from mathnb.model import GPTConfig, count_params
    mc, s, T = GPTConfig(**cfg['model']), cfg['summary'], 36
    flops_per_tok = (6 * count_params(mc, non_embedding=True) + 6 * 2 * mc.n_layer * (T / 2) * mc.n_embd
                     + 6 * mc.n_embd * mc.vocab_size)
    return flops_per_tok * s['steps'] * cfg['train']['batch_size'] * T / s['train_time'] / 1e9

def run_preset(preset:str, a, out:Path, peak:float) -> dict:
    "Train `preset` to the target in its own process; its times, steps and accuracies."
    cmd = train_cmd() + ['--preset', preset, '--target_acc', str(a.target_acc), '--out', str(out), '--quiet',
                         '--overwrite']
    if a.max_steps: cmd += ['--steps', str(a.max_steps)]
    wall, _ = timed(cmd)
    ev, cfg = (json.loads((out/f).read_text()) for f in ('eval.json', 'config.json'))
    s = cfg['summary']
    gflops = train_gflops(cfg)
    print(f"mathnb-train --preset {preset}: {wall:.1f}s whole process, {s['train_time']:.1f}s training, "
          f"{s['steps']} steps, validation exact match {100 * s.get('val_acc', float('nan')):.2f}%, "
          f"test {100 * ev['accuracy']:.2f}% on {ev['n']} held-out problems")
    print(f'  training throughput ~{gflops:.0f} GFLOP/s = {100 * gflops / peak:.0f}% of the fp32 matmul peak')
    print('  by digit cell: ' + ', '.join(f"{k} {100 * v['accuracy']:.1f}% of {v['n']}"
                                         for k, v in ev.get('by_cell', {}).items()))
    return dict(name=f'mathnb-train --preset {preset}', wall=wall, train=s['train_time'], steps=s['steps'],
                acc=ev['accuracy'], n=ev['n'])

def run_baseline(a) -> dict:
    "Train the baseline to the target in its own process; its times, steps and held-out accuracy."
    cmd = [sys.executable, str(Path(__file__).parent/'baseline_nanogpt.py'), '--target-acc', str(a.target_acc),
           '--held-out', a.baseline_held_out]
    if a.max_steps: cmd += ['--max-steps', str(a.max_steps), '--eval-every', str(min(50, a.max_steps))]
    wall, log = timed(cmd)
    b = json.loads(log.strip().splitlines()[-1])
    print(f"baseline nanoGPT-style ({b['params']:,} params): {wall:.1f}s whole process, {b['train_time']:.1f}s "
          f"training ({b['eval_time']:.1f}s of it evaluating, batched), {b['steps']} steps, "
          f"held-out exact match {100 * b['accuracy']:.2f}% on {b['n_eval']} ({b['held_out']})")
    return dict(name='baseline nanoGPT-style (4x128, batch 256, lr 3e-3)', wall=wall, train=b['train_time'],
                steps=b['steps'], acc=b['accuracy'], n=b['n_eval'])

def table(rows:list[dict], base:dict|None) -> str:
    "A Markdown table: times, steps, accuracy and the ratios against the baseline and the first preset."
    first = rows[0]
    head = ['trainer', 'steps', 'whole process', 'training', 'held-out exact match', '/ first preset (whole, training)']
    if base: head += ['/ baseline whole process', '/ baseline training']
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows + ([base] if base else []):
        vs_first = f"{r['wall'] / first['wall']:.2f}, {r['train'] / first['train']:.2f}"
        cells = [r['name'], str(r['steps']), f"{r['wall']:.1f} s", f"{r['train']:.1f} s",
                 f"{100 * r['acc']:.2f}% of {r['n']}", vs_first]
        if base: cells += [f"{r['wall'] / base['wall']:.2f}", f"{r['train'] / base['train']:.2f}"]
        lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--presets', nargs='+', default=['add3-cot'], help='mathnb-train presets, the reference first')
    ap.add_argument('--target-acc', type=float, default=0.99)
    ap.add_argument('--skip-baseline', action='store_true')
    ap.add_argument('--baseline-held-out', choices=('uniform', 'mixed'), default='uniform',
                    help="the baseline's held-out problems (mathnb's validation split is drawn like its training)")
    ap.add_argument('--max-steps', type=int, default=None, help='cap every trainer at this many steps')
    ap.add_argument('--smoke', action='store_true', help='a tiny run: --max-steps 20 --target-acc 0.05')
    ap.add_argument('--out', default=None, help='folder for the mathnb model directories (default: a temporary one)')
    a = ap.parse_args()
    if a.smoke: a.max_steps, a.target_acc = a.max_steps or 20, 0.05
    peak = matmul_peak()
    print(f'fp32 matmul peak: {peak:.0f} GFLOP/s ({torch.get_num_threads()} threads)')
    with tempfile.TemporaryDirectory() as d:
        root = Path(a.out or d)
        rows = [run_preset(p, a, root/p, peak) for p in a.presets]
    base = None if a.skip_baseline else run_baseline(a)
    print(f'\nTime to {100 * a.target_acc:g}% (ratios below 1: faster than the reference)\n')
    print(table(rows, base))

if __name__ == '__main__': main()
