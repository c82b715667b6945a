"""Numbered SQL migration files: ``sidecar/`` for the SQLite index, ``postgres/`` for PostgreSQL.

A file is named ``NNNN_description.sql``; its number is the schema version it brings. Each
applied migration is recorded in the target's ``schema_migrations`` table.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

__all__ = ["Migration", "load_migrations"]

_NAME = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def load_migrations(kind: str) -> list[Migration]:
    """The migrations of ``kind`` ("sidecar" or "postgres"), in version order."""
    found = []
    for entry in resources.files(__name__).joinpath(kind).iterdir():
        match = _NAME.fullmatch(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), match.group(2), entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise RuntimeError(f"{kind} migrations are not numbered 1..n: {versions}")
    return found
