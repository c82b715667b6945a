"""Fixtures shared by every test module."""

from __future__ import annotations

import itertools
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hybridstore import JobStore, RemoteJob
from hybridstore.migrations import load_migrations

pytest_plugins = ["tests.postgres_support"]

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
_counter = itertools.count()


def downgrade_sidecar(path: Path, version: int) -> None:
    """Make a sidecar look as if only migrations 1..``version`` had been applied: drop
    what the later ones created and forget them in schema_migrations."""
    conn = sqlite3.connect(path)
    migrations = load_migrations("sidecar")
    for migration in reversed(migrations[version:]):
        for kind, name in re.findall(r"CREATE (TABLE|INDEX|TRIGGER) (\w+)", migration.sql):
            conn.execute(f"DROP {kind} IF EXISTS {name}")
        for name in re.findall(r"DROP TRIGGER (\w+)", migration.sql):
            # Put back what it dropped, as the migration that created it wrote it.
            [created] = [
                found
                for earlier in migrations[: migration.version - 1]
                for found in re.findall(
                    rf"CREATE TRIGGER {name} .*?\nEND;", earlier.sql, flags=re.DOTALL
                )
            ]
            conn.execute(created)
        for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", migration.sql):
            conn.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        conn.execute("DELETE FROM schema_migrations WHERE version = ?", (migration.version,))
    conn.commit()
    conn.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def store(data_dir: Path) -> Iterator[JobStore]:
    with JobStore(data_dir) as opened:
        yield opened


def new_job(**fields: Any) -> RemoteJob:
    """A valid job with distinct ids and increasing ``created_at`` unless given."""
    n = next(_counter)
    values: dict[str, Any] = {
        "id": f"job-{n:06d}",
        "ingestion_task_id": f"task-{n}",
        "source_file_path": f"/in/file-{n}.pdf",
        "content_type": "document",
        "created_at": T0 + timedelta(seconds=n),
    }
    values.update(fields)
    return RemoteJob(**values)


@pytest.fixture
def make_job() -> Callable[..., RemoteJob]:
    return new_job


def python_process(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``python ARGV`` as a real process in ``cwd``, on this checkout's package (installed
    or not), with the environment kept but the store and token variables (``env`` adds)."""
    environment = dict(os.environ)
    for variable in ("HYBRIDSTORE_URL", "HYBRIDSTORE_TOKEN"):
        environment.pop(variable, None)
    environment.update(env)
    root = str(Path(__file__).resolve().parents[1])
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, *argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=60,
        check=False,
    )


def hybridstore_process(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """``hybridstore ARGS`` as a real process (``python_process``)."""
    return python_process("-m", "hybridstore.cli", *args, cwd=cwd, **env)
