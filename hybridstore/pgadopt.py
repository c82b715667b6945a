"""Taking over a database of the older design: its ``remote_jobs`` table, converted in place.

The older design (a SQLAlchemy model and an init script) created ``remote_jobs`` with a UUID
id, timestamps without time zone (meaning UTC), ``VARCHAR`` columns and no ``version`` or
``attempt``; some deployments also have its ``schema_migrations`` (``version VARCHAR``,
``description``). That is the database the older design's users have, so instead of failing
on it, ``pgschema.apply_migrations`` adopts it when no hybridstore migration is recorded:
in its one transaction, under its advisory lock, before migration 0001 is recorded.

What adoption does (``adopt``):

* The older ``schema_migrations`` (any table of that name whose columns are not
  hybridstore's but have the older design's ``version`` text and ``description``) is
  renamed aside to ``schema_migrations_legacy`` (``_2``, ``_3``... if taken), with its
  indexes, and logged. Another tool's ``schema_migrations`` is never touched: that stays a
  ``SchemaError``, as before.
* The rows are checked first; a row hybridstore could not read back (unknown status,
  invalid id, negative counter, missing required value, JSON that is not an object) makes it
  a ``SchemaError`` naming the table and the problem, before anything changes.
* The table is altered, never copied (so its owner, grants and triggers stay): the id becomes
  ``text COLLATE "C"`` (``uuid::text``), naive timestamps ``timestamptz`` read as UTC
  (``AT TIME ZONE 'UTC'``), strings ``text``, JSON ``jsonb``. A JSON ``null`` in
  ``result_data`` becomes SQL NULL and in ``task_options`` (or a NULL there) ``{}``: the
  same values the older model meant, in the form hybridstore reads.
* Added: ``version`` = 1 for every row (version counts saves, and a stored row was saved at
  least once; 1 is also what 0001 defaults to, and in PostgreSQL a conditional save with
  ``expected_version=0`` means "must not exist", so a row at version 0 could never be
  updated by ``save(job, expected_version=job.version)``); ``attempt`` = 0 (no claim by
  hybridstore yet: the next claim is attempt 1); ``updated_at`` = the adoption time (the
  older rows do not record their last write, and the adoption rewrites them: a terminal job
  without ``completed_at`` then ages from the adoption, later than perhaps due, never
  earlier).
* The older table's plain indexes and CHECK constraints are dropped and replaced by exactly
  those 0001 creates (the index statements are read from 0001 itself), with 0001's
  defaults, NOT NULLs and CHECK constraint names; the table then is what 0001 would have
  made, and later migrations apply to it as to any other.

A ``remote_jobs`` that is neither hybridstore's nor the older design's raises ``SchemaError``
with one line naming the table, as does any database error during the conversion (which
then rolls back entirely).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import SchemaError
from .logs import get_logger
from .model import JOB_ID_PATTERN, JobStatus

if TYPE_CHECKING:
    from .pgconnect import Connection

__all__ = ["OlderTable", "adopt", "find_older_table", "migrations_table_kind", "table_columns"]

log = get_logger("hybridstore.postgres")

TABLE = "remote_jobs"

_STRING = frozenset({"text", "character varying"})
_ID = _STRING | {"uuid"}
_JSON = frozenset({"jsonb", "json"})
_NAIVE = "timestamp without time zone"
_TIME = frozenset({_NAIVE, "timestamp with time zone"})
_INTEGER = frozenset({"integer", "smallint", "bigint"})

# The older design's columns and the types each may have there.
OLDER_COLUMNS: dict[str, frozenset[str]] = {
    "id": _ID,
    "ingestion_task_id": _STRING,
    "source_file_path": _STRING,
    "content_type": _STRING,
    "task_options": _JSON,
    "status": _STRING,
    "worker_id": _STRING,
    "created_at": _TIME,
    "started_at": _TIME,
    "completed_at": _TIME,
    "error_message": _STRING,
    "result_data": _JSON,
    "retry_count": _INTEGER,
    "max_retries": _INTEGER,
    "timeout_at": _TIME,
}
# What hybridstore adds; finding them on a table with no migration recorded is not the
# older design.
ADDED_COLUMNS = ("version", "attempt", "updated_at")

_STATUSES = ", ".join(f"'{s.value}'" for s in JobStatus)
# Each older column as 0001 creates it: (NOT NULL, default).
_TARGET: dict[str, tuple[bool, str | None]] = {
    "id": (True, None),
    "ingestion_task_id": (True, None),
    "source_file_path": (True, None),
    "content_type": (True, None),
    "task_options": (True, "'{}'::jsonb"),
    "status": (True, "'pending'"),
    "worker_id": (False, None),
    "created_at": (True, "now()"),
    "started_at": (False, None),
    "completed_at": (False, None),
    "timeout_at": (False, None),
    "error_message": (False, None),
    "result_data": (False, None),
    "retry_count": (True, "0"),
    "max_retries": (True, "3"),
}
# 0001's columns the older table lacks, and its CHECK constraints on the older columns, by
# the names PostgreSQL gives a column constraint in CREATE TABLE.
_ADD_COLUMNS = (
    "ADD COLUMN version BIGINT NOT NULL DEFAULT 1"
    " CONSTRAINT remote_jobs_version_check CHECK (version >= 0)",
    "ADD COLUMN attempt BIGINT NOT NULL DEFAULT 0"
    " CONSTRAINT remote_jobs_attempt_check CHECK (attempt >= 0)",
    "ADD COLUMN updated_at TIMESTAMPTZ NOT NULL DEFAULT now()",
)
_ADD_CHECKS = (
    f"ADD CONSTRAINT remote_jobs_status_check CHECK (status IN ({_STATUSES}))",
    "ADD CONSTRAINT remote_jobs_retry_count_check CHECK (retry_count >= 0)",
    "ADD CONSTRAINT remote_jobs_max_retries_check CHECK (max_retries >= 0)",
)
_REQUIRED = [name for name, (not_null, _) in _TARGET.items() if not_null and name != "task_options"]


@dataclass(frozen=True)
class OlderTable:
    """The older design's ``remote_jobs`` found in ``schema``."""

    schema: str
    oid: int
    columns: dict[str, str]  # name -> type (format_type, without modifiers)
    has_primary_key: bool


