"""Prepared data: the tokenizer and the tokenized train/validation splits, built once and cached.

    prepare(preset)        build (or find) the cache for a preset; idempotent and resumable
    load_prepared(preset)  open it cheaply; CacheError, naming the command to run, when missing or corrupt
    PreparedData           paths, manifest, memmapped tokens, tokenizer, token_bytes, loaders, verify()

Two sources. "climbmix" is the parquet text karpathy's autoresearch trains on, downloaded over HTTP
(harness/climbmix.py). "offline" is public-domain text shipped in pip packages (harness/corpus.py). A
preset whose data_source is "auto" uses climbmix when it is already prepared or reachable, and the
offline corpus otherwise; `prepare` prints one line to stderr whenever it settles on the offline source.

Layout under cache_root() (env AUTORESEARCH_CACHE, else ~/.cache/autoresearch-ci):

    data/<slug>-v<vocab>/train.bin        uint16 tokens; every document piece starts with BOS
    data/<slug>-v<vocab>/val.bin          the same for the validation split
    data/<slug>-v<vocab>/token_bytes.npy  int32 UTF-8 byte length per token id (0 for BOS)
    data/<slug>-v<vocab>/tokenizer.pkl    BPE ranks + split pattern (plain data, see tokenizer.py)
    data/<slug>-v<vocab>/manifest.json    config, split, stats, sha256 of every file; written last
    raw/climbmix/shard_XXXXX.parquet      downloaded shards

Documents are split into train and validation first (whole documents), then each long document is cut
into paragraph-aligned pieces of at most `piece_tokens` tokens including BOS, so packing a row of
seq_len + 1 tokens wastes nothing. piece_tokens is seq_len + 1 of the longest preset that shares the
vocabulary (257 for tiny/cpu, 2049 for gpu), so tiny and cpu share one cache.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import platform
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from harness.presets import PRESETS, Preset, get_preset

FORMAT = 1
ENCODE_BATCH_DOCS = 256
TOKENIZER_MAX_CHARS = 1_000_000_000  # as karpathy: enough text for an 8192 vocabulary
TOKENIZER_DOC_CAP = 10_000  # characters of each document the tokenizer trainer sees
DEFAULT_VERIFY = ("val.bin", "token_bytes.npy", "tokenizer.pkl")
ARTIFACTS = ("train.bin", "val.bin", "token_bytes.npy", "tokenizer.pkl")


class CacheError(RuntimeError):
    """The prepared data is missing, stale or corrupt; the message says which command fixes it."""


def cache_root() -> Path:
    from harness.protocol import cache_root_dir

    return Path(cache_root_dir())


def prepare_command(preset: Preset | str) -> str:
    name = preset if isinstance(preset, str) else preset.name
    return f"python -m harness prepare --preset {name}"


def _info(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------------
# Where a preset's data lives
# ------------------------------------------------------------------------------------------------


def piece_tokens_for(preset: Preset) -> int:
    """Longest piece (BOS included): one full row of the longest preset sharing this vocabulary."""
    seq = max([p.seq_len for p in PRESETS.values() if p.vocab_size == preset.vocab_size] + [preset.seq_len])
    return seq + 1


def _config(preset: Preset, source: str, train_shards: int | None) -> dict:
    cfg = {
        "format": FORMAT,
        "source": source,
        "vocab_size": preset.vocab_size,
        "piece_tokens": piece_tokens_for(preset),
    }
    if source == "offline":
        cfg["corpus"] = list(preset.offline_corpus)
    else:
        cfg["train_shards"] = int(train_shards if train_shards is not None else preset.climbmix_train_shards)
    return cfg


def data_dir(preset: Preset, source: str) -> Path:
    if source == "offline":
        slug = "offline-" + "+".join(preset.offline_corpus)
    elif source == "climbmix":
        slug = "climbmix"
    else:
        raise ValueError(f"unknown data source {source!r}; expected offline or climbmix")
    return cache_root() / "data" / f"{slug}-v{preset.vocab_size}"


def _resolve_preset(preset: Preset | str) -> Preset:
    return get_preset(preset) if isinstance(preset, str) else preset


# ------------------------------------------------------------------------------------------------
# Hashing and atomic writes
# ------------------------------------------------------------------------------------------------

_HASH_MEMO: dict[tuple[str, int, int], str] = {}


def sha256_file(path: Path | str, fresh: bool = False) -> str:
    """sha256 of a file, memoised per (path, size, mtime, ctime) for this process (fresh: re-read)."""
    st = os.stat(path)
    key = (str(path), st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if fresh or key not in _HASH_MEMO:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 23):
                h.update(chunk)
        _HASH_MEMO[key] = h.hexdigest()
    return _HASH_MEMO[key]


def _tmp(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp-{os.getpid()}")


def _write_bytes_atomic(path: Path, data: bytes) -> None:
    tmp = _tmp(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class _HashingWriter:
    """Append-only writer to a temp file that hashes and counts as it goes; commit() renames it."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = _tmp(path)
        self.f = open(self.tmp, "wb")  # noqa: SIM115 (closed in commit/abort)
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, arr: np.ndarray) -> None:
        b = arr.tobytes()
        self.f.write(b)
        self.h.update(b)
        self.size += len(b)

    def commit(self) -> dict:
        self.f.flush()
        os.fsync(self.f.fileno())
        self.f.close()
        os.replace(self.tmp, self.path)
        return {"size": self.size, "sha256": self.h.hexdigest()}

    def abort(self) -> None:
        self.f.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp.unlink()


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock file, so two processes preparing the same cache do not interleave."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ------------------------------------------------------------------------------------------------
# PreparedData
# ------------------------------------------------------------------------------------------------


