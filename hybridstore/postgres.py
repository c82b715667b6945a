"""``PostgresJobRepository``: the repository contract on PostgreSQL, through psycopg 3.

One row per job in ``remote_jobs``, in whatever schema the connection's ``search_path``
selects (``options=-csearch_path=...`` in the DSN), created and migrated on first use from
the numbered files in ``migrations/postgres/`` (recorded in ``schema_migrations``).

How the contract maps onto the database:

* Every call is one transaction on a pooled connection. Lifecycle calls lock the row
  (``SELECT ... FOR UPDATE``), apply the rule from ``hybridstore.lifecycle`` and write the
  result back before committing; ``claim_next`` adds ``SKIP LOCKED`` so concurrent workers
  on any number of machines pass each other instead of queueing on one row.
* ``save(expected_version=...)`` is a conditional ``UPDATE ... WHERE version = %s`` (or an
  ``INSERT ... ON CONFLICT DO NOTHING`` for 0): the check and the write are one statement.
* Times default to the database server's clock (``statement_timestamp()``), not the
  caller's: workers on several machines then agree on when a lease ends.
* Ids order in byte order: the id column is ``COLLATE "C"`` and every ``ORDER BY`` says so.

psycopg is imported by the constructor, so ``import hybridstore.postgres`` works without it.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import lifecycle, pgadopt
from .config import describe_target
from .errors import (
    BackendUnavailable,
    HybridStoreError,
    InvalidArgument,
    JobAlreadyExists,
    JobNotFound,
    SchemaError,
    StoreNotFound,
    VersionConflict,
)
from .migrations import Migration, load_migrations
from .model import (
    ACTIVE_STATUSES,
    TERMINAL_STATUSES,
    JobStatus,
    RemoteJob,
    validate_job_id,
)
from .repository import Filter, check_page, claim_arguments, filter_values
from .transfer import ImportResult, import_action

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow
    from psycopg_pool import ConnectionPool

    Connection = psycopg.Connection[TupleRow]
    Cursor = psycopg.Cursor[TupleRow]

__all__ = [
    "INIT_COMMAND",
    "INSTALL_HINT",
    "PostgresJobRepository",
    "apply_migrations",
    "connect",
    "database_missing",
    "describe_dsn",
    "schema_state",
]

INSTALL_HINT = "pip install 'hybridstore[postgres]'"
# What creates a database's schema (and the database itself when the server allows it).
INIT_COMMAND = "hybridstore db init"
_MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist')

# Pools left behind in a forked child: closing them there would end the parent's
# sessions (libpq sends Terminate on the shared sockets), so they are kept, never touched.
_ABANDONED: list[object] = []

COLUMNS = (
    "id",
    "ingestion_task_id",
    "source_file_path",
    "content_type",
    "task_options",
    "status",
    "worker_id",
    "created_at",
    "started_at",
    "completed_at",
    "timeout_at",
    "error_message",
    "result_data",
    "retry_count",
    "max_retries",
    "version",
    "attempt",
)
_JSON_COLUMNS = frozenset({"task_options", "result_data"})
_FIELDS = ", ".join(COLUMNS)
_VALUES = ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in COLUMNS)
_RETURNING = f" RETURNING {_FIELDS}"
# Byte order for ids, spelled out although the column is already COLLATE "C", so a
# column redefined later cannot silently change the contract's order.
_ORDER = ' ORDER BY created_at, id COLLATE "C"'

_INSERT = (
    f"INSERT INTO remote_jobs ({_FIELDS}, updated_at) VALUES ({_VALUES}, statement_timestamp())"
)
_ADD = _INSERT + " ON CONFLICT (id) DO NOTHING" + _RETURNING
# save() without expected_version: one statement, so two savers cannot both read version n
# and both store n + 1.
_UPSERT = (
    _INSERT
    + " ON CONFLICT (id) DO UPDATE SET "
    + ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS if c not in ("id", "version"))
    + ", version = remote_jobs.version + 1, updated_at = EXCLUDED.updated_at"
    + _RETURNING
)
_SET = (
    "UPDATE remote_jobs SET ("
    + ", ".join(COLUMNS[1:])
    + ", updated_at) = ("
    + ", ".join("%s::jsonb" if c in _JSON_COLUMNS else "%s" for c in COLUMNS[1:])
    + ", statement_timestamp()) WHERE id = %s"
)
_UPDATE = _SET + _RETURNING
_UPDATE_IF_VERSION = _SET + " AND version = %s" + _RETURNING
_LOCK_ONE = f"SELECT statement_timestamp(), {_FIELDS} FROM remote_jobs WHERE id = %s FOR UPDATE"
# The "now" of queries that take an optional one: the caller's, else the server's.
_NOW = "coalesce(%s::timestamptz, statement_timestamp())"
_FINISHED = "coalesce(completed_at, updated_at)"  # matches the remote_jobs_status_finished index

_ACTIVE = sorted(s.value for s in ACTIVE_STATUSES)
_TERMINAL = sorted(s.value for s in TERMINAL_STATUSES)


# -- connecting ---------------------------------------------------------------------------


def _import_psycopg() -> None:
    """Raise ``BackendUnavailable`` naming the extra unless psycopg and its pool import."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"the PostgreSQL backend needs psycopg 3 and psycopg_pool ({exc}): {INSTALL_HINT}"
        ) from None


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages and ``repr``."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        info = conninfo_to_dict(dsn)
    except Exception:  # psycopg missing or an unparsable DSN: show it masked by hand
        return describe_target(dsn)
    host = info.get("host") or info.get("hostaddr") or "localhost"
    where = f"{info.get('user') or ''}@{host}:{info.get('port') or 5432}/{info.get('dbname') or ''}"
    options = info.get("options")
    return f"postgresql://{where.lstrip('@')}" + (f" ({options})" if options else "")


