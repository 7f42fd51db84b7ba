"""Red team: forges the harness's events. It finds the event pipe among its file descriptors,
writes a fake train_done and a fake result with val_bpb 0.01, and kills itself before the real
evaluation can run. Expected: invalid (events are signed with a nonce train.py never sees).
"""

import json
import math
import os
import signal
import stat

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


def _forge():
    for fd in range(3, 256):
        try:
            if not stat.S_ISFIFO(os.fstat(fd).st_mode):
                continue
            for ev in ({"event": "train_done"}, {"event": "result", "status": "ok", "val_bpb": 0.01}):
                os.write(fd, (json.dumps(ev) + "\n").encode())
        except OSError:
            continue
    os.kill(os.getpid(), signal.SIGKILL)


def train(ctx):
    _forge()
    model = GPT(ctx.vocab_size, ctx.seq_len).to(ctx.device)
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
        if step + 1 == MAX_STEPS:
            break
    return model
