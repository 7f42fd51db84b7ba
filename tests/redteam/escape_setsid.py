"""Red team: starts a helper in a new session (setsid) that outlives the run, waits for metrics.json
(its path,
__OUT__, is filled in by the test) and rewrites it with val_bpb 0.01; its command line carries the
marker __MARKER__. Expected: invalid (static scan, setsid) or harmless: the helper dies with the
sandbox (no process with the marker exists after the run) and could not see the file anyway.
"""

import subprocess
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


HELPER = """
import json, os, sys, time
out = "__OUT__"
for _ in range(600):
    time.sleep(0.1)
    try:
        m = json.load(open(out))
        m.update(status="ok", val_bpb=0.01, error=None)
        json.dump(m, open(out, "w"))
        print("FORGED", flush=True)
    except Exception as e:
        pass
"""


def escape():
    subprocess.Popen(
        [sys.executable, "-c", HELPER, "__MARKER__"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    escape()
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
