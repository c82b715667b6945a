"""Workers features across processes: one abandoned lease, raced for; one unique key, raced
for. Real processes (``spawn``), each with its own handle from ``open_repository``."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import pytest

from hybridstore import (
    DuplicateJob,
    InvalidTransition,
    JobRepository,
    JobStatus,
    NotJobOwner,
    open_repository,
)
from tests.conftest import new_job

CONTEXT = multiprocessing.get_context("spawn")
pytestmark = pytest.mark.slow


def _claimer(target: str, name: str, start: Any, out: Any) -> None:
    with open_repository(target) as repo:
        start.wait(timeout=120)
        job = repo.claim_next(name, lease_seconds=60)
        out.put((name, (job.id, job.attempt) if job else None))


def test_two_processes_race_to_take_back_one_abandoned_lease(
    repo: JobRepository, repo_target: str
) -> None:
    job = repo.add(new_job())
    held = repo.claim_next("crashed", lease_seconds=0.5)
    assert held is not None and held.attempt == 1
    start, out = CONTEXT.Event(), CONTEXT.Queue()
    racers = [
        CONTEXT.Process(target=_claimer, args=(repo_target, f"r{i}", start, out)) for i in (1, 2)
    ]
    for racer in racers:
        racer.start()
    time.sleep(0.7)  # the lease is over when they race
    start.set()
    results = dict(out.get(timeout=120) for _ in racers)
    for racer in racers:
        racer.join(timeout=60)
        assert racer.exitcode == 0
    winners = {name: got for name, got in results.items() if got is not None}
    assert list(winners.values()) == [(job.id, 2)], results
    (winner,) = winners
    stored = repo.get(job.id)
    assert stored is not None
    assert (stored.status, stored.worker_id, stored.attempt, stored.retry_count) == (
        JobStatus.PROCESSING,
        winner,
        2,
        1,
    )
    # The earlier holder is fenced, whatever it sends; the winner completes.
    with pytest.raises(NotJobOwner):
        repo.complete(job.id, "crashed", {"late": True}, attempt=1)
    with pytest.raises(NotJobOwner):
        repo.heartbeat(job.id, "crashed", attempt=1)
    assert repo.complete(job.id, winner, attempt=2).status is JobStatus.COMPLETED
    with pytest.raises(InvalidTransition):
        repo.fail(job.id, "crashed", "late", attempt=1)


def _adder(target: str, n: int, mode: str, barrier: Any, out: Any) -> None:
    with open_repository(target) as repo:
        job = new_job(id=f"racer-{n}", unique_key="the-document")
        barrier.wait(timeout=120)
        try:
            got = repo.add(job, if_duplicate=mode)  # type: ignore[arg-type]
        except DuplicateJob as exc:
            out.put((n, "duplicate", exc.existing_id))
        else:
            out.put((n, "stored" if got.id == job.id else "returned", got.id))


@pytest.mark.parametrize("mode", ["raise", "return"])
def test_six_processes_add_one_unique_key(repo: JobRepository, repo_target: str, mode: str) -> None:
    processes, barrier, out = 6, CONTEXT.Barrier(6), CONTEXT.Queue()
    adders = [
        CONTEXT.Process(target=_adder, args=(repo_target, n, mode, barrier, out))
        for n in range(processes)
    ]
    for adder in adders:
        adder.start()
    results = [out.get(timeout=120) for _ in adders]
    for adder in adders:
        adder.join(timeout=60)
        assert adder.exitcode == 0
    stored = [job_id for _, outcome, job_id in results if outcome == "stored"]
    assert len(stored) == 1, results
    others = {outcome for _, outcome, _ in results} - {"stored"}
    assert others == {"duplicate" if mode == "raise" else "returned"}
    assert {job_id for _, _, job_id in results} == set(stored), "all name the one winner"
    assert [job.id for job in repo.find()] == stored
