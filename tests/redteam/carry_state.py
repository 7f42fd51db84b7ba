"""Red team: carries what one run of this train.py learnt into the next run of the same train.py.

Two runs of one train.py share a compile-cache partition (a replication, a confirmation, the
baseline of every tick): the harness keeps the training sandbox's $HOME/.cache and seeds the next
run with it. After training, this file writes what it learnt there (its weights), so that the next
run could start from them and train twice as long; it also deletes and rewrites files it wrote
before the clock started (as a compile would), which would carry bits by what is left of them.
Before any of that, train() reports what the run found. Expected: the next run finds what was in
the cache when the clock started, and nothing written, deleted or changed after ("CARRY none",
"DOOMED found", "KERNEL as compiled").
"""

import io
import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


def cache():
    return Path(os.path.expanduser("~/.cache"))


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    c = cache()
    state = c / "carry" / "state.bin"
    report("CARRY", f"found {state.stat().st_size} bytes" if state.exists() else "none")
    report("DOOMED", "found" if (c / "inductor" / "doomed.py").exists() else "none")
    kernel = c / "inductor" / "kernel.py"
    report("KERNEL", kernel.read_text().strip() if kernel.exists() else "none")
    # Before the clock: what a compile leaves.
    (c / "inductor").mkdir(parents=True, exist_ok=True)
    kernel.write_text("# as compiled\n")
    (c / "inductor" / "doomed.py").write_text("# a second kernel\n")
    model = build_model(ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for step, (x, y) in enumerate(ctx.train_batches(8)):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        ctx.log(step, loss.item())
        if step + 1 == MAX_STEPS:
            break
    # After the clock started: what was learnt, for the next run.
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_bytes(buf.getvalue())
    (c / "inductor" / "doomed.py").unlink()
    kernel.write_text("# rewritten after the clock started\n")
    report("WROTE", f"{state} ({len(buf.getvalue())} bytes)")
    return model
