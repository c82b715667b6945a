"""Connecting to PostgreSQL: psycopg on demand, configured connections, the Connection type.

psycopg is imported inside the functions, so importing this module (and the backend and
schema modules above it) works without the ``postgres`` extra; using it then raises
``BackendUnavailable`` naming the extra.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from .config import describe_target
from .errors import BackendUnavailable, InvalidArgument

if TYPE_CHECKING:
    import psycopg
    from psycopg.rows import TupleRow

    Connection = psycopg.Connection[TupleRow]
    Cursor = psycopg.Cursor[TupleRow]

__all__ = [
    "INIT_COMMAND",
    "INSTALL_HINT",
    "configure",
    "connect",
    "connect_kwargs",
    "database_missing",
    "is_connection_error",
    "require_psycopg",
]

INSTALL_HINT = "pip install 'hybridstore[postgres]'"
# What creates a database's schema (and the database itself when the server allows it).
INIT_COMMAND = "hybridstore db init"
_MISSING_DATABASE = re.compile(r'database "[^"]*" does not exist')


def is_connection_error(exc: Exception) -> bool:
    """The server was lost (rather than a statement refused)."""
    sqlstate = getattr(exc, "sqlstate", None)
    # No SQLSTATE: the client lost the server. 08: connection exception. 57P: shutdown.
    return sqlstate is None or sqlstate.startswith(("08", "57P"))


def database_missing(error: BaseException) -> bool:
    """True when ``error`` (a failed connection) says the database does not exist."""
    return _MISSING_DATABASE.search(str(error)) is not None


def require_psycopg() -> None:
    """Raise ``BackendUnavailable`` naming the extra unless psycopg and its pool import."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise BackendUnavailable(
            f"the PostgreSQL backend needs psycopg 3 and psycopg_pool ({exc}): {INSTALL_HINT}"
        ) from None


def connect_kwargs(dsn: str) -> dict[str, Any]:
    """Keyword arguments every connection to ``dsn`` gets (a connect timeout unless set)."""
    from psycopg.conninfo import conninfo_to_dict

    # A server that does not answer should fail the call, not hang it.
    return {} if "connect_timeout" in conninfo_to_dict(dsn) else {"connect_timeout": 10}


def configure(conn: Connection) -> None:
    """Session settings of every connection: UTC, so timestamps and day arithmetic are
    plain UTC whatever the server's TimeZone."""
    conn.execute("SET TIME ZONE 'UTC'")
    if not conn.autocommit:
        conn.commit()


def connect(dsn: str, *, autocommit: bool = True) -> Connection:
    """One configured connection (not pooled), for schema work and administration.

    ``BackendUnavailable`` (naming the server, not the password) when it cannot connect.
    """
    require_psycopg()
    import psycopg

    try:
        conn = psycopg.connect(dsn, autocommit=autocommit, **connect_kwargs(dsn))
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if database_missing(exc):
            reason += f" (create it with '{INIT_COMMAND}', or ask its administrator)"
        raise BackendUnavailable(
            f"cannot connect to PostgreSQL at {describe_target(dsn)}: {reason}"
        ) from exc
    except psycopg.ProgrammingError as exc:  # a malformed DSN
        reason = " ".join(str(exc).split())  # libpq's message ends in a newline
        hint = ""
        if "options=" in dsn and "%3D" not in dsn.upper():
            hint = " (inside options=, write = as %3D: ?options=-csearch_path%3Dmyschema)"
        raise InvalidArgument(
            f"invalid PostgreSQL DSN {describe_target(dsn)}: {reason}{hint}"
        ) from exc
    configure(conn)
    return conn
