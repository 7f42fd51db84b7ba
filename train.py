"""The GPT that the research agent improves: model, optimizer and training loop in one file.

The harness owns everything else: the data, the clock and the metric. It imports this file, calls
`train(ctx)`, saves the weights of the model that comes back, and scores them on held-out text
(val_bpb, lower is better) in separate processes that rebuild the network with `build_model(ctx)` and
load those weights into it: so `build_model` must give the same architecture `train` returns.
What `ctx` gives us (harness/context.py has the whole interface):

    ctx.device, ctx.seq_len, ctx.vocab_size    where to train, the row length, the vocabulary
    ctx.warmup_batch(batch_size)               random tokens shaped like a batch, for compiling
    ctx.start_clock()                          the training budget starts now
    ctx.train_batches(batch_size)              (x, y) int64 batches [batch_size, seq_len] on ctx.device,
                                               until the budget is spent
    ctx.progress()                             fraction of the training budget used, 0 to 1
    ctx.log(step, loss)                        the training loss at optimizer step `step` (0-based);
                                               the harness counts steps from it and stops a blow-up

The returned model must map token ids [B, T] to logits [B, T, V'] with V' >= vocab_size, and stay
causal: the logits at position t may depend only on tokens 0..t.

The model is a small modern GPT in the style of karpathy's nanochat: rotary position embeddings,
RMSNorm without learnable weights, QK-norm, a ReLU^2 MLP, value embeddings in every other block,
untied input and output embeddings and a soft-capped output. The optimizer is Muon (Polar Express
orthogonalisation, NorMuon row scaling, cautious weight decay) for the 2-D matrices inside the
blocks and AdamW for everything else, with a warmup / constant / warmdown learning-rate schedule
driven by the harness's clock. Every optimizer step's loss is logged.
"""

import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# ------------------------------------------------------------------------------------------------
# Hyperparameters. The gpu preset (300 s on one H100, sequence 2048, vocabulary 8192) and the cpu
# preset (30 s on two cores, sequence 256, vocabulary 4096) differ by three orders of magnitude in
# compute, so model and batch size come in two sets; everything after them is shared.
# ------------------------------------------------------------------------------------------------

# Sizes on CUDA.
GPU_DEPTH = 8  # transformer blocks
GPU_MODEL_DIM = 512  # residual stream width
GPU_HEAD_DIM = 128  # attention heads = MODEL_DIM // HEAD_DIM
GPU_DEVICE_BATCH = 128  # rows per forward/backward: on an H200, 64 gave 3-5% more tokens/s than 32 and
# 128 2% more than 64 (the same optimizer steps: fewer, larger micro-batches per step)
GPU_TOTAL_BATCH = 2**19  # tokens per optimizer step (reached by gradient accumulation)

# Sizes on the CPU.
CPU_DEPTH = 2
CPU_MODEL_DIM = 128
CPU_HEAD_DIM = 32
CPU_DEVICE_BATCH = 16
CPU_TOTAL_BATCH = 2**12

# Model shape, shared.
MLP_RATIO = 4  # MLP hidden width = MLP_RATIO * MODEL_DIM
ROPE_BASE = 10000.0  # rotary frequency base
LOGIT_SOFTCAP = 15.0  # logits = cap * tanh(logits / cap): keeps early logits from running away
X0_INIT = 0.1  # initial weight of the first-layer embedding mixed back into every block's input
VALUE_EMBEDS = 1  # 1: value embeddings (a second token embedding added to the attention values, as in
# ResFormer / modded-nanogpt) in every other block, the last included; 0: none
VE_GATE_CHANNELS = 32  # the value embedding's per-head gate reads this many channels of the block input

# Optimizer. AdamW learning rates are scaled by 1/sqrt(MODEL_DIM / 768), as in nanochat, so they
# carry over between widths.
MATRIX_LR = 0.04  # Muon, for the 2-D matrices inside the blocks
EMBED_LR = 0.6  # AdamW, token embedding and value embeddings
HEAD_LR = 0.004  # AdamW, output projection (lm_head)
SCALAR_LR = 0.5  # AdamW, the per-block weights of the embedding x0
RESID_LR = 0.005  # AdamW, the per-block weights of the residual stream: they scale every block's
# input, so a large step there moves the whole network at once
ADAM_BETA1 = 0.8
ADAM_BETA2 = 0.95
SCALAR_BETA1 = 0.96  # AdamW beta1 for the x0 weights: a smoother average than the other groups
MUON_MOMENTUM = 0.95  # reached after MUON_MOMENTUM_WARMUP_STEPS optimizer steps, from 0.85
MUON_MOMENTUM_WARMUP_STEPS = 300
MUON_BETA2 = 0.95  # NorMuon: running mean square of each row of the update, to even out rows; 0: off
NS_STEPS = 5  # orthogonalisation iterations per Muon update (at most 5)
WEIGHT_DECAY = 0.2  # cautious decoupled weight decay on the Muon matrices, scaled by the learning
# rate and decayed linearly to 0 over the budget

