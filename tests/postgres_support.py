"""PostgreSQL test support: the ``pg_schema_dsn`` fixture (a fresh schema per test).

The server comes from ``$HYBRIDSTORE_TEST_PG_DSN`` (default
``postgresql://postgres@127.0.0.1:5432/test``). When it cannot be reached the PostgreSQL
tests skip with the reason, unless ``HYBRIDSTORE_REQUIRE_PG=1`` (CI), which turns that
into a failure: in CI a missing server must never pass as "skipped".
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlencode

import pytest

from hybridstore.config import describe_target

DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"

# Whether the server answered, asked once per session: a down server should cost one
# connect timeout, not one per test.
_reachable: tuple[bool, str] | None = None


def server_dsn() -> str:
    """The DSN of the test server."""
    return os.environ.get("HYBRIDSTORE_TEST_PG_DSN") or DEFAULT_DSN


def _probe() -> tuple[bool, str]:
    global _reachable
    if _reachable is None:
        try:
            import psycopg
        except ImportError:
            _reachable = (False, "psycopg is not installed (pip install -e '.[dev]')")
        else:
            try:
                with psycopg.connect(server_dsn(), connect_timeout=3) as conn:
                    conn.execute("SELECT 1")
                _reachable = (True, "")
            except psycopg.Error as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                where = describe_target(server_dsn())  # never a password in a skip reason
                _reachable = (False, f"PostgreSQL at {where} is unreachable: {first}")
    return _reachable


def require_server() -> None:
    """Skip the calling test (or fail it when ``HYBRIDSTORE_REQUIRE_PG=1``) unless the
    test server answers."""
    ok, reason = _probe()
    if ok:
        return
    if os.environ.get("HYBRIDSTORE_REQUIRE_PG") == "1":
        pytest.fail(f"{reason} (HYBRIDSTORE_REQUIRE_PG=1)", pytrace=False)
    pytest.skip(f"{reason}; set HYBRIDSTORE_TEST_PG_DSN to run the PostgreSQL tests")


def schema_dsn(dsn: str, schema: str) -> str:
    """``dsn`` as a ``postgresql://`` URL whose search_path is ``schema`` (other options
    kept). A URL, because that is what ``open_repository`` recognises as PostgreSQL."""
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    params["options"] = f"{params.get('options') or ''} -csearch_path={schema}".strip()
    if dsn.startswith(("postgresql://", "postgres://")):
        base, _, query = dsn.partition("?")
        kept = [part for part in query.split("&") if part and not part.startswith("options=")]
        return f"{base}?" + "&".join(
            [*kept, urlencode({"options": params["options"]}, quote_via=quote)]
        )
    # A key=value DSN: libpq also takes every parameter in the query of an empty URL.
    return "postgresql://?" + urlencode({k: str(v) for k, v in params.items()}, quote_via=quote)


@pytest.fixture
def pg_server_dsn() -> str:
    """The test server's DSN (skips or fails like ``pg_schema_dsn`` when it is down)."""
    require_server()
    return server_dsn()


@pytest.fixture
def pg_schema_dsn(pg_server_dsn: str) -> Iterator[str]:
    """A DSN whose search_path selects a new, empty schema, dropped after the test."""
    import psycopg

    schema = f"hs_test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield schema_dsn(pg_server_dsn, schema)
    finally:
        with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def together(threads: int, call: Callable[[], object]) -> list[BaseException]:
    """Run ``call`` in ``threads`` threads released at once; the exceptions they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads)

    def run() -> None:
        try:
            barrier.wait()
            call()
        except BaseException as exc:  # collected for the caller's assertion
            errors.append(exc)

    started = [threading.Thread(target=run) for _ in range(threads)]
    for thread in started:
        thread.start()
    for thread in started:
        thread.join()
    return errors
