"""What every benchmark report records about where it ran: the hybridstore sources it
measured, and whether the PostgreSQL server can be used."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

__all__ = ["pg_unreachable", "require_pg", "source_digest"]


def source_digest() -> str:
    """A digest of the hybridstore package's sources, to tell if they changed mid-run."""
    import hybridstore

    digest = hashlib.sha256()
    root = Path(hybridstore.__file__).parent
    for path in sorted(root.rglob("*")):
        if path.suffix in (".py", ".sql") and path.is_file():
            digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def pg_unreachable(dsn: str) -> str | None:
    """Why the server cannot be used, or None when it answers."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[dev]')"
    from hybridstore.config import describe_target

    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        return f"PostgreSQL at {describe_target(dsn)} is unreachable: {first}"
    return None


def require_pg(dsn: str) -> None:
    """Skip the calling benchmark when the server cannot be used, or fail it when
    ``HYBRIDSTORE_BENCH_REQUIRE_PG=1`` (a full run must not silently lose the comparison)."""
    import pytest

    reason = pg_unreachable(dsn)
    if reason is None:
        return
    if os.environ.get("HYBRIDSTORE_BENCH_REQUIRE_PG") == "1":
        pytest.fail(f"{reason} (HYBRIDSTORE_BENCH_REQUIRE_PG=1)", pytrace=False)
    pytest.skip(f"{reason}; set HYBRIDSTORE_BENCH_PG_DSN to compare the backends")