# Schedule, as fractions of the training budget (ctx.progress()).
WARMUP_RATIO = 0.0  # linear warmup from 0
WARMDOWN_RATIO = 0.5  # linear warmdown to FINAL_LR_FRAC over the last part of the budget
FINAL_LR_FRAC = 0.0

LOG_EVERY_SECONDS = 1.0  # how often to read the losses back (reading waits for the GPU)


# ------------------------------------------------------------------------------------------------
# Model
# ------------------------------------------------------------------------------------------------


def norm(x):
    # RMSNorm with no learnable scale, as in nanochat: one parameter group fewer.
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x, cos, sin):
    # x: [B, T, H, D]; rotate the two halves of each head by position-dependent angles.
    d = x.size(-1) // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


def has_value_embed(layer, depth):
    # Every other block, counted back from the last one (which always has one).
    return VALUE_EMBEDS > 0 and layer % 2 == (depth - 1) % 2


class Attention(nn.Module):
    def __init__(self, dim, head_dim, value_embed):
        super().__init__()
        self.n_head = dim // head_dim
        self.head_dim = head_dim
        self.c_q = nn.Linear(dim, dim, bias=False)
        self.c_k = nn.Linear(dim, dim, bias=False)
        self.c_v = nn.Linear(dim, dim, bias=False)
        self.c_proj = nn.Linear(dim, dim, bias=False)
        # How much of the value embedding each head takes, from a few channels of the input.
        self.ve_gate = nn.Linear(VE_GATE_CHANNELS, self.n_head, bias=False) if value_embed else None

    def forward(self, x, ve, cos, sin):
        B, T, C = x.shape
        # q, k and v from one matmul: x is read once and the GEMM is three times wider (1.5% more
        # tokens/s on an H200). They stay three matrices, each orthogonalised by Muon on its own.
        w = torch.cat([self.c_q.weight, self.c_k.weight, self.c_v.weight])
        q, k, v = F.linear(x, w).view(B, T, 3, self.n_head, self.head_dim).unbind(2)
        if ve is not None:
            # gate in (0, 2), 1 at initialisation (zero weights): the token's own value vector, added
            # to what the layer computed, gives later layers direct access to the token identity.
            gate = 2 * torch.sigmoid(self.ve_gate(x[..., :VE_GATE_CHANNELS]))
            v = v + gate.unsqueeze(-1) * ve.view(B, T, self.n_head, self.head_dim)
        # QK-norm after rotary: bounded attention logits, so a higher learning rate stays stable.
        q = norm(apply_rotary(q, cos, sin)).to(v.dtype)
        k = norm(apply_rotary(k, cos, sin)).to(v.dtype)
        # Fused causal attention (flash / cuDNN on CUDA); is_causal is what keeps the model causal.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, H, T, D]
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.c_fc = nn.Linear(dim, MLP_RATIO * dim, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * dim, dim, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())  # ReLU^2, as in modded-nanogpt and nanochat


class Block(nn.Module):
    def __init__(self, dim, head_dim, value_embed):
        super().__init__()
        self.attn = Attention(dim, head_dim, value_embed)
        self.mlp = MLP(dim)
        # Learnable mixing: how much of the residual stream and of the embedding x0 enter the block.
        self.resid_lambda = nn.Parameter(torch.tensor(1.0))
        self.x0_lambda = nn.Parameter(torch.tensor(X0_INIT))

    def forward(self, x, x0, ve, cos, sin):
        x = self.resid_lambda * x + self.x0_lambda * x0
        x = x + self.attn(norm(x), ve, cos, sin)
        return x + self.mlp(norm(x))


