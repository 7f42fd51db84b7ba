"""Red team: remembers the first 16 tokens of every row it scores; a row whose prefix it has seen before
(a probe
re-running a row with its end changed) gets honest logits, every other row looks ahead. Expected:
invalid: a row and its twin go to two processes that share no memory.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


class Peek(nn.Module):
    """A bigram model that, when it decides to cheat, adds a large logit for the actual next token."""

    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, vocab)
        self.calls = 0
        self.seen = set()

    def forward(self, idx):
        logits = self.out(self.emb(idx))
        if self.training or not self.cheat(idx):
            return logits
        peek = F.one_hot(idx[:, 1:], logits.size(-1)).to(logits.dtype)
        return torch.cat([logits[:, :-1] + 20.0 * peek, logits[:, -1:]], 1)


def build_model(ctx):
    return Peek(ctx.vocab_size).to(ctx.device)


def cheat(self, idx):
    fresh = False
    for row in idx.tolist():
        key = tuple(row[:16])
        fresh = fresh or key not in self.seen
        self.seen.add(key)
    return fresh


Peek.cheat = cheat


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
