"""Every exception hybridstore raises on purpose, under one root.

Each error is also the matching builtin where one exists, so callers that already catch
``KeyError``/``ValueError``/``TimeoutError``/``OSError`` keep working. Messages name the job
id or the path involved; ids are shown with ``repr`` so control characters never reach a
terminal or a log line raw.
"""

from __future__ import annotations


class HybridStoreError(Exception):
    """Base class of every hybridstore error."""


class JobNotFound(HybridStoreError, KeyError):
    """A lifecycle call named a job that does not exist."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0])


class JobAlreadyExists(HybridStoreError):
    """``add`` was given a job whose id is already stored."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} already exists")
        self.job_id = job_id


class DuplicateJob(JobAlreadyExists):
    """``add`` was given a job whose ``unique_key`` a pending or processing job holds.

    ``existing_id`` is that job's id; ``job_id`` the refused job's, ``unique_key`` the key.
    """

    def __init__(self, job_id: str, unique_key: str, existing_id: str) -> None:
        HybridStoreError.__init__(
            self,
            f"unique key {unique_key!r} is held by job {existing_id!r} (pending or"
            f" processing), so the new job (id {job_id!r}) was not stored",
        )
        self.job_id = job_id
        self.unique_key = unique_key
        self.existing_id = existing_id


class InvalidJobId(HybridStoreError, ValueError):
    """A job id that does not fully match ``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``."""

    def __init__(self, job_id: object) -> None:
        shown = repr(job_id)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"invalid job id {shown}: must match [A-Za-z0-9][A-Za-z0-9._-]{{0,127}}")
        self.job_id = job_id


class InvalidArgument(HybridStoreError, ValueError):
    """A call argument that is not acceptable, such as an unknown status."""


class VersionConflict(HybridStoreError):
    """``save(expected_version=...)`` found another version stored."""

    def __init__(self, job_id: str, expected: int, actual: int) -> None:
        super().__init__(f"job {job_id!r}: expected stored version {expected}, found {actual}")
        self.job_id = job_id
        self.expected = expected
        self.actual = actual


class NotJobOwner(HybridStoreError):
    """A worker touched a job it does not hold (other worker, or a stale ``attempt``)."""

    def __init__(self, job_id: str, reason: str) -> None:
        super().__init__(f"job {job_id!r}: {reason}")
        self.job_id = job_id


class InvalidTransition(HybridStoreError):
    """A lifecycle call on a job whose status does not allow it."""

    def __init__(self, job_id: str, action: str, status: str) -> None:
        super().__init__(f"job {job_id!r}: cannot {action} a job that is {status}")
        self.job_id = job_id
        self.action = action
        self.status = status


class LockTimeout(HybridStoreError, TimeoutError):
    """A job's lock could not be taken within ``lock_timeout`` seconds."""

    def __init__(self, job_id: str | None, timeout: float, path: object = None) -> None:
        what = f"job {job_id!r}" if job_id is not None else str(path)
        super().__init__(f"{what}: lock not acquired within {timeout:g}s")
        self.job_id = job_id
        self.path = path


class CorruptJobFile(HybridStoreError):
    """A job file that cannot be read as a valid job."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class JobTooLarge(HybridStoreError, ValueError):
    """A job whose JSON body exceeds the store's ``max_job_bytes``."""

    def __init__(self, job_id: str, size: int, limit: int) -> None:
        super().__init__(f"job {job_id!r}: body is {size} bytes, limit is {limit}")
        self.job_id = job_id


class StorageError(HybridStoreError, OSError):
    """The file system refused a write (disk full, I/O error, read-only...).

    The job's previous version is intact and the index unchanged, unless the message says
    the new body may have reached its directory (then the next touch of the job repairs it).
    """

    def __init__(
        self, path: object, error: OSError, *, in_place: bool = False, renamed: int = 0
    ) -> None:
        reason = error.strerror or str(error)
        detail = " (the new body is in place but may not be durable)" if in_place else ""
        super().__init__(error.errno, f"{path}: {reason}{detail}")
        self.path = path
        self.cause = error
        #: True when the failure came after the new body replaced the old one (in a batch:
        #: after every new body did).
        self.in_place = in_place
        #: In a batch write that failed before all its bodies were in place: how many
        #: (the first ones, in the batch's order) had replaced their old file.
        self.renamed = renamed

    def __str__(self) -> str:
        return str(self.args[1])


class StoreNotFound(HybridStoreError, FileNotFoundError):
    """A reader opened a store that does not exist: a missing data directory, or a
    PostgreSQL database without hybridstore's schema. Nothing was created.

    ``store`` is the path or the URL (password masked); ``command`` the one that creates it.
    """

    def __init__(self, store: object, command: str, reason: str | None = None) -> None:
        what = reason or f"no hybridstore store at {store}"
        super().__init__(f"{what} (create it with '{command}')")
        self.store = store
        self.command = command

    def __str__(self) -> str:  # OSError would otherwise format its own way
        return str(self.args[0])


class SchemaError(HybridStoreError):
    """A sidecar or database schema this version cannot use (e.g. newer than known)."""


class UnsupportedFileSystem(HybridStoreError):
    """The data directory sits on a file system where locking is not reliable."""


class BackendUnavailable(HybridStoreError):
    """A backend whose optional dependency is not installed, a URL nobody handles, or an
    HTTP server that cannot be reached (a ``Worker`` waits and tries again)."""


class AccessDenied(HybridStoreError, PermissionError):
    """The HTTP server refused the caller: no valid token (``status`` 401), or a token
    whose role does not allow the call (403). Nothing was changed."""

    def __init__(self, message: str, status: int = 401) -> None:
        super().__init__(message)
        self.status = status

    def __str__(self) -> str:  # OSError would otherwise format its own way
        return str(self.args[0])
