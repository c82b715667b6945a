"""The PostgreSQL schema's administration, behind ``hybridstore db init|migrate|reset|test``
and ``hybridstore db create-migration``.

Every function takes a DSN or ``postgresql://`` URL (its ``options=-csearch_path=...``
selects the schema), works on one direct connection (no pool), and returns a ``DbStatus``.
Connection failures raise ``BackendUnavailable``, a schema newer than this code
``SchemaError`` (except ``check_db``, which reports it), as does a ``remote_jobs`` table that
is neither hybridstore's nor the older design's. ``init_db`` and ``migrate_db`` adopt the
older design's table (``hybridstore.pgadopt``) and list what that did in ``adopted``.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import describe_target
from .errors import BackendUnavailable, InvalidArgument
from .migrations import Migration, load_migrations
from .pgadopt import find_older_table
from .pgconnect import connect
from .pgschema import apply_migrations, schema_state

if TYPE_CHECKING:
    from .pgconnect import Connection

__all__ = [
    "DbStatus",
    "check_db",
    "create_migration",
    "init_db",
    "migrate_db",
    "migrations_dir",
    "reset_db",
]

# The tables hybridstore owns in its schema; ``reset_db`` drops exactly these.
OWN_TABLES = ("remote_jobs", "schema_migrations")

_SEARCH_PATH = re.compile(r"-c\s*search_path\s*=\s*([A-Za-z_][A-Za-z0-9_$]*)")
_MIGRATION_FILE = re.compile(r"(\d{4})_[a-z0-9_]+\.sql")


@dataclass
class DbStatus:
    """Where a database's hybridstore schema stands (and what the call changed)."""

    target: str  # the DSN without its password
    schema: str
    server_version: str
    version: int  # the highest migration applied
    expected: int  # the highest migration this hybridstore knows
    jobs: int | None = None  # rows in remote_jobs, None when the table does not exist
    applied: list[str] = field(default_factory=list)  # migrations this call applied
    created: list[str] = field(default_factory=list)  # database/schema this call created
    # what this call did to adopt the older design's tables (see hybridstore.pgadopt)
    adopted: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The schema is exactly the version this hybridstore expects."""
        return self.version == self.expected

    def describe(self) -> str:
        """One line for a terminal."""
        if self.version > self.expected:
            state = (
                f"schema version {self.version} is newer than this hybridstore"
                f" ({self.expected}): upgrade hybridstore"
            )
        elif self.version < self.expected:
            state = (
                f"schema version {self.version} of {self.expected}: run `hybridstore db migrate`"
            )
        else:
            state = f"schema version {self.version}, up to date"
        jobs = "" if self.jobs is None else f", {self.jobs} jobs"
        return (
            f"{self.target} (schema {self.schema}, PostgreSQL {self.server_version}): {state}{jobs}"
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``ok``."""
        return {**asdict(self), "ok": self.ok}


def _status(conn: Connection, dsn: str, **changes: Any) -> DbStatus:
    schema, version = schema_state(conn)
    exists = conn.execute(
        "SELECT to_regclass(quote_ident(current_schema()) || '.remote_jobs') IS NOT NULL"
    ).fetchone()
    jobs = None
    if exists and exists[0]:
        if version == 0:
            # SchemaError now, not at `db migrate`, when it is not a table we can adopt.
            find_older_table(conn, schema)
        counted = conn.execute("SELECT count(*) FROM remote_jobs").fetchone()
        jobs = int(counted[0]) if counted else 0
    server = conn.execute("SHOW server_version").fetchone()
    return DbStatus(
        target=describe_target(dsn),
        schema=schema,
        server_version=str(server[0]).split()[0] if server else "?",
        version=version,
        expected=len(load_migrations("postgres")),
        jobs=jobs,
        **changes,
    )


def _names(applied: list[Migration]) -> list[str]:
    return [f"{m.version:04d}_{m.name}" for m in applied]


def migrate_db(dsn: str) -> DbStatus:
    """Apply the pending migrations (what ``PostgresJobRepository`` does on opening)."""
    with connect(dsn) as conn:
        adopted: list[str] = []
        applied = apply_migrations(conn, adopted=adopted)
        return _status(conn, dsn, applied=_names(applied), adopted=adopted)


