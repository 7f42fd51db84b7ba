"""Red team: trains on cached batches past the budget (by its own reading of ctx.elapsed(), until budget
+ 2.5 s)
and then returns. Expected: invalid: train() returned past the budget + tolerance.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 0  # 0: train until the budget is spent


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    model = build_model(ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cached = []
    for x, y in ctx.train_batches(8):
        cached.append((x, y))
        if len(cached) == 4:
            break
    step = 0
    while ctx.elapsed() < ctx.budget_seconds + 2.5:  # the budget, and then some
        x, y = cached[step % len(cached)]
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step, loss)
        step += 1
    return model
