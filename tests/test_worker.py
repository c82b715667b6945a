"""``hybridstore.Worker`` on the in-memory fake: outcomes, heartbeats, stopping, idle waits."""

from __future__ import annotations

import tempfile
import threading
import time
from datetime import timedelta
from typing import Any

import pytest

from hybridstore import InvalidArgument, JobStatus, RemoteJob, Worker
from hybridstore.memory import MemoryJobRepository
from tests.conftest import new_job


def test_results_complete_and_exceptions_fail_with_the_type() -> None:
    repo = MemoryJobRepository()
    ok = repo.add(new_job(task_options={"n": 1}))
    none = repo.add(new_job(task_options={"n": 2}))
    bad = repo.add(new_job(task_options={"n": 3}, max_retries=0))
    odd = repo.add(new_job(task_options={"n": 4}, max_retries=0))

    def handler(job: RemoteJob) -> Any:
        n = job.task_options["n"]
        if n == 3:
            raise ValueError("page 7 is unreadable")
        return {"n": n} if n == 1 else None if n == 2 else ["not", "a", "dict"]

    summary = Worker(repo, handler, worker_id="w").run(burst=True)
    assert (summary.completed, summary.failed, summary.claimed) == (2, 2, 4)
    assert summary.stopped_by == "idle"
    assert repo.get(ok.id).result_data == {"n": 1}  # type: ignore[union-attr]
    assert repo.get(none.id).status is JobStatus.COMPLETED  # type: ignore[union-attr]
    failed = repo.get(bad.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error_message == "ValueError: page 7 is unreadable"
    assert repo.get(odd.id).error_message.startswith("TypeError: ")  # type: ignore[union-attr]


def test_a_failed_job_backs_off_instead_of_spinning() -> None:
    repo = MemoryJobRepository()
    job = repo.add(new_job())
    calls = []
    summary = Worker(repo, lambda j: calls.append(j) or 1 / 0).run(burst=True)
    assert (summary.failed, len(calls)) == (1, 1)
    stored = repo.get(job.id)
    assert stored is not None and stored.status is JobStatus.PENDING
    assert stored.error_message == "ZeroDivisionError: division by zero"
    assert stored.not_before is not None


def test_max_jobs_and_content_types() -> None:
    repo = MemoryJobRepository()
    for n in range(5):
        repo.add(new_job(content_type="audio" if n % 2 else "video"))
    summary = Worker(repo, lambda j: None, content_types=["video"]).run(max_jobs=2)
    assert (summary.completed, summary.stopped_by) == (2, "max_jobs")
    assert repo.count(status="completed", content_type="video") == 2
    assert repo.count(status="pending", content_type="audio") == 2


def test_heartbeats_keep_a_long_job_and_progress_is_reported() -> None:
    repo = MemoryJobRepository()
    job = repo.add(new_job())
    seen: list[Any] = []

    def handler(j: RemoteJob) -> dict[str, Any]:
        worker.report_progress(0.5, "halfway")
        seen.append(repo.get(j.id))
        time.sleep(0.8)  # four times the lease: only the heartbeats keep it
        return {"ok": True}

    worker = Worker(repo, handler, worker_id="w", lease_seconds=0.2)
    summary = worker.run(burst=True)
    assert (summary.completed, summary.lost) == (1, 0)
    assert (seen[0].progress, seen[0].progress_message) == (0.5, "halfway")
    done = repo.get(job.id)
    assert done is not None and done.attempt == 1 and done.version > 4


def test_an_idle_worker_waits_without_spinning_and_picks_up_new_work() -> None:
    repo = MemoryJobRepository()
    claims = 0
    original = repo.claim_next

    def counting(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return original(*args, **kwargs)

    repo.claim_next = counting  # type: ignore[method-assign]
    worker = Worker(repo, lambda j: {"ok": 1})
    runner = threading.Thread(target=worker.run)  # not the main thread: no signal handlers
    runner.start()
    time.sleep(2.0)
    job = repo.add(new_job())
    deadline = time.monotonic() + 3
    while repo.get(job.id).status is not JobStatus.COMPLETED:  # type: ignore[union-attr]
        assert time.monotonic() < deadline, "new work not picked up"
        time.sleep(0.05)
    worker.stop()
    runner.join(timeout=5)
    assert not runner.is_alive()
    assert claims < 15, f"{claims} polls in 2 s is a busy loop"


def test_bad_arguments() -> None:
    repo = MemoryJobRepository()
    with pytest.raises(InvalidArgument):
        Worker(repo, "not callable")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        Worker(repo, print, lease_seconds=0)
    with pytest.raises(InvalidArgument):
        Worker(repo, print).run(max_jobs=-1)
    def no_argument() -> None: ...

    def two_arguments(job: RemoteJob, extra: int) -> None: ...

    for wrong in (no_argument, two_arguments):
        with pytest.raises(InvalidArgument, match="one argument"):
            Worker(repo, wrong)  # type: ignore[arg-type]
    Worker(repo, lambda job, extra=1: None)  # a default for the rest is fine
    for prefetch in (0, -1, 1.5, True):
        with pytest.raises(InvalidArgument):
            Worker(repo, print, prefetch=prefetch)  # type: ignore[arg-type]


# -- prefetch -------------------------------------------------------------------------------


class CountingRepository(MemoryJobRepository):
    """Records how many jobs each claim asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def claim_next(self, worker_id: str, **kwargs: Any) -> RemoteJob | None:
        self.asked.append(1)
        return super().claim_next(worker_id, **kwargs)

    def claim_many(self, worker_id: str, n: int, **kwargs: Any) -> list[RemoteJob]:
        self.asked.append(n)
        return super().claim_many(worker_id, n, **kwargs)


def test_prefetch_claims_a_batch_at_a_time_and_works_in_claim_order() -> None:
    repo = CountingRepository()
    jobs = [repo.add(new_job(priority=-n)) for n in range(10)]
    seen: list[str] = []
    summary = Worker(repo, lambda j: seen.append(j.id), prefetch=4).run(burst=True)
    assert seen == [j.id for j in jobs]  # priority order, across batches
    assert (summary.claimed, summary.completed) == (10, 10)
    assert repo.asked == [4, 4, 4, 4]  # the last finds nothing: the burst ends
    repo.asked.clear()
    for _ in range(5):
        repo.add(new_job())
    summary = Worker(repo, lambda j: None, prefetch=4).run(max_jobs=3)
    assert repo.asked == [3] and summary.completed == 3  # never more than max_jobs


def test_a_graceful_stop_gives_back_the_jobs_not_started() -> None:
    repo = MemoryJobRepository()
    jobs = [repo.add(new_job()) for _ in range(3)]
    worker = Worker(repo, lambda j: worker.stop(), prefetch=3)
    summary = worker.run()
    assert (summary.completed, summary.given_back, summary.lost) == (1, 2, 0)
    assert summary.stopped_by == "stop"
    for job in jobs[1:]:
        back = repo.get(job.id)
        assert back is not None and back.status is JobStatus.PENDING
        assert back.retry_count == 0 and back.worker_id is None  # no retry used
    assert repo.claim_next("other") is not None


def test_the_leases_of_prefetched_jobs_are_renewed_while_they_wait() -> None:
    repo = MemoryJobRepository()
    first, second = repo.add(new_job(priority=1)), repo.add(new_job())
    waiting: list[RemoteJob | None] = []

    def slow(job: RemoteJob) -> None:
        if job.id == first.id:
            time.sleep(1.0)  # more than twice the lease
            waiting.append(repo.get(second.id))

    summary = Worker(repo, slow, lease_seconds=0.4, prefetch=2).run(burst=True)
    assert summary.completed == 2 and summary.lost == 0
    held = waiting[0]
    assert held is not None and held.status is JobStatus.PROCESSING
    assert held.timeout_at is not None and held.timeout_at > held.started_at + timedelta(
        seconds=0.5
    )  # renewed since its claim
    assert repo.get(second.id).attempt == 1  # type: ignore[union-attr]  # never taken back


def test_a_beat_for_an_earlier_claim_of_a_job_leaves_the_new_claim_alone() -> None:
    """Found by a review: a beat from a snapshot taken before the job was failed and claimed
    again went out with the old attempt, was refused, and dropped the new claim from the
    jobs whose leases are renewed."""
    repo = MemoryJobRepository()
    job = repo.add(new_job(max_retries=3))
    first = repo.claim_next("w")
    assert first is not None
    repo.fail(job.id, "w", "boom", attempt=first.attempt, retry_in=0)
    second = repo.claim_next("w")
    assert second is not None and second.attempt == first.attempt + 1
    worker = Worker(repo, lambda j: None, worker_id="w", lease_seconds=600)
    worker._held[job.id] = second
    worker._beat_each([first])  # the stale snapshot
    assert worker._held == {job.id: second}
    assert repo.get(job.id).timeout_at == second.timeout_at  # type: ignore[union-attr]  # no beat
    worker._beat_each([second])
    assert repo.get(job.id).timeout_at > second.timeout_at  # type: ignore[union-attr,operator]


def test_a_prefetched_job_lost_while_it_waited_is_not_run() -> None:
    repo = MemoryJobRepository()
    first, second = repo.add(new_job(priority=1)), repo.add(new_job())
    seen: list[str] = []

    def handler(job: RemoteJob) -> None:
        seen.append(job.id)
        if job.id == first.id:
            repo.cancel(second.id)
            time.sleep(0.3)  # several beats: the one for the waiting job is refused

    summary = Worker(repo, handler, lease_seconds=0.1, prefetch=2).run(burst=True)
    assert seen == [first.id]
    assert (summary.completed, summary.lost) == (1, 1)
    assert repo.get(second.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]


def test_a_result_too_large_to_store_fails_the_job_and_the_worker_goes_on() -> None:
    """Found by a newcomer: a result over the store's size limit raised out of the worker
    and left the job leased."""
    from hybridstore import JobStore

    with (
        tempfile.TemporaryDirectory() as directory,
        JobStore(directory, max_job_bytes=64 * 1024) as store,
    ):
        big, small = store.add(new_job(priority=1)), store.add(new_job())
        summary = Worker(store, lambda j: {"blob": "x" * 100_000} if j.id == big.id else None).run(
            burst=True
        )
        assert (summary.failed, summary.completed) == (1, 1)
        failed = store.get(big.id)
        assert failed is not None and failed.error_message.startswith("JobTooLarge: ")  # type: ignore[union-attr]
        assert store.get(small.id).status is JobStatus.COMPLETED  # type: ignore[union-attr]


def test_a_handler_that_exits_the_process_gives_its_job_back_first() -> None:
    repo = MemoryJobRepository()
    job = repo.add(new_job())

    def leave(_job: RemoteJob) -> None:
        raise SystemExit(3)

    with pytest.raises(SystemExit):
        Worker(repo, leave).run(burst=True)
    back = repo.get(job.id)
    assert back is not None and back.status is JobStatus.PENDING and back.retry_count == 0


class RepositoryWithoutRelease:
    """A repository written before ``release`` existed (every other call delegated)."""

    def __init__(self, inner: MemoryJobRepository) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        if name == "release":
            raise AttributeError(name)
        return getattr(self._inner, name)


def test_a_repository_without_release_still_gets_its_jobs_back() -> None:
    inner = MemoryJobRepository()
    jobs = [inner.add(new_job()) for _ in range(3)]
    repo = RepositoryWithoutRelease(inner)
    worker = Worker(repo, lambda j: worker.stop(), prefetch=3)  # type: ignore[arg-type]
    summary = worker.run()
    assert (summary.completed, summary.given_back, summary.lost) == (1, 2, 0)
    assert all(inner.get(j.id).status is JobStatus.PENDING for j in jobs[1:])  # type: ignore[union-attr]
