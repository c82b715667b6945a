"""Claim throughput with real processes: a pool of forked workers behind a start barrier.

Each worker process opens its own handle (a ``JobStore``, or the raw limit's files and
SQLite connection) once, before the first round. A round is: every worker waits on the
start barrier, performs its quota of claims, waits on the end barrier. The parent's timed
call is "release the start barrier, wait for the end barrier", so a round's time is the
wall-clock time of ``processes × quota`` claims done concurrently, and nothing else
(process start-up, opening the store and restoring jobs between rounds are not timed).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import traceback
from collections.abc import Callable
from typing import Any

from hybridstore import JobStatus
from hybridstore.repository import JobRepository

__all__ = ["ClaimPool", "repository_claimer", "restore_claimed", "synced"]

# A worker factory runs in the child: it opens what it needs and returns a function
# claim(round_number, n_in_round) -> None that performs one claim (raising on failure).
WorkerFactory = Callable[[int], Callable[[int, int], None]]

_CTX = multiprocessing.get_context("fork")
BARRIER_TIMEOUT = 300.0


def _report(failures: Any, errors: Any, message: str) -> None:
    with failures.get_lock():
        failures.value += 1
    errors.put(message)


def _worker_main(index: int, factory: WorkerFactory, quota: int, start: Any, end: Any,
                 stop: Any, failures: Any, errors: Any) -> None:
    try:
        claim = factory(index)
    except BaseException:
        _report(failures, errors, f"worker {index} failed to start:\n{traceback.format_exc()}")
        claim = None
    round_number = 0
    while True:
        try:
            start.wait(BARRIER_TIMEOUT)
        except Exception:
            os._exit(1)
        if stop.value:
            os._exit(0)
        if claim is not None:
            try:
                for n in range(quota):
                    claim(round_number, n)
            except BaseException:
                _report(failures, errors,
                        f"worker {index}, round {round_number}:\n{traceback.format_exc()}")
        round_number += 1
        try:
            end.wait(BARRIER_TIMEOUT)
        except Exception:
            os._exit(1)


class ClaimPool:
    """``processes`` worker processes, each doing ``quota`` claims per round."""

    def __init__(self, processes: int, quota: int, factory: WorkerFactory) -> None:
        self.processes = processes
        self.quota = quota
        self.start = _CTX.Barrier(processes + 1)
        self.end = _CTX.Barrier(processes + 1)
        self.stop = _CTX.Value("b", 0)
        self.failures = _CTX.Value("i", 0)
        self.errors = _CTX.Queue()
        self.workers = [
            _CTX.Process(
                target=_worker_main,
                args=(i, factory, quota, self.start, self.end, self.stop, self.failures,
                      self.errors),
                daemon=True,
            )
            for i in range(processes)
        ]
        for worker in self.workers:
            worker.start()

    @property
    def claims_per_round(self) -> int:
        return self.processes * self.quota

    def run_round(self) -> None:
        """The timed part: release every worker at once, wait until all are done."""
        self.start.wait(BARRIER_TIMEOUT)
        self.end.wait(BARRIER_TIMEOUT)

    def check(self) -> None:
        """Raise if any worker reported an error."""
        if not self.failures.value:
            return
        problems = []
        for _ in range(self.failures.value):
            try:
                problems.append(self.errors.get(timeout=10))
            except Exception:
                break
        raise RuntimeError("claim workers failed:\n" + "\n".join(problems))

    def close(self) -> None:
        self.stop.value = 1
        with contextlib.suppress(Exception):
            self.start.wait(10)
        for worker in self.workers:
            worker.join(10)
            if worker.is_alive():
                worker.kill()
                worker.join()

    def __enter__(self) -> ClaimPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def synced(setup: Callable[[], Any]) -> Callable[[], Any]:
    """``setup`` followed by an untimed ``os.sync()``, so one round's unsynced writes are
    not billed to the next round's fsync."""

    def run() -> Any:
        result = setup()
        os.sync()
        return result

    return run


def repository_claimer(open_repo: Callable[[], JobRepository], name: str) -> WorkerFactory:
    """Workers that claim through a repository opened in the worker process (before the
    first round), worker ``i`` under ``name.format(i)``."""

    def factory(index: int) -> Callable[[int, int], None]:
        repo = open_repo()
        worker = name.format(index)

        def claim(round_number: int, n: int) -> None:
            if repo.claim_next(worker, lease_seconds=3600) is None:
                raise RuntimeError("no pending job left to claim")

        return claim

    return factory


def restore_claimed(repo: JobRepository, name: str, processes: int) -> int:
    """Put every job the claim workers hold back to pending (untimed)."""
    workers = [name.format(i) for i in range(processes)]
    claimed = repo.find(status=JobStatus.PROCESSING, worker_id=workers)
    for job in claimed:
        repo.save(job.model_copy(update={"status": JobStatus.PENDING, "worker_id": None,
                                         "started_at": None, "timeout_at": None}))
    return len(claimed)
