"""Shared fixtures: one prepared data cache per test session, so the tokenizer is trained once.

Every test that needs the harness's data uses `prepared_tiny` (the tiny and cpu presets share
the offline corpus and the 4096 vocabulary). Set AUTORESEARCH_TEST_CACHE to reuse a cache across
sessions while developing; CI prepares a fresh one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if os.environ.get("PYTEST_XDIST_WORKER"):
    # One worker per core already: torch's own intra-op threads in a worker (the tests that train or
    # run a model in process) would only contend with the other workers' harness runs.
    import torch

    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    # Under pytest-xdist every worker has its own basetemp below one shared folder: the workers share
    # one cache there (prepare takes a lock), so the tokenizer, the harness's trusted bytecode and
    # the compile caches are made once per session, not once per worker.
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent / "cache" if worker else None
    d = Path(os.environ.get("AUTORESEARCH_TEST_CACHE") or shared or tmp_path_factory.mktemp("cache"))
    d.mkdir(parents=True, exist_ok=True)
    os.environ["AUTORESEARCH_CACHE"] = str(d)
    return d


@pytest.fixture(scope="session")
def prepared_tiny(cache_dir):
    from harness.data import prepare
    from harness.presets import get_preset

    return prepare(get_preset("tiny"), progress=False)


@pytest.fixture
def sigint_raises():
    """SIGINT raises KeyboardInterrupt in this test, as in an interactive or CI process. A shell
    without job control starts background commands with SIGINT ignored (`cmd &`, nohup), and a
    process started that way would never see the interrupt a test sends itself."""
    import signal

    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)
