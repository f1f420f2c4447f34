"""A straightforward nanoGPT-style trainer for 3-digit chain-of-thought addition: the baseline that
`bench_train.py` compares `mathnb-train` with. It does not import mathnb.

4 layers x 128 wide (0.8M parameters), learned positions, GELU, batch 256, AdamW lr 3e-3 with a short
warmup, fresh random problems every step, loss on the answer tokens, and every `--eval-every` steps a
batched greedy evaluation on held-out problems until `--target-acc` is reached. The evaluation groups
the problems by prompt length (so no padding is needed), keeps a KV cache (`--no-cache`: recompute the
whole prefix for every token, as nanoGPT's `generate` does), and stops once every row has written its
end token.

The data is written here from scratch and follows the default `add3-cot` task: `a+b=` then
`<think>` with one step per digit from the right (`7+9=16 2+0+1=3`), `</think>`, the sum and `<end>`.
Training operands are drawn as `add3-cot` draws them (half the problems pick a digit count 1-3 first,
half are uniform over 0-999); held-out problems are uniform over 0-999 x 0-999 (`--held-out uniform`),
or drawn like the training ones (`--held-out mixed`, as mathnb's own validation split is).

The last line printed is JSON: `train_time` is the training loop (steps and the evaluations in it, as
mathnb's `train_time` counts), `eval_time` the evaluations' share of it, and `wall_time` the whole
process from interpreter start to the end, imports included.
"""
import time
T_START = time.time()                                   # before the heavy imports: wall_time is the whole process
import argparse, json, random, re
import torch, torch.nn as nn, torch.nn.functional as F

# ---- data: a character tokenizer and the chain-of-thought format --------------------------------------------------
SPECIALS, CHARS = ['<pad>', '<end>', '<think>', '</think>'], '0123456789+= '
ITOS = SPECIALS + list(CHARS)
STOI = {s: i for i, s in enumerate(ITOS)}
PAD, END = STOI['<pad>'], STOI['<end>']
_TOKEN = re.compile('|'.join(re.escape(s) for s in SPECIALS) + '|.')

def encode(text): return [STOI[t] for t in _TOKEN.findall(text)]
def decode(ids): return ''.join(ITOS[i] for i in ids)

def cot_target(a, b):
    "`<think>` one step per digit from the right, with the carry written as `+1`, `</think>` the sum `<end>`."
    ra, rb, carry, steps = str(a)[::-1], str(b)[::-1], 0, []
    for i in range(max(len(ra), len(rb))):
        x, y = int(ra[i]) if i < len(ra) else 0, int(rb[i]) if i < len(rb) else 0
        s = x + y + carry
        steps.append(f'{x}+{y}+1={s}' if carry else f'{x}+{y}={s}')
        carry = s // 10
    return f"<think>{' '.join(steps)}</think>{a + b}<end>"

def operand(rng, how):
    if how == 'uniform': return rng.randrange(1000)
    n = rng.randint(1, 3)                               # 'balanced': a digit count first, then a number with it
    return rng.randrange(10) if n == 1 else rng.randrange(10**(n - 1), 10**n)

def problem(rng, how='mixed'):
    "Operands (a, b): `mixed` picks balanced or uniform for each problem, as the add3-cot task does."
    how = rng.choice(('balanced', 'uniform')) if how == 'mixed' else how
    return operand(rng, how), operand(rng, how)

def answer_of(completion):
    "The final answer of a completion: the text between `</think>` and `<end>`; None when it has no `</think>`."
    body = completion.split('<end>', 1)[0]
    return body.split('</think>', 1)[1].strip() if body.count('<think>') == 1 and '</think>' in body else None

# ---- model -------------------------------------------------------------------------------------------------------
class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.ln1, self.ln2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    def forward(self, x, cache=None):
        "`cache`: None, or a list with this block's keys and values so far (then `x` is the prompt, or one token)."
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)  # (B, nh, T, hs)
        if cache is not None:
            if cache: k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1)   # one new token sees every cached one
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))

class GPT(nn.Module):
    def __init__(self, V, T=48, L=4, d=128, h=4):
        super().__init__()
        self.T, self.wte, self.wpe = T, nn.Embedding(V, d), nn.Embedding(T, d)
        self.blocks, self.ln = nn.ModuleList(Block(d, h) for _ in range(L)), nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        self.apply(lambda m: nn.init.normal_(m.weight, 0, 0.02) if isinstance(m, (nn.Linear, nn.Embedding)) else None)
    def forward(self, idx, caches=None, start=0):
        x = self.wte(idx) + self.wpe(torch.arange(start, start + idx.shape[1]))
        for i, b in enumerate(self.blocks): x = b(x, caches[i] if caches else None)
        return self.head(self.ln(x))

