"""Red team: starts a spinning thread pool before the clock, hoping its work is not counted once
training starts,
and prints CPUTIME lines: its main thread's CPU seconds after the clock started and the pool's.
Expected: harmless: the CPU clock counts every thread, so the main thread gets about half the budget
(the harness's training_cpu_seconds covers both).
"""

import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 0  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


SPIN = {"cpu": 0.0}


def spin():
    t0 = time.thread_time()
    while True:
        for _ in range(20000):
            pass
        SPIN["cpu"] = time.thread_time() - t0


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    threading.Thread(target=spin, daemon=True).start()
    ctx.start_clock()
    main0, spin0 = time.thread_time(), SPIN["cpu"]
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
    report("CPUTIME", f"main {time.thread_time() - main0:.3f} pool {SPIN['cpu'] - spin0:.3f}")
    return model
