"""The harness's command line.

    python -m harness prepare --preset NAME [--source auto|offline|climbmix] [--train-shards N] [--force]
        (it also compiles, once per install, the bytecode that sandboxed runs import)
    python -m harness run TRAIN_FILE --preset NAME --out metrics.json [--seed N] [--device D] [--log PATH]

`run` exits 0 whenever it produced a result (whatever the status), 2 on a usage error, 3 when the
infrastructure failed (missing data cache, CUDA unavailable, a harness error); see supervisor.py.
"""

from __future__ import annotations

import os
import sys

if sys.pycache_prefix is None and __name__ == "__main__":
    # Never read (or write) bytecode beside the harness's sources: a .pyc planted in
    # harness/__pycache__ would run instead of the verified .py. Re-run this interpreter with the
    # harness's own bytecode directory (harness/protocol.py: trusted_pycache_dir) before anything else
    # of the harness is imported. Only this file and harness/__init__.py were read before this line:
    # the runners set PYTHONPYCACHEPREFIX themselves, which covers those two as well.
    from harness.protocol import trusted_pycache_dir

    _prefix = trusted_pycache_dir()
    try:
        os.makedirs(_prefix, mode=0o755, exist_ok=True)  # sandboxes read it (bound read-only)
    except OSError:  # a read-only home: a private directory for this run only
        import tempfile

        _prefix = tempfile.mkdtemp(prefix="autoresearch-pycache-")
        os.environ["AUTORESEARCH_PYCACHE_TMP"] = _prefix
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)  # that directory is meant to be written (and kept)
    os.execv(
        sys.executable, [sys.executable, "-X", f"pycache_prefix={_prefix}", "-m", "harness", *sys.argv[1:]]
    )

import argparse  # noqa: E402

from harness.presets import PRESETS  # noqa: E402


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's own exit code is 2 as well; keep it, with the presets listed
        self.print_usage(sys.stderr)
        presets = ", ".join(PRESETS)
        self.exit(2, f"{self.prog}: error: {message}\n(presets: {presets})\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m harness", description="The locked autoresearch-ci harness.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    r = sub.add_parser("run", help="train and score a train.py")
    r.add_argument("train_file")
    r.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    r.add_argument("--out", required=True, help="where metrics.json goes")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None, help="cpu, cuda or auto (default: the preset's)")
    r.add_argument("--log", default=None, help="the training log (default: next to --out, .log)")
    r.add_argument("--quiet", action="store_true", help="do not echo the training log")

    q = sub.add_parser("prepare", help="download / tokenize the data for a preset (once)")
    q.add_argument("--preset", required=True, help=f"one of: {', '.join(PRESETS)}")
    q.add_argument("--source", default=None, choices=["auto", "offline", "climbmix"])
    q.add_argument("--train-shards", type=int, default=None)
    q.add_argument("--force", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.cmd == "run":
        from harness.supervisor import run

        return run(
            args.train_file, args.preset, args.out,
            seed=args.seed, device=args.device, log_path=args.log, echo=not args.quiet,
        )  # fmt: skip

    from harness.data import CacheError, prepare
    from harness.presets import UnknownPresetError

    try:
        data = prepare(args.preset, source=args.source, train_shards=args.train_shards, force=args.force)
    except UnknownPresetError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 2
    except (CacheError, OSError, RuntimeError) as e:
        print(f"harness: prepare failed: {e}", file=sys.stderr)
        return 3
    print(f"harness: prepared {data.describe()} in {data.dir}")
    _warm_bytecode(args.preset)
    return 0


def _warm_bytecode(preset_name: str) -> None:
    """The set-up pays the bytecode warm-up, not the first run (harness/bytecode.py: warm_for_preset).
    Into this process's prefix only when it is the harness's trusted one, as the supervisor does."""
    from harness.bytecode import warm_for_preset
    from harness.sandbox import trusted_pycache

    warm_for_preset(preset_name, trusted_pycache(), log=print)


if __name__ == "__main__":
    code = main()
    tmp = os.environ.get("AUTORESEARCH_PYCACHE_TMP")
    if tmp and tmp == sys.pycache_prefix:
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    sys.exit(code)
