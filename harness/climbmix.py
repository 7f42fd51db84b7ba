"""Download the climbmix parquet shards karpathy's autoresearch trains on, over plain HTTP.

The dataset is karpathy/climbmix-400b-shuffle on the Hugging Face hub: shard_00000.parquet up to
shard_06542.parquet, one string column "text" per document; the last shard, shard_06542, is the pinned
validation shard. Env AUTORESEARCH_DATA_URL replaces the base URL (a mirror, or the tests' local server).

Each shard is fetched into <name>.part with retries and exponential backoff on connection errors,
timeouts, 429 and 5xx; a retry resumes from the bytes already on disk with an HTTP Range request. A
finished file must match the server's Content-Length, start and end with the parquet magic, and have a
footer pyarrow can read with a "text" column; only then is it renamed into place, and its size and
sha256 are recorded in a <name>.json sidecar (and, by data.py, in the manifest). A shard already in
place with its sidecar is not fetched again, so a second `prepare` needs no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

DEFAULT_BASE_URL = "https://huggingface.co/datasets/karpathy/climbmix-400b-shuffle/resolve/main"
MAX_SHARD = 6542  # the last shard is shard_06542.parquet
VAL_SHARD = MAX_SHARD  # pinned validation shard, as in autoresearch
TEXT_COLUMN = "text"

CONNECT_TIMEOUT = 10.0  # seconds to open a connection
READ_TIMEOUT = 60.0  # seconds without a byte before a read counts as failed
ATTEMPTS = 6
BACKOFF_SECONDS = 1.0  # first retry wait; doubles per attempt, with jitter, capped at BACKOFF_MAX
BACKOFF_MAX = 30.0
CHUNK = 1 << 16  # small enough that a cut-off body still leaves its first bytes on disk
WORKERS = 4
RETRY_STATUS = {408, 425, 429, 500, 502, 503, 504}
MAGIC = b"PAR1"


class DownloadError(RuntimeError):
    """A shard could not be fetched or failed its integrity check."""


@dataclass(frozen=True)
class ShardFile:
    path: Path
    size: int
    sha256: str


@dataclass(frozen=True)
class Shards:
    train: list[ShardFile]
    val: ShardFile


def base_url() -> str:
    return (os.environ.get("AUTORESEARCH_DATA_URL") or DEFAULT_BASE_URL).rstrip("/")


def shard_name(index: int) -> str:
    return f"shard_{index:05d}.parquet"


def shard_url(index: int, base: str | None = None) -> str:
    return f"{(base or base_url()).rstrip('/')}/{shard_name(index)}"


def _session():
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = "autoresearch-ci-harness"
    return s


def probe(base: str | None = None, timeout: float = 5.0) -> tuple[bool, str]:
    """Is the source reachable? One small ranged GET of the validation shard, no retries."""
    import requests

    url = shard_url(VAL_SHARD, base)
    try:
        with _session().get(url, headers={"Range": "bytes=0-3"}, stream=True, timeout=timeout) as r:
            if r.status_code in (200, 206):
                return True, f"{url} answered {r.status_code}"
            return False, f"{url} answered HTTP {r.status_code}"
    except requests.RequestException as e:
        return False, f"{base or base_url()} unreachable: {type(e).__name__}"


# ------------------------------------------------------------------------------------------------
# Integrity
# ------------------------------------------------------------------------------------------------


def check_parquet(path: Path, label: str | None = None) -> int:
    """Raise DownloadError unless `path` is a readable parquet file with a text column; its row count."""
    import pyarrow.parquet as pq

    label = label or path.name
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        f.seek(max(0, size - 4))
        tail = f.read(4)
    if size < 12 or head != MAGIC or tail != MAGIC:
        raise DownloadError(f"{label} is not a parquet file (bad magic bytes)")
    try:
        meta = pq.ParquetFile(path).metadata
        names = meta.schema.names
    except Exception as e:  # pyarrow raises several types for a damaged footer
        raise DownloadError(f"{label}: pyarrow cannot read the parquet footer ({str(e).strip()})") from e
    if TEXT_COLUMN not in names:
        raise DownloadError(f"{label} has no {TEXT_COLUMN!r} column (columns: {names})")
    return meta.num_rows


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 23):
            h.update(chunk)
    return h.hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _record(path: Path, rec: ShardFile, url: str) -> None:
    tmp = _sidecar(path).with_suffix(".tmp")
    tmp.write_text(json.dumps({"size": rec.size, "sha256": rec.sha256, "url": url}) + "\n")
    os.replace(tmp, _sidecar(path))


def _existing(path: Path) -> ShardFile | None:
    """A shard already in place: its sidecar, or (a shard copied in by hand) a fresh check of it."""
    if not path.is_file():
        return None
    try:
        rec = json.loads(_sidecar(path).read_text())
        if path.stat().st_size == rec["size"]:
            return ShardFile(path, rec["size"], rec["sha256"])
    except (FileNotFoundError, KeyError, ValueError):
        pass
    try:
        check_parquet(path)
    except DownloadError:
        path.unlink()
        return None
    rec = ShardFile(path, path.stat().st_size, _sha256(path))
    _record(path, rec, "local")
    return rec


# ------------------------------------------------------------------------------------------------
# One shard
# ------------------------------------------------------------------------------------------------


def _wait(attempt: int, retry_after: str | None = None) -> None:
    delay = min(BACKOFF_MAX, BACKOFF_SECONDS * 2**attempt) * (0.75 + 0.5 * random.random())
    if retry_after and retry_after.strip().isdigit():
        delay = min(BACKOFF_MAX, max(delay, float(retry_after)))
    time.sleep(delay)


def _total_from(resp, have: int) -> int | None:
    """The full file size the response implies, if it says."""
    cr = resp.headers.get("Content-Range", "")
    m = re.match(r"bytes (\d+)-(\d+)/(\d+|\*)", cr)
    if m and m.group(3) != "*":
        return int(m.group(3))
    cl = resp.headers.get("Content-Length")
    if cl is not None and cl.isdigit():
        return int(cl) + (have if resp.status_code == 206 else 0)
    return None


def fetch(index: int, dest: Path, *, base: str | None = None, session=None, progress: bool = True,
          position: int = 0) -> ShardFile:  # fmt: skip
    """Download one shard into dest (resuming a .part file), check it, rename it into place."""
    import requests
    from tqdm.auto import tqdm

    dest.mkdir(parents=True, exist_ok=True)
    name = shard_name(index)
    final = dest / name
    if (have_it := _existing(final)) is not None:
        return have_it
    url = shard_url(index, base)
    part = dest / (name + ".part")
    session = session or _session()
    bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, disable=not progress,
               position=position, leave=False, file=sys.stderr)  # fmt: skip
    errors: list[str] = []
    integrity_failures = 0
    try:
        for attempt in range(ATTEMPTS):
            have = part.stat().st_size if part.exists() else 0
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                with session.get(
                    url, headers=headers, stream=True, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT)
                ) as r:
                    if r.status_code == 416 and have:  # our partial file is longer than theirs: stale
                        part.unlink()
                        errors.append("416 on resume; restarting")
                        continue
                    if r.status_code in RETRY_STATUS:
                        errors.append(f"HTTP {r.status_code}")
                        _wait(attempt, r.headers.get("Retry-After"))
                        continue
                    if r.status_code not in (200, 206):
                        raise DownloadError(f"{url} answered HTTP {r.status_code}")
                    if r.status_code == 200 and have:  # the server ignored Range: start over
                        have = 0
                    if r.status_code == 206:
                        m = re.match(r"bytes (\d+)-", r.headers.get("Content-Range", ""))
                        if not m or int(m.group(1)) != have:
                            part.unlink(missing_ok=True)
                            errors.append("bad Content-Range on resume; restarting")
                            continue
                    total = _total_from(r, have)
                    bar.reset(total=total)
                    bar.update(have)
                    with open(part, "ab" if have else "wb") as f:
                        for chunk in r.iter_content(CHUNK):
                            f.write(chunk)
                            bar.update(len(chunk))
            except (
                requests.ConnectionError,
                requests.Timeout,
                requests.exceptions.ChunkedEncodingError,
            ) as e:
                errors.append(f"{type(e).__name__}")
                _wait(attempt)
                continue  # keep the .part: the next attempt resumes it
            size = part.stat().st_size
            if total is not None and size < total:
                errors.append(f"short body ({size} of {total} bytes)")
                _wait(attempt)
                continue
            try:
                if total is not None and size != total:
                    raise DownloadError(f"{name}: {size} bytes on disk, the server announced {total}")
                check_parquet(part, name)
            except DownloadError as e:
                part.unlink(missing_ok=True)
                integrity_failures += 1
                errors.append(str(e))
                if integrity_failures >= 2:  # fetched twice from scratch, bad twice: the source is bad
                    raise DownloadError(
                        f"{url} failed the integrity check twice and was deleted: {e}"
                    ) from None
                continue
            rec = ShardFile(final, size, _sha256(part))
            os.replace(part, final)
            _record(final, rec, url)
            return rec
        raise DownloadError(f"{url}: gave up after {ATTEMPTS} attempts ({'; '.join(errors[-4:])})")
    finally:
        bar.close()


def download(n_train: int, dest: Path, *, base: str | None = None, progress: bool = True,
             workers: int = WORKERS) -> Shards:  # fmt: skip
    """The first n_train training shards plus the pinned validation shard."""
    if not 1 <= n_train <= MAX_SHARD:
        raise ValueError(f"train shards must be between 1 and {MAX_SHARD}, got {n_train}")
    ids = [*range(n_train), VAL_SHARD]
    todo = [i for i in ids if _existing(dest / shard_name(i)) is None]
    if todo and progress:
        print(f"data: downloading {len(todo)} climbmix shard(s) from {base or base_url()}", file=sys.stderr)
    session = _session()
    if len(todo) <= 1 or workers <= 1:
        files = [fetch(i, dest, base=base, session=session, progress=progress) for i in ids]
    else:
        with ThreadPoolExecutor(min(workers, len(todo))) as pool:
            futs = [pool.submit(fetch, i, dest, base=base, progress=progress, position=k % workers)
                    for k, i in enumerate(ids)]  # fmt: skip
            files = [f.result() for f in futs]
    return Shards(train=files[:-1], val=files[-1])


# ------------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------------


def iter_text_batches(paths: list[Path], batch_size: int = 1024):
    """Lists of document texts, row group by row group, shard by shard."""
    import pyarrow.parquet as pq

    for path in paths:
        pf = pq.ParquetFile(path)
        for rg in range(pf.num_row_groups):
            texts = pf.read_row_group(rg, columns=[TEXT_COLUMN]).column(TEXT_COLUMN).to_pylist()
            for i in range(0, len(texts), batch_size):
                yield [t or "" for t in texts[i : i + batch_size]]


def count_rows(paths: list[Path]) -> int:
    import pyarrow.parquet as pq

    return sum(pq.ParquetFile(p).metadata.num_rows for p in paths)