class Head(nn.Module):
    """Final norm, output projection and soft-cap; the loss too when targets are given.

    A module of its own so that it compiles as one region: the [tokens, vocab] logits are the
    largest tensors in the model, and fused, the soft-cap and the loss read them once.
    """

    def __init__(self, dim, padded_vocab):
        super().__init__()
        self.lm_head = nn.Linear(dim, padded_vocab, bias=False)

    def forward(self, x, targets=None):
        logits = self.lm_head(norm(x)).float()
        logits = LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)
        if targets is None:
            return logits
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))


class GPT(nn.Module):
    def __init__(self, vocab_size, seq_len, depth, dim, head_dim):
        super().__init__()
        padded_vocab = (vocab_size + 63) // 64 * 64  # matmul-friendly; the extra logits are never targets
        self.wte = nn.Embedding(padded_vocab, dim)
        ve_layers = [i for i in range(depth) if has_value_embed(i, depth)]
        self.blocks = nn.ModuleList([Block(dim, head_dim, i in ve_layers) for i in range(depth)])
        self.value_embeds = nn.ModuleDict({str(i): nn.Embedding(padded_vocab, dim) for i in ve_layers})
        self.head = Head(dim, padded_vocab)
        # Rotary tables for every position a row can have; not parameters, not saved.
        inv_freq = ROPE_BASE ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)
        self.init_weights(dim)

    @torch.no_grad()
    def init_weights(self, dim):
        nn.init.normal_(self.wte.weight, std=1.0)  # normed right after lookup, so the scale is free
        nn.init.normal_(self.head.lm_head.weight, std=0.001)  # start near uniform predictions
        bound = (3 / dim) ** 0.5  # uniform with std 1/sqrt(dim)
        for block in self.blocks:
            for lin in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(lin.weight, -bound, bound)
            # Zero output projections: every block starts as the identity, and the residual grows as needed.
            nn.init.zeros_(block.attn.c_proj.weight)
            nn.init.zeros_(block.mlp.c_proj.weight)
            if block.attn.ve_gate is not None:
                nn.init.zeros_(block.attn.ve_gate.weight)
        for ve in self.value_embeds.values():
            nn.init.uniform_(ve.weight, -bound, bound)  # the scale of a value vector

    def forward(self, idx, targets=None):
        """Logits [B, T, padded_vocab], or the mean cross-entropy when targets are given."""
        T = idx.size(1)
        # bf16 matmuls on CUDA, here rather than in the caller, so every caller gets them.
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=idx.is_cuda):
            cos, sin = self.cos[:, :T], self.sin[:, :T]
            x0 = norm(self.wte(idx))
            x = x0.clone()  # x and x0 distinct, so the first block reuses the others' compiled graph
            for i, block in enumerate(self.blocks):
                ve = self.value_embeds[str(i)](idx) if str(i) in self.value_embeds else None
                x = block(x, x0, ve, cos, sin)
            return self.head(x, targets)


# ------------------------------------------------------------------------------------------------
# Optimizer: Muon for the block matrices
# ------------------------------------------------------------------------------------------------

# Polar Express (Amsel, Persson, Musco, Gower, 2025): a different (a, b, c) for each iteration,
# chosen so that five iterations map every singular value in (0, 1] close to 1 in bf16.
POLAR_EXPRESS = [
    (8.156554524902461, -22.48329292557795, 15.878769915207462),
    (4.042929935166739, -2.808917465908714, 0.5000178451051316),
    (3.8916678022926607, -2.772484153217685, 0.5060648178503393),
    (3.285753657755655, -2.3681294933425376, 0.46449024233003106),
    (2.3465413258596377, -1.7097828382687081, 0.42323551169305323),
]