def _relation(conn: Connection, name: str) -> tuple[int, str] | None:
    """(oid, relkind) of ``name`` in the current schema, or None."""
    row = conn.execute(
        "SELECT c.oid::bigint, c.relkind::text FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = %s",
        (name,),
    ).fetchone()
    return (int(row[0]), str(row[1])) if row is not None else None


def _columns(conn: Connection, oid: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, format_type(atttypid, NULL) FROM pg_attribute"
        " WHERE attrelid = %s::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        (oid,),
    ).fetchall()
    return {str(name): str(kind) for name, kind in rows}


def table_columns(conn: Connection, name: str) -> dict[str, str]:
    """The columns (name -> type) of relation ``name`` in the current schema; empty if
    there is none. One round trip: ``schema_state`` asks on every opening."""
    rows = conn.execute(
        "SELECT a.attname, format_type(a.atttypid, NULL) FROM pg_attribute a"
        " JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = current_schema() AND c.relname = %s"
        " AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
        (name,),
    ).fetchall()
    return {str(column): str(kind) for column, kind in rows}


def migrations_table_kind(columns: dict[str, str]) -> str:
    """Whose ``schema_migrations`` has these columns: "hybridstore", "older" or "other"."""
    if columns.get("version") in _INTEGER and "name" in columns:
        return "hybridstore"
    if columns.get("version") in _STRING and "description" in columns:
        return "older"
    return "other"


def _refuse(schema: str, reason: str) -> SchemaError:
    return SchemaError(
        f"schema {schema!r}: table {TABLE} is neither hybridstore's nor the older design's"
        f" ({reason}); move it aside or use another schema (options=-csearch_path=...)"
    )


def find_older_table(conn: Connection, schema: str) -> OlderTable | None:
    """The older design's ``remote_jobs`` in the current schema; None if there is no
    ``remote_jobs``. Call only when no hybridstore migration is recorded: any other
    ``remote_jobs`` is then a ``SchemaError`` naming the table."""
    found = _relation(conn, TABLE)
    if found is None:
        return None
    oid, kind = found
    if kind != "r":
        raise _refuse(schema, "it is not a plain table")
    columns = _columns(conn, oid)
    if all(name in columns for name in ADDED_COLUMNS):
        raise SchemaError(
            f"schema {schema!r}: table {TABLE} has hybridstore's columns but no migration is"
            " recorded in schema_migrations; restore schema_migrations or move the table aside"
        )
    missing = [name for name in OLDER_COLUMNS if name not in columns]
    if missing:
        raise _refuse(schema, "no column " + ", ".join(missing))
    extra = [name for name in columns if name not in OLDER_COLUMNS]
    if extra:
        raise _refuse(schema, "unexpected column " + ", ".join(extra))
    for name, allowed in OLDER_COLUMNS.items():
        if columns[name] not in allowed:
            raise _refuse(schema, f"column {name} is {columns[name]}")
    keys = conn.execute(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = %s::oid AND contype = 'p'",
        (oid,),
    ).fetchall()
    if keys and keys[0][0] != "PRIMARY KEY (id)":
        raise _refuse(schema, f"its primary key is not the id but {keys[0][0]}")
    return OlderTable(schema, oid, columns, bool(keys))


