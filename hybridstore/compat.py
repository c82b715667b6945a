"""The older design's API, dict in and dict out, on top of ``JobStore``.

Code written against the JSON-index storage keeps working: the same class and method
names and return conventions (``bool`` for writes, ``None``/``[]``/``{}`` when nothing is
found, failures logged and reported as ``False``). A malformed job id still raises
``InvalidJobId``: it is a caller's bug, not a storage failure.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import ValidationError

from .errors import HybridStoreError, InvalidJobId
from .model import RemoteJob, validate_job_id
from .store import JobStore

__all__ = ["RemoteJobsStorage", "StorageManager"]

log = structlog.get_logger("hybridstore.compat")


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
        try:
            self.store.save(RemoteJob.model_validate(job_data))
        except InvalidJobId:
            raise
        except (HybridStoreError, ValidationError) as exc:
            log.error("save_job_failed", job_id=job_data.get("id"), error=str(exc))
            return False
        return True

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        """The job's dict, or None (also None, logged, for an unreadable file)."""
        validate_job_id(job_id)
        try:
            job = self.store.get(job_id)
        except HybridStoreError as exc:
            log.error("load_job_failed", job_id=job_id, error=str(exc))
            return None
        return _as_dict(job) if job else None

    def delete_job(self, job_id: str) -> bool:
        """True if the job existed and is gone."""
        validate_job_id(job_id)
        try:
            return self.store.delete(job_id)
        except HybridStoreError as exc:
            log.error("delete_job_failed", job_id=job_id, error=str(exc))
            return False

    def find_jobs_by_status(self, status: str) -> list[dict[str, Any]]:
        return [_as_dict(j) for j in self.store.find(status=status)]

    def find_jobs_by_content_type(self, content_type: str) -> list[dict[str, Any]]:
        return [_as_dict(j) for j in self.store.find(content_type=content_type)]

    def find_jobs_by_worker(self, worker_id: str) -> list[dict[str, Any]]:
        return [_as_dict(j) for j in self.store.find(worker_id=worker_id)]

    def find_job_by_ingestion_task(self, ingestion_task_id: str) -> dict[str, Any] | None:
        job = self.store.find_by_ingestion_task(ingestion_task_id)
        return _as_dict(job) if job else None

    def get_expired_jobs(self) -> list[dict[str, Any]]:
        return [_as_dict(j) for j in self.store.expired()]

    def get_old_jobs(self, days_old: int = 7) -> list[dict[str, Any]]:
        return [_as_dict(j) for j in self.store.old_jobs(days_old)]

    def get_statistics(self) -> dict[str, Any]:
        """``total_jobs``, ``status_counts``, ``content_type_counts``, ``storage_size_mb``."""
        stats = self.store.statistics()
        return {
            key: stats[key]
            for key in ("total_jobs", "status_counts", "content_type_counts", "storage_size_mb")
        }


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
        """Create the layout and the sidecar; False (logged) on failure."""
        try:
            self.remote_jobs  # noqa: B018 - opening creates everything
        except (HybridStoreError, OSError) as exc:
            log.error("initialize_storage_failed", error=str(exc))
            return False
        return True

    def cleanup_storage(self, days_old: int = 7) -> dict[str, int]:
        """Delete terminal jobs older than ``days_old`` days."""
        return {"remote_jobs_cleaned": self.remote_jobs.store.cleanup(days_old)}

    def get_storage_statistics(self) -> dict[str, Any]:
        return {
            "remote_jobs": self.remote_jobs.get_statistics(),
            "timestamp": datetime.now(UTC).isoformat(),
        }
