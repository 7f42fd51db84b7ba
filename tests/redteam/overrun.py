"""Red team: ignores the budget. It takes a few batches, then keeps training on them forever.
Expected: timeout (the supervisor kills it at clock start + budget + grace).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, DEPTH, HEADS = 64, 2, 4
BATCH_SIZE = 16
LR = 3e-3


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def attend(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = self.attend(q, k, v).transpose(1, 2).reshape(B, T, C)
        x = x + self.proj(y)
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    def __init__(self, vocab, seq_len):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, DIM), nn.Embedding(seq_len, DIM)
        self.blocks = nn.ModuleList(Block(DIM, HEADS) for _ in range(DEPTH))
        self.ln, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, vocab, bias=False)

    def forward(self, idx):
        x = self.tok(idx) + self.pos(torch.arange(idx.shape[1], device=idx.device))
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln(x))


def build_model(ctx):
    return GPT(ctx.vocab_size, ctx.seq_len).to(ctx.device)


def train(ctx):
    model = build_model(ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0)
    cached = []
    for x, y in ctx.train_batches(BATCH_SIZE):
        cached.append((x, y))
        if len(cached) == 4:
            break
    step = 0
    while True:  # never looks at ctx.time_left()
        x, y = cached[step % len(cached)]
        step += 1
        lr = LR * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * math.cos(0.5 * math.pi * ctx.progress()))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step, loss)
    return model  # never reached