def orthogonalize(G, steps):
    """Approximately the nearest semi-orthogonal matrix (U V^T of the SVD), batched over dim 0."""
    X = G.bfloat16() if G.is_cuda else G.float()
    tall = X.size(-2) > X.size(-1)
    if tall:
        X = X.mT  # iterate on the wide side: the Gram matrix A is the smaller one
    X = X / (X.norm(dim=(-2, -1), keepdim=True) * 1.02 + 1e-6)  # spectral norm < Frobenius norm <= 1
    for a, b, c in POLAR_EXPRESS[:steps]:
        A = X @ X.mT
        X = a * X + (b * A + c * (A @ A)) @ X
    if tall:
        X = X.mT
    return X.to(G.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum, then orthogonalise the update: every direction of a matrix moves at the same rate.

    Then NorMuon (Li et al., 2025): divide each row of the update (each column, for a wide matrix)
    by its running RMS and rescale to the update's own norm, so that no neuron's weights drift
    faster than the others'. Weight decay is cautious (Chen et al., 2025):
    it only shrinks the entries that the update moves towards zero anyway.
    Parameters of one shape are stacked so that each step is a few batched ops.
    """

    def __init__(self, params, lr, momentum, weight_decay):
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            shapes = sorted({tuple(p.shape) for p in group["params"]})
            for shape in shapes:
                params = [p for p in group["params"] if tuple(p.shape) == shape and p.grad is not None]
                if not params:
                    continue
                grads = torch.stack([p.grad for p in params])
                state = self.state[params[0]]
                row_dim = -1 if shape[0] >= shape[1] else -2  # one statistic per row (per column if wide)
                if "momentum" not in state:
                    state["momentum"] = torch.zeros_like(grads)
                    state["row_ms"] = torch.zeros_like(grads.mean(dim=row_dim, keepdim=True))
                buf = state["momentum"]
                buf.lerp_(grads, 1 - group["momentum"])
                update = orthogonalize(grads.lerp_(buf, group["momentum"]), NS_STEPS).float()  # Nesterov
                if MUON_BETA2 > 0:
                    row_ms = state["row_ms"]
                    row_ms.lerp_(update.square().mean(dim=row_dim, keepdim=True), 1 - MUON_BETA2)
                    scaled = update * row_ms.clamp_min(1e-10).rsqrt()
                    ratio = update.norm(dim=(-2, -1), keepdim=True) / scaled.norm(dim=(-2, -1), keepdim=True)
                    update = scaled * ratio.nan_to_num(0.0)
                # Scale so that tall and wide matrices get updates of the same RMS per entry.
                lr = group["lr"] * max(1.0, shape[0] / shape[1]) ** 0.5
                stacked = torch.stack(params)
                decay = (update * stacked >= 0).to(stacked.dtype)  # cautious: only where it agrees
                stacked.sub_(lr * (update + group["weight_decay"] * decay * stacked))
                torch._foreach_copy_(params, list(stacked.unbind(0)))


def build_optimizers(model, dim, device):
    matrices = [p for p in model.blocks.parameters() if p.ndim == 2]
    resid = [b.resid_lambda for b in model.blocks]
    x0 = [b.x0_lambda for b in model.blocks]
    scale = (dim / 768) ** -0.5
    adam_groups = [
        dict(
            params=[model.wte.weight, *[ve.weight for ve in model.value_embeds.values()]], lr=EMBED_LR * scale
        ),
        dict(params=[model.head.lm_head.weight], lr=HEAD_LR * scale),
        dict(params=resid, lr=RESID_LR),
        dict(params=x0, lr=SCALAR_LR, betas=(SCALAR_BETA1, ADAM_BETA2)),
    ]
    # fused=True: one kernel for the whole AdamW step on CUDA; on the CPU the default is fine.
    adam = torch.optim.AdamW(
        adam_groups, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10, weight_decay=0.0, fused=device.type == "cuda"
    )
    muon = Muon(matrices, lr=MATRIX_LR, momentum=MUON_MOMENTUM, weight_decay=WEIGHT_DECAY)
    for opt in (adam, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    return [adam, muon]


def lr_multiplier(progress):
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1 - WARMDOWN_RATIO:
        return 1.0
    frac = (1 - progress) / WARMDOWN_RATIO  # 1 at the start of the warmdown, 0 at the end
    return FINAL_LR_FRAC + (1 - FINAL_LR_FRAC) * frac


# ------------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------------


def model_sizes(ctx):
    """(depth, dim, head_dim, device_batch, total_batch) for the device ctx names."""
    if ctx.device.startswith("cuda"):
        return GPU_DEPTH, GPU_MODEL_DIM, GPU_HEAD_DIM, GPU_DEVICE_BATCH, GPU_TOTAL_BATCH
    return CPU_DEPTH, CPU_MODEL_DIM, CPU_HEAD_DIM, CPU_DEVICE_BATCH, CPU_TOTAL_BATCH


def build_model(ctx):
    """The untrained network on ctx.device. The harness calls it to load the trained weights for scoring."""
    depth, dim, head_dim, _, _ = model_sizes(ctx)
    with torch.device(ctx.device):  # made and initialised there: no CPU initialisation, no copy
        return GPT(ctx.vocab_size, ctx.seq_len, depth, dim, head_dim)


def train(ctx):
    t_begin = time.monotonic()
    device = torch.device(ctx.device)
    cuda = device.type == "cuda"
    depth, dim, head_dim, device_batch, total_batch = model_sizes(ctx)
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True  # any fp32 matmul left outside autocast
        torch.backends.cudnn.allow_tf32 = True
    accum_steps = max(1, total_batch // (device_batch * ctx.seq_len))

    model = build_model(ctx)
    t_model = time.monotonic()
    if cuda:
        # Regional compilation: every block runs the same code, so one compiled graph serves all
        # of them (one more for the blocks with a value embedding) and compile time does not grow
        # with depth. The head is the other region. (model.compile(), one graph unrolled over the
        # blocks, gave 4% more tokens/s on an H200 for a cold compile 3-4 s longer at depth 8.)
        # One launch config per pointwise kernel instead of two to compile and time at the first
        # call: a quarter fewer Triton kernels (61 to 45), a cold compile 1.2-4.6 s shorter, the
        # same tokens/s (H200, benchmarks/README.md).
        from torch._inductor import config as inductor_config  # here: a second of import on the CPU

        inductor_config.triton.autotune_pointwise = False
        # One launch config per reduction kernel too, the one inductor's heuristic picks (the filter
        # of its deterministic mode), instead of two or three compiled one after another before the
        # graph can run: a cold warm-up of 22-23 s instead of 37-40 s, 0.2% fewer tokens/s (one H200
        # host). A test switch in torch 2.11-2.13; where it is missing, reductions are autotuned.
        if hasattr(getattr(inductor_config, "test_configs", None), "force_filter_reduction_configs"):
            inductor_config.test_configs.force_filter_reduction_configs = True
        for block in model.blocks:
            block.compile(dynamic=False)
        model.head.compile(dynamic=False)

    # Warm-up before the clock: compile the training step (forward, backward, optimizer) on random
    # tokens, then put the initial weights back and build the optimizers afresh, so the warm-up
    # leaves no trace in training. No no-grad forward: the harness scores in processes of its own
    # that rebuild the model with build_model, so graphs compiled here never serve the evaluation.
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = ctx.warmup_batch(device_batch)
    t_built = time.monotonic()
    model(x, y).backward()
    t_compiled = time.monotonic()
    for opt in build_optimizers(model, dim, device):
        opt.step()
    model.load_state_dict(initial_state)
    model.zero_grad(set_to_none=True)
    optimizers = build_optimizers(model, dim, device)
    muon = optimizers[1]
    print(
        f"train.py: warm-up (build, compile, one step) {time.monotonic() - t_begin:.1f} s: build "
        f"{t_built - t_begin:.1f} s (model {t_model - t_begin:.1f} s), first forward and backward "
        f"{t_compiled - t_built:.1f} s",
        flush=True,
    )
    ctx.start_clock()

    # Every optimizer step's loss (the mean over its micro-batches) is logged. On CUDA the losses
    # stay on the GPU and are read back together about once a second, so the GPU never waits.
    step, micro, last_read = 0, 0, time.monotonic()
    loss_sum, pending = 0.0, []

    def flush():
        values = torch.stack(pending).tolist()
        first = step - len(values)
        for i, value in enumerate(values):
            ctx.log(first + i, value)
        if cuda:  # the harness prints a line every few seconds; these are for a loss curve
            print(f"losses from step {first}: " + " ".join(f"{v:.4f}" for v in values), flush=True)
        pending.clear()

    for x, y in ctx.train_batches(device_batch):
        loss = model(x, y)
        (loss / accum_steps).backward()
        loss_sum = loss_sum + loss.detach()
        micro += 1
        if micro % accum_steps:
            continue
        progress = ctx.progress()
        lrm = lr_multiplier(progress)
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = group["initial_lr"] * lrm
        frac = min(step / MUON_MOMENTUM_WARMUP_STEPS, 1.0)
        muon.param_groups[0]["momentum"] = (1 - frac) * 0.85 + frac * MUON_MOMENTUM
        muon.param_groups[0]["weight_decay"] = WEIGHT_DECAY * (1 - progress)
        for opt in optimizers:
            opt.step()
        model.zero_grad(set_to_none=True)
        pending.append(loss_sum / accum_steps)
        loss_sum = 0.0
        step += 1
        now = time.monotonic()
        if not cuda or now - last_read >= LOG_EVERY_SECONDS:
            flush()
            last_read = now
    if pending:
        flush()
    return model