def _connect_kwargs(dsn: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    # A server that does not answer should fail the call, not hang it.
    return {} if "connect_timeout" in conninfo_to_dict(dsn) else {"connect_timeout": 10}


def database_missing(error: BaseException) -> bool:
    """True when ``error`` (a failed connection) says the database does not exist."""
    return _MISSING_DATABASE.search(str(error)) is not None


def _configure(conn: Connection) -> None:
    """Session settings of every connection: UTC, so timestamps and day arithmetic are
    plain UTC whatever the server's TimeZone."""
    conn.execute("SET TIME ZONE 'UTC'")
    if not conn.autocommit:
        conn.commit()


def connect(dsn: str, *, autocommit: bool = True) -> Connection:
    """One configured connection (not pooled), for schema work and administration.

    ``BackendUnavailable`` (naming the server, not the password) when it cannot connect.
    """
    _import_psycopg()
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **_connect_kwargs(dsn))
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if database_missing(exc):
            reason += f" (create it with '{INIT_COMMAND}', or ask its administrator)"
        raise BackendUnavailable(
            f"cannot connect to PostgreSQL at {describe_dsn(dsn)}: {reason}"
        ) from exc
    except psycopg.ProgrammingError as exc:  # a malformed DSN
        raise InvalidArgument(f"invalid PostgreSQL DSN {describe_dsn(dsn)}: {exc}") from exc
    _configure(conn)
    return conn


# -- the schema ---------------------------------------------------------------------------


def schema_state(conn: Connection) -> tuple[str, int]:
    """(the schema that ``search_path`` selects, its applied migration version; 0 if none).

    ``SchemaError`` if ``search_path`` names no existing schema, or if a table called
    ``schema_migrations`` there is not hybridstore's.
    """
    import psycopg
    from psycopg import sql

    row = conn.execute("SELECT current_schema()").fetchone()
    assert row is not None
    schema = row[0]
    if schema is None:
        raise SchemaError(
            "the connection's search_path names no existing schema:"
            f" create it with '{INIT_COMMAND}'"
        )
    # From pg_class, not to_regclass(): after waiting for the advisory lock, a name lookup
    # without a lock can still answer from this session's stale catalog cache ("absent")
    # while another session has created and committed the table.
    columns = pgadopt.table_columns(conn, "schema_migrations")
    if not columns:
        return str(schema), 0
    kind = pgadopt.migrations_table_kind(columns)
    if kind != "hybridstore":
        # The older design's record beside its remote_jobs: adopting moves it aside.
        if kind == "older" and pgadopt.find_older_table(conn, str(schema)) is not None:
            return str(schema), 0
        raise SchemaError(
            f"schema {schema!r} holds a schema_migrations table that is not hybridstore's"
            " (use a schema of its own: options=-csearch_path=...)"
        )
    try:
        found = conn.execute(
            sql.SQL("SELECT coalesce(max(version), 0), count(name) FROM {}").format(
                sql.Identifier(schema, "schema_migrations")
            )
        ).fetchone()
    except (psycopg.ProgrammingError, psycopg.DataError) as exc:  # another tool's table
        raise SchemaError(
            f"schema {schema!r} holds a schema_migrations table that is not hybridstore's"
            " (use a schema of its own: options=-csearch_path=...)"
        ) from exc
    assert found is not None
    return str(schema), int(found[0])


