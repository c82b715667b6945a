"""Real ``hybridstore serve`` processes for the tests, and the issue-12 skip switch.

``ServerProcess`` starts ``python -m hybridstore.cli --data-dir TARGET serve`` on a free
loopback port, waits for ``/healthz`` and keeps the server's whole stderr (its log) in a
file, so tests can read what it logged.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
ADMIN_TOKEN = "admin-token-0123456789abcdef"
WORKER_TOKEN = "worker-token-0123456789abcdef"
TOKENS_VARIABLE = f"admin:{ADMIN_TOKEN},worker:{WORKER_TOKEN}"

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HYBRIDSTORE_API_TOKENS": TOKENS_VARIABLE}
    env.pop("HYBRIDSTORE_URL", None)
    env.update(extra)
    return env


class ServerProcess:
    """A ``hybridstore serve`` subprocess on ``target``."""

    def __init__(
        self,
        target: str,
        log_path: Path,
        *,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        # serve needs an existing store, as a user's would be (hybridstore init / db init).
        from hybridstore import open_repository

        open_repository(target).close()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hybridstore.cli", "--data-dir", target, "serve",
             "--port", str(self.port), *args],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env if env is not None else server_env(),
            cwd=REPO,
        )
        self._wait_ready()

    def _wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited {self.process.returncode}: {self.log()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout} s: {self.log()}")

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
