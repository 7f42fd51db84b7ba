"""Red team: sleeps while a child works: the main process only asks for a batch every 0.2 s (to learn
whether the
budget is over) while a child computes. Prints CHILDCPU: the child's CPU seconds. Expected:
harmless: the child's CPU is training time, so the budget ends after about budget CPU-seconds of the
child's work, long before the wall deadline.
"""

import subprocess
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 0  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


CHILD = """
import os, time
t = time.time()
while time.time() - t < 120:
    with open("child_cpu.txt.tmp", "w") as f:
        f.write(str(time.process_time()))
    os.replace("child_cpu.txt.tmp", "child_cpu.txt")
    for _ in range(200000):
        pass
"""


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    ctx.start_clock()
    child = subprocess.Popen([sys.executable, "-c", CHILD])
    for _ in ctx.train_batches(1):
        time.sleep(0.2)
    child.kill()
    try:
        with open("child_cpu.txt") as f:
            report("CHILDCPU", f.read())
    except OSError as e:
        report("CHILDCPU", f"unknown: {e}")
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
