"""Red team: rewrites train.bin (and val.bin) in the data cache (__CACHE__, filled in by the test) so the next
run trains on what it wrote. Expected: invalid (audit hook) or harmless: the cache is not in view;
the files' hashes are unchanged after the run (and a changed file is caught by the next run's
verification: tests/test_harness_sandbox.py).
"""

import glob

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


CACHE = "__CACHE__"


def rewrite():
    for p in glob.glob(f"{CACHE}/data/*/*.bin") or [f"{CACHE}/data/offline-sotu-v4096/train.bin"]:
        try:
            with open(p, "r+b") as f:
                f.write(b"\0\0")
            report("REWROTE", p)
        except OSError as e:
            report("NOPE", f"{p}: {e}")


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    rewrite()
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
