"""Red team: starts a daemon (a double fork through a shell, `nohup ... &`) that sleeps for a minute with the
marker __MARKER__ on its command line. Expected: harmless: no process with the marker exists once
the run is over.
"""

import subprocess

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def daemon():
    subprocess.run("nohup sleep 60 __MARKER__ >/dev/null 2>&1 &", shell=True)
    subprocess.run(["sh", "-c", "(exec -a __MARKER__ sleep 61 &) ; true"])


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    daemon()
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
