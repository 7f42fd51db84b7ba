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
    # A worker per core and one more already (scripts/test.sh): torch's own intra-op threads in a
    # worker (the tests that train or run a model in process) would only contend with the others.
    import torch

    torch.set_num_threads(1)


BROKEN_LOADGROUP = (
    "pytest {} ignores --dist loadgroup's groups (pytest-xdist#1386){}: every worker would make each "
    "module fixture that trains a loop again; install pytest<9.2 (constraints.txt pins it)"
)


def pytest_configure(config):
    """`--dist loadgroup` keeps each module whose fixture trains a loop on one worker (xdist_group),
    so the fixture is made once. pytest 9.2.0 breaks that without a word (the group suffix xdist
    gives a test's id no longer takes), costing minutes of CI: refuse to start. (The workers check
    the ids themselves too, below, for a version this does not know of.)"""
    version = tuple(int(x) for x in pytest.__version__.split(".")[:2] if x.isdigit())
    if getattr(config.option, "dist", "no") == "loadgroup" and version >= (9, 2):
        raise pytest.UsageError(BROKEN_LOADGROUP.format(pytest.__version__, ""))


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    if not getattr(config.option, "loadgroup", False):  # set on xdist's workers under loadgroup
        return
    lost = [i.nodeid for i in items if i.get_closest_marker("xdist_group") and "@" not in i.nodeid]
    if lost:
        raise pytest.UsageError(BROKEN_LOADGROUP.format(pytest.__version__, f", e.g. {lost[0]}"))


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
