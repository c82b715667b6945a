"""``open_repository``: opens the backend a path or URL names; it sits above every backend.

``config`` only resolves what a target means; this module turns the resolved target into
a backend, importing each one when first asked for (so opening a data directory never
imports psycopg).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from .config import check_data_dir, is_database_url, is_http_url, resolve_target

if TYPE_CHECKING:
    from .repository import JobRepository

__all__ = ["open_repository"]


def open_repository(
    target: str | os.PathLike[str] | None = None,
    *,
    create: bool = True,
    token: str | None = None,
) -> JobRepository:
    """Open the backend ``target`` names (see ``config.resolve_target``).

    A path or ``file://`` URL opens a ``JobStore``; ``postgresql://…`` a
    ``PostgresJobRepository``; None means ``$HYBRIDSTORE_URL`` if set, else the default
    data directory. Switching a deployment to PostgreSQL is one environment variable.

    ``create=False`` is for readers: a missing data directory, or a database without
    hybridstore's schema, raises ``StoreNotFound`` (naming the command that creates it)
    instead of being created.

    ``http://HOST:PORT`` (or https) opens an ``HttpJobRepository`` on a ``hybridstore
    serve``, as the holder of ``token`` (default ``$HYBRIDSTORE_TOKEN``); ``create`` does
    not apply there (the server owns its store).
    """
    resolved = resolve_target(target)
    if is_http_url(resolved):
        from .httpclient import HttpJobRepository

        return HttpJobRepository(resolved, token=token)
    if is_database_url(resolved):
        from .postgres import PostgresJobRepository

        return PostgresJobRepository(resolved, create=create)
    from .store import JobStore

    check_data_dir(resolved, create=create)
    return JobStore(resolved, create=create)
