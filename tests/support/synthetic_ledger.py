"""Synthetic ledgers: N realistic `ExperimentRecord`s for the dashboard's tests and benchmark.

The spread imitates a real run of the loop: most candidates lose to the baseline, a few win by
more than the noise and are kept (and the baseline steps down with them), some crash, a few are
invalid, the odd one dies of an infrastructure error or never gets a proposal. Two GPU types run
side by side with different baselines, because results are not comparable across hardware.
Baseline re-measurements are written as kind="baseline" lines. Everything is seeded: the same
arguments give the same ledger.

    python tests/support/synthetic_ledger.py 1000 ledger.jsonl
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from autoresearch_ci.records import (
    BaselineStats,
    ExperimentRecord,
    LLMUsage,
    RunMetrics,
    RunOutcome,
    RunRequest,
    Verdict,
    sha256_text,
)

REPO_URL = "https://github.com/example/autoresearch-ci"
START = datetime(2026, 11, 1, 0, 0, tzinfo=UTC)

# device -> (runner, first baseline val_bpb, run-to-run noise (std), $ per GPU-hour)
DEVICES = {
    "NVIDIA H100 80GB HBM3": ("modal", 0.9979, 0.0004, 3.95),
    "NVIDIA A100-SXM4-40GB": ("self-hosted", 1.0412, 0.0006, 2.10),
}
DEVICE_WEIGHTS = [0.7, 0.3]

# decision mix for candidates that do not win (a win is decided by the draw itself)
FAILURES = [("crash", 0.08), ("invalid", 0.02), ("infra-error", 0.02), ("proposal-failed", 0.01)]

IDEAS = [
    ("matrix learning rate", "MATRIX_LR", [0.02, 0.03, 0.04, 0.05, 0.06]),
    ("embedding learning rate", "EMBEDDING_LR", [0.3, 0.4, 0.6, 0.8]),
    ("warm-down ratio", "WARMDOWN_RATIO", [0.2, 0.3, 0.4, 0.5]),
    ("model depth", "DEPTH", [6, 8, 10, 12]),
    ("aspect ratio", "ASPECT_RATIO", [48, 64, 80]),
    ("total batch size", "TOTAL_BATCH_SIZE", [2**17, 2**18, 2**19]),
    ("weight decay", "WEIGHT_DECAY", [0.0, 0.05, 0.1, 0.2]),
    ("Adam beta2", "ADAM_BETA2", [0.9, 0.95, 0.99]),
    ("window pattern", "WINDOW_PATTERN", ["SSSL", "SSLL", "LLLL"]),
]
FREEFORM = [
    "Replace ReLU^2 with SwiGLU in the MLP at equal parameter count",
    "Add QK-norm before the rotary embedding",
    "Untie the value embeddings of alternating layers",
    "Use a logit soft-cap of 15 instead of 30",
    "Drop the final layer norm & rescale the lm_head init",
    "Try z-loss 1e-4 on the logits to keep them < 30",
    "Muon with 6 Newton-Schulz steps instead of 5",
    "Zero-init the attention output projections",
]
ERRORS = {
    "crash": ["CUDA out of memory. Tried to allocate 2.00 GiB", "RuntimeError: shape mismatch in attn"],
    "invalid": ["causality probe: position 17 depends on token 18", "val_bpb is nan"],
    "infra-error": ["modal: container preempted", "runner lost connection"],
}


def _hypothesis(rng: random.Random) -> tuple[str, dict | None]:
    if rng.random() < 0.75:
        label, name, values = rng.choice(IDEAS)
        old, new = rng.sample(values, 2)
        return f"Change the {label} ({name}) from {old} to {new}", {"name": name, "old": old, "new": new}
    return rng.choice(FREEFORM), None


def _run(
    exp_id: str,
    role: str,
    commit: str,
    seed: int,
    runner: str,
    device: str,
    status: str,
    val: float | None,
    at: datetime,
    error: str | None = None,
) -> RunOutcome:
    req = RunRequest(experiment_id=exp_id, role=role, commit=commit, train_py="", preset="gpu", seed=seed)
    if status == "infra_error":
        return RunOutcome(
            request=req,
            runner=runner,
            metrics=None,
            infra_error=error,
            attempts=3,
            started_at=at,
            finished_at=at,
        )
    metrics = RunMetrics(
        status=status,
        val_bpb=val,
        training_seconds=300.0 if status == "ok" else None,
        total_seconds=352.0 if status == "ok" else 41.0,
        peak_memory_mb=44123.0,
        mfu_percent=39.5,
        num_steps=953,
        num_params=50_300_000,
        preset="gpu",
        seed=seed,
        device=device,
        error=error,
    )
    return RunOutcome(
        request=req,
        runner=runner,
        metrics=metrics,
        wall_seconds=380.0 if status == "ok" else 60.0,
        started_at=at,
        finished_at=at + timedelta(seconds=380),
    )


def synthetic_records(n: int, seed: int = 0, devices: int = 2) -> list[ExperimentRecord]:
    """`n` experiment records (plus the baseline lines between them), oldest first."""
    rng = random.Random(seed)
    names = list(DEVICES)[:devices]
    weights = DEVICE_WEIGHTS[:devices]
    state = {
        d: {"mean": DEVICES[d][1], "commit": sha256_text(f"main-{d}")[:40], "stats": None} for d in names
    }
    out: list[ExperimentRecord] = []
    now = START
    pr = 0

    def measure_baseline(device: str, at: datetime) -> BaselineStats:
        runner, _, std, _ = DEVICES[device]
        st = state[device]
        values = [round(rng.gauss(st["mean"], std), 6) for _ in range(3)]
        mean = sum(values) / 3
        sd = (sum((v - mean) ** 2 for v in values) / 2) ** 0.5
        stats = BaselineStats(
            commit=st["commit"],
            preset="gpu",
            runner=runner,
            device=device,
            values=values,
            seeds=[0, 1, 2],
            mean=mean,
            std=sd,
            measured_at=at,
        )
        bid = f"{at:%Y%m%d-%H%M%S}-b{len(out):05x}"
        out.append(
            ExperimentRecord(
                id=bid,
                kind="baseline",
                created_at=at,
                finished_at=at,
                parent_commit=st["commit"],
                preset="gpu",
                runner=runner,
                device=device,
                seeds=[0, 1, 2],
                runs=[
                    _run(bid, "baseline", st["commit"], s, runner, device, "ok", v, at)
                    for s, v in zip([0, 1, 2], values, strict=True)
                ],
                baseline=stats,
                gpu_seconds=3 * 380.0,
                cost_usd=round(3 * 380.0 / 3600 * DEVICES[device][3], 4),
            )
        )
        st["stats"] = stats
        return stats

    for d in names:
        measure_baseline(d, now)

    for i in range(n):
        now += timedelta(minutes=rng.randint(8, 40))
        device = rng.choices(names, weights)[0]
        runner, _, std, price = DEVICES[device]
        st = state[device]
        if i % 25 == 24:
            measure_baseline(device, now)
        base: BaselineStats = st["stats"]
        exp_id = f"{now:%Y%m%d-%H%M%S}-{i:06x}"
        hyp, edit = _hypothesis(rng)
        if i % 97 == 13:
            hyp = f"<script>alert('x{i}')</script> try the learning rate < 0.04 & see"
        pr += 1
        commit = sha256_text(f"cand-{seed}-{i}")[:40]
        noise = max(base.std, std)
        threshold = max(2 * noise, 3e-4)
        usage = LLMUsage(
            model="claude-sonnet-4-5",
            input_tokens=rng.randint(6000, 14000),
            output_tokens=rng.randint(400, 2500),
            cache_read_input_tokens=rng.randint(0, 30000),
        )
        usage.cost_usd = round(
            usage.input_tokens * 3e-6 + usage.output_tokens * 15e-6 + usage.cache_read_input_tokens * 0.3e-6,
            5,
        )
        rec = dict(
            id=exp_id,
            kind="experiment",
            tick=f"{now:%Y%m%d-%H}",
            created_at=now,
            finished_at=now + timedelta(minutes=7),
            proposer="anthropic",
            hypothesis=hyp,
            edit=edit,
            parent_commit=st["commit"],
            preset="gpu",
            runner=runner,
            device=device,
            seeds=[0, 1],
            baseline=base,
            llm=usage,
            harness_sha256="ab" * 32,
            patch=f"--- a/train.py\n+++ b/train.py\n@@ -1 +1 @@\n-{edit}\n+{hyp}\n" * 3,
        )
        roll = rng.random()
        cum = 0.0
        failure = None
        for decision, p in FAILURES:
            cum += p
            if roll < cum:
                failure = decision
                break
        if failure == "proposal-failed":
            rec.update(
                candidate_commit=None,
                llm=usage,
                verdict=Verdict(decision="proposal-failed", reason="the model returned no edit"),
            )
            out.append(ExperimentRecord(**rec))
            continue
        rec.update(
            candidate_commit=commit,
            branch=f"exp/{exp_id}",
            pr_number=pr,
            pr_url=f"{REPO_URL}/pull/{pr}",
            actions_run_url=f"{REPO_URL}/actions/runs/{10_000_000 + i * 7}",
        )
        if failure is not None:
            status = {"crash": "crash", "invalid": "invalid", "infra-error": "infra_error"}[failure]
            err = rng.choice(ERRORS[failure])
            rec["runs"] = [
                _run(
                    exp_id,
                    "candidate",
                    commit,
                    0,
                    runner,
                    device,
                    status,
                    float("nan") if failure == "invalid" and "nan" in err else None,
                    now,
                    err,
                )
            ]
            rec["verdict"] = Verdict(
                decision=failure, reason=err, baseline_mean=base.mean, noise=noise, threshold=threshold
            )
            gpu_s = 60.0 if failure != "infra-error" else 0.0
        else:
            # most ideas hurt; a few help, fewer and by less the closer main gets to the floor
            gap = st["mean"] - (DEVICES[device][1] - 0.045)
            p_win = 0.02 + 0.25 * gap / 0.045
            if rng.random() < p_win:
                effect = -rng.uniform(0.1, 0.9) * 0.12 * gap
            else:
                effect = rng.expovariate(1 / 0.004) if rng.random() < 0.7 else 0.0
            vals = [round(st["mean"] + effect + rng.gauss(0, std), 6) for _ in range(2)]
            cand = sum(vals) / 2
            delta = cand - base.mean
            keep = delta < -threshold
            rec["runs"] = [
                _run(exp_id, "candidate", commit, s, runner, device, "ok", v, now) for s, v in enumerate(vals)
            ]
            rec["verdict"] = Verdict(
                decision="keep" if keep else "discard",
                reason=(
                    f"{delta:+.5f} beats the threshold -{threshold:.5f}"
                    if keep
                    else f"{delta:+.5f} does not beat the threshold -{threshold:.5f}"
                ),
                candidate_mean=cand,
                baseline_mean=base.mean,
                delta=delta,
                threshold=threshold,
                noise=noise,
                confirmed=keep and delta > -1.5 * threshold,
            )
            gpu_s = 2 * 380.0
            if keep:
                rec["merged_commit"] = sha256_text(f"merge-{seed}-{i}")[:40]
                st["mean"] = cand
                st["commit"] = rec["merged_commit"]
        rec["gpu_seconds"] = gpu_s
        rec["cost_usd"] = round(gpu_s / 3600 * price, 4)
        out.append(ExperimentRecord(**rec))
        if rec["verdict"].decision == "keep":  # main moved: the judge re-measures its baseline
            measure_baseline(device, now + timedelta(minutes=8))
    return out


def write_ledger(path: str | Path, n: int, seed: int = 0, devices: int = 2) -> Path:
    """Write a synthetic ledger of `n` experiments as JSONL and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for rec in synthetic_records(n, seed=seed, devices=devices):
            f.write(rec.model_dump_json() + "\n")
    return path


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    target = sys.argv[2] if len(sys.argv) > 2 else "ledger.jsonl"
    print(write_ledger(target, count))
