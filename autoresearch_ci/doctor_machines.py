"""doctor's checks of the machines the runs go to: Modal (the token, the deployed app, the harness
it runs) and the self-hosted GPU machine (the GPU, bubblewrap, the offline corpus, the data).
Apart from doctor.py because each runs in a job of its own, holding only what it needs:
`preflight-modal` the Modal token, `preflight-self-hosted` nothing but the machine itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from autoresearch_ci.config import Config
from autoresearch_ci.doctor import FAIL, OK, SKIP, WARN, Check

REDEPLOY = "modal deploy -m autoresearch_ci.runners.modal_app"
APPARMOR = (
    "on Ubuntu 23.10+ (24.04) AppArmor restricts unprivileged user namespaces: "
    "`sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0` (keep it with "
    "`echo kernel.apparmor_restrict_unprivileged_userns=0 | sudo tee /etc/sysctl.d/60-userns.conf`), "
    "or give /usr/bin/bwrap an AppArmor profile that allows `userns`"
)


# ----------------------------------------------------------------------------------------------
# Modal: the token, the deployed app, its harness


def check_modal(cfg: Config, lookup: Callable | None = None) -> list[Check]:
    """`lookup(app, name)` finds a deployed function (modal.Function.from_name); the checks hydrate it
    (the token and the deployment) and call `harness_info`, a CPU function, for the harness hash."""
    area = "modal"
    app = cfg.modal.app_name
    if lookup is None:
        try:
            import modal
        except ImportError:
            return [Check(area, "modal", FAIL, "the modal package is not installed", "pip install modal")]
        lookup = modal.Function.from_name
    from modal import exception as mx

    token_fix = (
        "create a token in the Modal dashboard (Settings → API Tokens → New token) and store it in the "
        "secrets MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (locally: `modal token new`)"
    )
    deploy_fix = f"deploy it from the repository root: `{REDEPLOY}` (with the Modal token of the workspace)"
    try:
        run_fn = lookup(app, "run_candidate")
        run_fn.hydrate()
    except mx.AuthError as e:
        return [Check(area, "Modal token", FAIL, f"Modal refused the token: {e}", token_fix)]
    except mx.NotFoundError as e:
        return [
            Check(area, "Modal token", OK, "accepted"),
            Check(area, f"app “{app}”", FAIL, f"not deployed: {e}", deploy_fix),
        ]
    except Exception as e:
        return [Check(area, "Modal", FAIL, f"{type(e).__name__}: {e}", token_fix)]
    out = [Check(area, "Modal token", OK, "accepted"), Check(area, f"app “{app}”", OK, "deployed")]
    try:
        info = json.loads(lookup(app, "harness_info").remote())
    except mx.NotFoundError:
        return [
            *out,
            Check(area, "deployed harness", FAIL, "the deployment predates harness_info", deploy_fix),
        ]
    except Exception as e:
        return [
            *out,
            Check(
                area, "deployed harness", FAIL, f"harness_info failed: {type(e).__name__}: {e}", deploy_fix
            ),
        ]
    from harness.integrity import harness_sha256

    mine, theirs = harness_sha256(), str(info.get("harness_sha256") or "")
    if theirs != mine:
        out.append(
            Check(
                area,
                "deployed harness",
                FAIL,
                f"the app runs harness {theirs[:12]}, this checkout has {mine[:12]}: "
                "every run would be refused",
                f"redeploy: `{REDEPLOY}`",
            )
        )
    else:
        out.append(Check(area, "deployed harness", OK, f"the same as this checkout's ({mine[:12]})"))
    if info.get("isolation") == "none":
        out.append(
            _unsandboxed(
                cfg,
                area,
                f"bubblewrap cannot start in Modal's container ({info.get('isolation_detail')})",
                # Candidate code then shares the container's files, the state volume's mount included.
                "redeploy with AUTORESEARCH_MODAL_SHARED_STATE=0, so that no volume a later run could "
                "read is mounted beside candidate code (README: Modal details)",
            )
        )
    return out


def _unsandboxed(cfg: Config, area: str, detail: str, fix: str = "") -> Check:
    consequence = "runs get `isolation: none`; " + (
        "merged anyway (allow_unisolated_merge)"
        if cfg.github.allow_unisolated_merge
        else "their keeps are not merged by themselves"
    )
    return Check(
        area,
        "sandbox (bubblewrap)",
        WARN if cfg.github.allow_unisolated_merge else FAIL,
        f"{detail}: {consequence}",
        fix,
    )


# ----------------------------------------------------------------------------------------------
# the self-hosted GPU machine


def bwrap_works() -> tuple[bool, str]:
    """Can bubblewrap start a namespace here? The harness's own probe (it ships in this package), so
    the answer is the one the runs will get."""
    from harness.sandbox import probe

    mode, detail = probe()
    return mode == "bwrap", detail


def check_self_hosted(cfg: Config) -> list[Check]:
    area = "self-hosted"
    from harness.presets import get_preset

    preset = get_preset(cfg.preset)
    out = []
    if preset.device == "cuda":
        try:
            import torch

            gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
        except Exception as e:  # a broken torch install is a failed check, not a crash
            gpu, why = None, f"{type(e).__name__}: {e}"
        else:
            why = "torch sees no CUDA device"
        if gpu:
            out.append(Check(area, "GPU", OK, gpu))
        else:
            out.append(
                Check(
                    area,
                    "GPU",
                    FAIL,
                    f"{why} (preset {cfg.preset} trains on CUDA)",
                    "install the NVIDIA driver on this machine; the train job installs torch's CUDA "
                    "build itself (or set AUTORESEARCH_TORCH to the build that fits the driver)",
                )
            )
    else:
        out.append(Check(area, "GPU", SKIP, f"preset {cfg.preset} runs on {preset.device}"))
    ok, detail = bwrap_works()
    if ok:
        out.append(Check(area, "sandbox (bubblewrap)", OK, f"bwrap starts a namespace ({detail})"))
    else:
        out.append(_unsandboxed(cfg, area, detail, f"`sudo apt-get install -y bubblewrap`; {APPARMOR}"))
    from harness.corpus import MissingCorpusError, install_command, package_dir

    for corpus in preset.offline_corpus:
        try:
            package_dir(corpus)
        except MissingCorpusError:
            out.append(Check(area, f"corpus {corpus}", FAIL, "not installed", f"`{install_command(corpus)}`"))
    from harness.data import CacheError, load_prepared, prepare_command

    try:
        data = load_prepared(preset)
        out.append(Check(area, "data", OK, f"prepared: {data.describe()}"))
    except (CacheError, OSError, ValueError) as e:
        out.append(
            Check(
                area,
                "data",
                WARN,
                f"not prepared yet ({str(e).splitlines()[0][:200]}): the train job prepares it first",
                f"to do it now: `{prepare_command(preset)}`",
            )
        )
    return out
