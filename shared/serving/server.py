"""``mlflow models serve`` as a context manager, and a JSON client for its ``/invocations``: what the serving
test and the serving benchmark start and call."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def model_server(model_uri: str, tracking_uri: str, log: Path, *, startup_seconds: float = 120) -> Iterator[str]:
    """Serve ``model_uri`` with ``mlflow models serve --env-manager local`` on 127.0.0.1 (a free port, the
    given tracking/registry store); yields the base URL once ``/ping`` answers; the server's output goes to
    ``log``. The server is stopped on exit."""
    port = free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    with log.open("w") as out:
        server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri,
                                   "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
                                  env=env, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + startup_seconds
            while True:
                try:
                    with urllib.request.urlopen(f"{base}/ping", timeout=5):
                        break
                except OSError:
                    if server.poll() is not None:
                        raise RuntimeError(f"mlflow models serve exited {server.returncode}:\n"
                                           f"{log.read_text()[-3000:]}") from None
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{model_uri}: no answer on {base}/ping in {startup_seconds:.0f} s"
                                           ) from None
                    time.sleep(0.5)
            yield base
        finally:
            server.terminate()
            server.wait(timeout=30)


def invoke(base: str, body: Any, timeout: float = 120) -> tuple[int, dict[str, Any]]:
    """POST ``body`` as JSON to ``<base>/invocations``: (HTTP status, decoded JSON answer)."""
    request = urllib.request.Request(f"{base}/invocations", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def dataframe_split(column: str, items: list[Any]) -> dict[str, Any]:
    """The scoring server's ``dataframe_split`` body for one input column (bytes base64-encoded, as MLflow
    decodes a binary column)."""
    import base64

    values = [base64.b64encode(v).decode() if isinstance(v, bytes) else v for v in items]
    return {"dataframe_split": {"columns": [column], "data": [[v] for v in values]}}