@dataclass
class PreparedData:
    """A prepared cache directory, opened cheaply: nothing is hashed or read until asked."""

    dir: Path
    manifest: dict
    preset_name: str = ""
    _verified: dict = field(default_factory=dict, repr=False)

    # -- identity ---------------------------------------------------------------------------------

    @property
    def source(self) -> str:
        return self.manifest["config"]["source"]

    @property
    def vocab_size(self) -> int:
        return int(self.manifest["config"]["vocab_size"])

    @property
    def bos_id(self) -> int:
        return int(self.manifest["bos_id"])

    @property
    def piece_tokens(self) -> int:
        return int(self.manifest["config"]["piece_tokens"])

    @property
    def fingerprint(self) -> str:
        """sha256 naming exactly this data: config + the hash of every artifact."""
        return self.manifest["fingerprint"]

    @property
    def stats(self) -> dict:
        return self.manifest["stats"]

    @property
    def root(self) -> Path:  # SPEC's name for the cache directory of this data
        return self.dir

    def path(self, name: str) -> Path:
        return self.dir / name

    @property
    def train_path(self) -> Path:
        return self.dir / "train.bin"

    @property
    def val_path(self) -> Path:
        return self.dir / "val.bin"

    @property
    def token_bytes_path(self) -> Path:
        return self.dir / "token_bytes.npy"

    @property
    def tokenizer_path(self) -> Path:
        return self.dir / "tokenizer.pkl"

    @property
    def manifest_path(self) -> Path:
        return self.dir / "manifest.json"

    def describe(self) -> str:
        s = self.stats
        what = "+".join(self.manifest["config"].get("corpus") or []) or "climbmix"
        return (
            f"{self.source} ({what}), vocab {self.vocab_size}: train {s['train_tokens']:,} tokens, "
            f"val {s['val_tokens']:,} tokens, {s['val_bytes_per_token']:.2f} bytes/token"
        )

    # -- contents ---------------------------------------------------------------------------------

    def _tokens(self, name: str) -> np.ndarray:
        return np.memmap(self.dir / name, dtype=np.dtype(self.manifest["dtype"]), mode="r")

    def train_tokens(self) -> np.ndarray:
        return self._tokens("train.bin")

    def val_tokens(self) -> np.ndarray:
        return self._tokens("val.bin")

    def token_bytes(self) -> np.ndarray:
        return np.load(self.token_bytes_path)

    def token_bytes_tensor(self, device="cpu"):
        import torch

        return torch.from_numpy(self.token_bytes().astype(np.int64)).to(device)

    def tokenizer(self):
        """The harness Tokenizer (encode/decode/encode_batch, bos_id, .enc the tiktoken.Encoding)."""
        return self._tokenizer

    def encoding(self):
        """The bare tiktoken.Encoding, BOS registered as the special token <|bos|>."""
        return self._tokenizer.enc

    @cached_property
    def _tokenizer(self):
        from harness.tokenizer import Tokenizer

        return Tokenizer.load(self.tokenizer_path)

    def train_loader(self, batch_size: int, seq_len: int, seed: int = 0, device="cpu"):
        from harness.dataloader import PackedLoader

        return PackedLoader(self.train_tokens(), self.bos_id, batch_size, seq_len, seed=seed, device=device)

    def eval_batches(self, batch_size: int, seq_len: int, max_tokens: int, device="cpu") -> Iterator:
        from harness.dataloader import eval_batches

        return eval_batches(self.val_tokens(), self.bos_id, batch_size, seq_len, max_tokens, device=device)

    def protected_paths(self) -> list[Path]:
        """Everything that holds validation text: what the training process must never open.

        val.bin; for climbmix the raw validation shard (and its partial/sidecar files); for the
        offline source the corpus package directories (each holds its validation documents)."""
        paths = [self.val_path]
        if self.source == "climbmix":
            raw = cache_root() / "raw" / "climbmix"
            for name in self.manifest.get("split", {}).get("val", []):
                paths += [raw / name, raw / f"{name}.part", raw / f"{name}.json"]
        else:
            from harness.corpus import MissingCorpusError, package_dir

            for corpus in self.manifest["config"].get("corpus", []):
                with contextlib.suppress(MissingCorpusError, ValueError):
                    paths.append(package_dir(corpus))
        return paths

    # -- integrity --------------------------------------------------------------------------------

    def check_files(self) -> None:
        """Cheap: every artifact exists with the size the manifest recorded."""
        problems = []
        for name, rec in self.manifest["files"].items():
            p = self.dir / name
            if not p.is_file():
                problems.append(f"{name} is missing")
            elif p.stat().st_size != rec["size"]:
                problems.append(f"{name} has {p.stat().st_size} bytes, the manifest says {rec['size']}")
        if problems:
            raise CacheError(self._broken("; ".join(problems)))

    def verify(self, paths: Iterable[str] | str | None = None, fresh: bool = False) -> dict[str, str]:
        """Hash artifacts against the manifest (default: val.bin, token_bytes.npy, tokenizer.pkl;
        "all" for every file). Returns {name: sha256}; raises CacheError on any mismatch."""
        if paths is None:
            names = list(DEFAULT_VERIFY)
        elif paths == "all":
            names = list(self.manifest["files"])
        else:
            names = [Path(p).name for p in ([paths] if isinstance(paths, str | Path) else paths)]
        out, problems = {}, []
        for name in names:
            rec = self.manifest["files"].get(name)
            if rec is None:
                problems.append(f"{name} is not in the manifest")
                continue
            p = self.dir / name
            if not p.is_file():
                problems.append(f"{name} is missing")
                continue
            digest = sha256_file(p, fresh=fresh)
            if digest != rec["sha256"]:
                problems.append(
                    f"{name} sha256 {digest[:12]}.. does not match the manifest's {rec['sha256'][:12]}.."
                )
            out[name] = digest
        if problems:
            raise CacheError(self._broken("; ".join(problems)))
        self._verified.update(out)
        return out

    def _broken(self, why: str) -> str:
        return (
            f"prepared data in {self.dir} is corrupt ({why}): "
            f"run `{prepare_command(self.preset_name or 'NAME')}` to rebuild it"
        )


