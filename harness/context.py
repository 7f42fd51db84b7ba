"""The `ctx` that `train(ctx)` and `build_model(ctx)` receive, inside the training sandbox.

What train.py can use:

    ctx.preset, ctx.seed, ctx.device        the run's settings ("cuda" or "cpu")
    ctx.seq_len, ctx.vocab_size, ctx.bos_id the data's shape; model(idx) must give logits [B, T, V >= vocab]
    ctx.budget_seconds, ctx.clock           the training budget, and the clock it is measured on:
                                            "cpu" (CPU seconds of the whole training process tree) or
                                            "wall" (seconds of a dedicated GPU's wall clock)
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

The clock and the data are the harness's, not this process's: every batch is packed by the
supervisor outside the sandbox and sent over a socket, only after the clock has started and only
while the budget lasts; each reply carries the supervisor's count of training time used. Between
replies, elapsed() adds this process's own CPU (or wall) time since the last reply: an estimate for
schedules, never what is enforced or reported. The clock starts at ctx.start_clock(), at the first
batch, or when the start-up allowance (wall clock) runs out, whichever comes first.
"""

from __future__ import annotations

import math
import sys
import time

import numpy as np
import torch

from harness import TrainingDiverged

PROGRESS_EVERY_S = 5.0  # a progress line at most this often
EVENT_EVERY_S = 1.0  # a progress message to the supervisor at most this often
DIVERGE_AFTER_STEP = 10  # the "blow-up" checks start after this many steps (non-finite: always)
DIVERGE_FACTOR = 3.0  # loss above this times the first logged loss is a blow-up

_process_time = time.process_time
_monotonic = time.monotonic


class ModelContext:
    """What `build_model(ctx)` gets in a model process of the scoring: shapes and device, no data,
    no clock."""

    def __init__(self, preset, *, seed: int, device: str, bos_id: int):
        self.preset = preset
        self.seed = int(seed)
        self.device = device
        self.seq_len = int(preset.seq_len)
        self.vocab_size = int(preset.vocab_size)
        self.bos_id = int(bos_id)
        self.budget_seconds = float(preset.budget_seconds)
        self.clock = preset.clock

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(preset={self.preset.name!r}, device={self.device!r}, seed={self.seed}, "
            f"seq_len={self.seq_len}, vocab_size={self.vocab_size}, budget_seconds={self.budget_seconds})"
        )


class Context(ModelContext):
    def __init__(self, preset, *, seed: int, device: str, bos_id: int, chan):
        super().__init__(preset, seed=seed, device=device, bos_id=bos_id)
        self._chan = chan
        self._used = 0.0  # the supervisor's count at its last reply
        self._mark = self._local()
        self._started = False
        self._stopped = False
        self._gen = torch.Generator().manual_seed(self.seed + 1)  # warm-up tokens only
        self.tokens_seen = 0
        self.num_steps = 0
        self.first_loss: float | None = None
        self.last_loss: float | None = None
        self._last_print = -math.inf
        self._last_event = -math.inf
        self._cuda = str(device).startswith("cuda")
        self._pinned: dict = {}

    # -- the clock (an estimate of the supervisor's) ----------------------------------------------

    def _local(self) -> float:
        return _process_time() if self.preset.clock == "cpu" else _monotonic()

    def _update(self, reply: dict) -> None:
        used = reply.get("used")
        if isinstance(used, int | float):
            self._used = float(used)
            self._mark = self._local()
        if reply.get("started"):
            self._started = True

    def _ask(self, msg: dict):
        self._chan.send(msg)
        got = self._chan.recv()
        self._update(got[0])
        return got

    def start_clock(self) -> None:
        if not self._started:
            if self._cuda:
                torch.cuda.synchronize()  # warm-up work still queued on the GPU is not training time
            self._ask({"op": "clock"})
            self._started = True

    @property
    def clock_started(self) -> bool:
        return self._started

    def elapsed(self) -> float:
        if not self._started:
            return 0.0
        return self._used + max(0.0, self._local() - self._mark)

    def time_left(self) -> float:
        if self._stopped:
            return 0.0
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
        return self._batches(b, t)

    def _batches(self, b: int, t: int):
        while not self._stopped:
            msg, payload = self._ask({"op": "batch", "b": b, "t": t})
            self._started = True
            if msg.get("op") != "batch":
                self._stopped = True
                return
            rows = np.frombuffer(payload, dtype=np.uint16).reshape(b, t + 1)
            self.tokens_seen += b * t
            yield self._to_device(rows)

    def _to_device(self, rows: np.ndarray):
        r = torch.from_numpy(rows.astype(np.int64))
        x, y = r[:, :-1].contiguous(), r[:, 1:].contiguous()
        if not self._cuda:
            return x, y
        key = tuple(r.shape)
        if key not in self._pinned:
            pinned = torch.empty((2, r.shape[0], r.shape[1] - 1), dtype=torch.long).pin_memory()
            self._pinned[key] = (pinned, torch.cuda.Event())
        stage, copied = self._pinned[key]
        # Wait for the previous copy out of the staging buffer only, not for the whole stream: the GPU
        # keeps computing the step queued after that copy while this batch is fetched and staged (a
        # wait for the stream left it idle for every batch's round trip).
        copied.synchronize()
        stage[0].copy_(x)
        stage[1].copy_(y)
        out = stage.to(self.device, non_blocking=True)
        copied.record()
        return out[0], out[1]

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
        now = _monotonic()
        if now - self._last_event >= EVENT_EVERY_S:
            self._last_event = now
            self._chan.send({"op": "log", "step": step, "loss": value, "tokens": self.tokens_seen})
        if now - self._last_print >= PROGRESS_EVERY_S:
            self._last_print = now
            el = self.elapsed()
            more = "".join(
                f" | {k} {v:.4g}" if isinstance(v, float) else f" | {k} {v}" for k, v in extra.items()
            )
            print(
                f"step {step:5d} | loss {value:.4f} | {el:6.1f}/{self.budget_seconds:.0f} {self.clock} s | "
                f"{self.tokens_seen / 1e3:8.1f}k tokens{more}",
                file=sys.stdout,
                flush=True,
            )