def _refuse_newer(schema: str, version: int, known: list[Migration]) -> None:
    if version > len(known):
        raise SchemaError(
            f"schema {schema!r}: database schema version {version} is newer than this"
            f" hybridstore understands ({len(known)}); upgrade hybridstore"
        )


def apply_migrations(conn: Connection, *, adopted: list[str] | None = None) -> list[Migration]:
    """Bring the schema up to date; return the migrations applied (none if current).

    ``conn`` must be in autocommit mode. All pending migrations apply in one transaction
    (PostgreSQL DDL is transactional) under an advisory lock on the schema, so concurrent
    first users neither race nor see a half-built schema. ``SchemaError`` if the database
    is newer than this code, or holds a ``remote_jobs`` that is not hybridstore's.

    A ``remote_jobs`` of the older design (no migration recorded) is adopted in the same
    transaction (``hybridstore.pgadopt``): converted in place into what 0001 creates, then
    0001 is recorded as applied. One line per thing adoption did is appended to
    ``adopted`` when given (and logged).
    """
    known = load_migrations("postgres")
    schema, version = schema_state(conn)
    _refuse_newer(schema, version, known)
    if version == len(known):
        return []  # the common case: no lock taken
    done: list[Migration] = []
    with conn.transaction():
        conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext('hybridstore'), hashtext(current_schema()))"
        )
        # Read again under the lock: another process may have migrated while we waited.
        schema, version = schema_state(conn)
        older = pgadopt.find_older_table(conn, schema) if version == 0 else None
        if older is not None:
            notes = pgadopt.adopt(conn, older, known[0].sql)
            if adopted is not None:
                adopted.extend(notes)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
            " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        if older is not None:
            done.append(known[0])
            _record(conn, known[0])
        schema, version = schema_state(conn)
        _refuse_newer(schema, version, known)
        for migration in known[version:]:
            _run_migration(conn, schema, migration)
            _record(conn, migration)
            done.append(migration)
    return done


def _run_migration(conn: Connection, schema: str, migration: Migration) -> None:
    """Run one migration's SQL; ``SchemaError`` naming its file if the database refuses it
    (the caller's transaction then rolls every pending migration back)."""
    import psycopg

    try:
        conn.execute(migration.sql)
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise SchemaError(
            f"schema {schema!r}: migration {migration.version:04d}_{migration.name}.sql failed"
            f" ({type(exc).__name__}: {first}); nothing was applied"
        ) from exc


def require_schema(conn: Connection, target: str) -> None:
    """``StoreNotFound`` unless the connection's schema holds hybridstore's tables (at any
    version). Reads only: for callers that must not create a schema."""
    row = conn.execute("SELECT current_schema()").fetchone()
    if row is None or row[0] is None:
        raise StoreNotFound(
            target,
            INIT_COMMAND,
            f"{target}: the schema its search_path names does not exist",
        )
    schema, version = schema_state(conn)
    if version == 0:
        older = pgadopt.find_older_table(conn, schema) is not None
        what = (
            "the older design's remote_jobs, not adopted yet" if older else "no hybridstore tables"
        )
        raise StoreNotFound(target, INIT_COMMAND, f"{target}: schema {schema!r} holds {what}")


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )


# -- rows ---------------------------------------------------------------------------------


