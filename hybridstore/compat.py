"""The older design's API, dict in and dict out, on top of ``JobStore``.

Code written against the JSON-index storage keeps working: the same class and method
names and return conventions (``bool`` for writes, ``None``/``[]``/``{}`` when nothing is
found). As in that design, every method logs a failure and returns its "nothing" value
(``False``, ``None``, ``[]``, ``{}``) instead of raising: a lock timeout, an unknown status,
an unreadable file, a file system error. Only a malformed job id still raises
``InvalidJobId``: it is a caller's bug, not a storage failure. This is the adapter's
convention only; the rest of hybridstore raises typed errors.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from .errors import HybridStoreError, InvalidJobId
from .logs import get_logger
from .model import JobStatus, RemoteJob, validate_job_id
from .store import JobStore

__all__ = ["RemoteJobsStorage", "StorageManager"]

log = get_logger("hybridstore.compat")

T = TypeVar("T")
# What the older design caught and logged. InvalidJobId is re-raised before these.
_FAILURES = (HybridStoreError, OSError, ValueError)


def _logged(event: str, default: T, call: Callable[[], T], **about: Any) -> T:
    """``call()``, or ``default`` after logging ``event`` if it fails as storage can."""
    try:
        return call()
    except InvalidJobId:
        raise
    except _FAILURES as exc:
        log.error(event, error=str(exc), **about)
        return default


def _as_dict(job: RemoteJob) -> dict[str, Any]:
    return job.model_dump(mode="json")


class RemoteJobsStorage:
    """File storage for remote jobs with the older method names (dicts carry ``id``)."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self.store = JobStore(data_dir)
        self.data_dir = self.store.data_dir

    def save_job(self, job_data: dict[str, Any]) -> bool:
        """Insert or replace a job from its dict; False (logged) if it cannot be saved."""
        if "id" in job_data:
            validate_job_id(job_data["id"])

        def save() -> bool:
            self.store.save(RemoteJob.model_validate(job_data))
            return True

        return _logged("save_job_failed", False, save, job_id=job_data.get("id"))

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's dict, or None (also None, logged, for an unreadable file)."""
        validate_job_id(job_id)

        def load() -> dict[str, Any] | None:
            job = self.store.get(job_id)
            return _as_dict(job) if job else None

        return _logged("load_job_failed", None, load, job_id=job_id)

    def delete_job(self, job_id: str) -> bool:
        """True if the job existed and is gone."""
        validate_job_id(job_id)
        return _logged("delete_job_failed", False, lambda: self.store.delete(job_id), job_id=job_id)

    def find_jobs_by_status(self, status: str) -> list[dict[str, Any]]:
        """Jobs of ``status``; ``[]`` (logged) for an unknown status or a failure."""
        return _logged(
            "find_jobs_failed",
            [],
            lambda: [_as_dict(j) for j in self.store.find(status=status)],
            status=status,
        )

    def find_jobs_by_content_type(self, content_type: str) -> list[dict[str, Any]]:
        return _logged(
            "find_jobs_failed",
            [],
            lambda: [_as_dict(j) for j in self.store.find(content_type=content_type)],
            content_type=content_type,
        )

    def find_jobs_by_worker(self, worker_id: str) -> list[dict[str, Any]]:
        return _logged(
            "find_jobs_failed",
            [],
            lambda: [_as_dict(j) for j in self.store.find(worker_id=worker_id)],
            worker_id=worker_id,
        )

    def find_job_by_ingestion_task(self, ingestion_task_id: str) -> dict[str, Any] | None:
        def find() -> dict[str, Any] | None:
            job = self.store.find_by_ingestion_task(ingestion_task_id)
            return _as_dict(job) if job else None

        return _logged("find_job_failed", None, find, ingestion_task_id=ingestion_task_id)

    def get_expired_jobs(self) -> list[dict[str, Any]]:
        return _logged(
            "get_expired_jobs_failed", [], lambda: [_as_dict(j) for j in self.store.expired()]
        )

    def get_old_jobs(self, days_old: int = 7) -> list[dict[str, Any]]:
        return _logged(
            "get_old_jobs_failed",
            [],
            lambda: [_as_dict(j) for j in self.store.old_jobs(days_old)],
            days_old=days_old,
        )

    def get_statistics(self) -> dict[str, Any]:
        """``total_jobs``, ``status_counts``, ``content_type_counts``, ``storage_size_mb``;
        ``{}`` (logged) on failure."""

        def statistics() -> dict[str, Any]:
            stats = self.store.statistics()
            keys = ("total_jobs", "status_counts", "content_type_counts", "storage_size_mb")
            return {key: stats[key] for key in keys}

        return _logged("get_statistics_failed", {}, statistics)


class StorageManager:
    """Owns the remote-jobs storage, as the older design's manager did."""

    def __init__(self, data_dir: str | os.PathLike[str] | None = None) -> None:
        self._data_dir = data_dir
        self._remote_jobs: RemoteJobsStorage | None = None

    @property
    def remote_jobs(self) -> RemoteJobsStorage:
        """The storage, opened on first use."""
        if self._remote_jobs is None:
            self._remote_jobs = RemoteJobsStorage(self._data_dir)
        return self._remote_jobs

    def initialize_storage(self) -> bool:
        """Create the layout and the sidecar, recreating any status directory removed
        since; True only if the whole layout is there. False (logged) on failure."""

        def initialize() -> bool:
            layout = self.remote_jobs.store.layout
            layout.create()
            missing = [
                str(path)
                for path in [*(layout.status_dir(s) for s in JobStatus), layout.locks]
                if not path.is_dir()
            ]
            if missing:
                log.error("initialize_storage_incomplete", missing=missing)
            return not missing

        return _logged("initialize_storage_failed", False, initialize)

    def cleanup_storage(self, days_old: int = 7) -> dict[str, int]:
        """Delete terminal jobs older than ``days_old`` days: ``{"remote_jobs_cleaned": n}``,
        or ``{}`` (logged) on failure."""
        return _logged(
            "cleanup_storage_failed",
            {},
            lambda: {"remote_jobs_cleaned": self.remote_jobs.store.cleanup(days_old)},
            days_old=days_old,
        )

    def get_storage_statistics(self) -> dict[str, Any]:
        """``{"remote_jobs": {...}, "timestamp": iso}``, or ``{}`` (logged) on failure."""

        def statistics() -> dict[str, Any]:
            return {
                "remote_jobs": self.remote_jobs.get_statistics(),
                "timestamp": datetime.now(UTC).isoformat(),
            }

        return _logged("get_storage_statistics_failed", {}, statistics)
