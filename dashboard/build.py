"""Build the static dashboard: one index.html with the ledger's figures embedded, plus its assets.

    build_site(ledger_path, resources_path, out_dir, title=None, repo_url=None) -> Path (index.html)

The page works from file:// and from GitHub Pages alike: the data sits in the page as a JSON script
tag (no fetch), the script and the stylesheet are copied next to it, nothing is loaded from the
network at view time. Patches and run logs stay out of the embedded data to keep the page small;
the table links to the PR, the commit and the Actions run instead.

The ledger is read through `autoresearch_ci.ledger.Ledger`, as everything else reads it. What the
page shows is computed here, in Python, where it is tested: `summarize()` gives the header
figures, `page_data()` the compact rows the chart and the table are drawn from. The browser only
draws. Every string from the ledger reaches the page either JSON-encoded inside the data tag (with
`<`, `>` and `&` escaped, so a hypothesis cannot close the tag) or HTML-escaped.
"""

from __future__ import annotations

import hashlib
import html
import json
import math
import re
import shutil
import statistics
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path

from autoresearch_ci.ledger import Ledger, LedgerProblem
from autoresearch_ci.records import ExperimentRecord, ok_values
from dashboard import markdown

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "templates" / "index.html"
ASSETS = HERE / "assets"
DEFAULT_TITLE = "autoresearch-ci"

# Decisions that ran a candidate to a verdict on its own merit: the keep rate's denominator.
JUDGED = ("keep", "discard", "crash", "invalid")
MAX_HYPOTHESIS = 2000  # characters embedded per hypothesis; the PR has the rest
MAX_REASON = 400
MAX_LOG_ENTRIES = 200  # resources.md's Log entries shown on the page (newest)
ID_PATTERN = re.compile(r"\b\d{8}-\d{6}-[0-9a-zA-Z]{4,12}\b")

# The columns of the embedded rows, in order (the JS reads them by these names).
COLUMNS = [
    "n",  # 1-based order of the experiment (by created_at)
    "id",
    "t",  # created_at, seconds since the epoch
    "st",  # status: the verdict's decision, or "pending"
    "v",  # the candidate's val_bpb (mean over its ok runs)
    "d",  # delta: candidate - baseline (negative is better)
    "th",  # threshold: the improvement a keep needed
    "nz",  # noise: sigma_d of one paired difference (older records: the baseline spread)
    "bm",  # baseline mean
    "s",  # series index (device, and preset when several appear)
    "rn",  # runner
    "h",  # hypothesis
    "r",  # the verdict's reason (or the run's error)
    "pr",  # PR url
    "pn",  # PR number
    "run",  # Actions run url
    "c",  # candidate commit
    "mc",  # merged commit
    "g",  # GPU seconds
    "usd",  # dollars: compute + LLM
    "tok",  # LLM tokens
    "cf",  # confirmed by a confirmation run (1) or not (0): older, unpaired records
    "lo",  # paired records: the 95% interval of the mean paired difference, low end
    "hi",  # and high end
    "np",  # paired records: how many seeds the candidate and the base both ran on (else null)
]


# --- reading the ledger ------------------------------------------------------------------------


def _problem_text(problems: list[LedgerProblem]) -> list[str]:
    if not problems:
        return []
    lines = ", ".join(str(p.line) for p in problems[:5]) + (" …" if len(problems) > 5 else "")
    first = problems[0].error
    n = len(problems)
    return [
        f"{n} ledger line{'s' if n > 1 else ''} could not be read and {'were' if n > 1 else 'was'} skipped "
        f"(line {lines}; {first}). A torn or damaged write: `autoresearch-ci ledger check` shows them."
    ]


def load_records(ledger_path: str | Path | None) -> tuple[list[ExperimentRecord], list[str]]:
    """The ledger's records and the warnings to show about it. Never raises for bad content.

    Reads through the project's `Ledger`, non-strict: a bad line becomes a warning, the same id
    written twice keeps the last line."""
    if ledger_path is None:
        return [], []
    path = Path(ledger_path)
    if not path.exists():
        return [], []
    if not path.is_file():
        return [], [f"{path} is not a file."]
    records, problems = Ledger(path).read(strict=False)
    # a line that parsed but only lacks its final newline is not a loss: not worth a banner
    return records, _problem_text([p for p in problems if not p.parsed_ok])


