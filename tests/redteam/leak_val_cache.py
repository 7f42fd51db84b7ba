"""Red team: carries the validation rows from one run of this train.py into the next one's training.

The scoring's model processes run this file's network on the validation rows. Its forward, when no
gradient is taken (the scoring), appends every row it is given to a file in the process's cache
directory ($XDG_CACHE_HOME, where torch.compile keeps its kernels). If the harness kept what a model
process left there for the next run of the same train.py (a warm compile cache), that run's training
would start with the validation rows in its own cache directory, and could train on them. train()
looks for the file first and reports what it found, then leaves a file in its own cache directory
(as a GPU run's compile does, so that there is a partition to keep). Expected: the next run's
training finds nothing ("LEAK none"): what a process that saw validation data wrote never reaches a
training process.
"""

import os
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


def report(tag, what):
    print(f"{tag} {what}", flush=True)


def leak_file():
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")) / "inductor" / "rows.bin"


class Recorder(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, vocab)

    def forward(self, x):
        if not torch.is_grad_enabled():  # the scoring: keep what it shows us
            try:
                f = leak_file()
                f.parent.mkdir(parents=True, exist_ok=True)
                with open(f, "ab") as fh:
                    fh.write(x.detach().to("cpu", torch.int32).numpy().tobytes())
            except OSError as e:
                report("LEAK-WRITE failed", e)
        return self.out(self.emb(x))


def build_model(ctx):
    return Recorder(ctx.vocab_size).to(ctx.device)


def train(ctx):
    f = leak_file()
    if f.exists():
        report("LEAK found", f"{f.stat().st_size // 4} validation tokens in {f}")
    else:
        report("LEAK none", f)
    # What a GPU run's compile leaves: a kernel in the cache, so that the harness keeps a partition.
    f.parent.mkdir(parents=True, exist_ok=True)
    (f.parent / "kernel.py").write_text("# a compiled kernel\n")
    model = build_model(ctx)  # no learning needed: only a model for the scoring to run
    for step, (x, y) in enumerate(ctx.train_batches(8)):
        ctx.log(step, F.cross_entropy(model(x).flatten(0, 1), y.flatten()).item())
        if step + 1 == MAX_STEPS:
            break
    return model
