"""BOS-aligned best-fit packing of prepared token streams into (x, y) batches.

A prepared split is one flat token array in which every document piece starts with BOS. The loader
packs pieces into rows of seq_len + 1 tokens with no padding:

- every row starts with BOS;
- the piece placed next is the largest one that still fits the space left in the row (best fit);
- when none fits, the shortest piece is cropped to fill the row exactly, and the rest of it goes back
  into the buffer as a new piece, with a BOS in front; so no token is thrown away and none is padding;
- x = row[:-1], y = row[1:].

Pieces are drawn in a random order fixed by (seed, epoch), so a seed gives the same batches on every
machine. The work is per piece, not per token: a best-fit choice is one vectorised numpy scan of a
small buffer, and a placement is one slice copy. `eval_batches` is the same packer run once over the
validation split with a fixed seed and no wrap-around, so its batches are identical on every call.

torch is imported only where a batch becomes a tensor: the supervisor packs rows as numpy and never
needs it, and importing it would cost every run about two CPU-seconds there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

BUFFER_PIECES = 1024  # pieces the best-fit search chooses from
EVAL_SEED = 1234  # the validation order; part of what val_bpb means, never change it casually
_SCAN_CHUNK = 1 << 26


def piece_starts(tokens: np.ndarray, bos_id: int) -> np.ndarray:
    """Offsets of every BOS in `tokens` (chunked, so a multi-GB memmap never needs a full bool copy)."""
    out = []
    for lo in range(0, len(tokens), _SCAN_CHUNK):
        out.append(np.flatnonzero(np.asarray(tokens[lo : lo + _SCAN_CHUNK]) == bos_id) + lo)
    starts = np.concatenate(out) if out else np.zeros(0, dtype=np.int64)
    if len(tokens) and (len(starts) == 0 or starts[0] != 0):
        raise ValueError("token stream does not start with BOS: not a prepared split")
    return starts.astype(np.int64)


class PackedLoader:
    """Infinite (or, with epochs=1, single-pass) iterator of (x, y) int64 batches of shape (B, T).

    `loader.epoch` is the epoch the most recent piece was drawn from (1-based); `tokens_seen` counts
    the row tokens produced so far. On CUDA, rows are staged in pinned memory and copied with
    non_blocking=True; every batch is a fresh device tensor, so a caller may keep one while asking
    for the next.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        bos_id: int,
        batch_size: int,
        seq_len: int,
        *,
        seed: int = 0,
        device: str | torch.device = "cpu",
        shuffle: bool = True,
        epochs: int | None = None,
        buffer_pieces: int = BUFFER_PIECES,
        starts: np.ndarray | None = None,
    ):
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be positive, got {batch_size}, {seq_len}")
        self.tokens = tokens
        self.bos_id = int(bos_id)
        self.B, self.T = int(batch_size), int(seq_len)
        self.cap = self.T + 1
        self.seed = int(seed)
        self.device = device
        self.shuffle = shuffle
        self.epochs = epochs
        self.starts = piece_starts(tokens, bos_id) if starts is None else np.asarray(starts, dtype=np.int64)
        if len(self.starts) == 0:
            raise ValueError("no pieces to pack: the token stream is empty")
        self.lengths = np.diff(np.append(self.starts, len(tokens))).astype(np.int64)
        self.epoch = 0
        self.tokens_seen = 0
        self._order = np.zeros(0, dtype=np.int64)
        self._cursor = 0
        # The buffer: source offset, tokens left, and whether a BOS must be written in front (a cropped
        # remainder); eff = what the piece occupies in a row.
        n = max(1, int(buffer_pieces))
        self._src = np.zeros(n, dtype=np.int64)
        self._len = np.zeros(n, dtype=np.int64)
        self._bos = np.zeros(n, dtype=bool)
        self._eff = np.zeros(n, dtype=np.int64)
        self._n = 0
        self._exhausted = False
        self._cuda = str(device).startswith("cuda")
        if self._cuda:
            import torch

            self._pinned = [torch.empty((2, self.B, self.T), dtype=torch.long).pin_memory() for _ in range(2)]
            self._events: list = [None, None]
            self._which = 0

    # -- piece supply -----------------------------------------------------------------------------

    def _next_epoch(self) -> bool:
        if self.epochs is not None and self.epoch >= self.epochs:
            return False
        self.epoch += 1
        if self.shuffle:
            rng = np.random.default_rng([self.seed, self.epoch])
            self._order = rng.permutation(len(self.starts))
        else:
            self._order = np.arange(len(self.starts))
        self._cursor = 0
        return True

    def _refill(self) -> None:
        while self._n < len(self._src) and not self._exhausted:
            if self._cursor >= len(self._order) and not self._next_epoch():
                self._exhausted = True
                break
            take = min(len(self._src) - self._n, len(self._order) - self._cursor)
            idx = self._order[self._cursor : self._cursor + take]
            sl = slice(self._n, self._n + take)
            self._src[sl] = self.starts[idx]
            self._len[sl] = self.lengths[idx]
            self._bos[sl] = False
            self._eff[sl] = self.lengths[idx]
            self._n += take
            self._cursor += take

    def _remove(self, i: int) -> None:
        last = self._n - 1
        if i != last:
            self._src[i], self._len[i] = self._src[last], self._len[last]
            self._bos[i], self._eff[i] = self._bos[last], self._eff[last]
        self._n = last

    # -- packing ----------------------------------------------------------------------------------

    def _fill_row(self, row: np.ndarray) -> bool:
        """Fill one row of cap tokens; False when a single-pass loader runs out first."""
        pos = 0
        cap = self.cap
        while pos < cap:
            if self._n < len(self._src):
                self._refill()
            n = self._n
            if n == 0:
                return False
            rem = cap - pos
            eff = self._eff[:n]
            fit = np.where(eff <= rem, eff, -1)
            i = int(fit.argmax())
            if fit[i] > 0:
                k = int(self._len[i])  # the whole piece
            else:
                i = int(eff.argmin())  # nothing fits: crop the shortest
                k = rem - int(self._bos[i])
            if pos == 0 and not self._bos[i] and self.tokens[self._src[i]] != self.bos_id:
                raise AssertionError("piece does not start with BOS")  # cannot happen with prepared data
            if self._bos[i]:
                row[pos] = self.bos_id
                pos += 1
            src = int(self._src[i])
            row[pos : pos + k] = self.tokens[src : src + k]
            pos += k
            if k == self._len[i]:
                self._remove(i)
            else:
                self._src[i] += k
                self._len[i] -= k
                self._bos[i] = True
                self._eff[i] = self._len[i] + 1
        return True

    def next_rows(self) -> np.ndarray | None:
        """The next (B, T+1) int64 rows as numpy, or None when a single-pass loader is done."""
        rows = np.empty((self.B, self.cap), dtype=np.int64)
        for r in range(self.B):
            if not self._fill_row(rows[r]):
                if r == 0 or self.tokens_seen > 0:
                    return None
                rows = rows[:r]  # a split smaller than one batch: the rows there are, once
                break
        self.tokens_seen += rows.shape[0] * self.T
        return rows

    def _to_device(self, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        t = torch.from_numpy(rows)
        if not self._cuda:
            return t[:, :-1].contiguous(), t[:, 1:].contiguous()
        b = rows.shape[0]
        k = self._which
        self._which ^= 1
        if self._events[k] is not None:
            self._events[k].synchronize()  # that pinned buffer's previous copy must be done first
        stage = self._pinned[k][:, :b]
        stage[0].copy_(t[:, :-1])
        stage[1].copy_(t[:, 1:])
        out = stage.to(self.device, non_blocking=True)
        ev = torch.cuda.Event()
        ev.record()
        self._events[k] = ev
        return out[0], out[1]

    def __iter__(self):
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.next_rows()
        if rows is None:
            raise StopIteration
        return self._to_device(rows)


def eval_batches(
    tokens: np.ndarray,
    bos_id: int,
    batch_size: int,
    seq_len: int,
    max_tokens: int,
    device: str | torch.device = "cpu",
    starts: np.ndarray | None = None,
):
    """The validation batches: the same (x, y) on every call, at most max_tokens scored positions.

    One pass over the split in an order fixed by EVAL_SEED (so a capped evaluation samples the whole
    split, not its first documents), full batches only, except that a split smaller than one batch
    gives its rows once.
    """
    loader = PackedLoader(
        tokens, bos_id, batch_size, seq_len, seed=EVAL_SEED, device=device, epochs=1, starts=starts
    )
    budget = max(1, int(max_tokens) // (batch_size * seq_len))
    for _ in range(budget):
        rows = loader.next_rows()
        if rows is None:
            return
        yield loader._to_device(rows)


def count_eval_batches(n_tokens: int, n_pieces: int, batch_size: int, seq_len: int, max_tokens: int) -> int:
    """An upper bound on len(list(eval_batches(...))) without packing (for progress bars)."""
    rows = (n_tokens + n_pieces) // (seq_len + 1)
    return max(1, min(int(max_tokens) // (batch_size * seq_len), rows // batch_size))
