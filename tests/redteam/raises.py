"""Red team: raises in the middle of training. Expected: crash, with the traceback tail in `error`."""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

DIM, DEPTH, HEADS = 64, 2, 4
BATCH_SIZE = 16
LR = 3e-3
MAX_STEPS = 0  # 0: train until the budget is spent; the tests set it for runs that are bit-reproducible


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
    for step, (x, y) in enumerate(ctx.train_batches(BATCH_SIZE)):
        frac = step / MAX_STEPS if MAX_STEPS else ctx.progress()  # fixed steps: no dependence on time
        lr = LR * min(1.0, (step + 1) / 20) * (0.1 + 0.9 * math.cos(0.5 * math.pi * frac))
        for g in opt.param_groups:
            g["lr"] = lr
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step, loss)
        if step == 0:  # after the first step, so the traceback comes from inside the loop
            raise ValueError("boom: the candidate's own bug")
        if step + 1 == MAX_STEPS:
            break
    return model
