"""The demo: jobs in, worker processes through claim → heartbeat → complete/fail, figures out.

It runs on any backend ``open_repository`` understands. Worker processes are real
processes (``spawn``), each with its own repository handle, so what it shows is what a
deployment of remote workers does: no job claimed twice, failed attempts retried, lost
leases expired and retried, every job ending in a terminal status.
"""

from __future__ import annotations

import multiprocessing
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidTransition, NotJobOwner
from .factory import open_repository
from .model import TERMINAL_STATUSES, RemoteJob

__all__ = ["CONTENT_TYPES", "DemoReport", "run_demo"]

# The demo's own content types: its workers claim only these, so a store that also holds
# real work can run the demo without the demo touching that work.
CONTENT_TYPES = ("demo-document", "demo-audio", "demo-video", "demo-image")


@dataclass
class DemoReport:
    """What a demo run did and how fast."""

    jobs: int
    workers: int
    claims: int = 0
    completed: int = 0
    failed_attempts: int = 0
    abandoned: int = 0
    lease_lost: int = 0
    expired: int = 0
    seconds: float = 0.0
    #: seconds each worker sleeps per job to imitate the conversion work
    work_seconds: float = 0.0
    #: seconds the workers spent inside store calls for the jobs they claimed (the claim,
    #: heartbeat, complete or fail), summed over workers; empty polls are not counted
    store_seconds: float = 0.0
    statistics: dict[str, Any] = field(default_factory=dict)

    @property
    def claims_per_second(self) -> float:
        """Claims over the run's wall time: bounded by the simulated work, not the store."""
        return self.claims / self.seconds if self.seconds else 0.0

    @property
    def store_ms_per_claim(self) -> float:
        """Milliseconds inside store calls per claimed job (waits on other workers included)."""
        return 1000 * self.store_seconds / self.claims if self.claims else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "jobs": self.jobs,
            "workers": self.workers,
            "claims": self.claims,
            "completed": self.completed,
            "failed_attempts": self.failed_attempts,
            "abandoned_leases": self.abandoned,
            "leases_lost": self.lease_lost,
            "expired": self.expired,
            "seconds": round(self.seconds, 3),
            "claims_per_second": round(self.claims_per_second, 1),
            "work_seconds_per_job": self.work_seconds,
            "store_seconds": round(self.store_seconds, 3),
            "store_ms_per_claim": round(self.store_ms_per_claim, 3),
            "statistics": self.statistics,
        }


def _worker(
    target: str,
    name: str,
    fail_rate: float,
    abandon_rate: float,
    work_seconds: float,
    lease_seconds: float,
    start: Any,
    results: Any,
) -> None:
    """One remote worker: claim until no pending job is left and none is in flight."""
    rng = random.Random(name)
    counts: dict[str, float] = {
        "claims": 0,
        "completed": 0,
        "failed": 0,
        "abandoned": 0,
        "lease_lost": 0,
        "store_seconds": 0.0,
    }
    clock = time.perf_counter
    with open_repository(target) as repo:
        start.wait()
        while True:
            began = clock()
            job = repo.claim_next(name, content_types=CONTENT_TYPES, lease_seconds=lease_seconds)
            if job is not None:
                counts["store_seconds"] += clock() - began
            if job is None:
                # Others may still fail jobs back to pending or leases may expire.
                active = repo.count(status=["pending", "processing"], content_type=CONTENT_TYPES)
                if active == 0:
                    break
                time.sleep(0.02)
                continue
            counts["claims"] += 1
            if rng.random() < abandon_rate:
                counts["abandoned"] += 1  # a worker that died: the lease will expire
                continue
            try:
                time.sleep(work_seconds / 2)  # the "work": a sleep, not the store
                began = clock()
                try:
                    repo.heartbeat(job.id, name, lease_seconds=lease_seconds, attempt=job.attempt)
                finally:
                    counts["store_seconds"] += clock() - began
                time.sleep(work_seconds / 2)
                began = clock()
                try:
                    if rng.random() < fail_rate:
                        repo.fail(job.id, name, "simulated conversion error", attempt=job.attempt)
                        counts["failed"] += 1
                    else:
                        result = {"pages": rng.randint(1, 40), "worker": name}
                        repo.complete(job.id, name, result, attempt=job.attempt)
                        counts["completed"] += 1
                finally:
                    counts["store_seconds"] += clock() - began
            except (NotJobOwner, InvalidTransition):
                # Our lease ran out and the job was expired (and maybe claimed again):
                # the fencing did its job; a real worker drops its result here.
                counts["lease_lost"] += 1
    results.put(counts)


def run_demo(
    target: str,
    *,
    jobs: int = 200,
    workers: int = 4,
    fail_rate: float = 0.1,
    abandon_rate: float = 0.01,
    work_seconds: float = 0.002,
    lease_seconds: float = 1.0,
    progress: Callable[[int, int], None] | None = None,
) -> DemoReport:
    """Create ``jobs`` jobs in ``target`` and work them off with ``workers`` processes.

    Abandoned claims (a simulated crash) come back through ``expire_overdue`` after
    ``lease_seconds``; ``progress(done, total)`` follows the jobs reaching a terminal status.
    """
    report = DemoReport(jobs=jobs, workers=workers, work_seconds=work_seconds)
    repo = open_repository(target)
    try:
        terminal = sorted(TERMINAL_STATUSES)
        done_before = repo.count(status=terminal)
        rng = random.Random(7)
        for n in range(jobs):
            repo.add(
                RemoteJob(
                    ingestion_task_id=f"ingest-{n % max(1, jobs // 3)}",
                    source_file_path=f"/incoming/file-{n:06d}",
                    content_type=rng.choice(CONTENT_TYPES),
                    task_options={"quality": rng.choice(["low", "high"]), "n": n},
                )
            )
        context = multiprocessing.get_context("spawn")
        start = context.Event()
        results = context.Queue()
        processes = [
            context.Process(
                target=_worker,
                args=(
                    target,
                    f"worker-{i + 1}",
                    fail_rate,
                    abandon_rate,
                    work_seconds,
                    lease_seconds,
                    start,
                    results,
                ),
            )
            for i in range(workers)
        ]
        for process in processes:
            process.start()
        started = time.perf_counter()
        start.set()
        counts: list[dict[str, float]] = []
        while len(counts) < workers:
            report.expired += len(repo.expire_overdue())
            if progress is not None:
                progress(repo.count(status=terminal) - done_before, jobs)
            while not results.empty():
                counts.append(results.get())
            if any(p.exitcode not in (None, 0) for p in processes):
                raise RuntimeError("a demo worker process died")
            time.sleep(0.1)
        report.seconds = time.perf_counter() - started
        for process in processes:
            process.join()
        for found in counts:
            report.claims += int(found["claims"])
            report.completed += int(found["completed"])
            report.failed_attempts += int(found["failed"])
            report.abandoned += int(found["abandoned"])
            report.lease_lost += int(found["lease_lost"])
            report.store_seconds += found["store_seconds"]
        if progress is not None:
            progress(repo.count(status=terminal) - done_before, jobs)
        report.statistics = repo.statistics()
    finally:
        repo.close()
    return report
