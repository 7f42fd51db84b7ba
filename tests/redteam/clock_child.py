"""Red team: does work in child processes during training: one long-lived child spinning, and a stream
of short-
lived children reaped by the kernel (SIGCHLD ignored), whose time a /proc walk cannot see. Prints
CPUTIME: its own CPU seconds after the clock started. Expected: harmless: the cgroup counts every
child, so the training process itself gets well under the budget.
"""

import signal
import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 0  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


SPIN = "import time\nt = time.time()\nwhile time.time() - t < 60: pass"
BURST = "x = 0\nfor i in range(3_000_000): x += i"


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    ctx.start_clock()
    t0 = time.process_time()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    subprocess.Popen([sys.executable, "-c", SPIN])
    for _ in range(4):
        subprocess.Popen([sys.executable, "-c", BURST])
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
    report("CPUTIME", f"main {time.process_time() - t0:.3f}")
    return model
