"""Red team: looks for validation data among the file descriptors it inherited, duplicates each and
reads it (a
descriptor the harness left open on val.bin would leak it). Expected: harmless: no descriptor points
at a data file, never STOLE in the log.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


def steal():
    for fd in range(0, 256):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        report("FD", f"{fd} -> {target}")
        if "val.bin" in target or "train.bin" in target or "autoresearch-ci" in target:
            d = os.dup(fd)
            report("STOLE", f"{len(os.pread(d, 1 << 16, 0))} bytes via fd {fd}")


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    steal()
    model = build_model(ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step, (x, y) in enumerate(ctx.train_batches(8)):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step, loss)
        if step + 1 == MAX_STEPS:
            break
    return model
