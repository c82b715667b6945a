"""``PostgresJobRepository``: the repository contract on PostgreSQL, through psycopg 3.

One row per job in ``remote_jobs``, in whatever schema the connection's ``search_path``
selects (``options=-csearch_path=...`` in the DSN), created and migrated on first use
(``hybridstore.pgschema``); connections come from ``hybridstore.pgconnect``.

How the contract maps onto the database:

* Every call is one transaction on a pooled connection. Lifecycle calls lock the row
  (``SELECT ... FOR UPDATE``), apply the rule from ``hybridstore.lifecycle`` and write the
  result back before committing.
* Claims (``claim_next``, ``claim_many``, in ``hybridstore.pgclaims``) are one transaction:
  abandoned leases of the asked content types are locked (``SKIP LOCKED``) and taken back,
  then the first ready jobs are locked with ``SKIP LOCKED`` from two partial indexes in claim
  order (``remote_jobs_ready*``: pending without ``not_before``; ``remote_jobs_delayed``:
  pending whose ``not_before`` has come), so neither delayed jobs nor other workers' claims
  are ever scanned or waited for.
* Unique keys: a unique partial index (``remote_jobs_unique_key``) decides between concurrent
  adds; its violation becomes ``DuplicateJob``.
* ``save(expected_version=...)`` is one conditional statement (``UPDATE ... WHERE version``).
* Times default to the database server's clock (``statement_timestamp()``), not the
  caller's: workers on several machines then agree on when a lease ends.
* Ids order in byte order: the id column is ``COLLATE "C"`` and every ``ORDER BY`` says so.

psycopg is imported by the constructor, so ``import hybridstore.postgres`` works without it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import lifecycle
from .config import describe_target
from .errors import (
    BackendUnavailable,
    DuplicateJob,
    HybridStoreError,
    InvalidArgument,
    JobAlreadyExists,
    JobNotFound,
    StoreNotFound,
    VersionConflict,
)
from .model import (
    JobStatus,
    RemoteJob,
    validate_job_id,
)
from .pgclaims import claim_rows, complete_rows, expire_rows, write_job
from .pgconnect import (
    INIT_COMMAND,
    configure,
    connect,
    connect_kwargs,
    database_missing,
    is_connection_error,
    require_psycopg,
)
from .pgimport import import_batch
from .pgrows import (
    ACTIVE,
    ADD,
    FIELDS,
    FINISHED,
    LOCK_ONE,
    NOW,
    ORDER,
    STATISTICS,
    TABLE_SIZE,
    TERMINAL,
    UPDATE_IF_VERSION,
    UPSERT,
    job_from_row,
    job_params,
    key_violation,
    statistics_from_rows,
    update_params,
    where_sql,
)
from .pgschema import apply_migrations, require_schema
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

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from .pgconnect import Connection, Cursor

__all__ = ["PostgresJobRepository"]

# Pools left behind in a forked child: closing them there would end the parent's
# sessions (libpq sends Terminate on the shared sockets), so they are kept, never touched.
_ABANDONED: list[object] = []

# -- the repository -----------------------------------------------------------------------


class PostgresJobRepository:
    """Jobs in a PostgreSQL table, shared by any number of processes and machines.

    ``dsn`` is a libpq connection string or ``postgresql://`` URL; add
    ``options=-csearch_path=NAME`` to keep the tables in schema NAME. Opening connects,
    creates and migrates the schema when needed (``SchemaError`` if the database's schema is
    newer than this code; ``BackendUnavailable`` if psycopg is missing or the server cannot
    be reached). With ``create=False`` (readers) it creates nothing: a database or schema
    without hybridstore's tables raises ``StoreNotFound``; pending migrations of an existing
    schema are still applied. Connections come from a pool of at most ``max_connections``,
    shared by the threads of a process; a forked child opens its own pool.

    Stored JSON (``task_options``, ``result_data``) is JSONB: values come back equal, but
    object keys in JSONB's order, and strings may not contain NUL characters (PostgreSQL
    refuses them: ``InvalidArgument``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        create: bool = True,
        min_connections: int = 1,
        max_connections: int = 8,
    ) -> None:
        require_psycopg()
        if not isinstance(dsn, str):
            raise InvalidArgument(f"dsn must be a string, got {type(dsn).__name__}")
        self.dsn = dsn
        self._target = describe_target(dsn)
        self._min = min_connections
        self._max = max(min_connections, max_connections)
        try:
            conn = connect(dsn)
        except BackendUnavailable as exc:
            if not create and database_missing(exc):
                raise StoreNotFound(
                    self._target, INIT_COMMAND, f"{self._target}: the database does not exist"
                ) from exc
            raise
        with conn:
            if not create:
                require_schema(conn, self._target)
            apply_migrations(conn)
        self._lock = threading.Lock()
        self._closed = False
        self._pid = os.getpid()
        self._pool = self._new_pool()

    def __repr__(self) -> str:
        return f"PostgresJobRepository({self._target!r})"

    def _new_pool(self) -> ConnectionPool[Connection]:
        from psycopg_pool import ConnectionPool

        return ConnectionPool(
            self.dsn,
            min_size=self._min,
            max_size=self._max,
            # Autocommit: a single statement is atomic on its own and then costs one round
            # trip; calls of several statements open a transaction explicitly (_cursor).
            kwargs={**connect_kwargs(self.dsn), "autocommit": True},
            configure=configure,
            open=True,
            name=f"hybridstore {self._target}",
        )

    def _current_pool(self) -> ConnectionPool[Connection]:
        if self._closed:
            raise HybridStoreError(f"{self!r} is closed")
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    _ABANDONED.append(self._pool)
                    self._pool = self._new_pool()
                    self._pid = os.getpid()
        return self._pool

    @contextmanager
    def _cursor(self, job_id: str | None = None, *, transaction: bool = False) -> Iterator[Cursor]:
        """A cursor on a pooled connection; with ``transaction`` its statements form one
        transaction, committed when the block ends and rolled back if it raises.

        Database errors that mean "this value cannot be stored" become ``InvalidArgument``,
        a lost server ``BackendUnavailable``; hybridstore's own errors pass through.
        """
        import psycopg
        from psycopg_pool import PoolTimeout

        about = f"job {job_id!r}: " if job_id is not None else ""
        try:
            with self._current_pool().connection() as conn:
                if transaction:
                    with conn.transaction(), conn.cursor() as cur:
                        yield cur
                else:
                    with conn.cursor() as cur:
                        yield cur
        except (psycopg.DataError, UnicodeEncodeError) as exc:
            raise InvalidArgument(f"{about}PostgreSQL cannot store it: {exc}") from exc
        except PoolTimeout as exc:
            raise BackendUnavailable(f"{self._target}: no connection available: {exc}") from exc
        except psycopg.OperationalError as exc:
            if is_connection_error(exc):
                raise BackendUnavailable(f"{self._target}: {about}{exc}") from exc
            raise

    def close(self) -> None:
        """Close the pool's connections. The repository must not be used afterwards."""
        if not self._closed:
            self._closed = True
            if self._pid == os.getpid():
                self._pool.close()

    def __enter__(self) -> PostgresJobRepository:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- writes -------------------------------------------------------------------------

    def _key_holder(self, unique_key: str | None) -> RemoteJob | None:
        """The pending or processing job holding ``unique_key``, if any."""
        if unique_key is None:
            return None
        with self._cursor() as cur:
            row = cur.execute(
                f"SELECT {FIELDS} FROM remote_jobs WHERE unique_key = %s"
                " AND status = ANY(%s::text[])",
                (unique_key, ACTIVE),
            ).fetchone()
        return job_from_row(row) if row is not None else None

    def _duplicate(self, job: RemoteJob) -> DuplicateJob:
        holder = self._key_holder(job.unique_key)
        return DuplicateJob(job.id, job.unique_key or "", holder.id if holder else "?")

    def add(self, job: RemoteJob, *, if_duplicate: IfDuplicate = "raise") -> RemoteJob:
        """Insert ``job`` as version 1; ``JobAlreadyExists`` if its id is taken,
        ``DuplicateJob`` (or the holder, with ``if_duplicate="return"``) if its key is."""
        validate_job_id(job.id)
        lifecycle.check_if_duplicate(if_duplicate)
        job.check_storable()
        for _ in range(5):
            try:
                with self._cursor(job.id) as cur:
                    row = cur.execute(ADD, job_params(job, 1)).fetchone()
            except Exception as exc:
                if not key_violation(exc):
                    raise
                holder = self._key_holder(job.unique_key)
                if holder is None:
                    continue  # the holder ended meanwhile: the key is free, try again
                if if_duplicate == "return":
                    return holder
                raise DuplicateJob(job.id, job.unique_key or "", holder.id) from None
            if row is None:
                raise JobAlreadyExists(job.id)
            return job_from_row(row)
        raise self._duplicate(job)

    def add_many(self, jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
        """Insert every job as version 1 in one transaction: all of them, or none."""
        batch = new_batch(jobs)
        if not batch:
            return []
        try:
            with self._cursor(transaction=True) as cur:
                cur.executemany(ADD, [job_params(job, 1) for job in batch], returning=True)
                stored: list[RemoteJob] = []
                for job in batch:
                    row = cur.fetchone()
                    if row is None:  # ON CONFLICT (id) DO NOTHING: raising rolls all back
                        raise JobAlreadyExists(job.id)
                    stored.append(job_from_row(row))
                    cur.nextset()
                return stored
        except Exception as exc:
            if not key_violation(exc):
                raise
        for job in batch:  # which job's key is held (none was stored)
            holder = self._key_holder(job.unique_key) if lifecycle.holds_key(job) else None
            if holder is not None:
                raise DuplicateJob(job.id, job.unique_key or "", holder.id) from None
        raise DuplicateJob(batch[0].id, "?", "?")

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        """Insert or replace ``job`` as the stored version + 1, conditionally when
        ``expected_version`` is given."""
        validate_job_id(job.id)
        try:
            return self._save(job, expected_version)
        except Exception as exc:
            if key_violation(exc):
                raise self._duplicate(job) from None
            raise

    def _save(self, job: RemoteJob, expected_version: int | None) -> RemoteJob:
        with self._cursor(job.id) as cur:
            if expected_version is None:
                row = cur.execute(UPSERT, job_params(job, 1)).fetchone()
            else:
                row = None
                if expected_version == 0:  # "must not exist yet"...
                    row = cur.execute(ADD, job_params(job, 1)).fetchone()
                if row is None:  # ... or exist at version 0 (copied from the older design)
                    row = cur.execute(
                        UPDATE_IF_VERSION,
                        [*update_params(job, expected_version + 1), expected_version],
                    ).fetchone()
            if row is None:
                found = cur.execute(
                    "SELECT version FROM remote_jobs WHERE id = %s", (job.id,)
                ).fetchone()
                raise VersionConflict(job.id, expected_version or 0, found[0] if found else 0)
        return job_from_row(row)

    def delete(self, job_id: str) -> bool:
        """Remove the job; False if there was none."""
        validate_job_id(job_id)
        with self._cursor(job_id) as cur:
            cur.execute("DELETE FROM remote_jobs WHERE id = %s", (job_id,))
            return cur.rowcount > 0

    def import_jobs(self, jobs: Iterable[RemoteJob]) -> ImportResult:
        """Store jobs exactly as given, versions and timestamps included, in one
        transaction (for ``hybridstore.transfer.copy_jobs``).

        What each job does follows ``repository.import_action``: absent → inserted, identical
        → untouched, lower stored version → replaced, otherwise kept as a conflict.
        """
        import psycopg

        batch = {job.id: job for job in jobs}  # the last of a repeated id wins
        for job_id in batch:
            validate_job_id(job_id)
        for tries_left in (2, 1, 0):
            try:
                return self._import_batch(batch)
            except psycopg.errors.UniqueViolation:
                # Someone inserted one of these ids between our SELECT and INSERT; the
                # next try locks and compares it like any other stored job.
                if not tries_left:
                    raise
        raise AssertionError("unreachable")

    def _import_batch(self, batch: dict[str, RemoteJob]) -> ImportResult:
        with self._cursor(transaction=True) as cur:
            return import_batch(cur, batch)

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> RemoteJob | None:
        """The job, or None."""
        validate_job_id(job_id)
        with self._cursor(job_id) as cur:
            row = cur.execute(
                f"SELECT {FIELDS} FROM remote_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        return job_from_row(row) if row is not None else None

    def _select(self, where: str, params: Sequence[Any], tail: str = "") -> list[RemoteJob]:
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT {FIELDS} FROM remote_jobs{where}{ORDER}{tail}", params
            ).fetchall()
        return [job_from_row(row) for row in rows]

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
        """Jobs matching every given filter, ordered by ``created_at`` then id (bytes)."""
        check_page(limit, offset)
        where, params = where_sql(filter_values(status, content_type, worker_id, ingestion_task_id))
        return self._select(where, [*params, limit, offset], " LIMIT %s OFFSET %s")

    def count(
        self,
        *,
        status: Filter | JobStatus = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
    ) -> int:
        """How many jobs ``find`` would return without a limit."""
        where, params = where_sql(filter_values(status, content_type, worker_id, ingestion_task_id))
        with self._cursor() as cur:
            row = cur.execute(f"SELECT count(*) FROM remote_jobs{where}", params).fetchone()
        assert row is not None
        return int(row[0])

    def find_by_ingestion_task(self, task_id: str) -> RemoteJob | None:
        """The newest job of an ingestion task, or None."""
        if not isinstance(task_id, str):
            raise InvalidArgument("ingestion task id must be a string")
        with self._cursor() as cur:
            row = cur.execute(
                f"SELECT {FIELDS} FROM remote_jobs WHERE ingestion_task_id = %s"
                ' ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT 1',
                (task_id,),
            ).fetchone()
        return job_from_row(row) if row is not None else None

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        """Pending or processing jobs whose ``timeout_at`` is before ``now`` (default: the
        server's clock)."""
        return self._select(
            f" WHERE status = ANY(%s::text[]) AND timeout_at < {NOW}", (ACTIVE, now)
        )

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        """Terminal jobs finished (``completed_at``, else the last write) before
        ``now - days_old``."""
        return self._select(
            f" WHERE status = ANY(%s::text[]) AND {FINISHED} < {NOW} - %s::interval",
            (TERMINAL, now, timedelta(days=days_old)),
        )

    def statistics(self) -> dict[str, Any]:
        """Counts by status (all six), content type and worker; total; the table's size on
        disk (rows, indexes and TOAST) as ``storage_size_mb``."""
        with self._cursor() as cur:
            rows = cur.execute(STATISTICS).fetchall()
            size_row = cur.execute(TABLE_SIZE).fetchone()
        assert size_row is not None
        return statistics_from_rows(rows, int(size_row[0]))

    # -- lifecycle ------------------------------------------------------------------------

    def _change(self, job_id: str, change: Callable[[RemoteJob, datetime], RemoteJob]) -> RemoteJob:
        """Lock one job's row, apply a lifecycle rule at the server's now, write it back."""
        validate_job_id(job_id)
        with self._cursor(job_id, transaction=True) as cur:
            row = cur.execute(LOCK_ONE, (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = job_from_row(row[1:])
            return write_job(cur, change(current, row[0]), current.version + 1)

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> RemoteJob | None:
        """The first ready job in claim order, claimed for ``worker_id``; None if none."""
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
        """Up to ``n`` ready jobs in claim order, claimed in one transaction: abandoned
        leases taken back first, then candidates locked with ``SKIP LOCKED``."""
        wanted = claim_arguments(worker_id, content_types, lease_seconds)
        lifecycle.check_claim_count(n)
        if n == 0 or wanted == []:
            return []
        types = sorted(set(wanted)) if wanted is not None else None
        with self._cursor(transaction=True) as cur:
            return claim_rows(cur, worker_id, n, types, lease_seconds)

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
        """Extend the holder's lease to now + ``lease_seconds``; record the progress."""
        return self._change(
            job_id,
            lambda job, now: lifecycle.heartbeat(
                job, worker_id, lease_seconds, attempt, now, progress, message
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
        """processing → completed, storing ``result_data``."""
        return self._change(
            job_id, lambda job, now: lifecycle.complete(job, worker_id, result_data, attempt, now)
        )

    def complete_many(
        self,
        worker_id: str,
        results: Mapping[str, dict[str, Any] | None],
        *,
        attempts: Mapping[str, int] | None = None,
    ) -> list[RemoteJob]:
        """Several jobs processing → completed in one transaction, all or none."""
        batch = completions(worker_id, results, attempts)
        if not batch:
            return []
        with self._cursor(transaction=True) as cur:
            return complete_rows(cur, worker_id, batch)

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error_message: str,
        *,
        attempt: int | None = None,
        retry_in: float | None = None,
    ) -> RemoteJob:
        """processing → pending while retries remain (retry_count + 1, after the back-off),
        else failed."""
        return self._change(
            job_id,
            lambda job, now: lifecycle.fail(job, worker_id, error_message, attempt, now, retry_in),
        )

    def cancel(self, job_id: str) -> RemoteJob:
        """pending or processing → cancelled."""
        return self._change(job_id, lambda job, now: lifecycle.cancel(job, now))

    def release(self, job_id: str, worker_id: str, *, attempt: int | None = None) -> RemoteJob:
        """processing → pending, ready at once, no retry used (the holder gives it back)."""
        return self._change(
            job_id, lambda job, now: lifecycle.release(job, worker_id, attempt, now)
        )

    def requeue(self, job_id: str, *, reset_retries: bool = False) -> RemoteJob:
        """failed, timeout or cancelled → pending, ready at once."""
        try:
            return self._change(job_id, lambda job, now: lifecycle.requeue(job, reset_retries, now))
        except Exception as exc:
            if not key_violation(exc):
                raise
            job = self.get(job_id)
            assert job is not None
            raise self._duplicate(job) from None

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        """Processing jobs past their lease → pending (retries left) or timeout, in one
        transaction. Rows another transaction holds (a heartbeat in flight) are skipped and
        judged on the next call."""
        with self._cursor(transaction=True) as cur:
            return expire_rows(cur, now)

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        """Delete ``old_jobs(days_old, now)`` in one statement; return how many."""
        with self._cursor() as cur:
            cur.execute(
                f"DELETE FROM remote_jobs WHERE status = ANY(%s::text[])"
                f" AND {FINISHED} < {NOW} - %s::interval",
                (TERMINAL, now, timedelta(days=days_old)),
            )
            return cur.rowcount