def _json_text(value: Any) -> str | None:
    """JSON for a JSONB column that comes back exactly as it went in.

    JSONB stores numbers as numeric and prints ``1e+20`` back as ``100000000000000000000``,
    which would return an integral float as an int; written with a ``.0`` it stays a float.
    """
    if value is None:
        return None
    text = json.dumps(value, ensure_ascii=False, allow_nan=False)
    # Only a float printed with a positive exponent needs the slow path.
    return text if "e+" not in text else _json_exact(value)


def _json_exact(value: Any) -> str:
    if type(value) is float:
        return f"{int(value)}.0" if value.is_integer() else json.dumps(value)
    if type(value) is dict:
        items = (f"{json.dumps(k, ensure_ascii=False)}:{_json_exact(v)}" for k, v in value.items())
        return "{" + ",".join(items) + "}"
    if type(value) is list:
        return "[" + ",".join(_json_exact(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False)


def _params(job: RemoteJob, version: int) -> list[Any]:
    """The values of ``COLUMNS`` for ``job`` stored as ``version``."""
    return [
        job.id,
        job.ingestion_task_id,
        job.source_file_path,
        job.content_type,
        _json_text(job.task_options),
        job.status.value,
        job.worker_id,
        job.created_at,
        job.started_at,
        job.completed_at,
        job.timeout_at,
        job.error_message,
        _json_text(job.result_data),
        job.retry_count,
        job.max_retries,
        version,
        job.attempt,
    ]


def _update_params(job: RemoteJob, version: int) -> list[Any]:
    values = _params(job, version)
    return [*values[1:], values[0]]  # SET everything but the id, then WHERE id = ...


def _job(row: Sequence[Any]) -> RemoteJob:
    return RemoteJob.model_validate(dict(zip(COLUMNS, row, strict=True)))


def _where(filters: dict[str, list[str]]) -> tuple[str, list[Any]]:
    """SQL for ``repository.filter_values`` output: AND of "any of" per field."""
    parts: list[str] = []
    params: list[Any] = []
    for column, values in filters.items():
        assert column in ("status", "content_type", "worker_id", "ingestion_task_id")
        if not values:
            parts.append("false")
        elif len(values) == 1:
            # Plain equality gives the planner the tightest index range.
            parts.append(f"{column} = %s")
            params.append(values[0])
        else:
            parts.append(f"{column} = ANY(%s::text[])")
            params.append(values)
    return (" WHERE " + " AND ".join(parts) if parts else ""), params


def _is_connection_error(exc: Exception) -> bool:
    sqlstate = getattr(exc, "sqlstate", None)
    # No SQLSTATE: the client lost the server. 08: connection exception. 57P: shutdown.
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


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
        _import_psycopg()
        if not isinstance(dsn, str):
            raise InvalidArgument(f"dsn must be a string, got {type(dsn).__name__}")
        self.dsn = dsn
        self._target = describe_dsn(dsn)
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
            kwargs={**_connect_kwargs(self.dsn), "autocommit": True},
            configure=_configure,
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
            if _is_connection_error(exc):
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

    def add(self, job: RemoteJob) -> RemoteJob:
        """Insert ``job`` as version 1; ``JobAlreadyExists`` if its id is taken."""
        validate_job_id(job.id)
        with self._cursor(job.id) as cur:
            row = cur.execute(_ADD, _params(job, 1)).fetchone()
        if row is None:
            raise JobAlreadyExists(job.id)
        return _job(row)

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        """Insert or replace ``job`` as the stored version + 1, conditionally when
        ``expected_version`` is given."""
        validate_job_id(job.id)
        with self._cursor(job.id) as cur:
            if expected_version is None:
                row = cur.execute(_UPSERT, _params(job, 1)).fetchone()
            else:
                row = None
                if expected_version == 0:  # "must not exist yet"...
                    row = cur.execute(_ADD, _params(job, 1)).fetchone()
                if row is None:  # ... or exist at version 0 (copied from the older design)
                    row = cur.execute(
                        _UPDATE_IF_VERSION,
                        [*_update_params(job, expected_version + 1), expected_version],
                    ).fetchone()
            if row is None:
                found = cur.execute(
                    "SELECT version FROM remote_jobs WHERE id = %s", (job.id,)
                ).fetchone()
                raise VersionConflict(job.id, expected_version or 0, found[0] if found else 0)
        return _job(row)

    def delete(self, job_id: str) -> bool:
        """Remove the job; False if there was none."""
        validate_job_id(job_id)
        with self._cursor(job_id) as cur:
            cur.execute("DELETE FROM remote_jobs WHERE id = %s", (job_id,))
            return cur.rowcount > 0

    def import_jobs(self, jobs: Iterable[RemoteJob]) -> ImportResult:
        """Store jobs exactly as given, versions and timestamps included, in one
        transaction (for ``hybridstore.transfer.copy_jobs``).

        What each job does follows ``transfer.import_action``: absent → inserted, identical
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
        result = ImportResult()
        with self._cursor(transaction=True) as cur:
            rows = cur.execute(
                f"SELECT {_FIELDS} FROM remote_jobs WHERE id = ANY(%s::text[]) FOR UPDATE",
                (list(batch),),
            ).fetchall()
            stored = {job.id: job for job in map(_job, rows)}
            inserts: list[list[Any]] = []
            updates: list[list[Any]] = []
            for job_id, job in batch.items():
                action = import_action(stored.get(job_id), job)
                if action == "insert":
                    inserts.append(_params(job, job.version))
                elif action == "replace":
                    updates.append(_update_params(job, job.version))
                result.record(job_id, action)
            if inserts:
                cur.executemany(_INSERT, inserts)
            if updates:
                cur.executemany(_SET, updates)
        return result

    # -- reads ----------------------------------------------------------------------------

    def get(self, job_id: str) -> RemoteJob | None:
        """The job, or None."""
        validate_job_id(job_id)
        with self._cursor(job_id) as cur:
            row = cur.execute(
                f"SELECT {_FIELDS} FROM remote_jobs WHERE id = %s", (job_id,)
            ).fetchone()
        return _job(row) if row is not None else None

    def _select(self, where: str, params: Sequence[Any], tail: str = "") -> list[RemoteJob]:
        with self._cursor() as cur:
            rows = cur.execute(
                f"SELECT {_FIELDS} FROM remote_jobs{where}{_ORDER}{tail}", params
            ).fetchall()
        return [_job(row) for row in rows]

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
        where, params = _where(filter_values(status, content_type, worker_id, ingestion_task_id))
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
        where, params = _where(filter_values(status, content_type, worker_id, ingestion_task_id))
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
                f"SELECT {_FIELDS} FROM remote_jobs WHERE ingestion_task_id = %s"
                ' ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT 1',
                (task_id,),
            ).fetchone()
        return _job(row) if row is not None else None

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        """Pending or processing jobs whose ``timeout_at`` is before ``now`` (default: the
        server's clock)."""
        return self._select(
            f" WHERE status = ANY(%s::text[]) AND timeout_at < {_NOW}", (_ACTIVE, now)
        )

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        """Terminal jobs finished (``completed_at``, else the last write) before
        ``now - days_old``."""
        return self._select(
            f" WHERE status = ANY(%s::text[]) AND {_FINISHED} < {_NOW} - %s::interval",
            (_TERMINAL, now, timedelta(days=days_old)),
        )

    def statistics(self) -> dict[str, Any]:
        """Counts by status (all six), content type and worker; total; the table's size on
        disk (rows, indexes and TOAST) as ``storage_size_mb``."""
        with self._cursor() as cur:
            # One scan for every count: GROUPING() tells which grouping set a row is from.
            rows = cur.execute(
                "SELECT GROUPING(status, content_type, worker_id), status, content_type,"
                " worker_id, count(*) FROM remote_jobs"
                " GROUP BY GROUPING SETS ((status), (content_type), (worker_id), ())"
            ).fetchall()
            size_row = cur.execute(
                "SELECT pg_total_relation_size("
                "(quote_ident(current_schema()) || '.remote_jobs')::regclass)"
            ).fetchone()
        assert size_row is not None
        total = 0
        by_status: dict[str, int] = {}
        by_content: dict[str, int] = {}
        by_worker: dict[str, int] = {}
        for grouping, status, content_type, worker_id, n in rows:
            if grouping == 0b011:
                by_status[status] = n
            elif grouping == 0b101:
                by_content[content_type] = n
            elif grouping == 0b110:
                if worker_id is not None:
                    by_worker[worker_id] = n
            else:
                total = n
        return {
            "total_jobs": total,
            "status_counts": {s.value: by_status.get(s.value, 0) for s in JobStatus},
            "content_type_counts": dict(sorted(by_content.items())),
            "worker_counts": dict(sorted(by_worker.items())),
            "storage_size_mb": round(int(size_row[0]) / (1024 * 1024), 2),
        }

    # -- lifecycle ------------------------------------------------------------------------

    def _change(self, job_id: str, change: Callable[[RemoteJob, datetime], RemoteJob]) -> RemoteJob:
        """Lock one job's row, apply a lifecycle rule at the server's now, write it back."""
        validate_job_id(job_id)
        with self._cursor(job_id, transaction=True) as cur:
            row = cur.execute(_LOCK_ONE, (job_id,)).fetchone()
            if row is None:
                raise JobNotFound(job_id)
            current = _job(row[1:])
            return self._write(cur, change(current, row[0]), current.version + 1)

    @staticmethod
    def _write(cur: Cursor, job: RemoteJob, version: int) -> RemoteJob:
        row = cur.execute(_UPDATE, _update_params(job, version)).fetchone()
        assert row is not None, "the row is locked by this transaction"
        return _job(row)

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
    ) -> RemoteJob | None:
        """Lock the oldest pending job no one else has locked (``SKIP LOCKED``), move it to
        processing for ``worker_id``, commit; None when nothing is waiting."""
        wanted = claim_arguments(worker_id, content_types, lease_seconds)
        where, params = _where(filter_values(JobStatus.PENDING, wanted))
        with self._cursor(transaction=True) as cur:
            row = cur.execute(
                f"SELECT statement_timestamp(), {_FIELDS} FROM remote_jobs{where}{_ORDER}"
                " LIMIT 1 FOR UPDATE SKIP LOCKED",
                params,
            ).fetchone()
            if row is None:
                return None
            current = _job(row[1:])
            claimed = lifecycle.claim(current, worker_id, lease_seconds, row[0])
            return self._write(cur, claimed, current.version + 1)

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        lease_seconds: float = 300,
        attempt: int | None = None,
    ) -> RemoteJob:
        """Extend the holder's lease to now + ``lease_seconds``."""
        return self._change(
            job_id,
            lambda job, now: lifecycle.heartbeat(job, worker_id, lease_seconds, attempt, now),
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

    def fail(
        self, job_id: str, worker_id: str, error_message: str, *, attempt: int | None = None
    ) -> RemoteJob:
        """processing → pending while retries remain (retry_count + 1), else failed."""
        return self._change(
            job_id, lambda job, now: lifecycle.fail(job, worker_id, error_message, attempt, now)
        )

    def cancel(self, job_id: str) -> RemoteJob:
        """pending or processing → cancelled."""
        return self._change(job_id, lambda job, now: lifecycle.cancel(job, now))

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        """Processing jobs past their lease → pending (retries left) or timeout, in one
        transaction. Rows another transaction holds (a heartbeat in flight) are skipped and
        judged on the next call."""
        changed = []
        with self._cursor(transaction=True) as cur:
            rows = cur.execute(
                f"SELECT {_NOW}, {_FIELDS} FROM remote_jobs"
                f" WHERE status = 'processing' AND timeout_at < {_NOW}"
                ' ORDER BY timeout_at, id COLLATE "C" FOR UPDATE SKIP LOCKED',
                (now, now),
            ).fetchall()
            for row in rows:
                current = _job(row[1:])
                if lifecycle.is_overdue(current, row[0]):
                    new = lifecycle.expire(current, row[0])
                    changed.append(self._write(cur, new, current.version + 1))
        return changed

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        """Delete ``old_jobs(days_old, now)`` in one statement; return how many."""
        with self._cursor() as cur:
            cur.execute(
                f"DELETE FROM remote_jobs WHERE status = ANY(%s::text[])"
                f" AND {_FINISHED} < {_NOW} - %s::interval",
                (_TERMINAL, now, timedelta(days=days_old)),
            )
            return cur.rowcount
