"""Red team: reads val.bin through a directory file descriptor (os.open of the cache directory, then openat).
Expected: invalid (audit hook) or harmless: ENOENT in the sandbox, never STOLE in the log.
"""

import glob
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


CACHE = "__CACHE__"


def steal():
    for d in glob.glob(f"{CACHE}/data/*") or [f"{CACHE}/data/offline-sotu-v4096"]:
        try:
            dfd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
            fd = os.open("val.bin", os.O_RDONLY, dir_fd=dfd)
            report("STOLE", f"{len(os.read(fd, 1 << 16))} bytes via a directory fd")
        except OSError as e:
            report("NOPE", f"dir fd: {e}")


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