@torch.no_grad()
def generate(model, prompts, max_new=40, cache=True):
    "Greedy completions of prompts of one token length, as a batch, with a KV cache unless `cache=False`."
    x = torch.tensor([encode(p) for p in prompts])
    plen, done = x.shape[1], torch.zeros(len(prompts), dtype=torch.bool)
    caches = [[] for _ in model.blocks] if cache else None
    logits = model(x, caches)
    for t in range(plen, min(plen + max_new, model.T)):
        nxt = logits[:, -1].argmax(-1).masked_fill(done, PAD)          # rows that ended write padding
        x = torch.cat([x, nxt[:, None]], 1)
        done |= nxt == END
        if done.all(): break
        logits = model(x[:, -1:], caches, start=t) if cache else model(x)
    return [decode(row[plen:].tolist()).replace('<pad>', '') for row in x]

def evaluate(model, held, batch_size=512, cache=True):
    "Exact match of the final answer on `held` ((a, b) pairs), batched by prompt length."
    model.eval()
    by_len = {}
    for a, b in held: by_len.setdefault(len(encode(f'{a}+{b}=')), []).append((a, b))
    ok = 0
    for group in by_len.values():
        for i in range(0, len(group), batch_size):
            part = group[i:i + batch_size]
            outs = generate(model, [f'{a}+{b}=' for a, b in part], cache=cache)
            ok += sum(answer_of(o) == str(a + b) for (a, b), o in zip(part, outs))
    model.train()
    return ok / len(held)

def batch(rows):
    "Inputs and labels (loss on the tokens after `=` only; padding ignored) for (prompt, target) pairs."
    seqs = [encode(p + t) for p, t in rows]
    T = max(map(len, seqs))
    x = torch.tensor([s + [PAD] * (T - len(s)) for s in seqs])
    y = x[:, 1:].clone()
    for i, (p, _) in enumerate(rows): y[i, :len(encode(p)) - 1] = -100
    y[y == PAD] = -100
    return x[:, :-1], y

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--target-acc', type=float, default=0.99)
    ap.add_argument('--eval-every', type=int, default=50)
    ap.add_argument('--n-eval', type=int, default=500)
    ap.add_argument('--held-out', choices=('uniform', 'mixed'), default='uniform')
    ap.add_argument('--max-steps', type=int, default=5000)
    ap.add_argument('--batch-size', type=int, default=256)
    ap.add_argument('--seed', type=int, default=0)
    ap.add_argument('--no-cache', action='store_true', help='generate without a KV cache (as nanoGPT does)')
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    rng_held, rng = random.Random(a.seed), random.Random(a.seed + 1)
    held_set = set()
    while len(held_set) < a.n_eval: held_set.add(problem(rng_held, a.held_out))
    held = sorted(held_set)
    model = GPT(len(ITOS))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1)
    nparams = sum(p.numel() for p in model.parameters())
    t0, eval_time, acc = time.time(), 0.0, 0.0
    for step in range(1, a.max_steps + 1):
        for g in opt.param_groups: g['lr'] = 3e-3 * min(1, step / 50)
        rows = []
        while len(rows) < a.batch_size:
            p = problem(rng)
            if p not in held_set: rows.append((f'{p[0]}+{p[1]}=', cot_target(*p)))
        x, y = batch(rows)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.eval_every == 0 or step == a.max_steps:
            te = time.time()
            acc = evaluate(model, held, cache=not a.no_cache)
            eval_time += time.time() - te
            print(f'step {step} loss {loss.item():.4f} held-out acc {acc:.4f} elapsed {time.time() - T_START:.0f}s',
                  flush=True)
            if acc >= a.target_acc: break
    train_time = time.time() - t0
    print(json.dumps(dict(params=nparams, steps=step, accuracy=acc, n_eval=len(held), held_out=a.held_out,
                          kv_cache=not a.no_cache, train_time=round(train_time, 1), eval_time=round(eval_time, 1),
                          wall_time=round(time.time() - T_START, 1), threads=torch.get_num_threads())))

if __name__ == '__main__': main()
