"""Red team: writes a .pyc into harness/__pycache__ (inside the sandbox at /opt/autoresearch/harness and
at the
checkout's own path, __HARNESS__, filled in by the test) that a later run would import, and a
planted file named __MARKER__.pyc. Expected: invalid (audit hook: the harness is read-only) or
harmless: the harness is read-only / not in view, the file does not exist after the run, and the
harness runs with a private bytecode prefix anyway.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


def plant():
    for d in ("/opt/autoresearch/harness/__pycache__", "__HARNESS__/__pycache__"):
        for name in ("__MARKER__.pyc", "scorer.cpython-311.pyc", "supervisor.cpython-311.pyc"):
            try:
                os.makedirs(d, exist_ok=True)
                with open(os.path.join(d, name), "wb") as f:
                    f.write(b"planted")
                report("PLANTED", os.path.join(d, name))
            except OSError as e:
                report("NOPE", f"{d}/{name}: {e}")


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    plant()
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
