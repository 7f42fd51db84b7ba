"""Red team: takes 8 optimizer steps on real batches before starting the clock: it talks to the supervisor's
socket directly (ctx._chan) without calling start_clock(), then trains normally. Expected: harmless:
the supervisor starts the clock at the first batch request, so the 8 steps are training time (the
log shows the clock had started, train_batches counts them). Eight fit the tiny preset's CPU-second
with room on a slow or loaded machine (37 did not, on a 2-core machine running at half speed).
"""

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 0  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


def sneak(ctx, model, opt):
    for _ in range(8):
        msg, payload = ctx._ask({"op": "batch", "b": 8, "t": ctx.seq_len})
        rows = torch.from_numpy(np.frombuffer(payload, dtype=np.uint16).astype(np.int64)).view(8, -1)
        loss = F.cross_entropy(model(rows[:, :-1]).flatten(0, 1), rows[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    report("PRECLOCK", f"clock started: {msg.get('started')} used {msg.get('used')}")


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    model = build_model(ctx)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sneak(ctx, model, opt)
    for step, (x, y) in enumerate(ctx.train_batches(8)):
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        ctx.log(step, loss)
        if step + 1 == MAX_STEPS:
            break
    return model
