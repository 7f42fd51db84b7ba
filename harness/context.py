"""The `ctx` that `train(ctx)` receives: the clock, the training data and the loss log.

What train.py can use (Contract 3):

    ctx.preset, ctx.seed, ctx.device        the run's settings ("cuda" or "cpu")
    ctx.seq_len, ctx.vocab_size, ctx.bos_id the data's shape; model(idx) must give logits [B, T, V >= vocab]
    ctx.budget_seconds                      the training budget
    ctx.start_clock()                       start the training clock now (optional, see below)
    ctx.time_left() -> float                seconds of budget left (the whole budget before the clock starts)
    ctx.elapsed() -> float                  training seconds used so far
    ctx.progress() -> float                 elapsed / budget, in [0, 1]: handy for LR schedules
    ctx.should_stop() -> bool               the budget is spent
    ctx.train_batches(batch_size, seq_len=None)
                                            iterator of (x, y) int64 [B, T] training batches on ctx.device;
                                            the first one starts the clock; the iterator ends with the budget
    ctx.warmup_batch(batch_size, seq_len=None)
                                            one (x, y) of random tokens, for compile warm-up before the clock
    ctx.log(step, loss, **extra)            report the training loss; raises TrainingDiverged on a blow-up
    ctx.tokens_seen                         training tokens served so far

The clock starts at ctx.start_clock(), at the first training batch, or when the preset's start-up
allowance runs out, whichever comes first; that is the same rule the supervisor applies with its own
clock, and the supervisor's clock is the one that is reported and enforced. No real data is served
before the clock starts: warm-up batches are random tokens.

The time reference is captured when this module is imported, before train.py is, so patching
time.monotonic later changes nothing here.
"""

from __future__ import annotations

import math
import sys
from time import monotonic as _monotonic

import torch

from harness import TrainingDiverged
from harness.dataloader import PackedLoader

PROGRESS_EVERY_S = 5.0  # a progress line at most this often
EVENT_EVERY_S = 1.0  # a progress event to the supervisor at most this often
DIVERGE_AFTER_STEP = 10  # the "blow-up" checks start after this many steps (non-finite: always)
DIVERGE_FACTOR = 3.0  # loss above this times the first logged loss is a blow-up


