"""Workers that need nothing else: ready and order, abandoned leases, back-off, delayed and
unique jobs, progress, requeue, batches. Every backend."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from hybridstore import (
    DuplicateJob,
    InvalidArgument,
    InvalidTransition,
    JobAlreadyExists,
    JobNotFound,
    JobRepository,
    JobStatus,
    NotJobOwner,
)
from hybridstore.lifecycle import backoff_seconds
from hybridstore.model import utcnow
from tests.conftest import new_job

LATER = timedelta(hours=1)


def test_new_fields_round_trip_and_default(repo: JobRepository) -> None:
    when = utcnow() + LATER
    job = repo.add(new_job(priority=-7, not_before=when, unique_key="doc-1"))
    stored = repo.get(job.id)
    assert stored == job
    assert (stored.priority, stored.not_before, stored.unique_key) == (-7, when, "doc-1")
    plain = repo.add(new_job())
    assert (plain.not_before, plain.priority, plain.unique_key) == (None, 0, None)
    assert (plain.progress, plain.progress_message) == (None, None)


# -- ready and order -------------------------------------------------------------------


def test_claims_take_highest_priority_then_oldest_then_id(repo: JobRepository) -> None:
    t = utcnow() - LATER
    low_old = repo.add(new_job(priority=0, created_at=t))
    high_new = repo.add(new_job(priority=5, created_at=t + timedelta(minutes=5)))
    high_old_b = repo.add(new_job(id="b-high", priority=5, created_at=t + timedelta(minutes=1)))
    high_old_a = repo.add(new_job(id="a-high", priority=5, created_at=t + timedelta(minutes=1)))
    negative = repo.add(new_job(priority=-1, created_at=t - LATER))
    order = [repo.claim_next("w").id for _ in range(5)]  # type: ignore[union-attr]
    assert order == [high_old_a.id, high_old_b.id, high_new.id, low_old.id, negative.id]
    assert repo.claim_next("w") is None


def test_a_delayed_job_waits_until_its_not_before(repo: JobRepository) -> None:
    delayed = repo.add(new_job(not_before=utcnow() + timedelta(seconds=0.6), priority=9))
    due = repo.add(new_job(not_before=utcnow() - timedelta(seconds=1)))
    assert repo.claim_next("w").id == due.id  # type: ignore[union-attr]
    assert repo.claim_next("w") is None
    assert repo.count(status="pending") == 1
    time.sleep(0.7)
    claimed = repo.claim_next("w")
    assert claimed is not None and claimed.id == delayed.id


def test_delayed_jobs_never_hide_a_ready_one(repo: JobRepository) -> None:
    for _ in range(30):
        repo.add(new_job(not_before=utcnow() + LATER, priority=3, created_at=utcnow() - LATER))
    ready = repo.add(new_job())
    assert repo.claim_next("w").id == ready.id  # type: ignore[union-attr]
    assert repo.claim_next("w") is None


def test_content_types_still_filter_in_claim_order(repo: JobRepository) -> None:
    repo.add(new_job(content_type="audio", priority=9))
    video = repo.add(new_job(content_type="video", priority=1))
    doc = repo.add(new_job(content_type="document", priority=2))
    got = repo.claim_many("w", 5, content_types=["video", "document", "video"])
    assert [j.id for j in got] == [doc.id, video.id]


# -- abandoned leases --------------------------------------------------------------------


def test_claim_takes_back_an_abandoned_lease_and_fences_the_holder(repo: JobRepository) -> None:
    job = repo.add(new_job())
    first = repo.claim_next("w1", lease_seconds=0.2)
    assert first is not None and first.attempt == 1
    assert repo.claim_next("w2") is None  # the lease still runs
    time.sleep(0.3)
    again = repo.claim_next("w2", lease_seconds=60)
    assert again is not None and again.id == job.id
    assert (again.worker_id, again.attempt, again.retry_count) == ("w2", 2, 1)
    assert again.status is JobStatus.PROCESSING
    for worker, attempt in (("w1", 1), ("w1", None), ("w2", 1)):
        with pytest.raises(NotJobOwner):
            repo.complete(job.id, worker, {"late": True}, attempt=attempt)
        with pytest.raises(NotJobOwner):
            repo.heartbeat(job.id, worker, attempt=attempt)
    done = repo.complete(job.id, "w2", {"ok": 1}, attempt=2)
    assert done.status is JobStatus.COMPLETED and done.result_data == {"ok": 1}


def test_an_abandoned_lease_without_retries_times_out_on_claim(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=0, priority=5))
    other = repo.add(new_job())
    repo.claim_next("w1", lease_seconds=0.2)
    time.sleep(0.3)
    claimed = repo.claim_next("w2")
    assert claimed is not None and claimed.id == other.id
    stored = repo.get(job.id)
    assert stored is not None and stored.status is JobStatus.TIMEOUT
    assert stored.completed_at is not None and stored.retry_count == 0
    with pytest.raises(InvalidTransition):
        repo.complete(job.id, "w1", attempt=1)


def test_a_taken_back_job_competes_in_claim_order(repo: JobRepository) -> None:
    urgent = repo.add(new_job(priority=10))
    repo.claim_next("w1", lease_seconds=0.2)
    newer_low = repo.add(new_job(priority=0, created_at=utcnow() - LATER * 24))
    time.sleep(0.3)
    assert repo.claim_next("w2").id == urgent.id  # type: ignore[union-attr]
    assert repo.claim_next("w2").id == newer_low.id  # type: ignore[union-attr]


def test_claim_many_takes_back_abandoned_leases_too(repo: JobRepository) -> None:
    jobs = [repo.add(new_job()) for _ in range(3)]
    assert len(repo.claim_many("w1", 3, lease_seconds=0.2)) == 3
    time.sleep(0.3)
    got = repo.claim_many("w2", 5)
    assert sorted(j.id for j in got) == sorted(j.id for j in jobs)
    assert {(j.attempt, j.retry_count, j.worker_id) for j in got} == {(2, 1, "w2")}


def test_expire_overdue_makes_the_job_ready_at_once(repo: JobRepository) -> None:
    job = repo.add(new_job())
    repo.claim_next("w1", lease_seconds=0.2)
    time.sleep(0.3)
    (back,) = repo.expire_overdue()
    assert back.status is JobStatus.PENDING and back.retry_count == 1
    assert back.not_before is None or back.not_before <= utcnow()
    assert repo.claim_next("w2").id == job.id  # type: ignore[union-attr]


# -- back-off ----------------------------------------------------------------------------


def test_fail_with_retry_in_delays_the_retry(repo: JobRepository) -> None:
    job = repo.add(new_job())
    claimed = repo.claim_next("w")
    assert claimed is not None
    before = utcnow()
    failed = repo.fail(job.id, "w", "busy", attempt=claimed.attempt, retry_in=30)
    after = utcnow()
    assert failed.status is JobStatus.PENDING and failed.retry_count == 1
    assert failed.not_before is not None
    assert before + timedelta(seconds=30) <= failed.not_before <= after + timedelta(seconds=30)
    assert failed.worker_id is None and failed.timeout_at is None and failed.started_at is None
    assert repo.claim_next("w") is None


def test_fail_with_retry_in_zero_is_ready_at_once(repo: JobRepository) -> None:
    job = repo.add(new_job())
    repo.claim_next("w")
    failed = repo.fail(job.id, "w", "flaky", retry_in=0)
    assert failed.not_before is None or failed.not_before <= utcnow()
    again = repo.claim_next("w")
    assert again is not None and again.id == job.id and again.attempt == 2


def test_fail_without_retry_in_backs_off_more_each_retry(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=5))
    waits = []
    for attempt in (1, 2, 3):
        claimed = repo.claim_next("w")
        assert claimed is not None and claimed.attempt == attempt
        before = utcnow()
        failed = repo.fail(job.id, "w", "boom", attempt=attempt)
        assert failed.not_before is not None
        wait = (failed.not_before - before).total_seconds()
        assert 1 <= wait <= 3600
        assert repo.claim_next("w") is None, "backing off"
        waits.append(wait)
        # Skip the wait: make it ready now through the ordinary save.
        repo.save(failed.model_copy(update={"not_before": None}))
    assert waits[0] < waits[1] < waits[2]
    assert waits[0] == pytest.approx(backoff_seconds(1), abs=1)


def test_fail_refuses_a_bad_retry_in(repo: JobRepository) -> None:
    job = repo.add(new_job())
    repo.claim_next("w")
    for bad in (-1, float("nan"), float("inf"), "5"):
        with pytest.raises(InvalidArgument):
            repo.fail(job.id, "w", "x", retry_in=bad)  # type: ignore[arg-type]
    stored = repo.get(job.id)
    assert stored is not None and stored.status is JobStatus.PROCESSING


def test_the_last_failure_is_final_whatever_retry_in(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=0))
    repo.claim_next("w")
    failed = repo.fail(job.id, "w", "fatal", retry_in=10)
    assert failed.status is JobStatus.FAILED and failed.completed_at is not None


# -- unique jobs -------------------------------------------------------------------------


def test_a_held_unique_key_refuses_a_second_job(repo: JobRepository) -> None:
    first = repo.add(new_job(unique_key="doc-7"))
    with pytest.raises(DuplicateJob) as caught:
        repo.add(new_job(id="second", unique_key="doc-7"))
    assert isinstance(caught.value, JobAlreadyExists)
    assert caught.value.existing_id == first.id
    assert first.id in str(caught.value) and "doc-7" in str(caught.value)
    assert repo.get("second") is None
    assert repo.add(new_job(id="second", unique_key="doc-7"), if_duplicate="return") == first
    assert repo.get("second") is None
    repo.claim_next("w")  # processing still holds it
    with pytest.raises(DuplicateJob):
        repo.add(new_job(unique_key="doc-7"))
    assert repo.add(new_job(unique_key="doc-8")).unique_key == "doc-8"


def test_a_terminal_job_frees_its_key(repo: JobRepository) -> None:
    first = repo.add(new_job(unique_key="k"))
    repo.claim_next("w")
    repo.complete(first.id, "w")
    second = repo.add(new_job(unique_key="k"))
    assert second.unique_key == "k" and second.id != first.id
    repo.cancel(second.id)
    assert repo.add(new_job(unique_key="k"), if_duplicate="return").id not in (
        first.id,
        second.id,
    )


def test_an_id_clash_is_job_already_exists_even_with_return(repo: JobRepository) -> None:
    job = repo.add(new_job(unique_key="k"))
    for mode in ("raise", "return"):
        with pytest.raises(JobAlreadyExists) as caught:
            repo.add(new_job(id=job.id, unique_key="other"), if_duplicate=mode)  # type: ignore[arg-type]
        assert not isinstance(caught.value, DuplicateJob)
    with pytest.raises(InvalidArgument):
        repo.add(new_job(unique_key="z"), if_duplicate="ignore")  # type: ignore[arg-type]
    assert repo.count() == 1


def test_save_and_requeue_cannot_give_a_key_a_second_holder(repo: JobRepository) -> None:
    old = repo.add(new_job(unique_key="k"))
    repo.cancel(old.id)
    holder = repo.add(new_job(unique_key="k"))
    with pytest.raises(DuplicateJob) as caught:
        repo.requeue(old.id)
    assert caught.value.existing_id == holder.id
    assert repo.get(old.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
    with pytest.raises(DuplicateJob):
        repo.save(new_job(unique_key="k"))
    assert repo.count() == 2


# -- progress ------------------------------------------------------------------------------


def test_heartbeat_records_progress(repo: JobRepository) -> None:
    job = repo.add(new_job())
    claimed = repo.claim_next("w", lease_seconds=10)
    assert claimed is not None
    beat = repo.heartbeat(
        job.id, "w", attempt=claimed.attempt, progress=0.4, message="transcribing"
    )
    assert (beat.progress, beat.progress_message) == (0.4, "transcribing")
    assert repo.get(job.id) == beat
    plain = repo.heartbeat(job.id, "w")  # None keeps what was reported
    assert (plain.progress, plain.progress_message) == (0.4, "transcribing")
    for bad in (1.5, -0.1, float("nan"), "half"):
        with pytest.raises(InvalidArgument):
            repo.heartbeat(job.id, "w", progress=bad)  # type: ignore[arg-type]
    with pytest.raises(NotJobOwner):
        repo.heartbeat(job.id, "intruder", progress=0.9)
    assert repo.get(job.id).progress == 0.4  # type: ignore[union-attr]
    done = repo.complete(job.id, "w", {"ok": True})
    assert done.progress == 0.4, "a terminal job keeps its last progress"


def test_a_retry_starts_without_progress(repo: JobRepository) -> None:
    job = repo.add(new_job())
    repo.claim_next("w")
    repo.heartbeat(job.id, "w", progress=0.9, message="almost")
    failed = repo.fail(job.id, "w", "boom", retry_in=0)
    assert (failed.progress, failed.progress_message) == (None, None)


# -- requeue ---------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["failed", "timeout", "cancelled"])
def test_requeue_makes_an_ended_job_pending_and_ready(repo: JobRepository, end: str) -> None:
    job = repo.add(new_job(max_retries=1, priority=3))
    if end == "cancelled":
        repo.cancel(job.id)
    else:
        for _ in range(2):  # use up the retry
            claimed = repo.claim_next("w", lease_seconds=0.2 if end == "timeout" else 60)
            assert claimed is not None
            if end == "failed":
                repo.fail(job.id, "w", "broken", retry_in=0)
            else:
                time.sleep(0.3)
                repo.expire_overdue()
    ended = repo.get(job.id)
    assert ended is not None and ended.status.value == end
    back = repo.requeue(job.id)
    assert back.status is JobStatus.PENDING
    for name in ("worker_id", "started_at", "completed_at", "timeout_at", "not_before"):
        assert getattr(back, name) is None, name
    assert back.error_message == ended.error_message
    assert back.retry_count == ended.retry_count
    assert back.version == ended.version + 1
    again = repo.claim_next("w2")
    assert again is not None and again.id == job.id


def test_requeue_keeps_history_and_can_reset_retries(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=0))
    repo.claim_next("w")
    failed = repo.fail(job.id, "w", "ValueError: bad page")
    stored = repo.save(failed.model_copy(update={"result_data": {"partial": 3}}))
    back = repo.requeue(job.id, reset_retries=True)
    assert back.retry_count == 0
    assert back.error_message == "ValueError: bad page"
    assert back.result_data == {"partial": 3} == stored.result_data


def test_requeue_refuses_other_statuses(repo: JobRepository) -> None:
    pending = repo.add(new_job())
    with pytest.raises(InvalidTransition):
        repo.requeue(pending.id)
    repo.claim_next("w")
    with pytest.raises(InvalidTransition):
        repo.requeue(pending.id)
    repo.complete(pending.id, "w")
    with pytest.raises(InvalidTransition):
        repo.requeue(pending.id)
    with pytest.raises(JobNotFound):
        repo.requeue("nobody")


# -- batches -------------------------------------------------------------------------------


def test_add_many_stores_every_job_as_add_would(repo: JobRepository) -> None:
    jobs = [new_job(priority=n) for n in range(5)]
    stored = repo.add_many(jobs)
    assert [j.id for j in stored] == [j.id for j in jobs]
    assert all(j.version == 1 for j in stored)
    assert [repo.get(j.id) for j in jobs] == stored
    assert repo.add_many([]) == []


@pytest.mark.parametrize("clash", ["stored id", "repeated id", "stored key", "repeated key"])
def test_add_many_stores_none_when_one_clashes(repo: JobRepository, clash: str) -> None:
    repo.add(new_job(id="taken", unique_key="held"))
    batch = [new_job(), new_job(unique_key="free"), new_job()]
    if clash == "stored id":
        batch.append(new_job(id="taken"))
    elif clash == "repeated id":
        batch.append(new_job(id=batch[0].id))
    elif clash == "stored key":
        batch.append(new_job(unique_key="held"))
    else:
        batch.append(new_job(unique_key="free"))
    expected = DuplicateJob if "key" in clash else JobAlreadyExists
    with pytest.raises(expected):
        repo.add_many(batch)
    assert repo.count() == 1
    assert all(repo.get(j.id) is None for j in batch if j.id != "taken")


def test_claim_many_claims_up_to_n_in_claim_order(repo: JobRepository) -> None:
    jobs = [repo.add(new_job(priority=n % 3)) for n in range(7)]
    expected = sorted(jobs, key=lambda j: (-j.priority, j.created_at, j.id))
    first = repo.claim_many("w", 4, lease_seconds=30)
    assert [j.id for j in first] == [j.id for j in expected[:4]]
    assert all(j.status is JobStatus.PROCESSING and j.attempt == 1 for j in first)
    assert all(j.timeout_at == j.started_at + timedelta(seconds=30) for j in first)  # type: ignore[operator]
    rest = repo.claim_many("w", 10)
    assert [j.id for j in rest] == [j.id for j in expected[4:]]
    assert repo.claim_many("w", 3) == []
    assert repo.claim_many("w", 0) == []
    for bad in (-1, 1.5, "2"):
        with pytest.raises(InvalidArgument):
            repo.claim_many("w", bad)  # type: ignore[arg-type]


def test_complete_many_completes_each_as_complete_would(repo: JobRepository) -> None:
    for n in range(3):
        repo.add(new_job(unique_key=f"k{n}"))
    held = repo.claim_many("w", 3)
    results = {job.id: {"n": n} for n, job in enumerate(held)}
    results[held[2].id] = None
    done = repo.complete_many("w", results, attempts={job.id: job.attempt for job in held[:2]})
    assert [j.id for j in done] == [j.id for j in held]
    for job, before in zip(done, held, strict=True):
        assert job.status is JobStatus.COMPLETED and job.version == before.version + 1
        assert job.result_data == results[job.id] and job.completed_at is not None
        assert repo.get(job.id) == job
    assert repo.count(status=JobStatus.COMPLETED) == 3
    repo.add(new_job(unique_key="k0"))  # a completed job frees its key
    assert repo.complete_many("w", {}) == []


@pytest.mark.parametrize("refusal", ["not found", "not owner", "stale attempt", "not processing"])
def test_complete_many_completes_none_when_one_is_refused(
    repo: JobRepository, refusal: str
) -> None:
    for _ in range(3):
        repo.add(new_job())
    held = repo.claim_many("w", 2)
    other = repo.claim_next("rival")
    assert other is not None
    results: dict[str, dict[str, int] | None] = {job.id: {"ok": 1} for job in held}
    attempts = {job.id: job.attempt for job in held}
    expected: type[Exception] = InvalidTransition
    if refusal == "not found":
        results["no-such-job"], expected = None, JobNotFound
    elif refusal == "not owner":
        results[other.id], expected = None, NotJobOwner
    elif refusal == "stale attempt":
        attempts[held[1].id] = held[1].attempt + 1
        expected = NotJobOwner
    else:
        repo.complete(other.id, "rival")
        results[other.id] = None
    with pytest.raises(expected):
        repo.complete_many("w", results, attempts=attempts)
    assert [repo.get(job.id) for job in held] == held  # none completed
    with pytest.raises(InvalidArgument):
        repo.complete_many("w", {held[0].id: None}, attempts={"elsewhere": 1})
    with pytest.raises(InvalidArgument):
        repo.complete_many("", {held[0].id: None})


def test_release_gives_the_job_back_ready_with_no_retry_used(repo: JobRepository) -> None:
    job = repo.add(new_job())
    held = repo.claim_next("w")
    assert held is not None
    with pytest.raises(NotJobOwner):
        repo.release(job.id, "someone-else", attempt=held.attempt)
    with pytest.raises(NotJobOwner):
        repo.release(job.id, "w", attempt=held.attempt + 1)
    back = repo.release(job.id, "w", attempt=held.attempt)
    assert back.status is JobStatus.PENDING and back.worker_id is None
    assert back.retry_count == held.retry_count and back.not_before is None
    with pytest.raises(InvalidTransition):
        repo.release(job.id, "w", attempt=held.attempt)  # pending: nothing to give back
    again = repo.claim_next("w2")
    assert again is not None and again.id == job.id and again.attempt == held.attempt + 1
    with pytest.raises(NotJobOwner):
        repo.complete(job.id, "w", attempt=held.attempt)  # the giver is fenced