# --- figures -----------------------------------------------------------------------------------


def _dedupe(records: Iterable[ExperimentRecord]) -> list[ExperimentRecord]:
    """A record written again under the same id (e.g. finalized after a retry) replaces the earlier one."""
    seen: dict[tuple[str, str], int] = {}
    out: list[ExperimentRecord] = []
    for rec in records:
        key = (rec.kind, rec.id)
        if key in seen:
            out[seen[key]] = rec
        else:
            seen[key] = len(out)
            out.append(rec)
    return out


def _when(rec: ExperimentRecord) -> float:
    """created_at as epoch seconds: a naive timestamp (an old or hand-written line) is taken as UTC,
    so naive and aware records sort together instead of raising."""
    t = rec.created_at
    return (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()


def _iso(rec: ExperimentRecord) -> str:
    return datetime.fromtimestamp(_when(rec), UTC).isoformat()


def status_of(rec: ExperimentRecord) -> str:
    return rec.verdict.decision if rec.verdict is not None else "pending"


def value_of(rec: ExperimentRecord) -> float | None:
    """The candidate's val_bpb: the judge's mean when there is one, else the mean of its ok runs."""
    v = rec.verdict.candidate_mean if rec.verdict is not None else None
    if v is None:
        own = [r for r in rec.runs if rec.kind == "baseline" or r.request.role != "baseline"]
        vals = [x for x in ok_values(own) if math.isfinite(x)]
        v = statistics.fmean(vals) if vals else None
    return v if v is not None and math.isfinite(v) else None


def device_of(rec: ExperimentRecord) -> str:
    if rec.device:
        return rec.device
    for r in rec.runs:
        if r.metrics is not None and r.metrics.device:
            return r.metrics.device
    if rec.baseline is not None and rec.baseline.device:
        return rec.baseline.device
    return "unknown device"


def _baseline_mean(rec: ExperimentRecord) -> float | None:
    if rec.verdict is not None and rec.verdict.baseline_mean is not None:
        return rec.verdict.baseline_mean
    if rec.baseline is not None:
        return rec.baseline.mean
    return None


def _noise(rec: ExperimentRecord) -> float | None:
    if rec.verdict is not None and rec.verdict.noise is not None:
        return rec.verdict.noise
    if rec.baseline is not None:
        return rec.baseline.std
    return None


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def _series_keys(records: list[ExperimentRecord]) -> dict[int, str]:
    """Series label per record: the device, plus the preset when more than one preset appears."""
    presets = {r.preset for r in records}
    return {id(r): device_of(r) + (f" · {r.preset}" if len(presets) > 1 else "") for r in records}


def _error_of(rec: ExperimentRecord) -> str | None:
    for r in rec.runs:
        if r.metrics is not None and r.metrics.error:
            return r.metrics.error
        if r.infra_error:
            return r.infra_error
    return None


def summarize(records: Iterable[ExperimentRecord]) -> dict:
    """The header's figures. Money and GPU time count every record, baselines included."""
    records = _dedupe(records)
    exps = sorted((r for r in records if r.kind == "experiment"), key=_when)
    counts = Counter(status_of(r) for r in exps)
    kept = counts.get("keep", 0)
    judged = sum(counts.get(k, 0) for k in JUDGED)
    gpu_seconds = sum(r.gpu_seconds for r in records)
    compute_usd = sum(r.cost_usd for r in records)
    llm_usd = sum(r.llm.cost_usd for r in records)
    tokens = sum(r.llm.total_tokens() for r in records)
    total_usd = compute_usd + llm_usd

    keys = _series_keys(records)
    series: dict[str, dict] = {}
    for r in sorted(records, key=_when):
        key = keys[id(r)]
        s = series.setdefault(
            key,
            {
                "key": key,
                "device": device_of(r),
                "preset": r.preset,
                "experiments": 0,
                "kept": 0,
                "first_baseline": None,
                "best": None,
                "best_id": None,
            },
        )
        if s["first_baseline"] is None:
            if r.kind == "baseline":
                s["first_baseline"] = _finite(r.baseline.mean if r.baseline else None) or value_of(r)
            else:
                s["first_baseline"] = _finite(_baseline_mean(r))
        if r.kind != "experiment":
            continue
        s["experiments"] += 1
        if status_of(r) == "keep":
            s["kept"] += 1
            v = value_of(r)
            if v is not None and (s["best"] is None or v < s["best"]):
                s["best"], s["best_id"] = v, r.id
    for s in series.values():
        fb, best = s["first_baseline"], s["best"]
        s["improvement"] = fb - best if fb is not None and best is not None else None
        s["improvement_pct"] = 100 * (fb - best) / fb if fb and best is not None else None
    ordered = sorted(series.values(), key=lambda s: (-s["experiments"], s["key"]))

    if exps:
        span_days = (_when(exps[-1]) - _when(exps[0])) / 86400
        per_day = len(exps) / max(span_days, 1.0)
    else:
        span_days, per_day = 0.0, 0.0
    return {
        "experiments": len(exps),
        "baselines": sum(1 for r in records if r.kind == "baseline"),
        "counts": {
            k: counts.get(k, 0)
            for k in ("keep", "discard", "crash", "invalid", "infra-error", "proposal-failed", "pending")
        },
        "kept": kept,
        "judged": judged,
        "keep_rate": kept / judged if judged else None,
        "series": ordered,
        "gpu_hours": gpu_seconds / 3600,
        "compute_usd": compute_usd,
        "llm_usd": llm_usd,
        "total_usd": total_usd,
        "llm_tokens": tokens,
        "usd_per_kept": total_usd / kept if kept else None,
        "gpu_hours_per_kept": gpu_seconds / 3600 / kept if kept else None,
        "per_day": per_day,
        "span_days": span_days,
        "first_at": _iso(exps[0]) if exps else None,
        "last_at": _iso(exps[-1]) if exps else None,
    }


def _cut(text: str | None, limit: int) -> str | None:
    if not text:
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _num(x: float | None, digits: int = 6) -> float | None:
    x = _finite(x)
    return round(x, digits) if x is not None else None


def page_data(
    records: Iterable[ExperimentRecord],
    warnings: list[str] | None = None,
    title: str = DEFAULT_TITLE,
    repo_url: str | None = None,
) -> dict:
    """Everything the page draws, as plain JSON-able data (no patches, no logs)."""
    records = _dedupe(records)
    summary = summarize(records)
    keys = _series_keys(records)
    index = {s["key"]: i for i, s in enumerate(summary["series"])}
    exps = sorted((r for r in records if r.kind == "experiment"), key=_when)
    rows = []
    for n, r in enumerate(exps, 1):
        v = r.verdict
        status = status_of(r)
        reason = v.reason if v is not None and v.reason else None
        if status in ("crash", "invalid", "infra-error") and not reason:
            reason = _error_of(r)
        rows.append(
            [
                n,
                r.id,
                int(_when(r)),
                status,
                _num(value_of(r)),
                _num(v.delta if v else None),
                _num(v.threshold if v else None),
                _num(_noise(r)),
                _num(_baseline_mean(r)),
                index[keys[id(r)]],
                r.runner,
                _cut(r.hypothesis, MAX_HYPOTHESIS) or "",
                _cut(reason, MAX_REASON),
                r.pr_url,
                r.pr_number,
                r.actions_run_url,
                r.candidate_commit,
                r.merged_commit,
                round(r.gpu_seconds, 1),
                round(r.cost_usd + r.llm.cost_usd, 4),
                r.llm.total_tokens(),
                1 if v is not None and v.confirmed else 0,
                _num(v.delta_low if v else None),
                _num(v.delta_high if v else None),
                v.pairs if v is not None else None,
            ]
        )
    return {
        "meta": {
            "title": title,
            "repo_url": repo_url,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "warnings": list(warnings or []),
        },
        "summary": summary,
        "cols": COLUMNS,
        "rows": rows,
    }


# --- the page ----------------------------------------------------------------------------------


def embed_json(data: dict) -> str:
    """JSON that is safe inside <script type="application/json">: nothing in it can end the tag."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (
        text.replace("&", "\\u0026")
        .replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def render_learnings(resources_path: str | Path | None, known_ids: set[str]) -> str:
    """resources.md as HTML, experiment ids linked to their rows in the table."""
    if resources_path is None or not Path(resources_path).is_file():
        return '<p class="muted">No learnings yet: <code>resources.md</code> was not found.</p>'
    text = Path(resources_path).read_text(encoding="utf-8", errors="replace")
    if not text.strip():
        return '<p class="muted">No learnings yet: <code>resources.md</code> is empty.</p>'

    def autolink(escaped: str) -> str:
        return ID_PATTERN.sub(
            lambda m: (
                f'<a class="exp-link" href="#exp-{m.group(0)}">{m.group(0)}</a>'
                if m.group(0) in known_ids
                else m.group(0)
            ),
            escaped,
        )

    # the section has its own heading: drop the file's title line ("# Resources")
    text = re.sub(r"\A\s*# [^\n]*\n", "", text, count=1)
    # The Log only grows (an entry per verdict): show the newest entries, folded, so that a ledger of
    # 10,000 experiments does not make a page of 10,000 entries. The file in the repo has them all.
    log = re.search(r"^## +Log *$", text, flags=re.MULTILINE | re.IGNORECASE)
    if log is None:
        return markdown.render(text, autolink=autolink)
    nxt = re.search(r"^## ", text[log.end() :], flags=re.MULTILINE)
    end = log.end() + nxt.start() if nxt else len(text)
    body = text[log.end() : end]
    starts = [m.start() for m in re.finditer(r"^### ", body, flags=re.MULTILINE)]
    shown, note = body, ""
    if len(starts) > MAX_LOG_ENTRIES:
        shown = body[: starts[0]] + body[starts[-MAX_LOG_ENTRIES] :]
        note = (
            f'<p class="muted">The newest {MAX_LOG_ENTRIES:,} of {len(starts):,} entries; '
            "<code>resources.md</code> in the repository has every one.</p>"
        )
    return (
        markdown.render(text[: log.start()], autolink=autolink)
        + '\n<details class="log"><summary><h2 id="md-log">Log</h2> <span class="muted">'
        + f"{len(starts):,} entr{'y' if len(starts) == 1 else 'ies'}, oldest first</span></summary>\n"
        + note
        + markdown.render(shown, autolink=autolink)
        + "\n</details>\n"
        + markdown.render(text[end:], autolink=autolink)
    )


def _asset_version(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:10]


def build_site(
    ledger_path: str | Path | None,
    resources_path: str | Path | None,
    out_dir: str | Path,
    title: str | None = None,
    repo_url: str | None = None,
) -> Path:
    """Write index.html and assets/ into out_dir and return the path of index.html."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = title or DEFAULT_TITLE
    repo_url = repo_url.rstrip("/") if repo_url else None
    records, warnings = load_records(ledger_path)
    data = page_data(records, warnings, title=title, repo_url=repo_url)
    learnings = render_learnings(resources_path, {row[1] for row in data["rows"]})

    asset_files = sorted(p for p in ASSETS.iterdir() if p.is_file())
    (out / "assets").mkdir(exist_ok=True)
    for p in asset_files:
        shutil.copyfile(p, out / "assets" / p.name)
    version = _asset_version(asset_files)

    e = html.escape
    repo_link = (
        f'<a href="{e(repo_url)}" rel="noopener noreferrer">{e(repo_url.split("://", 1)[-1])}</a>'
        if repo_url and markdown.safe_url(repo_url)
        else ""
    )
    fills = {
        "TITLE": e(title),
        "REPO_LINK": repo_link,
        "VERSION": version,
        "LEARNINGS": learnings,
        "DATA": embed_json(data),
    }
    # one pass over the template only: text from the ledger is never searched for placeholders
    page = re.sub(r"\{\{([A-Z_]+)\}\}", lambda m: fills[m.group(1)], TEMPLATE.read_text(encoding="utf-8"))
    index = out / "index.html"
    index.write_text(page, encoding="utf-8")
    (out / ".nojekyll").write_text("", encoding="utf-8")  # GitHub Pages: serve assets/ as is
    return index
