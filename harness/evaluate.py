"""The metric: validation bits per byte, computed by harness code from references captured at import.

    val_bpb = sum over scored targets of -ln p(target) / (ln 2 * sum of their UTF-8 bytes)

as in karpathy's `evaluate_bpb`: the model gives logits for every position of a [B, T] batch, the
per-token negative log-likelihood is summed in nats, targets whose token has 0 bytes (BOS) are left
out of both sums, and the ratio is converted to bits. A tokenizer-independent number: a bigger
vocabulary cannot win by making tokens longer.

Every torch function the arithmetic uses is captured when this module is imported, which the worker
does before train.py is imported: monkeypatching torch.nn.functional, torch.Tensor or this module
later does not reach these references (and the integrity snapshot reports it as a violation anyway).

The causality probe runs inside the evaluation pass and looks exactly like it. For a few batches
picked with a private random draw (os.urandom, not the seeded RNGs), after scoring the batch:

1. the same batch again with each row's tokens after a random position t replaced by another row's
   (realistic text, with the targets changed consistently), through the same scoring code;
2. the original batch once more, unchanged.

The logits at positions <= t must match the first pass. Pass 2 measures how far the model's own
run-to-run noise goes (0 for the usual deterministic kernels) and catches a model that carries state
from one batch to the next (test-time learning). The tolerance is max(2 x that noise, a floor):
1e-6 of the logit scale in float32 on CPU, where a causal model's logits at positions <= t are
bit-identical (masked positions enter attention with weight exactly 0); 1e-3 on CUDA, which is
below one bf16 ulp (about 4e-3 relative), so any real dependence shows up while kernel-level
reordering noise, if any, is absorbed by the measured term.
"""

from __future__ import annotations

import math
import random
import time

import torch
import torch.utils.flop_counter

from harness.dataloader import count_eval_batches
from harness.dataloader import eval_batches as _eval_batches

PROBE_BATCHES = 2  # batches probed per evaluation
PROBE_FLOOR = {"cpu": 1e-6, "cuda": 1e-3}  # relative to 1 + max |logit|, see the docstring
RERUN_CAP = {"cpu": 1e-4, "cuda": 2e-2}  # identical inputs may differ at most this much (relative)
LOGSOFTMAX_CHUNK = 1 << 27  # elements of float32 log-probs computed at once (512 MiB)

# -- references captured at import (before train.py runs) ---------------------------------------------
_log_softmax = torch.log_softmax
_gather = torch.gather
_unsqueeze = torch.unsqueeze
_squeeze = torch.squeeze
_narrow = torch.narrow
_sum = torch.sum
_index_select = torch.index_select
_reshape = torch.reshape
_gt = torch.gt
_le = torch.le
_where = torch.where
_sub = torch.sub
_abs = torch.abs
_amax = torch.amax
_isfinite = torch.isfinite
_all = torch.all
_clone = torch.clone
_cat = torch.cat
_roll = torch.roll
_arange = torch.arange
_randint = torch.randint
_zeros_like = torch.zeros_like
_tensor = torch.tensor
_as_tensor = torch.as_tensor
_item = torch.Tensor.item
_to = torch.Tensor.to
_detach = torch.Tensor.detach
_no_grad = torch.no_grad
_autocast = torch.autocast
_Tensor = torch.Tensor
_Module = torch.nn.Module
_module_train = torch.nn.Module.train
_named_parameters = torch.nn.Module.named_parameters
_named_modules = torch.nn.Module.named_modules
_parameters = torch.nn.Module.parameters
_FlopCounterMode = torch.utils.flop_counter.FlopCounterMode
_float32, _float64, _int64, _uint8 = torch.float32, torch.float64, torch.int64, torch.uint8
_len_tf_stack = torch._C._len_torch_function_stack
_len_td_stack = torch._C._len_torch_dispatch_stack
_SystemRandom = random.SystemRandom
_isinstance, _type, _float, _int, _len, _range, _max, _min = (
    isinstance,
    type,
    float,
    int,
    len,
    range,
    max,
    min,
)
_LN2 = math.log(2)
_monotonic = time.monotonic


class InvalidModel(Exception):
    """The model broke the contract or the rules: the run is "invalid" with this message."""


class ModelCrash(Exception):
    """The candidate's model raised during evaluation: the run is a "crash" (the cause is chained)."""


# -- pieces, separately testable ---------------------------------------------------------------------


def bpb(nats: float, nbytes: float) -> float:
    """Bits per byte from summed nats and summed bytes."""
    if nbytes <= 0:
        raise ValueError("no bytes were scored")
    return nats / (_LN2 * nbytes)