def init_db(dsn: str) -> DbStatus:
    """Create the database (when absent and the server allows it), the schema named by
    the DSN's ``search_path`` (when absent), then migrate."""
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    created: list[str] = []
    try:
        conn = connect(dsn)
    except BackendUnavailable as first:
        info = conninfo_to_dict(dsn)
        name = str(info.get("dbname") or info.get("user") or "")
        # Ask the maintenance database whether ours exists; if even that cannot be
        # reached, the first error is the one worth showing.
        try:
            admin = connect(make_conninfo(dsn, dbname="postgres", options=""))
        except BackendUnavailable:
            raise first from None
        with admin:
            found = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if not name or found.fetchone() is not None:
                raise  # it exists: the failure was something else
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            created.append(f"database {name}")
        conn = connect(dsn)
    with conn:
        wanted = _SEARCH_PATH.search(str(conninfo_to_dict(dsn).get("options") or ""))
        if wanted and conn.execute("SELECT current_schema()").fetchone() == (None,):
            conn.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(wanted.group(1)))
            )
            created.append(f"schema {wanted.group(1)}")
        adopted: list[str] = []
        applied = apply_migrations(conn, adopted=adopted)
        return _status(conn, dsn, applied=_names(applied), created=created, adopted=adopted)


def reset_db(dsn: str) -> DbStatus:
    """Drop hybridstore's tables (every job is lost) and recreate them, in one transaction.

    Asking for confirmation is the caller's job. Only ``remote_jobs`` and
    ``schema_migrations`` of the schema ``search_path`` selects are dropped.
    """
    from psycopg import sql

    with connect(dsn) as conn:
        schema, _ = schema_state(conn)
        with conn.transaction():
            # The same lock as apply_migrations: no repository migrates halfway through.
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtext('hybridstore'), hashtext(current_schema()))"
            )
            conn.execute(
                sql.SQL("DROP TABLE IF EXISTS {}").format(
                    sql.SQL(", ").join(sql.Identifier(schema, table) for table in OWN_TABLES)
                )
            )
            applied = apply_migrations(conn)
        return _status(conn, dsn, applied=_names(applied))


def check_db(dsn: str) -> DbStatus:
    """Connect and report the schema version against the expected one; changes nothing.

    Unlike the others it does not raise for a schema newer than this code: ``ok`` is then
    False and ``describe()`` says so.
    """
    with connect(dsn) as conn:
        return _status(conn, dsn)


def migrations_dir() -> Path:
    """The folder the PostgreSQL migrations are read from (inside the package)."""
    from . import migrations

    return Path(migrations.__file__).parent / "postgres"


def create_migration(name: str, directory: Path | None = None) -> Path:
    """Write the next numbered, empty migration ``NNNN_<name>.sql``; return its path.

    ``name`` is reduced to lowercase letters, digits and underscores. ``directory``
    defaults to the package's ``migrations/postgres`` (so this is for a source checkout).
    """
    slug = re.sub(r"[^a-z0-9]+", "_", name.strip().lower()).strip("_")
    if not slug:
        raise InvalidArgument(f"migration name {name!r} has no letters or digits")
    folder = directory if directory is not None else migrations_dir()
    numbers = [
        int(match.group(1))
        for entry in folder.iterdir()
        if (match := _MIGRATION_FILE.fullmatch(entry.name))
    ]
    number = max(numbers, default=0) + 1
    path = folder / f"{number:04d}_{slug}.sql"
    with path.open("x", encoding="utf-8") as out:  # "x": never overwrite a migration
        out.write(
            f"-- Migration {number:04d}: {name.strip()}\n"
            "--\n"
            "-- Applied once, in one transaction with any other pending migrations, by\n"
            "-- `hybridstore db migrate --url URL` or by the first PostgresJobRepository\n"
            "-- that opens the database; recorded in schema_migrations.\n"
            "-- Use unqualified names: the tables live in the schema search_path selects.\n"
            "-- Never edit a migration once released; add a new one.\n"
            "\n"
        )
    return path
