"""Dashboard build time and size for a large ledger.

Writes a synthetic ledger of N experiments (two GPU types, kept / discarded / crashed / invalid, PR
links, baseline re-measurements and patches like the real loop's), then times `build_site` on it,
best of a few repeats, and prints the size of what a reader downloads.

    python benchmarks/dashboard_build.py [--n 10000] [--repeat 3] [--out DIR]

Target: <= 5 s for 10,000 experiments. Exits 1 when the best build is over the target.
"""

from __future__ import annotations

import argparse
import gzip
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.synthetic_ledger import write_ledger  # noqa: E402

from dashboard.build import build_site  # noqa: E402

TARGET_SECONDS = 5.0


def mb(n: int) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000, help="experiments in the synthetic ledger")
    ap.add_argument("--repeat", type=int, default=3, help="builds to time; the best is reported")
    ap.add_argument("--out", type=Path, default=None, help="keep the ledger and the site here")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        work = args.out or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        ledger = write_ledger(work / "ledger.jsonl", args.n)
        gen = time.perf_counter() - t
        lines = sum(1 for _ in ledger.open())
        print(
            f"ledger: {args.n:,} experiments, {lines:,} lines, {mb(ledger.stat().st_size)} "
            f"(generated in {gen:.1f} s)"
        )

        times = []
        for _ in range(max(1, args.repeat)):
            t = time.perf_counter()
            index = build_site(ledger, REPO / "resources.md", work / "site")
            times.append(time.perf_counter() - t)
        html = index.read_bytes()
        data = re.search(rb'id="ledger-data">(.*?)</script>', html, re.S).group(1)
        assets = sum(p.stat().st_size for p in (work / "site" / "assets").iterdir())
        best = min(times)
        print(
            f"build: best {best:.2f} s of {len(times)} ({', '.join(f'{x:.2f}' for x in times)}); "
            f"target <= {TARGET_SECONDS:.0f} s: {'ok' if best <= TARGET_SECONDS else 'OVER'}"
        )
        print(
            f"index.html: {mb(len(html))} ({mb(len(gzip.compress(html, 6)))} gzipped), "
            f"of which embedded data {mb(len(data))}; assets {assets / 1e3:.0f} kB"
        )
        print(f"per experiment: {len(data) / max(1, args.n):.0f} bytes of embedded data")
        if args.out:
            print(f"site: {index}")
    return 0 if best <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
