"""The job lifecycle as pure functions: each takes the stored job and returns the next one.

Backends own atomicity (locks, transactions); these functions own the rules, so every
backend applies exactly the same ones. Each raises ``InvalidTransition`` or ``NotJobOwner``
before anything is written.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .errors import InvalidArgument, InvalidTransition, NotJobOwner
from .model import JobStatus, RemoteJob

__all__ = [
    "cancel",
    "check_lease",
    "claim",
    "complete",
    "expire",
    "fail",
    "heartbeat",
    "is_overdue",
    "lease_delta",
]


MAX_LEASE_SECONDS = 366 * 86400


def lease_delta(lease_seconds: float) -> timedelta:
    """The lease as a timedelta; ``InvalidArgument`` unless it is positive and at most
    ``MAX_LEASE_SECONDS`` (a year: longer would let a dead worker hold a job forever, and
    far longer would overflow the datetime it is added to)."""
    if not 0 < lease_seconds <= MAX_LEASE_SECONDS:
        raise InvalidArgument(
            f"lease_seconds must be positive and at most {MAX_LEASE_SECONDS}, got {lease_seconds!r}"
        )
    return timedelta(seconds=lease_seconds)


def check_lease(job: RemoteJob, worker_id: str, attempt: int | None, action: str) -> None:
    """Raise unless ``worker_id`` (and ``attempt``, when given) holds ``job``'s lease."""
    if job.status is not JobStatus.PROCESSING:
        raise InvalidTransition(job.id, action, job.status.value)
    if job.worker_id != worker_id:
        raise NotJobOwner(job.id, f"held by worker {job.worker_id!r}, not {worker_id!r}")
    if attempt is not None and attempt != job.attempt:
        raise NotJobOwner(
            job.id, f"attempt {attempt} is stale, the current attempt is {job.attempt}"
        )


def _retry_or(job: RemoteJob, terminal: JobStatus, now: datetime, **changes: Any) -> RemoteJob:
    """Back to pending (retry_count + 1, lease fields cleared) while retries remain."""
    if job.retry_count < job.max_retries:
        return job.model_copy(
            update={
                **changes,
                "status": JobStatus.PENDING,
                "retry_count": job.retry_count + 1,
                "worker_id": None,
                "started_at": None,
                "timeout_at": None,
            }
        )
    return job.model_copy(update={**changes, "status": terminal, "completed_at": now})


def claim(job: RemoteJob, worker_id: str, lease_seconds: float, now: datetime) -> RemoteJob:
    """pending → processing under ``worker_id``, with a fresh lease and attempt + 1."""
    lease = lease_delta(lease_seconds)
    if job.status is not JobStatus.PENDING:
        raise InvalidTransition(job.id, "claim", job.status.value)
    return job.model_copy(
        update={
            "status": JobStatus.PROCESSING,
            "worker_id": worker_id,
            "started_at": now,
            "timeout_at": now + lease,
            "attempt": job.attempt + 1,
        }
    )


def heartbeat(
    job: RemoteJob, worker_id: str, lease_seconds: float, attempt: int | None, now: datetime
) -> RemoteJob:
    """Extend the holder's lease to ``now + lease_seconds``."""
    lease = lease_delta(lease_seconds)
    check_lease(job, worker_id, attempt, "heartbeat")
    return job.model_copy(update={"timeout_at": now + lease})


def complete(
    job: RemoteJob,
    worker_id: str,
    result_data: dict[str, Any] | None,
    attempt: int | None,
    now: datetime,
) -> RemoteJob:
    """processing → completed with the result."""
    check_lease(job, worker_id, attempt, "complete")
    done = job.model_copy(update={"status": JobStatus.COMPLETED, "completed_at": now})
    # Assign through validation so a non-JSON result is refused like any other input.
    try:
        done.result_data = result_data
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"]
        raise InvalidArgument(
            f"job {job.id!r}: result_data must be a JSON object (a dict) or None: {reason}"
        ) from None
    return done


def fail(
    job: RemoteJob, worker_id: str, error_message: str, attempt: int | None, now: datetime
) -> RemoteJob:
    """processing → pending (retries remain, retry_count + 1) or failed."""
    check_lease(job, worker_id, attempt, "fail")
    if not isinstance(error_message, str):
        raise InvalidArgument(f"job {job.id!r}: error_message must be a string")
    return _retry_or(job, JobStatus.FAILED, now, error_message=error_message)


def cancel(job: RemoteJob, now: datetime) -> RemoteJob:
    """pending or processing → cancelled."""
    if job.status not in (JobStatus.PENDING, JobStatus.PROCESSING):
        raise InvalidTransition(job.id, "cancel", job.status.value)
    return job.model_copy(update={"status": JobStatus.CANCELLED, "completed_at": now})


def is_overdue(job: RemoteJob, now: datetime) -> bool:
    """A processing job whose lease ended before ``now``."""
    return (
        job.status is JobStatus.PROCESSING and job.timeout_at is not None and job.timeout_at < now
    )


def expire(job: RemoteJob, now: datetime) -> RemoteJob:
    """An overdue processing job → pending (retries remain, retry_count + 1) or timeout."""
    if not is_overdue(job, now):
        raise InvalidTransition(job.id, "expire", job.status.value)
    return _retry_or(
        job, JobStatus.TIMEOUT, now, error_message=f"lease expired (attempt {job.attempt})"
    )
