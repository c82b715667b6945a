"""``JobStore``: the file-backed repository, composing the files, the sidecar and the locks.

Each concern has its own module: ``files`` (the layout, atomic writes, strict reads),
``sidecar`` and ``rows`` (the SQLite index), ``locks`` (job stripes, the write gate),
``journal`` (the one-commit write protocol and crash recovery: every write goes through
``Journal.commit_many``), ``batches`` (many jobs in one write), ``claims`` (claims in claim
order, abandoned leases taken back) and ``maintenance`` (the sidecar's health, rebuild,
verify, repair). This module opens them and answers the repository calls. Reads take no
lock: a rename is atomic, so a reader sees a whole body. Set queries are answered from the
bodies copied into the sidecar, so they may show a write a few milliseconds before its file
lands; point reads read the file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from . import lifecycle
from .batches import Batches
from .claims import Claims
from .config import check_data_dir, default_data_dir, init_command
from .errors import (
    CorruptJobFile,
    DuplicateJob,
    InvalidArgument,
    JobAlreadyExists,
    JobNotFound,
    StoreNotFound,
    VersionConflict,
)
from .files import (
    MAX_READ_BYTES,
    Layout,
    check_local_file_system,
)
from .journal import Journal
from .locks import StripeLocks
from .logs import get_logger
from .maintenance import Maintenance, ProgressCallback, is_read_only
from .migrations import Migration
from .model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    RemoteJob,
    resolve_now,
    utcnow,
    validate_job_id,
)
from .reports import ReindexReport, RepairReport, VerifyReport
from .repository import (
    Filter,
    IfDuplicate,
    ImportResult,
    check_page,
    claim_arguments,
    completions,
    filter_values,
    new_batch,
)
from .rows import parse_bodies, to_us
from .sidecar import SIDECAR_NAME, Sidecar
from .spares import SparePool

__all__ = ["DEFAULT_MAX_JOB_BYTES", "JobStore"]

log = get_logger("hybridstore")

DEFAULT_MAX_JOB_BYTES = 8 * 1024 * 1024


_STATUSES = {status.value: status for status in JobStatus}


class JobStore:
    """Jobs as JSON files in status directories, indexed by a SQLite sidecar.

    ``data_dir`` defaults to ``$HYBRIDSTORE_DATA_DIR``, else ``$MORAG_REMOTE_JOBS_DATA_DIR``,
    else ``./data/remote_jobs``; it is created if absent. ``durable=True`` fsyncs every
    write (file and directory) before the call returns. ``lock_timeout`` bounds the wait for
    a job's lock (``LockTimeout``). ``max_job_bytes`` refuses larger bodies before anything
    is written; it limits writes only: jobs stored by a process with a larger limit are
    read (up to ``files.MAX_READ_BYTES``). Opening repairs what a crashed process left
    behind and rebuilds a sidecar that is missing or unreadable; a sidecar of a newer
    schema raises ``SchemaError``.

    One store may be shared by the threads of a process, and survives ``fork()``; any
    number of processes may open the same directory.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] | None = None,
        *,
        durable: bool = True,
        lock_timeout: float = 5.0,
        max_job_bytes: int = DEFAULT_MAX_JOB_BYTES,
        check_file_system: bool = True,
        create: bool = True,
    ) -> None:
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.max_job_bytes = max_job_bytes
        # The size limit is for writes. A job another process stored under a larger limit
        # is valid and read whole, up to a sanity bound: never unindexed or quarantined
        # because this process was configured smaller.
        self._read_limit = max(max_job_bytes, MAX_READ_BYTES)
        self.layout = Layout(self.data_dir)
        if check_file_system:
            # Before creating anything: nothing is written on a file system we refuse.
            check_local_file_system(self.data_dir)
        check_data_dir(self.data_dir, create=create)
        #: On a read-only file system (a backup, a snapshot, a read-only mount) the store
        #: can be read, without locks (nobody can write there); writes raise StorageError.
        self.read_only = is_read_only(self.data_dir)
        if (not create or self.read_only) and not self.layout.looks_like_store():
            raise StoreNotFound(self.data_dir, init_command(self.data_dir))
        if not self.read_only:
            self.layout.create()
        self._stripes = StripeLocks.of(self.layout.locks, self)
        # Only durable moves park old copies: a spare is refilled once its leaving is durable.
        self._spares = SparePool.of(self.data_dir, self) if durable and not self.read_only else None
        # One sidecar connection per process and directory, whatever the number of stores.
        self._sidecar = Sidecar.shared(
            self.data_dir / SIDECAR_NAME, self, gate=self.layout.lock_path(".sidecar-writes")
        )
        self._sidecar.read_only = self.read_only
        #: The store's write protocol (``journal.Journal``: job locks, intents, recovery),
        #: for tests and tools; applications use the repository calls.
        self.journal = Journal(
            self.layout,
            self._sidecar,
            None if self.read_only else self._stripes,
            durable=durable,
            lock_timeout=lock_timeout,
            max_job_bytes=max_job_bytes,
            read_limit=self._read_limit,
            on_replaced=self._ready,
            spares=self._spares,
        )
        self.journal.takes_in_moves = create and not self.read_only
        self._maintenance = Maintenance(
            self.layout,
            self._sidecar,
            self.journal,
            read_only=self.read_only,
            writer=create,
            read_limit=self._read_limit,
            lock_timeout=lock_timeout,
        )
        self._claims = Claims(self._sidecar, self.journal, lock_timeout=lock_timeout)
        self._batches = Batches(self.journal)
        self._closed = False
        try:
            with self._sidecar.lock:
                first = not self._sidecar.is_open() or self._sidecar.replaced()
                if first:
                    if self._sidecar.is_open():
                        self._sidecar.close()
                    self._maintenance.open_sidecar()
            if not self.read_only:
                self.journal.recover_intents()
                if first and create:
                    # A store opened to read (create=False) leaves the look for dead temp
                    # files and moved jobs to writers: it must change nothing on disk.
                    self._maintenance.sweep_directories()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"JobStore({str(self.data_dir)!r})"

    @property
    def last_skipped(self) -> list[str]:
        """The jobs the last sweep (``expire_overdue``, ``cleanup``, ``verify``, ``repair``)
        passed over because a writer held their lock throughout (see RELIABILITY.md)."""
        return self.journal.last_skipped

    @property
    def schema_version(self) -> int:
        """The sidecar's schema version (the highest migration applied)."""
        return self._sidecar.schema_version()

    @property
    def sidecar_path(self) -> Path:
        """Where the SQLite index lives."""
        return self._sidecar.path

    def _ready(self) -> None:
        """Reopen the sidecar if someone deleted or replaced its file under us."""
        if self._sidecar.replaced():
            log.warning("sidecar_replaced", path=str(self._sidecar.path))
            with self._sidecar.lock:
                if self._sidecar.replaced():  # unless another thread just reopened it
                    self._sidecar.close()
                    self._maintenance.open_sidecar()

    def close(self) -> None:
        """Let go of the sidecar: the last store of the process on this directory clears
        the intents of the process's finished writes and closes the connection. The store
        must not be used afterwards."""
        if not self._closed:
            self._closed = True
            self._sidecar.release(self, before_close=self.journal.flush)
            self._stripes.release(self)
            if self._spares is not None:
                self._spares.release(self)

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _update(
        self, job_id: str, change: Callable[[RemoteJob], RemoteJob], operation: str
    ) -> RemoteJob:
        """Apply a lifecycle rule to one job, atomically under its lock."""
        validate_job_id(job_id)
        self._ready()
        with self.journal.lock(job_id):
            current = self.journal.load_locked(job_id)
            if current is None:
                raise JobNotFound(job_id)
            return self.journal.store_next(current, change(current), operation)

    # -- repository: writes ---------------------------------------------------------------

    def add(self, job: RemoteJob, *, if_duplicate: IfDuplicate = "raise") -> RemoteJob:
        """Store a new job as version 1; ``JobAlreadyExists`` if its id is taken,
        ``DuplicateJob`` if a pending or processing job holds its ``unique_key`` (or that
        job, with ``if_duplicate="return"``)."""
        validate_job_id(job.id)
        lifecycle.check_if_duplicate(if_duplicate)
        self._ready()
        for attempt in range(2):
            try:
                with self.journal.lock(job.id):
                    if self.journal.load_locked(job.id) is not None:
                        raise JobAlreadyExists(job.id)
                    stored = self.journal.commit(
                        job.id, None, job.model_copy(update={"version": 1}), "add"
                    )
                assert stored is not None
                return stored
            except DuplicateJob as exc:
                # The holder, under its lock: its own add may still be writing its file, or
                # it may be a row whose writer died before its file landed (loading it
                # re-derives it from the files): then the key is free, and we try again.
                with self.journal.lock(exc.existing_id):
                    holder = self.journal.load_locked(exc.existing_id)
                if holder is not None and lifecycle.holds_key(holder):
                    if if_duplicate == "return":
                        return holder
                    raise
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def add_many(self, jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
        """Store new jobs as ``add`` would, all or none: ``JobAlreadyExists`` or
        ``DuplicateJob`` for a clash (with a stored job or within the batch) stores none.
        One sidecar transaction for the batch, then the files."""
        batch = new_batch(jobs)
        if not batch:
            return []
        self._ready()
        return self._batches.add(batch)

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        """Insert or replace ``job``; the stored copy gets the stored version + 1."""
        validate_job_id(job.id)
        self._ready()
        with self.journal.lock(job.id):
            current = self.journal.load_locked(job.id)
            stored_version = current.version if current else 0
            if expected_version is not None and expected_version != stored_version:
                raise VersionConflict(job.id, expected_version, stored_version)
            new = job.model_copy(update={"version": stored_version + 1})
            stored = self.journal.commit(job.id, current, new, "save")
        assert stored is not None
        return stored

    def delete(self, job_id: str) -> bool:
        """Remove a job; False if there was none."""
        validate_job_id(job_id)
        self._ready()
        with self.journal.lock(job_id):
            current = self.journal.load_locked(job_id)
            if current is None:
                return False
            self.journal.commit(job_id, current, None, "delete")
            return True

    def import_jobs(self, jobs: Iterable[RemoteJob]) -> ImportResult:
        """Store jobs exactly as given, versions and timestamps included (for
        ``hybridstore.transfer.copy_jobs``), each through the ordinary write protocol.

        What each job does follows ``transfer.import_action``: absent → written, identical
        → untouched (so a second copy writes nothing), lower stored version → replaced,
        otherwise kept as a conflict.
        """
        self._ready()
        return self._batches.import_jobs(jobs)

    # -- repository: reads ------------------------------------------------------------------

    def get(self, job_id: str) -> RemoteJob | None:
        """The job as its file says, or None. ``CorruptJobFile`` if the file is invalid."""
        validate_job_id(job_id)
        self._ready()
        # The row leads the files (it is committed first), so the file at the row's status
        # is the newest copy there is. If it is not there, a write is moving the job, or was
        # interrupted while moving it: the highest version on disk is the job. A move can
        # slip between the two looks, hence the retries.
        for _ in range(3):
            status = self._sidecar.status_of(job_id)
            if status is not None:
                try:
                    return self.journal.read(job_id, _STATUSES[status], strict=False).job
                except FileNotFoundError:
                    pass
            copies, invalid = self.journal.copies(job_id)
            if invalid:
                raise CorruptJobFile(*invalid[0])
            if copies:
                found, path = copies[-1]
                moved_to = JobStatus(path.parent.name)
                if found.job.status is moved_to:
                    return found.job
                return lifecycle.moved_into(found.job, moved_to, utcnow())  # by hand
            if status is None:
                return None
        return None

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
        """Jobs matching every given filter (each a value or a list of any-of values),
        ordered by ``created_at`` then id. Answered from the index alone."""
        check_page(limit, offset)
        filters = filter_values(status, content_type, worker_id, ingestion_task_id)
        self._ready()
        return parse_bodies(self._sidecar.bodies(filters, limit, offset))

    def count(
        self,
        *,
        status: Filter | JobStatus = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
    ) -> int:
        """How many jobs ``find`` would return (without limit), from the index."""
        filters = filter_values(status, content_type, worker_id, ingestion_task_id)
        self._ready()
        return self._sidecar.count(filters)

    def find_by_ingestion_task(self, task_id: str) -> RemoteJob | None:
        """The newest job of an ingestion task, or None."""
        if not isinstance(task_id, str):
            raise InvalidArgument("ingestion task id must be a string")
        self._ready()
        found = self._sidecar.newest_for_task(task_id)
        return self.get(found[0]) if found else None

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        """Pending or processing jobs whose ``timeout_at`` is before ``now``."""
        self._ready()
        cutoff = to_us(resolve_now(now))
        return parse_bodies(
            self._sidecar.bodies_before("timeout_us", sorted(ACTIVE_STATUSES), cutoff)
        )

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        """Terminal jobs finished before ``now - days_old`` (finished = ``completed_at``,
        else the time of the job's last write)."""
        self._ready()
        try:
            cutoff = to_us(resolve_now(now) - timedelta(days=days_old))
        except (OverflowError, TypeError, ValueError):
            raise InvalidArgument(f"days_old must be a number of days, got {days_old!r}") from None
        return parse_bodies(
            self._sidecar.bodies_before("finished_us", sorted(TERMINAL_STATUSES), cutoff)
        )

    def statistics(self) -> dict[str, Any]:
        """Counts by status (all six), content type and worker; total; size of bodies."""
        self._ready()
        with self._sidecar.snapshot():
            total, size = self._sidecar.totals()
            by_status = self._sidecar.grouped_counts("status")
            return {
                "total_jobs": total,
                "status_counts": {s.value: by_status.get(s.value, 0) for s in JobStatus},
                "content_type_counts": self._sidecar.grouped_counts("content_type"),
                "worker_counts": self._sidecar.grouped_counts("worker_id"),
                "storage_size_mb": round(size / (1024 * 1024), 2),
            }

    # -- lifecycle ------------------------------------------------------------------------

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> RemoteJob | None:
        """Atomically move the next ready job (of ``content_types``) to processing for
        ``worker_id``; None when no job is ready. Abandoned leases come back first."""
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
        """Up to ``n`` jobs, each as ``claim_next`` would give it, in claim order."""
        n = lifecycle.check_claim_count(n)
        wanted = claim_arguments(worker_id, content_types, lease_seconds)
        self._ready()
        return self._claims.claim(worker_id, n, wanted, lease_seconds) if n else []

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
        """Extend the lease of a job ``worker_id`` holds to now + ``lease_seconds``, and
        record its progress (a number in [0, 1]) and message when given."""
        return self._update(
            job_id,
            lambda job: lifecycle.heartbeat(
                job, worker_id, lease_seconds, attempt, utcnow(), progress, message
            ),
            "heartbeat",
        )

    def complete(
        self,
        job_id: str,
        worker_id: str,
        result_data: dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
    ) -> RemoteJob:
        """processing → completed, storing ``result_data``."""
        return self._update(
            job_id,
            lambda job: lifecycle.complete(job, worker_id, result_data, attempt, utcnow()),
            "complete",
        )

    def complete_many(
        self,
        worker_id: str,
        results: Mapping[str, dict[str, Any] | None],
        *,
        attempts: Mapping[str, int] | None = None,
    ) -> list[RemoteJob]:
        """Several jobs processing → completed in one write, all or none (see
        ``JobRepository.complete_many``): one sidecar commit, the files made durable
        together."""
        batch = completions(worker_id, results, attempts)
        if not batch:
            return []
        self._ready()
        return self._batches.complete(worker_id, batch, utcnow())

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error_message: str,
        *,
        attempt: int | None = None,
        retry_in: float | None = None,
    ) -> RemoteJob:
        """processing → pending while retries remain (retry_count + 1, not ready before
        ``retry_in`` seconds, else the default back-off), else failed."""
        return self._update(
            job_id,
            lambda job: lifecycle.fail(job, worker_id, error_message, attempt, utcnow(), retry_in),
            "fail",
        )

    def release(self, job_id: str, worker_id: str, *, attempt: int | None = None) -> RemoteJob:
        """processing → pending, ready at once, no retry used (the holder gives it back)."""
        return self._update(
            job_id, lambda job: lifecycle.release(job, worker_id, attempt, utcnow()), "release"
        )

    def requeue(self, job_id: str, *, reset_retries: bool = False) -> RemoteJob:
        """failed, timeout or cancelled → pending, ready at once."""
        return self._update(
            job_id, lambda job: lifecycle.requeue(job, reset_retries, utcnow()), "requeue"
        )

    def cancel(self, job_id: str) -> RemoteJob:
        """pending or processing → cancelled."""
        return self._update(job_id, lambda job: lifecycle.cancel(job, utcnow()), "cancel")

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        """Processing jobs past their lease → pending (retries left) or timeout."""
        self._ready()
        now = resolve_now(now)
        self.journal.recover_intents()
        changed = []
        overdue = self._sidecar.ids_timed_out(JobStatus.PROCESSING, to_us(now))
        for job_id in self.journal.each_locked(overdue, "expire"):
            current = self.journal.load_for_batch(job_id)
            if current is not None and lifecycle.is_overdue(current, now):
                changed.append(
                    self.journal.store_next(current, lifecycle.expire(current, now), "expire")
                )
        return changed

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        """Delete ``old_jobs(days_old, now)``; return how many were deleted."""
        deleted = 0
        old = {job.id: job.version for job in self.old_jobs(days_old, now)}
        for job_id in self.journal.each_locked(old, "cleanup"):
            current = self.journal.load_for_batch(job_id)
            # Only if nobody changed it since the query picked it.
            if current is not None and current.version == old[job_id]:
                self.journal.commit(job_id, current, None, "cleanup")
                deleted += 1
        return deleted

    # -- rebuild, verify, repair ---------------------------------------------------------

    def reindex(self, progress: ProgressCallback | None = None) -> ReindexReport:
        """Rebuild the sidecar from the files, in place and in one transaction.

        Other processes keep reading the old index until the new one commits, and their
        writes wait for it. Unreadable files are skipped and named in the report.
        ``progress(done, total)`` is called as files are read.
        """
        self._ready()
        report = self._maintenance.rebuild(progress, explicit=True)
        # Check the writes the rebuild met in flight as soon as they are over.
        self.journal.recover_intents()
        return report

    def verify(self) -> VerifyReport:
        """Compare the files with the sidecar; changes nothing.

        Reports rows without files (orphaned), files without rows (missing), rows that
        differ from their file (stale), jobs in two directories, unreadable job files,
        interrupted writes, jobs moved by hand, old temp files, job counts that differ
        from the rows, and foreign entries and busy jobs (not counted as drift).
        """
        self._ready()
        return self._maintenance.verify()

    def repair(self) -> RepairReport:
        """Fix what ``verify`` finds: rows re-derived from files, unreadable files and
        older duplicates moved to ``.quarantine/`` (with a reason), jobs moved by hand
        taken in, old temp files removed, job counts recounted. Never deletes a job file."""
        self._ready()
        return self._maintenance.repair()

    @property
    def migrations_applied(self) -> list[Migration]:
        """Sidecar migrations this store's open applied (all of them for a new sidecar)."""
        return self._maintenance.migrations_applied