class Context:
    def __init__(
        self,
        preset,
        *,
        seed: int,
        device: str,
        train_tokens,
        train_starts,
        bos_id: int,
        spawn_time: float,
        emit=None,
    ):
        self.preset = preset
        self.seed = int(seed)
        self.device = device
        self.seq_len = int(preset.seq_len)
        self.vocab_size = int(preset.vocab_size)
        self.bos_id = int(bos_id)
        self.budget_seconds = float(preset.budget_seconds)
        self._tokens = train_tokens
        self._starts = train_starts  # BOS offsets, computed by the worker before the clock can start
        self._loaders: dict[tuple[int, int], PackedLoader] = {}
        self._allowance_end = float(spawn_time) + float(preset.startup_allowance_seconds)
        self._clock_start: float | None = None
        self._emit = emit or (lambda *a, **k: None)
        self._gen = torch.Generator().manual_seed(self.seed + 1)  # warm-up tokens only
        self.tokens_seen = 0
        self.num_steps = 0
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self._last_print = -math.inf
        self._last_event = -math.inf

    def __repr__(self) -> str:
        return (
            f"Context(preset={self.preset.name!r}, device={self.device!r}, seed={self.seed}, "
            f"seq_len={self.seq_len}, vocab_size={self.vocab_size}, budget_seconds={self.budget_seconds})"
        )

    # -- the clock --------------------------------------------------------------------------------

    def _now(self) -> float:
        return _monotonic()

    def _clock(self) -> float | None:
        """When the clock started, applying the start-up allowance; None while it has not."""
        if self._clock_start is None and self._now() >= self._allowance_end:
            self._clock_start = self._allowance_end
        return self._clock_start

    def start_clock(self) -> None:
        if self._clock() is None:
            if self.device.startswith("cuda"):
                torch.cuda.synchronize()  # warm-up work still queued on the GPU is not training time
            self._clock_start = self._now()
            self._emit("clock_started")

    @property
    def clock_started(self) -> bool:
        return self._clock() is not None

    def elapsed(self) -> float:
        start = self._clock()
        return 0.0 if start is None else max(0.0, self._now() - start)

    def time_left(self) -> float:
        return max(0.0, self.budget_seconds - self.elapsed())

    def should_stop(self) -> bool:
        """True once the budget is spent: for loops that do not iterate over train_batches()."""
        return self.time_left() <= 0

    def progress(self) -> float:
        return min(1.0, self.elapsed() / self.budget_seconds) if self.budget_seconds > 0 else 1.0

    # -- data -------------------------------------------------------------------------------------

    def _check_shape(self, batch_size, seq_len) -> tuple[int, int]:
        b = int(batch_size)
        t = self.seq_len if seq_len is None else int(seq_len)
        if b < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if not 1 <= t <= self.seq_len:
            raise ValueError(f"seq_len must be between 1 and the preset's {self.seq_len}, got {seq_len}")
        return b, t

    def train_batches(self, batch_size: int, seq_len: int | None = None):
        """(x, y) training batches until the budget is spent. Calling it again with the same shape
        continues the same stream; the data order is fixed by the seed."""
        b, t = self._check_shape(batch_size, seq_len)
        key = (b, t)
        if key not in self._loaders:
            self._loaders[key] = PackedLoader(
                self._tokens, self.bos_id, b, t, seed=self.seed, device=self.device, starts=self._starts
            )
        return self._batches(self._loaders[key], b * t)

    def _batches(self, loader: PackedLoader, tokens_per_batch: int):
        self.start_clock()
        while self.time_left() > 0:
            x, y = next(loader)
            self.tokens_seen += tokens_per_batch
            yield x, y

    def warmup_batch(self, batch_size: int, seq_len: int | None = None):
        """Random tokens in the shape of a training batch: warm up (compile) without real data."""
        b, t = self._check_shape(batch_size, seq_len)
        row = torch.randint(0, self.vocab_size, (b, t + 1), generator=self._gen)
        return row[:, :-1].contiguous().to(self.device), row[:, 1:].contiguous().to(self.device)

    # -- the loss log -----------------------------------------------------------------------------

    def log(self, step: int, loss, **extra) -> None:
        """Record the training loss at optimizer step `step` (0-based). Raises TrainingDiverged when
        it is not finite, or (after step 10) above 3x the first logged loss or 2 ln(vocab_size)."""
        value = float(loss.detach().float().item() if isinstance(loss, torch.Tensor) else loss)
        step = int(step)
        self.num_steps = max(self.num_steps, step + 1)
        self.last_loss = value
        if not math.isfinite(value):
            raise TrainingDiverged(f"training loss is {value} at step {step}")
        if self.first_loss is None:
            self.first_loss = value
        if step >= DIVERGE_AFTER_STEP:
            ceiling = min(DIVERGE_FACTOR * self.first_loss, 2.0 * math.log(self.vocab_size))
            if value > ceiling:
                raise TrainingDiverged(
                    f"training loss {value:.4f} at step {step} is above {ceiling:.4f} "
                    f"(the lower of {DIVERGE_FACTOR:g}x the first logged loss {self.first_loss:.4f} "
                    "and 2 ln(vocab_size))"
                )
        now = self._now()
        if now - self._last_event >= EVENT_EVERY_S:
            self._last_event = now
            self._emit("progress", step=step, loss=value, tokens=self.tokens_seen)
        if now - self._last_print >= PROGRESS_EVERY_S:
            self._last_print = now
            el = self.elapsed()
            tps = self.tokens_seen / el if el > 0 else 0.0
            more = "".join(
                f" | {k} {v:.4g}" if isinstance(v, float) else f" | {k} {v}" for k, v in extra.items()
            )
            print(
                f"step {step:5d} | loss {value:.4f} | {el:6.1f}/{self.budget_seconds:.0f} s | "
                f"{tps / 1e3:8.1f}k tok/s{more}",
                file=sys.stdout,
                flush=True,
            )
