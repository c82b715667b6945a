"""Many processes on one repository: no job claimed twice, no update lost, leases fenced.

Workers are real processes (``spawn``), each opening its own handle with
``open_repository(target)``, exactly as remote workers do.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from hybridstore import JobRepository, JobStatus, VersionConflict, open_repository
from tests.conftest import new_job

CONTEXT = multiprocessing.get_context("spawn")
CONTENT_TYPES = ["audio", "video", "document", "image"]
pytestmark = pytest.mark.slow


def claim_all(target: str, name: str, order: list[str] | None, start: Any, out: Any) -> None:
    """A worker process: claim and complete until no job is left; report (id, attempt)s."""
    claimed = []
    with open_repository(target) as repo:
        start.wait()
        while (job := repo.claim_next(name, content_types=order, lease_seconds=120)) is not None:
            repo.complete(job.id, name, {"by": name}, attempt=job.attempt)
            claimed.append((job.id, job.attempt))
    out.put(claimed)


def run_claimers(
    target: str,
    workers: int,
    orders: list[list[str] | None],
    claimer: Callable[[str, str, list[str] | None, Any, Any], None] = claim_all,
) -> list[tuple[str, int]]:
    """Start ``workers`` processes running ``claimer`` at once; every (id, attempt) claimed."""
    start = CONTEXT.Event()
    out = CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=claimer, args=(target, f"w{i}", orders[i], start, out))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    start.set()  # the start barrier: everybody races for the same first jobs
    results = [out.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    return [item for result in results for item in result]


@pytest.mark.parametrize(("workers", "order"), [(4, "identical"), (6, "shuffled")])
def test_every_job_is_claimed_exactly_once(
    repo: JobRepository, repo_target: str, workers: int, order: str
) -> None:
    total = 1000
    ids = {repo.add(new_job(content_type=CONTENT_TYPES[n % 4])).id for n in range(total)}
    rng = random.Random(order)
    orders: list[list[str] | None] = (
        [None] * workers
        if order == "identical"
        else [rng.sample(CONTENT_TYPES, k=4) for _ in range(workers)]
    )
    claimed = run_claimers(repo_target, workers, orders)
    twice = [job_id for job_id, n in Counter(j for j, _ in claimed).items() if n > 1]
    assert twice == [], f"claimed more than once: {twice[:5]}"
    assert {job_id for job_id, _ in claimed} == ids
    assert {attempt for _, attempt in claimed} == {1}
    assert repo.count(status=JobStatus.COMPLETED) == total
    assert repo.count() == total


def _incrementer(target: str, job_id: str, rounds: int, barrier: Any, out: Any) -> None:
    # Lockstep: every round, each process reads the job, waits until all have read, then
    # saves its increment with the version it read. All read the same version (the last
    # round's winner reads after its own save, the others after theirs failed), so the
    # saves of one round race for one version: exactly one may win.
    wins = conflicts = 0
    with open_repository(target) as repo:
        for _ in range(rounds):
            job = repo.get(job_id)
            assert job is not None
            changed = job.model_copy(update={"task_options": {"n": job.task_options["n"] + 1}})
            barrier.wait(timeout=120)
            try:
                repo.save(changed, expected_version=job.version)
            except VersionConflict:
                conflicts += 1
            else:
                wins += 1
    out.put((wins, conflicts))


def test_concurrent_read_modify_write_loses_no_update(
    repo: JobRepository, repo_target: str
) -> None:
    workers, rounds = 4, 25
    job = repo.add(new_job(task_options={"n": 0}))
    barrier, out = CONTEXT.Barrier(workers), CONTEXT.Queue()
    processes = [
        CONTEXT.Process(target=_incrementer, args=(repo_target, job.id, rounds, barrier, out))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    outcomes = [out.get(timeout=240) for _ in processes]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    wins = sum(w for w, _ in outcomes)
    conflicts = sum(c for _, c in outcomes)
    final = repo.get(job.id)
    assert final is not None
    # The race happened every round (workers - 1 losers each), one save won each round,
    # and every win is in the stored value: none lost, none applied twice.
    assert (wins, conflicts) == (rounds, (workers - 1) * rounds)
    assert final.task_options["n"] == rounds
    assert final.version == rounds + 1


def _holder(target: str, ready: Any) -> None:
    with open_repository(target) as repo:
        job = repo.claim_next("doomed", lease_seconds=1)
        ready.put((job.id, job.attempt) if job else None)
        time.sleep(600)  # killed long before this ends


def test_a_killed_workers_job_comes_back_and_is_completed(
    repo: JobRepository, repo_target: str
) -> None:
    job = repo.add(new_job())
    ready = CONTEXT.Queue()
    holder = CONTEXT.Process(target=_holder, args=(repo_target, ready))
    holder.start()
    claimed = ready.get(timeout=60)
    assert claimed == (job.id, 1)
    assert holder.pid is not None
    os.kill(holder.pid, signal.SIGKILL)
    holder.join(timeout=30)
    assert repo.claim_next("rescuer") is None, "still leased to the dead worker"
    time.sleep(1.2)
    (back,) = repo.expire_overdue()
    assert back.status is JobStatus.PENDING and back.retry_count == 1
    again = repo.claim_next("rescuer")
    assert again is not None and again.id == job.id and again.attempt == 2
    done = repo.complete(job.id, "rescuer", {"ok": True}, attempt=again.attempt)
    assert done.status is JobStatus.COMPLETED
    from hybridstore import InvalidTransition

    with pytest.raises(InvalidTransition):  # the late worker's result cannot land
        repo.complete(job.id, "doomed", attempt=1)
