"""The job lifecycle as pure functions: each takes the stored job and returns the next one.

Backends own atomicity (locks, transactions); these functions own the rules, so every
backend applies exactly the same ones. Each raises ``InvalidTransition`` or ``NotJobOwner``
before anything is written.

::

                 add (not_before: waits until then)
                  │
                  ▼        claim_next / claim_many (ready: not_before unset or past;
     ┌───────► pending ─────────────┐  highest priority, then oldest)
     │            ▲                 ▼
     │            │ fail, retries left (not before now + back-off)
     │            │ lease abandoned, retries left (ready at once)
     │            └─────────── processing ──── complete ──► completed
     │                          │      │
     │       fail, no retry left│      │lease abandoned, no retry left
     │                          ▼      ▼
     └─── requeue ───────── failed   timeout        cancel (pending/processing) ──► cancelled
          (from failed, timeout or cancelled)

Progress belongs to an attempt: entering pending (a retry, a lease taken back, a requeue, a
job given back) clears ``progress`` and ``progress_message``, and so does a claim; a terminal
job keeps the last progress its holder reported, as history, like ``error_message``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError

from .errors import InvalidArgument, InvalidTransition, NotJobOwner
from .model import ACTIVE_STATUSES, JobStatus, RemoteJob

__all__ = [
    "BACKOFF_BASE_SECONDS",
    "BACKOFF_MAX_SECONDS",
    "IF_DUPLICATE",
    "MAX_DELAY_SECONDS",
    "backoff_seconds",
    "cancel",
    "check_claim_count",
    "check_if_duplicate",
    "check_lease",
    "claim",
    "claim_order_key",
    "complete",
    "delay_delta",
    "expire",
    "fail",
    "heartbeat",
    "holds_key",
    "is_overdue",
    "is_ready",
    "lease_delta",
    "next_version",
    "release",
    "requeue",
    "take_back",
]


MAX_LEASE_SECONDS = 366 * 86400
#: The longest ``retry_in`` (and CLI ``--delay``) accepted: a year, like a lease.
MAX_DELAY_SECONDS = MAX_LEASE_SECONDS

#: The default back-off after a failed attempt, by the retry it leads to (retry_count after
#: the increment, 1 for the first): ``min(BACKOFF_MAX_SECONDS, 5 * 2**(retry - 1))``, so
#: 5 s, 10 s, 20 s, 40 s, ... 2560 s, then one hour from the 11th retry on.
BACKOFF_BASE_SECONDS = 5.0
BACKOFF_MAX_SECONDS = 3600.0

#: The values of ``add(..., if_duplicate=...)``.
IF_DUPLICATE = ("raise", "return")

#: Fields a job going back to pending loses: it is nobody's and nobody's progress.
_BACK_TO_PENDING: dict[str, Any] = {
    "status": JobStatus.PENDING,
    "worker_id": None,
    "started_at": None,
    "timeout_at": None,
    "progress": None,
    "progress_message": None,
}


def backoff_seconds(retry_count: int) -> float:
    """The default delay before retry number ``retry_count`` (1 for the first retry):
    ``min(3600, 5 * 2**(retry_count - 1))`` seconds.

    Deterministic, without jitter, on purpose: ``not_before`` is then predictable for an
    operator reading a job and for tests, and jitter buys little here, because jobs that
    fail together come back as ready jobs that workers claim one at a time in claim order,
    not as simultaneous requests against a third party.
    """
    retry = max(int(retry_count), 1)
    if retry > 12:  # 5 * 2**11 is past the cap already; never build a huge power
        return BACKOFF_MAX_SECONDS
    return min(BACKOFF_MAX_SECONDS, BACKOFF_BASE_SECONDS * float(2 ** (retry - 1)))


def delay_delta(seconds: object, what: str = "retry_in") -> timedelta:
    """``seconds`` as a timedelta; ``InvalidArgument`` unless it is a finite number from 0 to
    ``MAX_DELAY_SECONDS``."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 <= seconds <= MAX_DELAY_SECONDS
    ):
        raise InvalidArgument(
            f"{what} must be a number of seconds from 0 to {MAX_DELAY_SECONDS}, got {seconds!r}"
        )
    return timedelta(seconds=seconds)


def check_if_duplicate(if_duplicate: object) -> str:
    """``add``'s ``if_duplicate`` argument, checked (``InvalidArgument``)."""
    if if_duplicate not in IF_DUPLICATE:
        raise InvalidArgument(f"if_duplicate must be 'raise' or 'return', got {if_duplicate!r}")
    return str(if_duplicate)