def _check_rows(conn: Connection, older: OlderTable) -> int:
    """How many jobs the table holds; ``SchemaError`` naming every kind of row
    hybridstore could not read back."""
    null_required = " OR ".join(f"{name} IS NULL" for name in _REQUIRED)
    row = conn.execute(
        "SELECT count(*),"
        f" count(*) FILTER (WHERE status NOT IN ({_STATUSES})),"
        f" min(status) FILTER (WHERE status NOT IN ({_STATUSES})),"
        " count(*) FILTER (WHERE id::text !~ %s),"
        " count(*) FILTER (WHERE retry_count < 0 OR max_retries < 0),"
        f" count(*) FILTER (WHERE {null_required}),"
        " count(*) FILTER (WHERE jsonb_typeof(task_options::jsonb) NOT IN ('object', 'null')"
        "   OR jsonb_typeof(result_data::jsonb) NOT IN ('object', 'null'))"
        f" FROM {TABLE}",
        ("^" + JOB_ID_PATTERN.pattern + "$",),
    ).fetchone()
    assert row is not None
    total, bad_status, a_status, bad_id, negative, missing, not_object = row
    problems = []
    if bad_status:
        problems.append(f"{bad_status} with a status hybridstore does not know (e.g. {a_status!r})")
    if bad_id:
        problems.append(f"{bad_id} with an id that is not a valid job id")
    if negative:
        problems.append(f"{negative} with a negative retry_count or max_retries")
    if missing:
        problems.append(f"{missing} missing a required value ({', '.join(_REQUIRED)})")
    if not_object:
        problems.append(f"{not_object} whose task_options or result_data is not a JSON object")
    if problems:
        raise SchemaError(
            f"schema {older.schema!r}: table {TABLE} of the older design cannot be adopted,"
            f" it has jobs hybridstore could not read: {'; '.join(problems)}"
        )
    return int(total)


def _index_statements(migration_sql: str) -> list[str]:
    """The CREATE INDEX statements of a migration (0001), in order."""
    text = re.sub(r"--[^\n]*", "", migration_sql)
    return [
        " ".join(statement.split())
        for statement in text.split(";")
        if re.match(r"\s*CREATE\s+(UNIQUE\s+)?INDEX\b", statement, re.IGNORECASE)
    ]


def _free_name(conn: Connection, base: str) -> str:
    name, n = base, 1
    while _relation(conn, name) is not None:
        n += 1
        name = f"{base}_{n}"
    return name


def _move_older_migrations(conn: Connection, schema: str) -> str | None:
    """Rename the older design's ``schema_migrations`` (and its indexes) aside; the new
    name, or None when there is none."""
    from psycopg import sql

    columns = table_columns(conn, "schema_migrations")
    if not columns or migrations_table_kind(columns) == "hybridstore":
        return None
    if migrations_table_kind(columns) != "older":  # schema_state refuses these first
        raise SchemaError(
            f"schema {schema!r} holds a schema_migrations table that is not hybridstore's"
        )
    found = _relation(conn, "schema_migrations")
    assert found is not None
    aside = _free_name(conn, "schema_migrations_legacy")
    indexes = conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::oid",
        (found[0],),
    ).fetchall()
    conn.execute(
        sql.SQL("ALTER TABLE schema_migrations RENAME TO {}").format(sql.Identifier(aside))
    )
    for (index,) in indexes:
        if str(index).startswith("schema_migrations"):
            renamed = _free_name(conn, aside + str(index)[len("schema_migrations") :])
            conn.execute(
                sql.SQL("ALTER INDEX {} RENAME TO {}").format(
                    sql.Identifier(str(index)), sql.Identifier(renamed)
                )
            )
    log.warning(
        "renamed_older_schema_migrations",
        schema=schema,
        table="schema_migrations",
        renamed_to=aside,
        reason="the older design's migration record; hybridstore records its own",
    )
    return aside


