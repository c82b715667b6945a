"""hybridstore's PostgreSQL schema: where it stands, and the numbered migrations that build it.

The schema lives in whatever schema the connection's ``search_path`` selects. Migrations are
the numbered files in ``migrations/postgres/``, recorded in ``schema_migrations``, applied in
one transaction under an advisory lock; a ``remote_jobs`` table of the older design is
adopted on the way (``hybridstore.pgadopt``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import SchemaError, StoreNotFound
from .migrations import Migration, load_migrations
from .pgadopt import adopt, find_older_table, migrations_table_kind, table_columns
from .pgconnect import INIT_COMMAND

if TYPE_CHECKING:
    from .pgconnect import Connection

__all__ = ["apply_migrations", "require_schema", "schema_state"]


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
        raise SchemaError(f"{_missing_schema(conn)}: create it with '{INIT_COMMAND}'")
    # From pg_class, not to_regclass(): after waiting for the advisory lock, a name lookup
    # without a lock can still answer from this session's stale catalog cache ("absent")
    # while another session has created and committed the table.
    columns = table_columns(conn, "schema_migrations")
    if not columns:
        return str(schema), 0
    kind = migrations_table_kind(columns)
    if kind != "hybridstore":
        # The older design's record beside its remote_jobs: adopting moves it aside.
        if kind == "older" and find_older_table(conn, str(schema)) is not None:
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


def _missing_schema(conn: Connection) -> str:
    """Which schema the connection looked for and did not find (its ``search_path``)."""
    row = conn.execute("SHOW search_path").fetchone()
    path = str(row[0]).strip() if row and row[0] else ""
    names = [name.strip() for name in path.split(",") if name.strip()]
    if len(names) == 1:
        return f"schema {names[0]} (the connection's search_path) does not exist"
    return f"no schema of the connection's search_path ({path}) exists"


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
        older = find_older_table(conn, schema) if version == 0 else None
        if older is not None:
            notes = adopt(conn, older, known[0].sql)
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


def _record(conn: Connection, migration: Migration) -> None:
    conn.execute(
        "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
        (migration.version, migration.name),
    )


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
        raise StoreNotFound(target, INIT_COMMAND, f"{target}: {_missing_schema(conn)}")
    schema, version = schema_state(conn)
    if version == 0:
        older = find_older_table(conn, schema) is not None
        what = (
            "the older design's remote_jobs, not adopted yet" if older else "no hybridstore tables"
        )
        raise StoreNotFound(target, INIT_COMMAND, f"{target}: schema {schema!r} holds {what}")
