"""Exact match of a length-generalization model (default: the shipped add-long) by operand length, on fresh problems.

    python bench/bench_lengthgen.py [--model DIR] [--n 500] [--lengths 10,20,30,40] [--seed 2024] [--out FILE.json]

Both operands of a length-d problem have exactly d digits; the problems are drawn with `--seed` (none of them is in
the model's training distribution beyond 10 digits). Prints a table and writes the numbers as JSON."""
import argparse, json, random, time
from pathlib import Path
from mathnb.model import load_model, resolve_model_dir
from mathnb.data import load_task
from mathnb.evaluation import evaluate


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default=None)
    ap.add_argument('--n', type=int, default=500)
    ap.add_argument('--lengths', default='10,20,30,40')
    ap.add_argument('--seed', type=int, default=2024)
    ap.add_argument('--out', default=None)
    a = ap.parse_args()
    d = resolve_model_dir(a.model or str(Path(__file__).parent.parent/'mathnb'/'pretrained'/'add-long'))
    net, tok = load_model(d)
    task, rng, out = load_task(d), random.Random(a.seed), {}
    print(f'{d}: {a.n} problems per length, seed {a.seed}\n\n| digits | exact match | 95% interval | seconds |\n|---|---|---|---|')
    for n in map(int, a.lengths.split(',')):
        rows = []
        for _ in range(a.n):
            x, y = (rng.randrange(10**(n - 1), 10**n) for _ in range(2))
            rows.append(task.pose_row(dict(prompt=f'{x}+{y}=', answer=str(x + y))))
        t0 = time.time()
        s = evaluate(net, tok, task, rows, batch_size=250).summary
        k, m = s['correct'], s['n']
        lo = _wilson(k, m)
        out[n] = dict(accuracy=s['accuracy'], correct=k, n=m, ci95=lo, seconds=round(time.time() - t0, 1))
        print(f'| {n} | {100 * s["accuracy"]:.1f}% ({k}/{m}) | {100 * lo[0]:.1f}-{100 * lo[1]:.1f}% | {out[n]["seconds"]} |')
    if a.out: Path(a.out).write_text(json.dumps(dict(model=str(d), seed=a.seed, by_digits=out), indent=1))


def _wilson(k:int, n:int, z:float=1.96) -> tuple[float, float]:
    "The Wilson score interval of k successes in n trials."
    p, d = k / n, 1 + z * z / n
    c, h = (p + z * z / (2 * n)) / d, z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / d
    return max(0.0, c - h), min(1.0, c + h)


if __name__ == '__main__': main()