def unwrap(model):
    """The module behind torch.compile's OptimizedModule (and nested wrappers of it)."""
    seen = 0
    while _isinstance(model, _Module) and "_orig_mod" in model._modules and seen < 8:
        model = model._modules["_orig_mod"]
        seen += 1
    return model


def check_modes() -> None:
    if _len_tf_stack():
        raise InvalidModel(
            "a torch function mode was active during evaluation (results could be intercepted)"
        )
    if _len_td_stack():
        raise InvalidModel(
            "a torch dispatch mode was active during evaluation (results could be intercepted)"
        )


def fingerprint(model) -> str:
    """sha256 over names, shapes, dtypes and bytes of every parameter and persistent buffer."""
    import hashlib

    h = hashlib.sha256()
    items = list(_named_parameters(model))
    for mname, m in _named_modules(model):
        for bname, b in m._buffers.items():
            if b is not None and bname not in m._non_persistent_buffers_set:
                items.append((f"{mname}.{bname}", b))
    for name, t in items:
        t = _detach(t)
        h.update(f"{name}|{tuple(t.shape)}|{t.dtype}|".encode())
        if t.numel():
            raw = _reshape(t.contiguous(), (-1,)).view(_uint8)
            h.update(_to(raw, "cpu").numpy().tobytes())
    return h.hexdigest()


def num_params(model) -> int:
    return _int(_sum(_tensor([p.numel() for p in _parameters(model)] or [0], dtype=_int64)).item())


def _forward(model, x, device_type: str):
    """The candidate's forward on a private copy of x, under no_grad (and bf16 autocast on CUDA)."""
    xin = _clone(x)
    try:
        with _no_grad():
            if device_type == "cuda":
                with _autocast("cuda", dtype=torch.bfloat16):
                    logits = model(xin)
            else:
                logits = model(xin)
    except Exception as e:
        raise ModelCrash(f"the model raised during evaluation: {_type(e).__name__}: {e}") from e
    check_modes()
    if _type(logits) is not _Tensor:
        raise InvalidModel(
            f"model(idx) must return a plain torch.Tensor of logits [B, T, V >= vocab_size], "
            f"got {_type(logits).__module__}.{_type(logits).__qualname__}"
        )
    return logits


