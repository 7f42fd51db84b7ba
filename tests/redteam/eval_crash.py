"""Red team: a model whose forward fails in evaluation (eval mode), trying to carry the validation rows it
was given out through its error. HOW = "raise": it raises with every token id it saw in the message;
"kill": it prints them into its log, then SIGKILLs itself (the scorer reports the log's tail).
Expected: crash, the candidate's (never infra_error), with the model process's traceback tail, cut to
harness.scorer.MODEL_ERROR_CHARS: the rows do not get out whole.
"""

import os
import signal

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent
HOW = "__HOW__"  # the test substitutes "raise" or "kill"; left as it is, it raises


class Fragile(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, vocab)

    def forward(self, idx):
        if not self.training:
            seen = " ".join(str(t) for t in idx.flatten().tolist())
            if HOW == "kill":
                for row in idx.tolist():
                    print("ROWS " + " ".join(map(str, row)), flush=True)
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError(f"kaboom: breaks in evaluation; ROWS {seen}")
        return self.out(self.emb(idx))


def build_model(ctx):
    return Fragile(ctx.vocab_size).to(ctx.device)


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
    return model
