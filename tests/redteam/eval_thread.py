"""Red team: returns its model while a background thread keeps training it (during the hand-back and, if the
process lived on, during evaluation), printing THREAD lines. Expected: harmless: the weights are
saved when train() returns and the whole sandbox is killed before scoring starts; no THREAD line is
printed after the training phase ended, and ok or invalid (hand-back overrun) is the result.
"""

import threading
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 3  # 0: train until the budget is spent


def keep_training(model, batches):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    i = 0
    while True:
        x, y = batches[i % len(batches)]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        i += 1
        if i % 200 == 0:
            print(f"THREAD step {i} at {time.time():.3f}", flush=True)


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
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
    batches = [ctx.warmup_batch(8)]
    threading.Thread(target=keep_training, args=(model, batches), daemon=True).start()
    time.sleep(0.05)
    return model
