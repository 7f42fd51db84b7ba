"""Red team: forges the harness's messages: it finds the socket to the supervisor among its descriptors
and sends
a well-formed 'done' before training (so the harness would score whatever file is there) and a
result with val_bpb 0.01, then exits. Expected: invalid (no weights / an unexpected message), never
ok.
"""

import json
import os
import stat
import struct

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def frame(msg):
    body = json.dumps(msg).encode()
    return struct.pack("<II", len(body), 0) + body


def forge():
    for fd in range(3, 64):
        try:
            if not stat.S_ISSOCK(os.fstat(fd).st_mode):
                continue
            os.write(fd, frame({"op": "result", "status": "ok", "val_bpb": 0.01}))
            os.write(fd, frame({"op": "done", "file": "weights.safetensors"}))
        except OSError:
            continue


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    forge()
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