def _read_manifest(d: Path) -> dict | None:
    try:
        m = json.loads((d / "manifest.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return m if isinstance(m, dict) and m.get("format") == FORMAT else None


def _matches(manifest: dict | None, cfg: dict, ignore: tuple[str, ...] = ()) -> bool:
    if manifest is None:
        return False
    have = {k: v for k, v in manifest.get("config", {}).items() if k not in ignore}
    want = {k: v for k, v in cfg.items() if k not in ignore}
    return have == want


def _open(preset: Preset, source: str, train_shards: int | None, strict_shards: bool) -> PreparedData | None:
    d = data_dir(preset, source)
    m = _read_manifest(d)
    ignore = () if strict_shards or source == "offline" else ("train_shards",)
    if not _matches(m, _config(preset, source, train_shards), ignore):
        return None
    return PreparedData(d, m, preset.name)


def load_prepared(preset: Preset | str, *, source: str | None = None, verify: bool = False) -> PreparedData:
    """Open the prepared data for a preset. Cheap (reads the manifest, stats the files).

    source: None follows preset.data_source ("auto" takes climbmix when it is prepared, else offline).
    verify: also hash val.bin, token_bytes.npy and tokenizer.pkl against the manifest.
    """
    preset = _resolve_preset(preset)
    source = source or preset.data_source
    candidates = ["climbmix", "offline"] if source == "auto" else [source]
    for src in candidates:
        data = _open(preset, src, None, strict_shards=False)
        if data is not None:
            data.check_files()
            if verify:
                data.verify()
            return data
    where = " or ".join(str(data_dir(preset, s)) for s in candidates)
    raise CacheError(
        f"no prepared data for preset {preset.name!r} (looked in {where}): run `{prepare_command(preset)}`"
    )


# ------------------------------------------------------------------------------------------------
# Tokenizing documents into BOS-led, paragraph-aligned pieces
# ------------------------------------------------------------------------------------------------


class _Boundaries:
    """Per-token-id lookups for where a piece may end: after a paragraph ("\\n\\n"), a line, a sentence."""

    def __init__(self, tokenizer):
        v = tokenizer.vocab_size
        self.nl = np.zeros(v, dtype=bool)
        self.nn = np.zeros(v, dtype=bool)
        self.sent = np.zeros(v, dtype=bool)
        for tok, rank in tokenizer.mergeable_ranks.items():
            self.nl[rank] = tok.endswith(b"\n")
            self.nn[rank] = tok.endswith(b"\n\n")
            self.sent[rank] = tok.rstrip(b" \"')").endswith((b".", b"?", b"!", b";"))

    def cuts(self, ids: np.ndarray, limit: int) -> list[int]:
        """Cut offsets so that every piece of ids has at most `limit` tokens: at a paragraph end if
        one falls in the last three quarters of the window, else a line end, else a sentence end,
        else (one sentence longer than a piece) wherever the window ends."""
        n = len(ids)
        if n <= limit:
            return []
        line = self.nl[ids]
        para = self.nn[ids].copy()
        para[1:] |= line[1:] & line[:-1]  # "\n" + "\n" as two tokens
        tiers = [np.flatnonzero(para) + 1, np.flatnonzero(line) + 1, np.flatnonzero(self.sent[ids]) + 1]
        cuts, pos, floor = [], 0, max(1, limit // 4)
        while n - pos > limit:
            lo, hi = pos + floor, pos + limit
            cut = hi
            for cand in tiers:
                j = np.searchsorted(cand, hi, side="right") - 1
                if j >= 0 and cand[j] >= lo:
                    cut = int(cand[j])
                    break
            cuts.append(cut)
            pos = cut
        return cuts


def _to_pieces(docs_ids: list[list[int]], bos: int, piece_tokens: int, bounds: _Boundaries, dtype):
    """Flatten a batch of tokenized documents into one array of BOS-led pieces; (array, n_pieces)."""
    lens = np.fromiter((len(d) for d in docs_ids), dtype=np.int64, count=len(docs_ids))
    flat = np.fromiter(itertools.chain.from_iterable(docs_ids), dtype=np.int64, count=int(lens.sum()))
    offsets = np.concatenate([[0], np.cumsum(lens)[:-1]]) if len(lens) else np.zeros(0, np.int64)
    insert_at = [offsets[lens > 0]]
    limit = piece_tokens - 1
    for i in np.flatnonzero(lens > limit):
        o = int(offsets[i])
        c = bounds.cuts(flat[o : o + lens[i]], limit)
        if c:
            insert_at.append(np.asarray(c, dtype=np.int64) + o)
    at = np.sort(np.concatenate(insert_at)) if insert_at else np.zeros(0, np.int64)
    return np.insert(flat, at, bos).astype(dtype), len(at)


def _dtype_for(vocab: int) -> str:
    return "uint16" if vocab <= 1 << 16 else "uint32"


def _tokenize_split(
    name: str,
    texts: Iterable[list[str]],
    total_docs: int | None,
    tokenizer,
    bounds: _Boundaries,
    piece_tokens: int,
    out: Path,
    progress: bool,
) -> tuple[dict, dict]:
    """Tokenize batches of texts into BOS-led pieces, streamed to `out`. Returns (file record, stats)."""
    from tqdm.auto import tqdm

    dtype = np.dtype(_dtype_for(tokenizer.vocab_size))
    w = _HashingWriter(out)
    docs = pieces = tokens = nbytes = 0
    bar = tqdm(total=total_docs, desc=f"tokenize {name}", unit="doc", disable=not progress, file=sys.stderr)
    try:
        for batch in texts:
            ids = tokenizer.encode_batch(batch)
            arr, n = _to_pieces(ids, tokenizer.bos_id, piece_tokens, bounds, dtype)
            w.write(arr)
            docs += len(batch)
            pieces += n
            tokens += len(arr)
            nbytes += sum(len(t.encode("utf-8")) for t in batch)
            bar.update(len(batch))
        rec = w.commit()
    except BaseException:
        w.abort()
        raise
    finally:
        bar.close()
    return rec, {"docs": docs, "pieces": pieces, "tokens": tokens, "bytes": nbytes}


def _batched(items: list, n: int) -> Iterator[list]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _finish(
    d: Path,
    preset: Preset,
    cfg: dict,
    tokenizer,
    files: dict,
    split: dict,
    tr: dict,
    va: dict,
    t0: float,
    extra: dict | None = None,
) -> PreparedData:
    """Write token_bytes and the tokenizer, then the manifest (last: its presence means complete)."""
    import io

    buf = io.BytesIO()
    np.save(buf, tokenizer.token_bytes())
    _write_bytes_atomic(d / "token_bytes.npy", buf.getvalue())
    tokenizer.save(_tmp(d / "tokenizer.pkl"))
    os.replace(_tmp(d / "tokenizer.pkl"), d / "tokenizer.pkl")
    for name in ("token_bytes.npy", "tokenizer.pkl"):
        files[name] = {"size": (d / name).stat().st_size, "sha256": sha256_file(d / name)}
    fp = hashlib.sha256(
        json.dumps(
            {"config": cfg, "files": {k: v["sha256"] for k, v in sorted(files.items())}}, sort_keys=True
        ).encode()
    ).hexdigest()
    import numpy
    import tiktoken

    manifest = {
        "format": FORMAT,
        "config": cfg,
        "bos_id": tokenizer.bos_id,
        "dtype": _dtype_for(tokenizer.vocab_size),
        "split": split,
        "files": files,
        "stats": {
            "train_docs": tr["docs"],
            "val_docs": va["docs"],
            "train_pieces": tr["pieces"],
            "val_pieces": va["pieces"],
            "train_tokens": tr["tokens"],
            "val_tokens": va["tokens"],
            "train_bytes": tr["bytes"],
            "val_bytes": va["bytes"],
            # text bytes per non-BOS token: what a bits-per-byte number is scaled by
            "train_bytes_per_token": tr["bytes"] / max(1, tr["tokens"] - tr["pieces"]),
            "val_bytes_per_token": va["bytes"] / max(1, va["tokens"] - va["pieces"]),
        },
        "fingerprint": fp,
        "prepared_by_preset": preset.name,
        "prepare_seconds": round(time.time() - t0, 2),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "versions": {
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "tiktoken": getattr(tiktoken, "__version__", "?"),
        },
        **(extra or {}),
    }
    _write_bytes_atomic(d / "manifest.json", (json.dumps(manifest, indent=1) + "\n").encode())
    return PreparedData(d, manifest, preset.name)


# ------------------------------------------------------------------------------------------------
# The two sources
# ------------------------------------------------------------------------------------------------


def _prepare_offline(preset: Preset, progress: bool) -> PreparedData:
    from harness.corpus import VAL_EVERY, VAL_OFFSET, load_offline
    from harness.tokenizer import train_tokenizer

    t0 = time.time()
    cfg = _config(preset, "offline", None)
    d = data_dir(preset, "offline")
    d.mkdir(parents=True, exist_ok=True)
    train_docs, val_docs = load_offline(preset.offline_corpus)
    if progress:
        _info(f"data: training a {preset.vocab_size}-token BPE on {len(train_docs)} training documents")
    tokenizer = train_tokenizer((doc.text for doc in train_docs), preset.vocab_size)
    bounds = _Boundaries(tokenizer)
    pt = cfg["piece_tokens"]
    files = {}
    files["train.bin"], tr = _tokenize_split(
        "train", (list(b) for b in _batched([x.text for x in train_docs], ENCODE_BATCH_DOCS)),
        len(train_docs), tokenizer, bounds, pt, d / "train.bin", progress,
    )  # fmt: skip
    files["val.bin"], va = _tokenize_split(
        "val", (list(b) for b in _batched([x.text for x in val_docs], ENCODE_BATCH_DOCS)),
        len(val_docs), tokenizer, bounds, pt, d / "val.bin", progress,
    )  # fmt: skip
    split = {
        "rule": f"per corpus, documents sorted by name; index % {VAL_EVERY} == {VAL_OFFSET} is validation",
        "train": [x.name for x in train_docs],
        "val": [x.name for x in val_docs],
    }
    return _finish(d, preset, cfg, tokenizer, files, split, tr, va, t0)


def _prepare_climbmix(preset: Preset, train_shards: int | None, progress: bool) -> PreparedData:
    from harness import climbmix
    from harness.tokenizer import train_tokenizer

    t0 = time.time()
    cfg = _config(preset, "climbmix", train_shards)
    n_train = cfg["train_shards"]
    d = data_dir(preset, "climbmix")
    d.mkdir(parents=True, exist_ok=True)
    raw = cache_root() / "raw" / "climbmix"
    shards = climbmix.download(n_train, raw, progress=progress)
    train_paths = [s.path for s in shards.train]
    val_path = shards.val.path

    def capped_texts():
        from tqdm.auto import tqdm

        n = 0
        total = min(TOKENIZER_MAX_CHARS, sum(p.stat().st_size for p in train_paths) * 2)  # rough
        with tqdm(total=total, desc="train BPE", unit="char", unit_scale=True, disable=not progress,
                  file=sys.stderr) as bar:  # fmt: skip
            for batch in climbmix.iter_text_batches(train_paths):
                for text in batch:
                    doc = text[:TOKENIZER_DOC_CAP]
                    n += len(doc)
                    bar.update(len(doc))
                    yield doc
                    if n >= TOKENIZER_MAX_CHARS:
                        return

    if progress:
        _info(f"data: training a {preset.vocab_size}-token BPE on {n_train} climbmix shard(s)")
    tokenizer = train_tokenizer(capped_texts(), preset.vocab_size)
    bounds = _Boundaries(tokenizer)
    pt = cfg["piece_tokens"]
    files = {}
    files["train.bin"], tr = _tokenize_split(
        "train", climbmix.iter_text_batches(train_paths, ENCODE_BATCH_DOCS * 4),
        climbmix.count_rows(train_paths), tokenizer, bounds, pt, d / "train.bin", progress,
    )  # fmt: skip
    files["val.bin"], va = _tokenize_split(
        "val", climbmix.iter_text_batches([val_path], ENCODE_BATCH_DOCS * 4),
        climbmix.count_rows([val_path]), tokenizer, bounds, pt, d / "val.bin", progress,
    )  # fmt: skip
    split = {
        "rule": f"shards {climbmix.shard_name(0)}..{climbmix.shard_name(n_train - 1)} train; "
        f"pinned {climbmix.shard_name(climbmix.VAL_SHARD)} validation",
        "train": [p.name for p in train_paths],
        "val": [val_path.name],
    }
    extra = {"raw": {s.path.name: {"size": s.size, "sha256": s.sha256} for s in [*shards.train, shards.val]},
             "base_url": climbmix.base_url()}  # fmt: skip
    return _finish(d, preset, cfg, tokenizer, files, split, tr, va, t0, extra)


def prepare(
    preset: Preset | str,
    *,
    source: str | None = None,
    train_shards: int | None = None,
    progress: bool = True,
    force: bool = False,
) -> PreparedData:
    """Build the cache for `preset` (or return the one already there, quickly).

    source: None follows preset.data_source; "auto", "offline" or "climbmix" override it.
    train_shards: climbmix training shards (default preset.climbmix_train_shards).
    force: rebuild even when a matching cache exists (downloaded shards are kept).
    """
    preset = _resolve_preset(preset)
    source = source or preset.data_source
    if source not in ("auto", "offline", "climbmix"):
        raise ValueError(f"unknown data source {source!r}; expected auto, offline or climbmix")

    if source in ("auto", "climbmix"):
        existing = _open(
            preset, "climbmix", train_shards, strict_shards=source == "climbmix" or train_shards is not None
        )
        if existing is not None and not force and _usable(existing):
            return existing
        if source == "climbmix":
            return _locked_build(preset, "climbmix", train_shards, progress, force)
        from harness import climbmix

        ok, why = climbmix.probe()
        if ok:
            try:
                return _locked_build(preset, "climbmix", train_shards, progress, force)
            except climbmix.DownloadError as e:
                why = f"download failed: {e}"
        _info(f"data: climbmix not used ({why}); using the offline corpus {'+'.join(preset.offline_corpus)}")
    else:
        corpus = "+".join(preset.offline_corpus)
        why = (
            f"preset {preset.name} asks for it"
            if preset.data_source == "offline"
            else "source offline asked for"
        )
        _info(f"data: offline corpus {corpus} ({why})")
    data = _locked_build(preset, "offline", None, progress, force)
    if preset.device == "cuda":
        _warn_memorised(preset, data)
    return data


# train.py's throughput on one H200 with the gpu preset (benchmarks/README.md, issue 12's runs).
MEASURED_GPU_TOKENS_PER_S = 1.4e6


def _warn_memorised(preset: Preset, data: PreparedData) -> None:
    """A GPU preset on the small offline corpus: its val_bpb measures memorisation, say so."""
    tokens = int(data.stats.get("train_tokens") or 0)
    if tokens <= 0:
        return
    passes = MEASURED_GPU_TOKENS_PER_S * preset.budget_seconds / tokens
    if passes < 2:
        return
    _info(
        f"data: warning: the {preset.name} preset passes over this {tokens / 1e6:.1f}M-token offline corpus "
        f"about {passes:.0f} times in {preset.budget_seconds:g} s (at the "
        f"{MEASURED_GPU_TOKENS_PER_S / 1e6:.1f}M tokens/s train.py reaches on an H200) and memorises it, so "
        "val_bpb from this cache measures nothing "
        "(tokens/s, MFU and start-up time are still real). For a real val_bpb prepare climbmix, or local "
        "parquet shards in its layout: AUTORESEARCH_DATA_URL=http://HOST:PORT python -m harness prepare "
        f"--preset {preset.name} --source climbmix --train-shards N (README: Data)."
    )


def _usable(data: PreparedData) -> bool:
    """A cache prepare may return as is: files all there, and the files the metric reads hash right."""
    try:
        data.check_files()
        data.verify()
    except CacheError as e:
        _info(f"data: rebuilding: {e}")
        return False
    return True


def _locked_build(preset: Preset, source: str, train_shards: int | None, progress: bool, force: bool):
    d = data_dir(preset, source)
    with _lock(d.with_name(d.name + ".lock")):
        # Someone else may have finished it while we waited for the lock.
        existing = _open(preset, source, train_shards, strict_shards=True)
        if existing is not None and not force and _usable(existing):
            return existing
        with contextlib.suppress(FileNotFoundError):
            (d / "manifest.json").unlink()  # incomplete from here on until rebuilt
        for stale in d.glob("*.tmp-*"):  # left by a killed run (we hold the lock: nobody else writes)
            stale.unlink(missing_ok=True)
        if source == "offline":
            data = _prepare_offline(preset, progress)
        else:
            data = _prepare_climbmix(preset, train_shards, progress)
        if progress:
            _info(f"data: prepared {data.describe()} in {data.manifest['prepare_seconds']:.1f}s at {d}")
        return data
