"""Red team: writes to ~/.bashrc, to the caller's real home (__HOME__/.bashrc) and to the checkout's
.git/hooks
(__REPO__/.git/hooks/pre-commit, a hook that would run with the loop's environment on its next
commit). Expected: invalid (audit hook, in part) or harmless: the real files are unchanged after the
run.
"""

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


TARGETS = ["~/.bashrc", "__HOME__/.bashrc", "__REPO__/.git/hooks/pre-commit"]


def write():
    for t in TARGETS:
        p = os.path.expanduser(t)
        try:
            with open(p, "a") as f:
                f.write("\necho __MARKER__\n")
            os.chmod(p, 0o755)
            report("WROTE", p)
        except OSError as e:
            report("NOPE", f"{p}: {e}")


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    write()
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
