"""The worker lifecycle contract: claim, lease, complete, fail, cancel, expire."""

from __future__ import annotations

from datetime import timedelta

import pytest

from hybridstore import (
    InvalidArgument,
    InvalidTransition,
    JobNotFound,
    JobRepository,
    JobStatus,
    NotJobOwner,
)
from hybridstore.model import utcnow
from tests.conftest import new_job


def test_claim_takes_the_oldest_pending_job(repo: JobRepository) -> None:
    newer = repo.add(new_job())
    older = repo.add(new_job(created_at=newer.created_at - timedelta(hours=1)))
    repo.add(new_job(status=JobStatus.COMPLETED, created_at=older.created_at - timedelta(days=1)))
    before = utcnow()
    claimed = repo.claim_next("w1", lease_seconds=60)
    assert claimed is not None and claimed.id == older.id
    assert claimed.status is JobStatus.PROCESSING
    assert claimed.worker_id == "w1"
    assert claimed.attempt == 1
    assert claimed.version == 2
    assert claimed.started_at is not None and claimed.started_at >= before
    assert claimed.timeout_at == claimed.started_at + timedelta(seconds=60)
    assert repo.get(older.id) == claimed
    assert repo.claim_next("w2").id == newer.id  # type: ignore[union-attr]
    assert repo.claim_next("w3") is None


def test_claim_filters_by_content_type(repo: JobRepository) -> None:
    audio = repo.add(new_job(content_type="audio"))
    video = repo.add(new_job(content_type="video"))
    doc = repo.add(new_job(content_type="document"))
    assert repo.claim_next("w", content_types=["video", "document"]).id == video.id  # type: ignore[union-attr]
    assert repo.claim_next("w", content_types=["video"]) is None
    assert repo.claim_next("w", content_types=["document"]).id == doc.id  # type: ignore[union-attr]
    assert repo.claim_next("w", content_types=[]) is None
    assert repo.claim_next("w").id == audio.id  # type: ignore[union-attr]


def test_claim_rejects_a_bad_lease(repo: JobRepository) -> None:
    repo.add(new_job())
    with pytest.raises(InvalidArgument):
        repo.claim_next("w", lease_seconds=0)
    assert repo.count(status="pending") == 1


def test_heartbeat_extends_the_lease(repo: JobRepository) -> None:
    repo.add(new_job())
    claimed = repo.claim_next("w1", lease_seconds=10)
    assert claimed is not None
    beat = repo.heartbeat(claimed.id, "w1", lease_seconds=3600, attempt=claimed.attempt)
    assert beat.timeout_at is not None and claimed.timeout_at is not None
    assert beat.timeout_at > claimed.timeout_at + timedelta(seconds=3000)
    assert beat.status is JobStatus.PROCESSING
    assert beat.version == claimed.version + 1
    with pytest.raises(NotJobOwner, match=claimed.id):
        repo.heartbeat(claimed.id, "w2")
    assert repo.get(claimed.id) == beat


def test_complete_stores_the_result(repo: JobRepository) -> None:
    repo.add(new_job())
    claimed = repo.claim_next("w1")
    assert claimed is not None
    with pytest.raises(NotJobOwner):
        repo.complete(claimed.id, "w2", {"x": 1})
    done = repo.complete(claimed.id, "w1", {"pages": 7}, attempt=claimed.attempt)
    assert done.status is JobStatus.COMPLETED
    assert done.result_data == {"pages": 7}
    assert done.completed_at is not None
    assert done.processing_duration >= 0
    assert repo.get(claimed.id) == done
    with pytest.raises(InvalidTransition):
        repo.complete(claimed.id, "w1")


def test_fail_retries_then_fails(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=2))
    for expected_retry in (1, 2):
        claimed = repo.claim_next("w1")
        assert claimed is not None and claimed.id == job.id
        back = repo.fail(job.id, "w1", f"boom {expected_retry}", attempt=claimed.attempt)
        assert back.status is JobStatus.PENDING
        assert back.retry_count == expected_retry
        assert back.worker_id is None and back.started_at is None and back.timeout_at is None
        assert back.error_message == f"boom {expected_retry}"
        assert back.completed_at is None
        # Skip the back-off (the workers contract): make it ready now by an ordinary save.
        repo.save(back.model_copy(update={"not_before": None}))
    claimed = repo.claim_next("w1")
    assert claimed is not None and claimed.attempt == 3
    failed = repo.fail(job.id, "w1", "final")
    assert failed.status is JobStatus.FAILED
    assert failed.retry_count == 2, "retry_count never exceeds max_retries"
    assert failed.completed_at is not None
    assert failed.error_message == "final"
    assert failed.can_retry() is False


def test_cancel(repo: JobRepository) -> None:
    pending = repo.add(new_job())
    processing = repo.add(new_job())
    repo.claim_next("w", content_types=None)
    repo.claim_next("w")
    for job in (pending, processing):
        cancelled = repo.cancel(job.id)
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.completed_at is not None
    with pytest.raises(InvalidTransition):
        repo.cancel(pending.id)


def test_lifecycle_calls_on_missing_jobs(repo: JobRepository) -> None:
    for call in (
        lambda: repo.cancel("ghost"),
        lambda: repo.complete("ghost", "w"),
        lambda: repo.fail("ghost", "w", "e"),
        lambda: repo.heartbeat("ghost", "w"),
    ):
        with pytest.raises(JobNotFound, match="ghost"):
            call()


