"""Over HTTP: the worker cycle (claim + complete) with 4 worker processes through
``hybridstore serve``, beside the same workers on the file store directly, in one run; and
what 64 idle long-polling workers cost the server process.

Both run on a store of their own (a temporary data directory holding just the jobs the
rounds consume), not on the cached stores: the question is what HTTP adds per cycle.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.claimers import ClaimPool
from benchmarks.conftest import REPO, BenchData
from hybridstore import JobStore, RemoteJob
from hybridstore.repository import JobRepository

ADMIN = "bench-admin-token-0123456789"
WORKER = "bench-worker-token-0123456789"
PROCESSES = 4
IDLE_WORKERS = 64


class Server:
    """``hybridstore serve`` on a free loopback port, on ``data_dir``."""

    def __init__(self, data_dir: Path) -> None:
        from hybridstore import JobStore

        JobStore(data_dir).close()  # serve needs an existing store
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO),
               "HYBRIDSTORE_API_TOKENS": f"admin:{ADMIN},worker:{WORKER}"}
        env.pop("HYBRIDSTORE_URL", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hybridstore.cli", "--data-dir", str(data_dir),
             "--log-level", "error", "serve", "--port", str(self.port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        import httpx

        for _ in range(300):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("hybridstore serve did not start")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def data_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hybridstore-bench-http-") as root:
        yield Path(root) / "data"


def _fill(data_dir: Path, jobs: int) -> None:
    with JobStore(data_dir, durable=False) as store:
        for n in range(jobs):
            store.add(RemoteJob(ingestion_task_id=f"t{n}", source_file_path=f"/in/{n}.pdf",
                                content_type="document"))


def _cycler(open_repo: Callable[[], JobRepository]) -> Callable[[int], Callable[[int, int], None]]:
    def factory(index: int) -> Callable[[int, int], None]:
        repo = open_repo()
        worker = f"bench-http-{index}"

        def cycle(round_number: int, n: int) -> None:
            job = repo.claim_next(worker, lease_seconds=3600)
            if job is None:
                raise RuntimeError("no pending job left to claim")
            repo.complete(job.id, worker, {"n": n}, attempt=job.attempt)

        return cycle

    return factory


@pytest.mark.parametrize("via", ["direct", "http"])
def test_worker_cycle(benchmark: Any, bench: BenchData, data_dir: Path, via: str) -> None:
    """claim_next + complete, 4 processes released together; a round is the wall-clock
    time of all their cycles. ``direct``: each process opens the data directory;
    ``http``: each talks to one ``hybridstore serve`` on it (worker token)."""
    quota = 5 if bench.quick else 25
    n_rounds = bench.rounds(10, 2)
    _fill(data_dir, PROCESSES * quota * (n_rounds + 1))
    benchmark.group = "worker cycle (claim + complete), 4 processes, file store"
    benchmark.extra_info.update(op="worker cycle", impl=via, size=0,
                                ops_per_round=PROCESSES * quota)
    server = Server(data_dir) if via == "http" else None
    try:
        if server is not None:
            from hybridstore import HttpJobRepository

            url = server.url
            factory = _cycler(lambda: HttpJobRepository(url, token=WORKER))
        else:
            factory = _cycler(lambda: JobStore(data_dir))
        with ClaimPool(PROCESSES, quota, factory) as pool:
            benchmark.pedantic(pool.run_round, rounds=n_rounds, warmup_rounds=1)
            pool.check()
    finally:
        if server is not None:
            server.stop()
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["cycles_per_s"] = round(PROCESSES * quota / median, 1)


def test_idle_long_polling_workers_cost(benchmark: Any, bench: BenchData, data_dir: Path) -> None:
    """64 workers waiting for work (claim_next with a 30 s wait, again and again) on an
    empty store: the server process's CPU time over the measured window, as a share of
    one core. The workers' own CPU is not counted (they sleep in a socket read)."""
    import psutil

    from hybridstore import HttpJobRepository

    seconds = 5.0 if bench.quick else 20.0
    JobStore(data_dir).close()
    server = Server(data_dir)
    stop = threading.Event()

    def idle(index: int) -> None:
        with HttpJobRepository(server.url, token=WORKER, claim_wait=30) as repo:
            while not stop.is_set():
                if repo.claim_next(f"idle-{index}") is not None:
                    raise RuntimeError("the store was to stay empty")

    threads = [threading.Thread(target=idle, args=(i,), daemon=True)
               for i in range(IDLE_WORKERS)]
    process = psutil.Process(server.process.pid)
    share: list[float] = []

    def measure() -> None:
        before = process.cpu_times()
        started = time.monotonic()
        time.sleep(seconds)
        after = process.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        share.append(100 * used / (time.monotonic() - started))

    try:
        for thread in threads:
            thread.start()
        time.sleep(3)  # every worker is waiting in its long poll
        benchmark.group = "64 idle long-polling workers"
        benchmark.extra_info.update(op="idle workers", impl="http", size=0, ops_per_round=1,
                                    window_seconds=seconds)
        benchmark.pedantic(measure, rounds=1, iterations=1)
    finally:
        stop.set()
        server.stop()  # the waiting claims end with the server
    benchmark.extra_info["server_cpu_percent_of_a_core"] = round(share[0], 2)
    sys.stderr.write(f"\n[bench] 64 idle workers: server at {share[0]:.2f} % of a core\n")
    assert share[0] < 5, f"64 idle workers cost the server {share[0]:.1f} % of a core"
