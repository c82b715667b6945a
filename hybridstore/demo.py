"""The demo: jobs in, worker processes (each a ``hybridstore.Worker``) through claim →
heartbeat → complete/fail, figures out.

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

from .factory import open_repository
from .logs import configure_logging
from .model import TERMINAL_STATUSES, RemoteJob
from .worker import Worker

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
    #: attempts a simulated worker crash left behind, leased: each job came back (to be
    #: claimed again) once its lease ran out
    abandoned: int = 0
    lease_lost: int = 0
    #: how long a claim's lease lasts (an abandoned job waits this long)
    lease_seconds: float = 0.0
    seconds: float = 0.0
    #: seconds each worker sleeps per job to imitate the conversion work
    work_seconds: float = 0.0
    #: seconds the workers spent inside ``Worker.run`` outside their handler, summed over
    #: workers: its store calls (claim, heartbeat, complete or fail, and the one empty claim
    #: that ends each burst) and the loop around them
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
            "lease_seconds": self.lease_seconds,
            "seconds": round(self.seconds, 3),
            "claims_per_second": round(self.claims_per_second, 1),
            "work_seconds_per_job": self.work_seconds,
            "store_seconds": round(self.store_seconds, 3),
            "store_ms_per_claim": round(self.store_ms_per_claim, 3),
            "statistics": self.statistics,
        }


class _Crash(BaseException):
    """A simulated worker crash: not an Exception, so it escapes ``Worker.run`` with the job
    still leased, as a killed process would leave it."""


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
    """One remote worker process: a ``hybridstore.Worker`` in burst mode, restarted (as a
    supervisor would) after a simulated crash, until no demo job is pending or in flight."""
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
    handler_seconds = 0.0

    def convert(job: RemoteJob) -> dict[str, Any]:
        nonlocal handler_seconds
        began = clock()
        try:
            if rng.random() < abandon_rate:
                raise _Crash()
            time.sleep(work_seconds)  # the "work": a sleep, not the store
            if rng.random() < fail_rate:
                raise RuntimeError("simulated conversion error")
            return {"pages": rng.randint(1, 40), "worker": name}
        finally:
            handler_seconds += clock() - began

    configure_logging("error")  # a process of the demo: its failures are simulated, not news
    with open_repository(target) as repo:
        worker = Worker(
            repo, convert, worker_id=name, content_types=CONTENT_TYPES, lease_seconds=lease_seconds
        )
        # Failed attempts retry at once here (the demo is about throughput, not back-off).
        worker.retry_in = 0
        start.wait()
        in_worker = 0.0
        while True:
            began = clock()
            crashed = False
            try:
                worker.run(burst=True)
            except _Crash:
                crashed = True
            in_worker += clock() - began
            summary = worker.summary
            counts["abandoned"] += crashed  # its lease will run out and the job come back
            counts["claims"] += summary.claimed
            counts["completed"] += summary.completed
            counts["failed"] += summary.failed
            counts["lease_lost"] += summary.lost
            if summary.claimed or crashed:
                continue
            # Nothing ready: others may still fail jobs back to pending, or leases expire.
            active = repo.count(status=["pending", "processing"], content_type=CONTENT_TYPES)
            if active == 0:
                break
            time.sleep(0.02)
        # The time in Worker.run but not in the handler: its store calls (claims,
        # heartbeats, completions; the one empty claim that ends each burst included).
        counts["store_seconds"] = in_worker - handler_seconds
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

    Abandoned claims (a simulated crash) come back after ``lease_seconds``: the workers'
    own claims take them back. ``progress(done, total)`` follows the jobs reaching a
    terminal status.
    """
    report = DemoReport(
        jobs=jobs, workers=workers, work_seconds=work_seconds, lease_seconds=lease_seconds
    )
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
