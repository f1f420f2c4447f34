"""A straightforward nanoGPT-style trainer for 3-digit chain-of-thought addition: the baseline that
`bench_train.py` compares `mathnb-train` with.

4 layers x 128 wide (0.8M parameters), learned positions, GELU, batch 256, AdamW lr 3e-3 with a short
warmup, fresh random problems every step, loss on the answer tokens, and every `--eval-every` steps an
uncached greedy evaluation on held-out problems until `--target-acc` is reached. Nothing in it is
mathnb-specific apart from using mathnb's data generator and grader, so both trainers see the same distribution:
training operands 0-999 as the default `add3-cot` task draws them, held-out problems uniform over 0-999 x 0-999.
"""
import argparse, json, math, random, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
from mathnb.data import final_answer
from mathnb.tokenizer import CharTokenizer
from mathnb.training import preset_parts

class Block(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h, self.ln1, self.ln2 = h, nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.fc, self.out = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, T, 3, self.h, C // self.h).permute(2, 0, 3, 1, 4)
        x = x + self.proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, C))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))

class GPT(nn.Module):
    def __init__(self, V, T=48, L=4, d=128, h=4):
        super().__init__()
        self.wte, self.wpe = nn.Embedding(V, d), nn.Embedding(T, d)
        self.blocks, self.ln = nn.ModuleList(Block(d, h) for _ in range(L)), nn.LayerNorm(d)
        self.head = nn.Linear(d, V, bias=False)
        self.apply(lambda m: nn.init.normal_(m.weight, 0, 0.02) if isinstance(m, (nn.Linear, nn.Embedding)) else None)
    def forward(self, idx):
        x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
        for b in self.blocks: x = b(x)
        return self.head(self.ln(x))

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--target-acc', type=float, default=0.99)
    ap.add_argument('--eval-every', type=int, default=100)
    ap.add_argument('--n-eval', type=int, default=500)
    ap.add_argument('--max-steps', type=int, default=5000)
    ap.add_argument('--seed', type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    torch.manual_seed(a.seed)
    tok, task = CharTokenizer(), preset_parts('add3-cot')[0]
    held = task.splits(0, 0, a.n_eval, seed=a.seed)['test']
    held_p = {r['prompt'] for r in held}
    rng = random.Random(a.seed + 1)
    model = GPT(tok.vocab_size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.99), weight_decay=0.1)
    nparams = sum(p.numel() for p in model.parameters())

    @torch.no_grad()
    def evaluate():
        model.eval()
        ok = 0
        for r in held:                                  # one problem at a time, no cache: the straightforward way
            x = torch.tensor([tok.encode(r['prompt'])])
            plen = x.shape[1]
            for _ in range(32):
                nxt = model(x)[:, -1].argmax(-1, keepdim=True)
                x = torch.cat([x, nxt], 1)
                if nxt.item() == tok.end_id: break
            ok += final_answer(tok.decode(x[0, plen:].tolist())) == r['answer']
        model.train()
        return ok / len(held)

    eval_time = 0.0
    for step in range(1, a.max_steps + 1):
        for g in opt.param_groups: g['lr'] = 3e-3 * min(1, step / 50)
        rows = []
        while len(rows) < 256:
            r = task.sample(rng)
            if r['prompt'] not in held_p: rows.append(r)
        seqs = [tok.encode(r['prompt'] + r['target']) for r in rows]
        T = max(map(len, seqs))
        x = torch.tensor([s + [0] * (T - len(s)) for s in seqs])
        y = x[:, 1:].clone()
        for i, r in enumerate(rows): y[i, :len(r['prompt']) - 1] = -100      # loss on the answer only
        y[y == 0] = -100
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % a.eval_every == 0:
            te = time.time()
            acc = evaluate()
            eval_time += time.time() - te
            print(f'step {step} loss {loss.item():.4f} held-out acc {acc:.4f} elapsed {time.time() - t0:.0f}s', flush=True)
            if acc >= a.target_acc: break
    res = dict(params=nparams, steps=step, accuracy=acc, wall_time=round(time.time() - t0, 1), eval_time=round(eval_time, 1))
    print(json.dumps(res))

if __name__ == '__main__': main()