def _convert(conn: Connection, older: OlderTable, first_migration_sql: str) -> list[str]:
    """Alter the table into 0001's shape; return the names of the indexes and CHECK
    constraints dropped."""
    from psycopg import sql

    dropped: list[str] = []
    for (name,) in conn.execute(
        "SELECT conname FROM pg_constraint WHERE conrelid = %s::oid AND contype = 'c'",
        (older.oid,),
    ).fetchall():
        conn.execute(
            sql.SQL("ALTER TABLE remote_jobs DROP CONSTRAINT {}").format(sql.Identifier(name))
        )
        dropped.append(str(name))
    # Plain indexes only: those of constraints (the primary key, a unique one) stay.
    for (name,) in conn.execute(
        "SELECT c.relname FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = %s::oid AND NOT EXISTS (SELECT 1 FROM pg_constraint k"
        " WHERE k.conrelid = i.indrelid AND k.conindid = i.indexrelid)",
        (older.oid,),
    ).fetchall():
        conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
        dropped.append(str(name))
    # Defaults go first: the older ones (a UUID generator) would not cast to the new types.
    conn.execute(
        "ALTER TABLE remote_jobs "
        + ", ".join(f"ALTER COLUMN {name} DROP DEFAULT" for name in OLDER_COLUMNS)
    )
    # One rewrite of the table: every type change and the new columns.
    changes = [
        'ALTER COLUMN id TYPE text COLLATE "C" USING id::text',
        "ALTER COLUMN task_options TYPE jsonb"
        " USING coalesce(nullif(task_options::jsonb, 'null'::jsonb), '{}'::jsonb)",
        "ALTER COLUMN result_data TYPE jsonb USING nullif(result_data::jsonb, 'null'::jsonb)",
    ]
    for name, kind in older.columns.items():
        if name in ("id", "task_options", "result_data"):
            continue  # above
        if kind == "character varying":
            changes.append(f"ALTER COLUMN {name} TYPE text")
        elif kind == _NAIVE:
            # The older design's naive timestamps mean UTC, whatever the session's zone.
            changes.append(f"ALTER COLUMN {name} TYPE timestamptz USING {name} AT TIME ZONE 'UTC'")
        elif kind in _INTEGER and kind != "integer":
            changes.append(f"ALTER COLUMN {name} TYPE integer")
    conn.execute("ALTER TABLE remote_jobs " + ", ".join([*changes, *_ADD_COLUMNS]))
    attributes = []
    for name, (not_null, default) in _TARGET.items():
        attributes.append(f"ALTER COLUMN {name} {'SET' if not_null else 'DROP'} NOT NULL")
        if default is not None:
            attributes.append(f"ALTER COLUMN {name} SET DEFAULT {default}")
    if not older.has_primary_key:
        attributes.append("ADD CONSTRAINT remote_jobs_pkey PRIMARY KEY (id)")
    conn.execute("ALTER TABLE remote_jobs " + ", ".join([*attributes, *_ADD_CHECKS]))
    for statement in _index_statements(first_migration_sql):
        conn.execute(statement)
    return dropped


def adopt(conn: Connection, older: OlderTable, first_migration_sql: str) -> list[str]:
    """Convert the older design's table into what migration ``first_migration_sql`` (0001)
    creates, moving an older ``schema_migrations`` aside; return one line per thing done.

    Run inside the migrating transaction, under its lock; the caller records 0001. Any
    failure is a ``SchemaError`` naming the table (the transaction then rolls back).
    """
    import psycopg

    done: list[str] = []
    try:
        jobs = _check_rows(conn, older)
        aside = _move_older_migrations(conn, older.schema)
        if aside is not None:
            done.append(f"schema_migrations of the older design, renamed to {aside}")
        dropped = _convert(conn, older, first_migration_sql)
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SchemaError(
            f"schema {older.schema!r}: cannot adopt the older design's table {TABLE}: {reason}"
        ) from exc
    done.insert(0, f"{TABLE} of the older design ({jobs} jobs)")
    log.warning(
        "adopted_older_remote_jobs",
        schema=older.schema,
        table=TABLE,
        jobs=jobs,
        converted={n: t for n, t in older.columns.items() if t in (_NAIVE, "uuid")},
        dropped=dropped,
        note="ids are text and timestamps timestamptz now: stop the older design's code first",
    )
    return done
