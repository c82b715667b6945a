"""hybridstore: track remote conversion jobs in plain files, indexed by SQLite, and move
to PostgreSQL when one machine is no longer enough.

>>> from hybridstore import JobStore, RemoteJob
>>> store = JobStore("data/remote_jobs")                                # doctest: +SKIP
>>> store.add(RemoteJob(ingestion_task_id="t1", source_file_path="/in/a.mp3",
...                     content_type="audio"))                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .compat import RemoteJobsStorage, StorageManager
from .errors import (
    AccessDenied,
    BackendUnavailable,
    CorruptJobFile,
    DuplicateJob,
    HybridStoreError,
    InvalidArgument,
    InvalidJobId,
    InvalidTransition,
    JobAlreadyExists,
    JobNotFound,
    JobTooLarge,
    LockTimeout,
    NotJobOwner,
    SchemaError,
    StorageError,
    StoreNotFound,
    UnsupportedFileSystem,
    VersionConflict,
)
from .factory import open_repository
from .memory import MemoryJobRepository
from .model import JobStatus, RemoteJob
from .repository import JobRepository
from .store import JobStore
from .transfer import copy_jobs
from .worker import Worker, WorkerSummary

if TYPE_CHECKING:
    from .httpclient import HttpJobRepository
    from .postgres import PostgresJobRepository

__version__ = "0.1.0"

__all__ = [
    "AccessDenied",
    "BackendUnavailable",
    "CorruptJobFile",
    "DuplicateJob",
    "HttpJobRepository",
    "HybridStoreError",
    "InvalidArgument",
    "InvalidJobId",
    "InvalidTransition",
    "JobAlreadyExists",
    "JobNotFound",
    "JobRepository",
    "JobStatus",
    "JobStore",
    "JobTooLarge",
    "LockTimeout",
    "MemoryJobRepository",
    "NotJobOwner",
    "PostgresJobRepository",
    "RemoteJob",
    "RemoteJobsStorage",
    "SchemaError",
    "StorageError",
    "StorageManager",
    "StoreNotFound",
    "UnsupportedFileSystem",
    "VersionConflict",
    "Worker",
    "WorkerSummary",
    "__version__",
    "copy_jobs",
    "open_repository",
    "storage_manager",
]

_storage_manager: StorageManager | None = None


def __getattr__(name: str) -> Any:
    # Created on first use, so importing hybridstore never touches the disk, and the
    # PostgreSQL backend and the HTTP client import psycopg / httpx only when asked for.
    global _storage_manager
    if name == "storage_manager":
        if _storage_manager is None:
            _storage_manager = StorageManager()
        return _storage_manager
    if name == "PostgresJobRepository":
        from .postgres import PostgresJobRepository

        return PostgresJobRepository
    if name == "HttpJobRepository":  # imports httpx only when asked for
        from .httpclient import HttpJobRepository

        return HttpJobRepository
    raise AttributeError(f"module 'hybridstore' has no attribute {name!r}")


def __dir__() -> list[str]:
    # The lazy names too, so dir() and completion show the whole public surface.
    return sorted(set(globals()) | set(__all__))
