"""PostgreSQL test support: the ``pg_schema_dsn`` fixture (a fresh schema per test)."""

from __future__ import annotations

import pytest


@pytest.fixture
def pg_schema_dsn() -> str:
    pytest.skip("the PostgreSQL backend is not written yet")