def test_wrong_state_raises_invalid_transition_and_changes_nothing(repo: JobRepository) -> None:
    job = repo.add(new_job())
    for call in (
        lambda: repo.complete(job.id, "w"),
        lambda: repo.fail(job.id, "w", "e"),
        lambda: repo.heartbeat(job.id, "w"),
    ):
        with pytest.raises(InvalidTransition):
            call()
    assert repo.get(job.id) == job.model_copy(update={"version": 1})


def test_expire_overdue_retries_then_times_out(repo: JobRepository) -> None:
    job = repo.add(new_job(max_retries=1))
    claimed = repo.claim_next("w1", lease_seconds=1)
    assert claimed is not None and claimed.timeout_at is not None
    assert repo.expire_overdue(now=claimed.timeout_at - timedelta(seconds=0.5)) == []
    later = claimed.timeout_at + timedelta(seconds=1)
    assert [j.id for j in repo.expired(later)] == [job.id]
    (back,) = repo.expire_overdue(now=later)
    assert back.status is JobStatus.PENDING and back.retry_count == 1
    assert back.worker_id is None and back.timeout_at is None
    again = repo.claim_next("w2", lease_seconds=1)
    assert again is not None and again.attempt == 2
    (out,) = repo.expire_overdue(now=again.timeout_at + timedelta(seconds=1))  # type: ignore[operator]
    assert out.status is JobStatus.TIMEOUT
    assert out.completed_at is not None
    assert out.retry_count == 1
    assert repo.expire_overdue(now=later + timedelta(days=1)) == []


def test_expire_overdue_returns_jobs_by_lease_end_then_id(repo: JobRepository) -> None:
    first = repo.add(new_job())
    second = repo.add(new_job())
    long_lease = repo.claim_next("w1", lease_seconds=120)
    short_lease = repo.claim_next("w2", lease_seconds=60)
    assert long_lease is not None and long_lease.id == first.id
    assert short_lease is not None and short_lease.id == second.id
    # The job claimed second, and added second, runs out first: it comes first.
    expired = repo.expire_overdue(now=utcnow() + timedelta(hours=1))
    assert [j.id for j in expired] == [second.id, first.id]


def test_expire_overdue_leaves_pending_deadlines_alone(repo: JobRepository) -> None:
    job = repo.add(new_job(timeout_at=utcnow() - timedelta(hours=1)))
    assert repo.expire_overdue() == []
    assert repo.get(job.id).status is JobStatus.PENDING  # type: ignore[union-attr]
    assert [j.id for j in repo.expired()] == [job.id]


def test_a_stale_attempt_is_fenced_off(repo: JobRepository) -> None:
    repo.add(new_job())
    first = repo.claim_next("w1", lease_seconds=1)
    assert first is not None and first.timeout_at is not None
    repo.expire_overdue(now=first.timeout_at + timedelta(seconds=1))
    second = repo.claim_next("w1", lease_seconds=60)  # same worker id, new attempt
    assert second is not None and second.attempt == first.attempt + 1
    for call in (
        lambda: repo.complete(first.id, "w1", {"late": True}, attempt=first.attempt),
        lambda: repo.fail(first.id, "w1", "late", attempt=first.attempt),
        lambda: repo.heartbeat(first.id, "w1", attempt=first.attempt),
    ):
        with pytest.raises(NotJobOwner, match="stale"):
            call()
    assert repo.get(first.id) == second
    done = repo.complete(second.id, "w1", {"ok": True}, attempt=second.attempt)
    assert done.result_data == {"ok": True}


def test_a_result_that_is_not_a_json_object_is_refused(repo: JobRepository) -> None:
    from hybridstore import InvalidArgument

    repo.add(new_job())
    claimed = repo.claim_next("w")
    assert claimed is not None
    with pytest.raises(InvalidArgument, match="result_data"):
        repo.complete(claimed.id, "w", "plain string result")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="error_message"):
        repo.fail(claimed.id, "w", 42)  # type: ignore[arg-type]
    assert repo.get(claimed.id) == claimed  # unchanged


def test_statistics_keys_come_sorted(repo: JobRepository) -> None:
    for content_type, worker in (("video", "w2"), ("audio", "w9"), ("image", "w1")):
        repo.add(new_job(content_type=content_type, worker_id=worker))
    stats = repo.statistics()
    assert list(stats["content_type_counts"]) == ["audio", "image", "video"]
    assert list(stats["worker_counts"]) == ["w1", "w2", "w9"]


def test_counts_follow_every_kind_of_write(repo: JobRepository) -> None:
    """count() and statistics() agree with find() after adds, claims, completions, saves
    that move a job, and deletes (the file store keeps its counts by triggers)."""

    def check() -> None:
        stats = repo.statistics()
        for status in JobStatus:
            found = len(repo.find(status=status))
            assert repo.count(status=status) == found
            assert stats["status_counts"][status.value] == found
        assert stats["total_jobs"] == repo.count() == len(repo.find())
        workers: dict[str, int] = {}
        for job in repo.find():
            if job.worker_id is not None:
                workers[job.worker_id] = workers.get(job.worker_id, 0) + 1
        assert stats["worker_counts"] == workers
        assert repo.count(worker_id=list(workers)) == sum(workers.values())

    jobs = [repo.add(new_job(content_type=t)) for t in ("audio", "video", "audio")]
    check()
    first = repo.claim_next("w1")
    assert first is not None
    check()
    repo.complete(first.id, "w1")
    check()
    repo.save(jobs[1].model_copy(update={"status": JobStatus.CANCELLED, "content_type": "doc"}))
    check()
    assert repo.count(content_type="doc") == 1 and repo.count(content_type="video") == 0
    repo.delete(jobs[2].id)
    check()
