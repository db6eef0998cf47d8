"""Real servers for the serving tests: uvicorn in a thread, or `mmfuse serve` in a process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import httpx


class ServerThread:
    """Serve an app with uvicorn in a background thread on loopback.

    Port 0 picks a free port; ``url`` tells which. Use as a context manager::

        with ServerThread(create_app(model)) as server:
            httpx.get(server.url + "/health")
    """

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0,
                 log_level: str = "warning", **uvicorn_options: Any):
        import uvicorn

        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.host, self.port = self._socket.getsockname()[:2]
        config = uvicorn.Config(app, host=host, port=self.port, log_level=log_level,
                                lifespan="on", **uvicorn_options)
        self.server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self.server.run,
                                        kwargs={"sockets": [self._socket]}, daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cli_server(model_path, *options: str, env: dict | None = None, scheme: str = "http",
                     verify: Any = True, timeout: float = 90.0) -> tuple[subprocess.Popen, str]:
    """``python -m mmfuse serve MODEL --port P OPTIONS`` in a process; waits for /health."""
    port = free_port()
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p),
                    **(env or {}))
    proc = subprocess.Popen([sys.executable, "-m", "mmfuse", "serve", str(model_path),
                             "--port", str(port), *options], env=full_env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"{scheme}://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=2, verify=verify).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("the server did not come up:\n" + proc.stdout.read().decode())
        time.sleep(0.2)