def check_claim_count(n: object) -> int:
    """``claim_many``'s ``n``, checked: a non-negative integer (``InvalidArgument``)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise InvalidArgument(f"n must be a non-negative integer, got {n!r}")
    return n


def holds_key(job: RemoteJob) -> bool:
    """True when ``job`` holds its ``unique_key``: it has one and is pending or processing."""
    return job.unique_key is not None and job.status in ACTIVE_STATUSES


def is_ready(job: RemoteJob, now: datetime) -> bool:
    """A pending job whose ``not_before`` is unset or not after ``now``: claimable."""
    return job.status is JobStatus.PENDING and (job.not_before is None or job.not_before <= now)


def claim_order_key(job: RemoteJob) -> tuple[int, datetime, bytes]:
    """Sort key of the claim order: highest ``priority`` first, then oldest ``created_at``,
    then id in byte order."""
    return (-job.priority, job.created_at, job.id.encode())


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


def _retry_or(
    job: RemoteJob,
    terminal: JobStatus,
    now: datetime,
    delay: timedelta | None,
    **changes: Any,
) -> RemoteJob:
    """Back to pending (retry_count + 1, lease fields cleared, not ready before ``now +
    delay``; None: the default back-off) while retries remain, else ``terminal``."""
    if job.retry_count < job.max_retries:
        retry = job.retry_count + 1
        wait = delay if delay is not None else timedelta(seconds=backoff_seconds(retry))
        return job.model_copy(
            update={
                **changes,
                **_BACK_TO_PENDING,
                "retry_count": retry,
                "not_before": now + wait if wait else None,
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
            "progress": None,
            "progress_message": None,
        }
    )


def heartbeat(
    job: RemoteJob,
    worker_id: str,
    lease_seconds: float,
    attempt: int | None,
    now: datetime,
    progress: float | None = None,
    message: str | None = None,
) -> RemoteJob:
    """Extend the holder's lease to ``now + lease_seconds``; record ``progress`` (a number
    in [0, 1]) and ``message`` when given (None leaves the stored one as it is)."""
    lease = lease_delta(lease_seconds)
    changes: dict[str, Any] = {}
    if progress is not None:
        if (
            isinstance(progress, bool)
            or not isinstance(progress, (int, float))
            or not 0 <= progress <= 1
        ):
            raise InvalidArgument(f"job {job.id!r}: progress must be a number in [0, 1]")
        changes["progress"] = float(progress)
    if message is not None:
        if not isinstance(message, str):
            raise InvalidArgument(f"job {job.id!r}: a progress message must be a string")
        changes["progress_message"] = message
    check_lease(job, worker_id, attempt, "heartbeat")
    changes["timeout_at"] = now + lease
    return job.model_copy(update=changes)


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
    job: RemoteJob,
    worker_id: str,
    error_message: str,
    attempt: int | None,
    now: datetime,
    retry_in: float | None = None,
) -> RemoteJob:
    """processing → pending (retries remain, retry_count + 1, not ready before ``now +
    retry_in``, default ``backoff_seconds(retry_count)``; 0: ready at once) or failed."""
    delay = None if retry_in is None else delay_delta(retry_in)
    check_lease(job, worker_id, attempt, "fail")
    if not isinstance(error_message, str):
        raise InvalidArgument(f"job {job.id!r}: error_message must be a string")
    return _retry_or(job, JobStatus.FAILED, now, delay, error_message=error_message)


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


def take_back(job: RemoteJob, now: datetime) -> RemoteJob:
    """An abandoned lease (processing, ``timeout_at`` before ``now``) → pending, ready at
    once (retries remain, retry_count + 1), or timeout. The same rule whether a sweep
    (``expire_overdue``) or a claim (``claim_next``/``claim_many``) finds it: a claim then
    claims the pending job like any other (attempt + 1, so the old holder is fenced)."""
    if not is_overdue(job, now):
        raise InvalidTransition(job.id, "expire", job.status.value)
    return _retry_or(
        job,
        JobStatus.TIMEOUT,
        now,
        timedelta(0),
        error_message=f"lease expired (attempt {job.attempt})",
    )


#: ``expire_overdue``'s rule: the same as a claim's.
expire = take_back


def requeue(job: RemoteJob, reset_retries: bool, now: datetime) -> RemoteJob:
    """failed, timeout or cancelled → pending, ready at once.

    Clears ``worker_id``, ``started_at``, ``completed_at``, ``timeout_at``, ``not_before``
    (and the progress); keeps ``error_message`` and ``result_data`` as history;
    ``reset_retries`` sets ``retry_count`` to 0. ``now`` is unused: a requeued job is
    ready at once whatever the time."""
    del now
    if job.status not in (JobStatus.FAILED, JobStatus.TIMEOUT, JobStatus.CANCELLED):
        raise InvalidTransition(job.id, "requeue", job.status.value)
    changes: dict[str, Any] = {**_BACK_TO_PENDING, "completed_at": None, "not_before": None}
    if reset_retries:
        changes["retry_count"] = 0
    return job.model_copy(update=changes)


def next_version(current: RemoteJob, new: RemoteJob) -> RemoteJob:
    """``new`` as the write after ``current``: every stored change is the stored version + 1."""
    return new.model_copy(update={"version": current.version + 1})


def release(job: RemoteJob, worker_id: str, attempt: int | None, now: datetime) -> RemoteJob:
    """The holder gives its job back: processing → pending, ready at once, with no retry
    used (``Worker`` on a second SIGTERM/SIGINT). The next claim is attempt + 1, so the
    giver is fenced. ``now`` is unused (ready at once)."""
    del now
    check_lease(job, worker_id, attempt, "give back")
    return job.model_copy(update={**_BACK_TO_PENDING, "not_before": None})


def moved_into(job: RemoteJob, status: JobStatus, now: datetime) -> RemoteJob:
    """The job whose file someone moved by hand into ``status``'s directory, taken as moved
    there (data directory only; RELIABILITY.md lists what each move means):

    * into ``pending/``: requeued, ready at once (lease, progress, ``completed_at`` and
      ``not_before`` cleared; retries and history kept);
    * into ``cancelled/``: cancelled now (``completed_at`` set, as by ``cancel``);
    * into any other terminal status: that status (``completed_at`` set if it was not);
    * into ``processing/``: processing with no holder and a lease that has already ended,
      so the next claim takes it back like an abandoned one.
    """
    if status is JobStatus.PENDING:
        return job.model_copy(update={**_BACK_TO_PENDING, "completed_at": None, "not_before": None})
    if status is JobStatus.PROCESSING:
        return job.model_copy(
            update={"status": status, "worker_id": None, "started_at": now, "timeout_at": now}
        )
    return job.model_copy(update={"status": status, "completed_at": job.completed_at or now})
