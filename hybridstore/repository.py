"""``JobRepository``: the calls every backend provides, and what callers may rely on.

Guarantees common to every backend (implementations do not repeat them):

* Every call that changes a job is atomic: it applies whole or not at all, and returns the
  job as stored (a new object; the argument is never modified).
* ``version`` counts successful saves of the stored job; ``attempt`` counts its claims.
* Lifecycle calls raise ``JobNotFound`` for a missing job, ``InvalidTransition`` for a job
  in the wrong status, ``NotJobOwner`` when the caller does not hold the lease (another
  worker, or an ``attempt`` that is not the current one). They change nothing when they
  raise.
* A job id must match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``; anything else raises
  ``InvalidJobId`` before the backend is touched. An unknown status raises
  ``InvalidArgument``.
* Query results are ordered by ``created_at``, then id (byte order).

Workers that need nothing else (the rules live in ``hybridstore.lifecycle``):

* A pending job is *ready* when its ``not_before`` is unset or past. Claims take ready jobs
  in claim order: highest ``priority``, then oldest ``created_at``, then id (byte order).
* A processing job whose lease has passed (``timeout_at`` before now) is *abandoned*.
  ``claim_next`` and ``claim_many`` take abandoned leases (of the content types asked for)
  back by themselves, as ``expire_overdue`` would: with retries left the job is pending
  and ready at once (``retry_count + 1``) and competes in claim order, so it may be claimed
  by the same call with ``attempt + 1``, which fences the earlier holder; without, it
  moves to timeout. No sweep (cron ``expire``) is needed.
* A job's ``unique_key`` is held while the job is pending or processing: at most one job
  holds a key at a time, across processes (``DuplicateJob``, with ``existing_id``). Writes
  that would give a key a second holder (``add``, ``add_many``, ``save``, ``requeue``) raise
  it and change nothing; a terminal job frees its key.
* Progress belongs to an attempt: a job entering pending, and a claim, clear ``progress``
  and ``progress_message``; a terminal job keeps the last ones reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Protocol, TypeAlias, runtime_checkable

from .errors import DuplicateJob, InvalidArgument, JobAlreadyExists
from .lifecycle import holds_key, lease_delta
from .model import JobStatus, RemoteJob, parse_status, validate_job_id

__all__ = [
    "Filter",
    "IfDuplicate",
    "ImportAction",
    "ImportResult",
    "JobRepository",
    "SupportsImport",
    "check_page",
    "filter_values",
    "import_action",
    "same_job",
]

#: A filter value: one value, or a sequence meaning "any of these".
Filter = str | Sequence[str] | None

#: ``add(..., if_duplicate=...)``: raise ``DuplicateJob``, or return the existing job.
IfDuplicate: TypeAlias = Literal["raise", "return"]


def filter_values(
    status: Filter | JobStatus = None,
    content_type: Filter = None,
    worker_id: Filter = None,
    ingestion_task_id: Filter = None,
) -> dict[str, list[str]]:
    """The filters of ``find``/``count`` as ``{field: any-of values}``, checked the same way
    for every backend: statuses must be known (``InvalidArgument``), values strings.

    Fields not filtered on are absent; an empty list is kept (it matches nothing).
    """

    def values(value: Any) -> list[Any] | None:
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple, set, frozenset)):
            return list(value)
        return [value]  # refused below: not a string, not a known status

    filters: dict[str, list[str]] = {}
    statuses = values(status)
    if statuses is not None:
        filters["status"] = [parse_status(s).value for s in statuses]
    for name, given in (
        ("content_type", content_type),
        ("worker_id", worker_id),
        ("ingestion_task_id", ingestion_task_id),
    ):
        chosen = values(given)
        if chosen is not None:
            if not all(isinstance(v, str) for v in chosen):
                raise InvalidArgument(f"{name} filter values must be strings")
            filters[name] = chosen
    return filters


def check_page(limit: int | None, offset: int) -> None:
    """``InvalidArgument`` unless ``limit`` (None: no limit) and ``offset`` are
    non-negative integers."""
    if limit is not None and (not isinstance(limit, int) or limit < 0):
        raise InvalidArgument(f"limit must be a non-negative integer, got {limit!r}")
    if not isinstance(offset, int) or offset < 0:
        raise InvalidArgument(f"offset must be a non-negative integer, got {offset!r}")


@runtime_checkable
class JobRepository(Protocol):
    """A store of ``RemoteJob`` records with a worker lifecycle."""

    def add(self, job: RemoteJob, *, if_duplicate: IfDuplicate = "raise") -> RemoteJob:
        """Store a new job as version 1. ``JobAlreadyExists`` if the id is taken (whatever
        ``if_duplicate`` says: it is about keys, not ids).

        A job whose ``unique_key`` a pending or processing job holds is not stored:
        ``DuplicateJob`` (``.existing_id``) with ``if_duplicate="raise"``, the existing job
        itself with ``"return"``. Of any number of concurrent adds of one key, in any
        processes, exactly one stores its job. A ``not_before`` in the future delays the job.
        """
        ...

    def add_many(self, jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
        """Store every job as ``add`` would (version 1), in one atomic step: all or none.

        If any job clashes (an id already stored or repeated in the batch:
        ``JobAlreadyExists``; a unique key held by a stored active job or by an earlier job of
        the batch: ``DuplicateJob``), the error is raised and *none* of the jobs is stored.
        Returns the stored jobs in the order given.
        """
        ...

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        """Insert or replace; the stored copy gets the previously stored version + 1.

        ``expected_version`` (optimistic concurrency): ``VersionConflict`` unless it
        equals the stored version; 0 means "must not exist yet".
        """
        ...

    def get(self, job_id: str) -> RemoteJob | None:
        """The job, or None."""
        ...

    def delete(self, job_id: str) -> bool:
        """Remove the job; False if there was none."""
        ...

    def find(
        self,
        *,
        status: Filter | JobStatus = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RemoteJob]:
        """Jobs matching all given filters (each one value or any of a list)."""
        ...

    def count(
        self,
        *,
        status: Filter | JobStatus = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
    ) -> int:
        """How many jobs ``find`` would return without a limit; reads no bodies."""
        ...

    def find_by_ingestion_task(self, task_id: str) -> RemoteJob | None:
        """The newest job of the ingestion task, or None."""
        ...

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        """Pending or processing jobs with ``timeout_at`` before ``now``."""
        ...

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        """Terminal jobs finished (``completed_at``, else last write) before now − days."""
        ...

    def statistics(self) -> dict[str, Any]:
        """``total_jobs``, ``status_counts`` (all statuses), ``content_type_counts``,
        ``worker_counts``, ``storage_size_mb``."""
        ...

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> RemoteJob | None:
        """Atomically take the first ready job in claim order (of those content types;
        abandoned leases taken back first, see above): processing, ``worker_id``,
        ``started_at``, ``timeout_at = now + lease``, ``attempt + 1``, progress cleared.
        No two callers, in any processes, ever get the same claim. None: no job is ready."""
        ...

    def claim_many(
        self,
        worker_id: str,
        n: int,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> list[RemoteJob]:
        """Up to ``n`` jobs, each as ``claim_next`` would give it, in claim order, in one
        atomic step (fewer, or none, when fewer are ready)."""
        ...

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        lease_seconds: float = 300,
        attempt: int | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> RemoteJob:
        """Extend the holder's lease to now + ``lease_seconds``; store ``progress`` (a number
        in [0, 1], ``InvalidArgument`` otherwise) and ``message`` when given (None keeps
        the stored value)."""
        ...

    def complete(
        self,
        job_id: str,
        worker_id: str,
        result_data: dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
    ) -> RemoteJob:
        """processing → completed, with ``completed_at`` and the result."""
        ...

    def complete_many(
        self,
        worker_id: str,
        results: Mapping[str, dict[str, Any] | None],
        *,
        attempts: Mapping[str, int] | None = None,
    ) -> list[RemoteJob]:
        """Complete several jobs ``worker_id`` holds in one write (job id -> its result),
        each as ``complete`` would, all or none: any refusal (``JobNotFound``,
        ``NotJobOwner``, ``InvalidTransition``) completes none. ``attempts`` maps a job id
        to the attempt it was claimed with, for the jobs whose holder is fenced by it."""
        ...

    def release(self, job_id: str, worker_id: str, *, attempt: int | None = None) -> RemoteJob:
        """The holder gives its job back: processing → pending, ready at once, no retry
        used; the next claim is ``attempt + 1``, so the giver is fenced. Refused as
        ``heartbeat`` is (``NotJobOwner``, ``InvalidTransition``)."""
        ...

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error_message: str,
        *,
        attempt: int | None = None,
        retry_in: float | None = None,
    ) -> RemoteJob:
        """While retries remain: ``retry_count + 1`` and back to pending (lease fields
        cleared), not ready before now + ``retry_in`` seconds (0: at once; None: the
        default back-off ``lifecycle.backoff_seconds``, 5 s doubling per retry up to 1 h);
        else failed with ``completed_at``."""
        ...

    def cancel(self, job_id: str) -> RemoteJob:
        """pending or processing → cancelled."""
        ...

    def requeue(self, job_id: str, *, reset_retries: bool = False) -> RemoteJob:
        """failed, timeout or cancelled → pending, ready at once: clears ``worker_id``,
        ``started_at``, ``completed_at``, ``timeout_at``, ``not_before``; keeps
        ``error_message`` and ``result_data``; ``reset_retries`` sets ``retry_count`` to 0.
        Any other status: ``InvalidTransition``. ``DuplicateJob`` if another job holds its
        ``unique_key`` now."""
        ...

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        """Processing jobs past ``timeout_at`` → pending (retry left) or timeout."""
        ...

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        """Delete ``old_jobs(days_old, now)``; return how many."""
        ...

    def close(self) -> None:
        """Release connections; the repository must not be used afterwards."""
        ...

    def __enter__(self) -> JobRepository: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def claim_arguments(
    worker_id: object, content_types: Sequence[str] | str | None, lease_seconds: float
) -> list[str] | None:
    """Check ``claim_next``'s arguments the same way for every backend (``InvalidArgument``)
    and return the content types as a list (None: any type; a single string is one type)."""
    if not isinstance(worker_id, str) or not worker_id:
        raise InvalidArgument("worker_id must be a non-empty string")
    lease_delta(lease_seconds)
    if content_types is None:
        return None
    wanted = [content_types] if isinstance(content_types, str) else list(content_types)
    if not all(isinstance(t, str) for t in wanted):
        raise InvalidArgument("content_types must be strings")
    return wanted


def new_batch(jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
    """``add_many``'s jobs, checked the same way on every backend before anything is
    stored, as version 1: ids valid and distinct (``JobAlreadyExists``), counters that fit,
    and no unique key held by two of them (``DuplicateJob``)."""
    batch: list[RemoteJob] = []
    ids: set[str] = set()
    keys: dict[str, str] = {}
    for job in jobs:
        validate_job_id(job.id)
        job.check_storable()
        if job.id in ids:
            raise JobAlreadyExists(job.id)
        ids.add(job.id)
        if holds_key(job):
            assert job.unique_key is not None
            if job.unique_key in keys:
                raise DuplicateJob(job.id, job.unique_key, keys[job.unique_key])
            keys[job.unique_key] = job.id
        batch.append(job.model_copy(update={"version": 1}))
    return batch


def completions(
    worker_id: object,
    results: Mapping[str, dict[str, Any] | None],
    attempts: Mapping[str, int] | None,
) -> list[tuple[str, dict[str, Any] | None, int | None]]:
    """Check ``complete_many``'s arguments the same way for every backend
    (``InvalidArgument``, ``InvalidJobId``) and return (job id, result, attempt) in the
    order given."""
    if not isinstance(worker_id, str) or not worker_id:
        raise InvalidArgument("worker_id must be a non-empty string")
    if not isinstance(results, Mapping):
        raise InvalidArgument("results must map job ids to their result (a dict or None)")
    attempts = {} if attempts is None else attempts
    if not isinstance(attempts, Mapping):
        raise InvalidArgument("attempts must map job ids to the attempt they were claimed with")
    stray = [job_id for job_id in attempts if job_id not in results]
    if stray:
        raise InvalidArgument(f"attempts names jobs that results does not: {stray[:5]!r}")
    return [
        (validate_job_id(job_id), result, attempts.get(job_id))
        for job_id, result in results.items()
    ]


# -- importing jobs exactly as given (``import_jobs``, used by ``transfer.copy_jobs``) ------


#: What importing one job does to the target.
ImportAction = Literal["insert", "replace", "unchanged", "conflict"]


def same_job(a: RemoteJob, b: RemoteJob) -> bool:
    """True when every field of the two jobs is equal (versions and timestamps included)."""
    return a.model_dump() == b.model_dump()


def import_action(current: RemoteJob | None, incoming: RemoteJob) -> ImportAction:
    """What importing ``incoming`` over the stored ``current`` (None: absent) does.

    An absent job is inserted and an identical one left alone, so a second copy changes
    nothing. A stored copy with a lower version is replaced: the source moved on since the
    last copy. A stored copy that differs with the same or a higher version was changed in
    the target itself; it is kept and reported as a conflict, never silently overwritten.
    """
    if current is None:
        return "insert"
    if same_job(current, incoming):
        return "unchanged"
    if current.version < incoming.version:
        return "replace"
    return "conflict"


@dataclass
class ImportResult:
    """What one ``import_jobs`` call did."""

    written: int = 0
    unchanged: int = 0
    #: Ids whose stored copy was kept because it is newer than, or diverged from, the import.
    conflicts: list[str] = field(default_factory=list)

    def record(self, job_id: str, action: ImportAction) -> None:
        """Count one job's outcome."""
        if action in ("insert", "replace"):
            self.written += 1
        elif action == "unchanged":
            self.unchanged += 1
        else:
            self.conflicts.append(job_id)


@runtime_checkable
class SupportsImport(Protocol):
    """A backend that can store jobs exactly as given (``JobStore``,
    ``PostgresJobRepository``)."""

    def import_jobs(self, jobs: Iterable[RemoteJob]) -> ImportResult:
        """Write each job as given, versions and timestamps included, per
        ``import_action``."""
        ...
