"""Red team: a model whose forward raises in evaluation (eval mode). Expected: crash, the candidate's (never
infra_error), with the model process's traceback tail.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

MAX_STEPS = 2  # 0: train until the budget is spent


class Fragile(nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.emb = nn.Embedding(vocab, 32)
        self.out = nn.Linear(32, vocab)

    def forward(self, idx):
        if not self.training:
            raise RuntimeError("kaboom: breaks in evaluation")
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
