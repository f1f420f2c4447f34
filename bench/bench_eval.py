"""How much batching and the KV cache speed up evaluation.

    python bench/bench_eval.py [--model DIR] [--data F.jsonl] [--n 2000] [--sample 100] [--batch-size 2048] [--repeat 3]

Times greedy generation on held-out problems (--data, else MODEL/test.jsonl, else the model's task's test split
regenerated from its seed; the default model is the shipped one) four ways (checking that
they write identical completions): batched with the KV cache (what `evaluate` does), batched without
it, and one problem at a time with and without it. The one-at-a-time ways are timed on the first
`--sample` problems and extrapolated linearly to `--n`, which the table says. Also times the whole
of `evaluate` (generation, teacher-forced token accuracy and the chain-of-thought analysis).
Trains nothing."""
import argparse, sys, time
from pathlib import Path
import torch
from mathnb.core import UserError
from mathnb.model import load_model, get_device, default_model_dir
from mathnb.data import load_task
from mathnb.evaluation import evaluate, read_eval_rows

def _timed(fn, repeat:int=1):
    "The result of `fn()` and the best of `repeat` timings (the least disturbed by other work on the machine)."
    best = float('inf')
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return out, best

def _one_at_a_time(model, tok, enc, budget, use_cache):
    return [model.generate([e], budget, end_id=tok.end_id, pad_id=tok.pad_id, use_cache=use_cache)[0] for e in enc]

def _batched(model, tok, enc, budget, use_cache, bs):
    return [o for i in range(0, len(enc), bs) for o in model.generate(enc[i:i + bs], budget, end_id=tok.end_id, pad_id=tok.pad_id, use_cache=use_cache)]

def bench(model:str, n:int=2000, sample:int=100, batch_size:int=2048, device:str='cpu', repeat:int=3, data=None) -> dict:
    "Time batched KV-cached evaluation against one-at-a-time uncached generation; prints a table."
    task = load_task(model)
    net, tok = load_model(model, get_device(device))
    data = data or (Path(model)/'test.jsonl' if (Path(model)/'test.jsonl').exists() else None)
    rows = read_eval_rows(data, tok, net.config.block_size)[:n] if data else task.splits(0, 0, n)['test']
    n, sample = len(rows), min(sample, len(rows))
    enc = [tok.encode(r['prompt']) for r in rows]
    budget = min(task.max_new_tokens(tok, rows), net.config.block_size - max(map(len, enc)))
    print(f'{model}: {net.num_params():,} parameters, {task!r}; {n} held-out problems, up to {budget} new tokens; '
          f'device {device}, {torch.get_num_threads()} threads; best of {repeat} timings')
    _batched(net, tok, enc[:64], budget, True, batch_size)                     # warm up
    runs = {}
    runs['batched, KV cache'] = (n,) + _timed(lambda: _batched(net, tok, enc, budget, True, batch_size), repeat)
    runs['batched, no cache'] = (n,) + _timed(lambda: _batched(net, tok, enc, budget, False, batch_size), repeat)
    runs['one at a time, KV cache'] = (sample,) + _timed(lambda: _one_at_a_time(net, tok, enc[:sample], budget, True), repeat)
    runs['one at a time, no cache'] = (sample,) + _timed(lambda: _one_at_a_time(net, tok, enc[:sample], budget, False), repeat)
    ref = runs['batched, KV cache'][1][:sample]
    same = all(r[1][:sample] == ref for r in runs.values())
    res, t_eval = _timed(lambda: evaluate(net, tok, task, rows, batch_size), repeat)
    runs['evaluate() (all of it)'] = (n, None, t_eval)
    base = runs['one at a time, no cache'][2] / sample * n
    print(f"\n{'method':<26}{'timed on':>10}{'seconds':>10}{f'est. for {n}':>15}{'problems/s':>12}{'speedup':>9}")
    for name, (k, _, t) in runs.items():
        est = t / k * n
        print(f"{name:<26}{k:>10}{t:>10.2f}{est:>15.1f}{k / t:>12.0f}{base / est:>8.1f}x{' (extrapolated)' if k < n else ''}")
    print(f"\ncompletions identical across methods on the first {sample} problems: {same}; "
          f"evaluate: exact match {100 * res.summary['accuracy']:.2f}%")
    return {k: dict(timed_on=v[0], seconds=v[2], est_seconds=v[2] / v[0] * n) for k, v in runs.items()}

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default=str(default_model_dir()), help='model directory (default: the shipped model)')
    ap.add_argument('--data', default=None, help='JSONL rows with prompt and answer (default: see above)')
    ap.add_argument('--n', type=int, default=2000, help='held-out problems to evaluate')
    ap.add_argument('--sample', type=int, default=100, help='problems timed one at a time (extrapolated to N)')
    ap.add_argument('--batch-size', type=int, default=2048, help='batch size of the batched ways')
    ap.add_argument('--device', default='cpu', help='cpu, cuda, mps or auto')
    ap.add_argument('--threads', type=int, default=None, help='torch CPU threads (default: torch\'s own choice)')
    ap.add_argument('--repeat', type=int, default=3, help='time each way this many times and keep the best')
    a = ap.parse_args()
    if a.threads: torch.set_num_threads(a.threads)
    try: bench(a.model, a.n, a.sample, a.batch_size, a.device, a.repeat, a.data)
    except UserError as e: sys.exit(f'bench_eval.py: error: {e}')

if __name__ == '__main__': main()
