"""One Modal call seen from outside the runner: what run_candidate's reply (its JSON envelope) and a
call's exceptions mean, and cancelling calls by id from the journal the runner writes. Apart from
runners/modal.py because the cancelling runs on its own, in the train job's `if: cancelled() ||
failure()` step (`autoresearch-ci cancel-modal`), after the runner's process is gone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from autoresearch_ci.records import RunMetrics
from autoresearch_ci.runners.base import metrics_from
from autoresearch_ci.runners.process import AttemptFailed

log = logging.getLogger(__name__)


def _non_retryable() -> tuple[type[BaseException], ...]:
    """Modal errors that say our setup is wrong: retrying cannot fix them."""
    try:
        from modal import exception as mx
    except ImportError:  # tests with a fake call and no modal installed
        return ()
    names = ("AuthError", "NotFoundError", "InvalidError", "PermissionDeniedError", "VersionError")
    return tuple(getattr(mx, n) for n in names if hasattr(mx, n))


def describe_exception(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(e).__module__}.{type(e).__qualname__}: {first[:300]}".replace("builtins.", "")


def parse_envelope(text: str) -> tuple[RunMetrics, str, float | None]:
    """The candidate's metrics from run_candidate's JSON envelope, or AttemptFailed."""
    try:
        env = json.loads(text)
    except (TypeError, ValueError) as e:
        raise AttemptFailed(f"unreadable reply from run_candidate: {e}") from None
    tail = str(env.get("log_tail") or "")
    seconds = env.get("container_seconds")
    if env.get("usage_error"):
        raise AttemptFailed(str(env["usage_error"]), retry=False, log_tail=tail, seconds=seconds)
    if env.get("metrics") is None:
        raise AttemptFailed("run_candidate returned no metrics", log_tail=tail, seconds=seconds)
    return metrics_from(env["metrics"], tail, seconds), tail, seconds


def read_call_ids(path: str | Path) -> list[str]:
    """The call ids a run journalled (calls_file), in order, each once."""
    p = Path(path)
    if not p.exists():
        return []
    ids: list[str] = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            cid = json.loads(line).get("call_id")
        except (ValueError, AttributeError):
            continue
        if cid and cid not in ids:
            ids.append(cid)
    return ids


def cancel_calls(call_ids: Iterable[str], from_id: Callable[[str], object] | None = None) -> list[str]:
    """Cancel Modal calls by id (a finished one is left as it is); the ids Modal accepted."""
    if from_id is None:
        import modal

        from_id = modal.FunctionCall.from_id
    done = []
    for cid in call_ids:
        try:
            from_id(cid).cancel(terminate_containers=True)
            done.append(cid)
        except Exception as e:
            log.warning("could not cancel %s: %s", cid, describe_exception(e))
    return done
