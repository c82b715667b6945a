"""Where the data lives by default, and ``open_repository`` picking a backend from a URL."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from .errors import BackendUnavailable, InvalidArgument, StoreNotFound

if TYPE_CHECKING:
    from .repository import JobRepository

__all__ = [
    "check_data_dir",
    "default_data_dir",
    "describe_target",
    "is_database_url",
    "open_repository",
    "resolve_target",
]

DEFAULT_DATA_DIR = Path("data") / "remote_jobs"
# "host=db dbname=jobs ...": a libpq connection string, which must not become a directory.
_LIBPQ_KEYWORDS = re.compile(r"\s*(host|hostaddr|dbname|user|port|service)\s*=")


def default_data_dir() -> Path:
    """``$HYBRIDSTORE_DATA_DIR``, else ``$MORAG_REMOTE_JOBS_DATA_DIR``, else ./data/remote_jobs."""
    for variable in ("HYBRIDSTORE_DATA_DIR", "MORAG_REMOTE_JOBS_DATA_DIR"):
        value = os.environ.get(variable)
        if value:
            return Path(value)
    return DEFAULT_DATA_DIR


def is_database_url(target: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    return target.startswith(("postgresql://", "postgres://"))


def resolve_target(target: str | os.PathLike[str] | None = None) -> str:
    """The store ``target`` names: a ``postgresql://`` URL, or a directory path.

    None means ``$HYBRIDSTORE_URL`` if set, else the default data directory; a
    ``file://`` URL becomes its path. Other schemes and libpq ``key=value`` strings are
    refused (``BackendUnavailable``) rather than taken for directory names, and an empty
    path (``InvalidArgument``) rather than taken for the current directory.
    """
    if target is None:
        target = os.environ.get("HYBRIDSTORE_URL") or None
    if target is None:
        return str(default_data_dir())
    text = os.fspath(target)
    if not text.strip():
        raise InvalidArgument(f"empty store path {text!r}: name a directory or a URL")
    if is_database_url(text):
        return text
    if _LIBPQ_KEYWORDS.match(text):
        raise BackendUnavailable(
            "a key=value connection string is not accepted: use a postgresql:// URL"
        )
    if text.startswith("file://"):
        path = unquote(urlparse(text).path)
        if not path:
            raise InvalidArgument(f"{text!r} names no directory")
        return path
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise BackendUnavailable(
            f"no backend for {scheme}:// URLs (use a path, file:// or postgresql://)"
        )
    return text


def check_data_dir(path: str | os.PathLike[str], *, create: bool) -> None:
    """Refuse a path that cannot be a data directory, before anything is created there.

    A regular file (or anything else that is not a directory) at ``path``: ``StoreNotFound``
    for a reader, ``InvalidArgument`` when asked to create. Nothing at ``path``:
    ``StoreNotFound`` unless ``create``.
    """
    where = Path(path)
    if where.is_dir():
        return
    if where.exists():
        what = (
            f"{where} is a file, not a directory"
            if where.is_file()
            else f"{where} is not a directory"
        )
        if create:
            raise InvalidArgument(f"{what}: a data directory must be a directory")
        raise StoreNotFound(where, "hybridstore init", f"{what}, so not a data directory")
    if not create:
        raise StoreNotFound(where, "hybridstore init", f"no data directory at {where}")


def open_repository(
    target: str | os.PathLike[str] | None = None, *, create: bool = True
) -> JobRepository:
    """Open the backend ``target`` names (see ``resolve_target``).

    A path or ``file://`` URL opens a ``JobStore``; ``postgresql://…`` a
    ``PostgresJobRepository``; None means ``$HYBRIDSTORE_URL`` if set, else the default
    data directory. Switching a deployment to PostgreSQL is one environment variable.

    ``create=False`` is for readers: a missing data directory, or a database without
    hybridstore's schema, raises ``StoreNotFound`` (naming the command that creates it)
    instead of being created.
    """
    resolved = resolve_target(target)
    if is_database_url(resolved):
        from .postgres import PostgresJobRepository

        return PostgresJobRepository(resolved, create=create)
    from .store import JobStore

    check_data_dir(resolved, create=create)
    return JobStore(resolved)


def describe_target(target: str) -> str:
    """``target`` for display: a database URL without its password."""
    return re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", target) if "://" in target else target
