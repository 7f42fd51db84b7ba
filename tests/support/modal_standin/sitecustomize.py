"""Test-only: Modal's remote hop, played on this machine (on PYTHONPATH with FAKE_MODAL_DIR set).

The workflow's Modal jobs run the product's code unchanged (`doctor`'s Modal checks, ModalRunner's
spawn / get / cancel, `cancel-modal`); only what would cross the network is replaced:
`modal.Function.from_name(app, name)` gives a stand-in whose `spawn` runs the deployed function's
body (`modal_app.<name>.local`, what the container runs) in a thread, and `modal.FunctionCall.from_id`
one whose `cancel` is recorded. The stand-in checks what Modal would: the token in MODAL_TOKEN_ID /
MODAL_TOKEN_SECRET (AuthError) and whether the app is deployed (NotFoundError), from
FAKE_MODAL_DIR/config.json; it journals spawns and cancels there for the tests to read.
"""

import os

if os.environ.get("FAKE_MODAL_DIR"):
    import json
    import threading
    import time
    import uuid
    from pathlib import Path

    import modal
    from modal import exception as mx

    _DIR = Path(os.environ["FAKE_MODAL_DIR"])
    # A container's /tmp goes with the container. Here the function bodies run in this process's
    # threads, and one killed mid-run (the SIGTERM test) never leaves its TemporaryDirectory: keep
    # what it leaves inside the test's own directory, not in the machine's /tmp.
    import tempfile

    (_DIR / "container-tmp").mkdir(exist_ok=True)
    tempfile.tempdir = str(_DIR / "container-tmp")

    def _log(name: str, **row) -> None:
        with (_DIR / name).open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def _config() -> dict:
        return json.loads((_DIR / "config.json").read_text(encoding="utf-8"))

    class _Call:
        def __init__(self, fn, args):
            self.object_id = f"fc-{uuid.uuid4().hex[:12]}"
            self._result = self._error = None
            self._cancelled = threading.Event()
            self._thread = threading.Thread(target=self._go, args=(fn, args), daemon=True)
            self._thread.start()
            _log("calls.jsonl", call_id=self.object_id, function=fn.name)

        def _go(self, fn, args):
            try:
                self._result = fn.body()(*args)
            except BaseException as e:  # noqa: BLE001 - handed to get(), as Modal re-raises remote errors
                self._error = e

        def get(self, timeout=None):
            deadline = None if timeout is None else time.monotonic() + timeout
            while self._thread.is_alive() and not self._cancelled.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError()
                self._thread.join(0.05)
            if self._cancelled.is_set():  # what the remote side does with a cancelled input: no result
                raise mx.RemoteError(f"{self.object_id} was cancelled")
            if self._error is not None:
                raise self._error
            return self._result

        def cancel(self, terminate_containers=False):
            self._cancelled.set()
            _log("cancelled.jsonl", call_id=self.object_id, terminate_containers=terminate_containers)

    class _Ref:
        def __init__(self, call_id):
            self.object_id = call_id

        def cancel(self, terminate_containers=False):
            _log("cancelled.jsonl", call_id=self.object_id, terminate_containers=terminate_containers)

    class _Function:
        def __init__(self, app, name):
            self.app, self.name = app, name

        def _check(self):
            cfg = _config()
            token = (os.environ.get("MODAL_TOKEN_ID"), os.environ.get("MODAL_TOKEN_SECRET"))
            if token != (cfg["token_id"], cfg["token_secret"]):
                raise mx.AuthError("Token missing. Could not authenticate client.")
            if self.app not in cfg.get("deployed", []):
                raise mx.NotFoundError(f"Lookup failed for Function '{self.name}' from the '{self.app}' app")

        def body(self):
            from autoresearch_ci.runners import modal_app

            return getattr(modal_app, self.name).local

        def hydrate(self, client=None):
            self._check()
            return self

        def with_options(self, **kwargs):
            return self

        def spawn(self, *args):
            self._check()
            return _Call(self, args)

        def remote(self, *args):
            self._check()
            return self.body()(*args)

    modal.Function.from_name = staticmethod(lambda app, name, **kw: _Function(app, name))
    modal.FunctionCall.from_id = staticmethod(lambda call_id, **kw: _Ref(call_id))
