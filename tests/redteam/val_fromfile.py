"""Red team: maps val.bin with torch.from_file (no Python open() for an audit hook to see) and trains on it.
Expected: harmless: the file is not in the sandbox's view (the log shows the error, never STOLE).
"""

import glob

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


CACHE = "__CACHE__"


def steal():
    paths = glob.glob(f"{CACHE}/data/*/val.bin") or [f"{CACHE}/data/offline-sotu-v4096/val.bin"]
    for p in paths:
        try:
            t = torch.from_file(p, shared=False, size=1024, dtype=torch.int16)
            report("STOLE", f"{t.numel()} tokens via torch.from_file")
        except Exception as e:
            report("NOPE", f"torch.from_file: {e}")


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