def score_logits(logits, y, token_bytes, vocab_size: int):
    """(nats, bytes, scored) summed over one batch: float64 nats, int64 bytes and scored-target count
    as 0-d tensors. Targets with 0 bytes are excluded from both sums."""
    B, T = y.shape
    if logits.dim() != 3 or logits.shape[0] != B or logits.shape[1] != T or logits.shape[2] < vocab_size:
        raise InvalidModel(
            f"model(idx) must return logits of shape [B, T, V >= {vocab_size}] = [{B}, {T}, >={vocab_size}], "
            f"got {list(logits.shape)}"
        )
    logits = _narrow(logits, 2, 0, vocab_size)
    nbytes = _reshape(_index_select(token_bytes, 0, _reshape(y, (-1,))), (B, T))
    mask = _gt(nbytes, 0)
    rows = _max(1, LOGSOFTMAX_CHUNK // _max(1, T * vocab_size))
    nats = None
    for r0 in _range(0, B, rows):
        n = _min(rows, B - r0)
        lp = _log_softmax(_narrow(logits, 0, r0, n), -1, dtype=_float32)
        tgt = _unsqueeze(_narrow(y, 0, r0, n), -1)
        nll = _squeeze(_gather(lp, -1, tgt), -1)
        part = -_sum(_where(_narrow(mask, 0, r0, n), nll, _zeros_like(nll)), dtype=_float64)
        nats = part if nats is None else nats + part
    return nats, _sum(nbytes, dtype=_int64), _sum(mask, dtype=_int64)


def _run_batch(model, x, y, token_bytes, vocab_size: int, device_type: str):
    """One evaluation step, the only path any batch takes (scored or probed): forward, then score."""
    logits = _forward(model, x, device_type)
    nats, nbytes, scored = score_logits(logits, y, token_bytes, vocab_size)
    return logits, nats, nbytes, scored


def _max_abs_diff(a, b, mask=None) -> float:
    d = _abs(_sub(_to(a, _float32), _to(b, _float32)))
    if mask is not None:
        d = _where(_unsqueeze(mask, -1), d, _zeros_like(d))
    return _float(_item(_amax(d))) if d.numel() else 0.0


def probe_batch(model, x, y, logits0, token_bytes, vocab_size: int, device_type: str, rng) -> dict:
    """The causality probe on one batch whose first-pass logits are `logits0` (a private copy).
    Returns what it measured; raises InvalidModel when the model peeks at later tokens or changes
    between identical passes."""
    B, T = x.shape
    row = _cat([x, _narrow(y, 1, T - 1, 1)], 1)  # [B, T+1]: the batch as token rows
    if B > 1:
        donor = _roll(row, 1, 0)  # realistic text: the neighbouring row's tokens
    else:
        g = torch.Generator().manual_seed(rng.getrandbits(62))
        donor = _to(_randint(0, vocab_size - 1, tuple(row.shape), generator=g), row.device)
    cuts = [rng.randrange(0, _max(1, T - 1)) for _ in _range(B)]  # keep positions 0..t
    cut = _reshape(_tensor(cuts, dtype=_int64, device=row.device), (B, 1))
    pos = _unsqueeze(_arange(T + 1, device=row.device), 0)
    row2 = _where(_gt(pos, cut), donor, row)
    x2, y2 = _narrow(row2, 1, 0, T), _narrow(row2, 1, 1, T)
    keep = _le(_narrow(pos, 1, 0, T), cut)  # [B, T]: positions whose output must not change

    logits1 = _run_batch(model, x2, y2, token_bytes, vocab_size, device_type)[0]
    probe_diff = _max_abs_diff(_narrow(logits1, 2, 0, vocab_size), _narrow(logits0, 2, 0, vocab_size), keep)
    del logits1
    logits2 = _run_batch(model, x, y, token_bytes, vocab_size, device_type)[0]
    rerun_diff = _max_abs_diff(_narrow(logits2, 2, 0, vocab_size), _narrow(logits0, 2, 0, vocab_size))
    del logits2

    scale = 1.0 + _float(_item(_amax(_abs(_to(_narrow(logits0, 2, 0, vocab_size), _float32)))))
    cap = RERUN_CAP.get(device_type, RERUN_CAP["cuda"]) * scale
    if not math.isfinite(rerun_diff) or rerun_diff > cap:
        raise InvalidModel(
            f"the model's output changed by {rerun_diff:.3g} between two identical evaluation passes "
            f"(allowed {cap:.3g}): it carries state from one evaluation batch to the next, or is not "
            "deterministic enough to be scored"
        )
    tol = _max(2.0 * rerun_diff, PROBE_FLOOR.get(device_type, PROBE_FLOOR["cuda"]) * scale)
    if not math.isfinite(probe_diff) or probe_diff > tol:
        # name the first offending (row, position) for the message
        return_pos = None
        l1 = _run_batch(model, x2, y2, token_bytes, vocab_size, device_type)[0]
        d = _abs(
            _sub(
                _to(_narrow(l1, 2, 0, vocab_size), _float32),
                _to(_narrow(logits0, 2, 0, vocab_size), _float32),
            )
        )
        bad = _amax(d, -1)
        for r in _range(B):
            for t in _range(cuts[r] + 1):
                if _float(_item(bad[r, t])) > tol:
                    return_pos = (r, t, cuts[r])
                    break
            if return_pos:
                break
        r, t, c = return_pos or (0, 0, cuts[0])
        raise InvalidModel(
            f"output at position {t} depends on later tokens: changing the tokens after position {c} "
            f"(row {r}) moved the logits at position {t} by up to {probe_diff:.3g} (tolerance {tol:.3g}); "
            "the model must be causal"
        )
    return {"probe_diff": probe_diff, "rerun_diff": rerun_diff, "tolerance": tol}


def flops_per_token(model, seq_len: int, vocab_size: int, device) -> float:
    """Training FLOPs per token: 3 x the forward FLOPs torch's FlopCounterMode counts on a [1, seq_len]
    batch (backward is about twice the forward). Attention is counted over the full T x T square,
    as FlopCounterMode does, even for causal kernels."""
    x = _randint(0, vocab_size - 1, (1, seq_len), device=device)
    counter = _FlopCounterMode(display=False)
    with _no_grad():
        if torch.device(device).type == "cuda":  # as in evaluation: a bf16-only kernel must run here too
            with _autocast("cuda", dtype=torch.bfloat16), counter:
                model(x)
        else:
            with counter:
                model(x)
    return 3.0 * _float(counter.get_total_flops()) / seq_len


# -- the whole evaluation ----------------------------------------------------------------------------


def evaluate(model, *, data, preset, device: str, snapshot, reading_val, log=print) -> dict:
    """Score the model trained by train.py on the validation split. Returns the result fields;
    raises InvalidModel / ModelCrash for the candidate's failures. Anything else is a harness bug.

    data: harness.data.PreparedData. snapshot: harness.integrity.Snapshot taken before train.py was
    imported. reading_val: context manager inside which the harness may open validation files.
    """
    t0 = _monotonic()
    model = unwrap(model)
    if not _isinstance(model, _Module):
        raise InvalidModel(
            "train(ctx) must return a torch.nn.Module, "
            f"got {_type(model).__module__}.{_type(model).__qualname__}"
        )
    changed = snapshot.changes()
    if changed:
        raise InvalidModel(
            f"{changed[0]} before evaluation"
            + (f" (and {_len(changed) - 1} more)" if _len(changed) > 1 else "")
        )
    check_modes()
    from harness.integrity import active_modes

    hooks = active_modes()
    if hooks:
        raise InvalidModel(hooks[0])

    fp_before = fingerprint(model)
    device_type = torch.device(device).type
    with reading_val:
        data.verify(["val.bin", "token_bytes.npy"])
        val = data.val_tokens()
        token_bytes = _to(_as_tensor(data.token_bytes()), device=device, dtype=_int64)
        batches = _eval_batches(val, data.bos_id, batch_size=preset.eval_batch_size, seq_len=preset.seq_len,
                                max_tokens=preset.eval_tokens, device=device)  # fmt: skip
        first = next(batches, None)  # the loader reads the BOS offsets while the window is open
    vocab = preset.vocab_size
    s = data.stats
    n_upper = count_eval_batches(
        s["val_tokens"], s["val_pieces"], preset.eval_batch_size, preset.seq_len, preset.eval_tokens
    )
    rng = _SystemRandom()
    probe_at = set(rng.sample(_range(n_upper), _min(PROBE_BATCHES, n_upper)))

    _module_train(model, False)
    nats = bytes_ = scored = None
    n = 0
    probes = []
    last = None
    batch = first
    while batch is not None:
        x, y = batch
        logits, bn, bb, bs = _run_batch(model, x, y, token_bytes, vocab, device_type)
        nats = bn if nats is None else nats + bn
        bytes_ = bb if bytes_ is None else bytes_ + bb
        scored = bs if scored is None else scored + bs
        if not _float(_item(bn)) < math.inf:  # nan or inf: the result is "nan", no need to go on
            n += 1
            break
        if n in probe_at:
            probes.append(probe_batch(model, x, y, _clone(logits), token_bytes, vocab, device_type, rng))
        last = (x, y)
        del logits
        n += 1
        batch = next(batches, None)
    if n == 0:
        raise RuntimeError("the validation split gave no evaluation batch")
    finite = _float(_item(nats)) < math.inf
    if not probes and finite:  # the draw fell past the end of a short split: probe the last batch
        x, y = last
        logits = _run_batch(model, x, y, token_bytes, vocab, device_type)[0]
        probes.append(probe_batch(model, x, y, _clone(logits), token_bytes, vocab, device_type, rng))

    total_nats, total_bytes, total_scored = _float(_item(nats)), _int(_item(bytes_)), _int(_item(scored))
    eval_seconds = _monotonic() - t0
    try:
        fpt = flops_per_token(model, preset.seq_len, vocab, device)
        fpt_note = None
    except Exception as e:  # a model FlopCounterMode cannot follow: no MFU, not a failure
        fpt, fpt_note = None, f"FLOP count failed: {_type(e).__name__}: {e}"
    check_modes()

    if fingerprint(model) != fp_before:
        raise InvalidModel(
            "the model's parameters or buffers changed during evaluation (no learning at test time)"
        )
    changed = snapshot.changes()
    if changed:
        raise InvalidModel(
            f"{changed[0]} during evaluation"
            + (f" (and {_len(changed) - 1} more)" if _len(changed) > 1 else "")
        )

    out = {
        "val_nats": total_nats,
        "eval_bytes": total_bytes,
        "eval_tokens": total_scored,
        "eval_batches": n,
        "eval_seconds": round(eval_seconds, 3),
        "num_params": num_params(model),
        "flops_per_token": fpt,
        "probe": {
            "batches": _len(probes),
            "max_probe_diff": _max([p["probe_diff"] for p in probes], default=None),
            "max_rerun_diff": _max([p["rerun_diff"] for p in probes], default=None),
        },
    }
    if fpt_note:
        out["flops_note"] = fpt_note
    if not math.isfinite(total_nats):
        out["val_bpb"] = None
        out["val_loss"] = None
        out["nonfinite"] = True
        return out
    out["val_bpb"] = bpb(total_nats, total_bytes)
    out["val_loss"] = total_nats / _max(1, total_scored)
    return out
