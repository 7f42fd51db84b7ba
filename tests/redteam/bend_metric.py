"""Red team: bends the metric in-process after the static scan: code run from a base64 string patches
torch.nn.functional.log_softmax / cross_entropy and json.dumps, mutates the frozen preset
(eval_tokens, seq_len) and walks the stack frames to the harness's objects (the spec, the channel)
and changes them. Fixed steps, so the run is reproducible. Expected: invalid (static scan) or
harmless: val_bpb equals that of the same file without the bending (the score is computed outside
every process the candidate runs in).
"""

import base64

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


PAYLOAD = base64.b64encode(b"""
import json, sys, torch
import torch.nn.functional as F
F.log_softmax = lambda x, dim=-1, **k: torch.zeros_like(x)
F.cross_entropy = lambda *a, **k: torch.zeros(())
json.dumps = lambda *a, **k: '{"op": "done", "val_bpb": 0.01}'
f = sys._getframe(1)
while f is not None:
    for name in ("spec", "preset", "ctx"):
        obj = f.f_locals.get(name)
        if isinstance(obj, dict):
            obj["seed"] = 12345
        elif obj is not None and hasattr(obj, "eval_tokens"):
            object.__setattr__(obj, "eval_tokens", 8)
    f = f.f_back
""").decode()

ENABLED = True


def bend(ctx):
    if ENABLED:
        exec(base64.b64decode(PAYLOAD), {"__name__": "bend"})
        object.__setattr__(ctx.preset, "seq_len", 8)


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
    bend(ctx)
    return model
