"""``MemoryJobRepository``: the repository contract in a dict, for users' unit tests.

It passes the same contract suite as the real backends, so code tested against it behaves
the same on them. It lives in one process and keeps nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from . import lifecycle
from .errors import DuplicateJob, JobAlreadyExists, JobNotFound, VersionConflict
from .model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    RemoteJob,
    resolve_now,
    utcnow,
    validate_job_id,
)
from .repository import (
    Filter,
    IfDuplicate,
    check_page,
    claim_arguments,
    completions,
    filter_values,
    new_batch,
)

__all__ = ["MemoryJobRepository"]


class MemoryJobRepository:
    """An in-memory ``JobRepository``; thread-safe, not shared between processes."""

    def __init__(self) -> None:
        self._jobs: dict[str, RemoteJob] = {}
        # When each job was last written, for ``old_jobs`` of jobs without completed_at.
        self._written: dict[str, datetime] = {}
        self._lock = threading.RLock()

    def _put(self, job: RemoteJob) -> RemoteJob:
        self._jobs[job.id] = job
        self._written[job.id] = utcnow()
        return job

    def _key_holder(self, job: RemoteJob) -> RemoteJob | None:
        """The other job holding the key ``job`` would hold, if any."""
        if not lifecycle.holds_key(job):
            return None
        for other in self._jobs.values():
            if (
                other.id != job.id
                and other.unique_key == job.unique_key
                and lifecycle.holds_key(other)
            ):
                return other
        return None

    def _check_key(self, job: RemoteJob) -> None:
        holder = self._key_holder(job)
        if holder is not None:
            assert job.unique_key is not None
            raise DuplicateJob(job.id, job.unique_key, holder.id)

    def add(self, job: RemoteJob, *, if_duplicate: IfDuplicate = "raise") -> RemoteJob:
        validate_job_id(job.id)
        lifecycle.check_if_duplicate(if_duplicate)
        job.check_storable()
        with self._lock:
            if job.id in self._jobs:
                raise JobAlreadyExists(job.id)
            holder = self._key_holder(job)
            if holder is not None:
                if if_duplicate == "return":
                    return holder.model_copy(deep=True)
                self._check_key(job)
            return self._put(job.model_copy(update={"version": 1}, deep=True)).model_copy(deep=True)

    def add_many(self, jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
        batch = new_batch(jobs)
        with self._lock:
            for job in batch:
                if job.id in self._jobs:
                    raise JobAlreadyExists(job.id)
                self._check_key(job)
            stored = [self._put(job.model_copy(deep=True)) for job in batch]
            return [job.model_copy(deep=True) for job in stored]

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        validate_job_id(job.id)
        job.check_storable()
        with self._lock:
            current = self._jobs.get(job.id)
            stored = current.version if current else 0
            if expected_version is not None and expected_version != stored:
                raise VersionConflict(job.id, expected_version, stored)
            self._check_key(job)
            saved = self._put(job.model_copy(update={"version": stored + 1}, deep=True))
            return saved.model_copy(deep=True)

    def get(self, job_id: str) -> RemoteJob | None:
        validate_job_id(job_id)
        with self._lock:
            job = self._jobs.get(job_id)
            return job.model_copy(deep=True) if job else None

    def delete(self, job_id: str) -> bool:
        validate_job_id(job_id)
        with self._lock:
            self._written.pop(job_id, None)
            return self._jobs.pop(job_id, None) is not None

    def _select(self, keep: Callable[[RemoteJob], bool]) -> list[RemoteJob]:
        with self._lock:
            chosen = [j for j in self._jobs.values() if keep(j)]
        chosen.sort(key=lambda j: (j.created_at, j.id.encode()))
        return [j.model_copy(deep=True) for j in chosen]

    @staticmethod
    def _matcher(
        status: Filter | JobStatus,
        content_type: Filter,
        worker_id: Filter,
        ingestion_task_id: Filter,
    ) -> Callable[[RemoteJob], bool]:
        wanted = filter_values(status, content_type, worker_id, ingestion_task_id)
        # Statuses compare by value: JobStatus is a str enum.
        return lambda job: all(getattr(job, name) in allowed for name, allowed in wanted.items())

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
        check_page(limit, offset)
        found = self._select(self._matcher(status, content_type, worker_id, ingestion_task_id))
        return found[offset:] if limit is None else found[offset : offset + limit]

    def count(
        self,
        *,
        status: Filter | JobStatus = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
    ) -> int:
        return len(
            self.find(
                status=status,
                content_type=content_type,
                worker_id=worker_id,
                ingestion_task_id=ingestion_task_id,
            )
        )

    def find_by_ingestion_task(self, task_id: str) -> RemoteJob | None:
        found = self.find(ingestion_task_id=task_id)
        return found[-1] if found else None

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        now = resolve_now(now)
        return self._select(
            lambda j: (
                j.status in ACTIVE_STATUSES and j.timeout_at is not None and j.timeout_at < now
            )
        )

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        cutoff = resolve_now(now) - timedelta(days=days_old)
        return self._select(
            lambda j: (
                j.status in TERMINAL_STATUSES and (j.completed_at or self._written[j.id]) < cutoff
            )
        )

    def statistics(self) -> dict[str, Any]:
        with self._lock:
            jobs = list(self._jobs.values())
        by_content: dict[str, int] = {}
        by_worker: dict[str, int] = {}
        for job in jobs:
            by_content[job.content_type] = by_content.get(job.content_type, 0) + 1
            if job.worker_id is not None:
                by_worker[job.worker_id] = by_worker.get(job.worker_id, 0) + 1
        size = sum(len(job.to_json()) for job in jobs)
        return {
            "total_jobs": len(jobs),
            "status_counts": {s.value: sum(j.status is s for j in jobs) for s in JobStatus},
            "content_type_counts": dict(sorted(by_content.items())),
            "worker_counts": dict(sorted(by_worker.items())),
            "storage_size_mb": round(size / (1024 * 1024), 2),
        }

    def _update(self, job_id: str, change: Callable[[RemoteJob], RemoteJob]) -> RemoteJob:
        validate_job_id(job_id)
        with self._lock:
            current = self._jobs.get(job_id)
            if current is None:
                raise JobNotFound(job_id)
            new = lifecycle.next_version(current, change(current))
            new.check_storable()
            if not lifecycle.holds_key(current):
                self._check_key(new)
            return self._put(new).model_copy(deep=True)

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> RemoteJob | None:
        claimed = self.claim_many(
            worker_id, 1, content_types=content_types, lease_seconds=lease_seconds
        )
        return claimed[0] if claimed else None

    def claim_many(
        self,
        worker_id: str,
        n: int,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> list[RemoteJob]:
        wanted = claim_arguments(worker_id, content_types, lease_seconds)
        lifecycle.check_claim_count(n)
        with self._lock:
            now = utcnow()

            def asked(job: RemoteJob) -> bool:
                return wanted is None or job.content_type in wanted

            for job in [j for j in self._jobs.values() if asked(j)]:
                if lifecycle.is_overdue(job, now):
                    self._update(job.id, lambda j: lifecycle.take_back(j, now))
            ready = [j for j in self._jobs.values() if asked(j) and lifecycle.is_ready(j, now)]
            ready.sort(key=lifecycle.claim_order_key)
            return [
                self._update(job.id, lambda j: lifecycle.claim(j, worker_id, lease_seconds, now))
                for job in ready[:n]
            ]

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
        return self._update(
            job_id,
            lambda j: lifecycle.heartbeat(
                j, worker_id, lease_seconds, attempt, utcnow(), progress, message
            ),
        )

    def complete(
        self,
        job_id: str,
        worker_id: str,
        result_data: dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
    ) -> RemoteJob:
        return self._update(
            job_id, lambda j: lifecycle.complete(j, worker_id, result_data, attempt, utcnow())
        )

    def complete_many(
        self,
        worker_id: str,
        results: Mapping[str, dict[str, Any] | None],
        *,
        attempts: Mapping[str, int] | None = None,
    ) -> list[RemoteJob]:
        batch = completions(worker_id, results, attempts)
        now = utcnow()
        with self._lock:
            changed: list[RemoteJob] = []
            for job_id, result, attempt in batch:  # every refusal before any change
                current = self._jobs.get(job_id)
                if current is None:
                    raise JobNotFound(job_id)
                new = lifecycle.complete(current, worker_id, result, attempt, now)
                changed.append(lifecycle.next_version(current, new))
            return [self._put(job).model_copy(deep=True) for job in changed]

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error_message: str,
        *,
        attempt: int | None = None,
        retry_in: float | None = None,
    ) -> RemoteJob:
        return self._update(
            job_id,
            lambda j: lifecycle.fail(j, worker_id, error_message, attempt, utcnow(), retry_in),
        )

    def cancel(self, job_id: str) -> RemoteJob:
        return self._update(job_id, lambda j: lifecycle.cancel(j, utcnow()))

    def release(self, job_id: str, worker_id: str, *, attempt: int | None = None) -> RemoteJob:
        return self._update(job_id, lambda j: lifecycle.release(j, worker_id, attempt, utcnow()))

    def requeue(self, job_id: str, *, reset_retries: bool = False) -> RemoteJob:
        return self._update(job_id, lambda j: lifecycle.requeue(j, reset_retries, utcnow()))

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        now = resolve_now(now)
        with self._lock:
            overdue = [j for j in self._jobs.values() if lifecycle.is_overdue(j, now)]
            # In lease order, then by id, as the other backends return them.
            overdue.sort(key=lambda j: (j.timeout_at or now, j.id))
            return [self._update(j.id, lambda j: lifecycle.expire(j, now)) for j in overdue]

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        with self._lock:
            old = self.old_jobs(days_old, now)
            return sum(self.delete(job.id) for job in old)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> MemoryJobRepository:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
