"""What a store target means: the default data directory, a path, or a database URL.

Resolving only: opening the backend a target names is ``hybridstore.factory``'s job, so
this module imports nothing but the errors. ``describe_target`` is the one place that
hides a password before a target is shown (messages, ``repr``, the CLI).
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from urllib.parse import unquote, urlparse

from .errors import BackendUnavailable, InvalidArgument, StoreNotFound

__all__ = [
    "check_data_dir",
    "default_data_dir",
    "describe_target",
    "is_database_url",
    "is_http_url",
    "resolve_target",
]

DEFAULT_DATA_DIR = Path("data") / "remote_jobs"
# "host=db dbname=jobs ...": a libpq connection string, which must not become a directory.
_LIBPQ_KEYWORDS = re.compile(r"\s*(host|hostaddr|dbname|user|port|service)\s*=")
# password=... in a URL query or a libpq string; a quoted value may hold spaces and \'.
_PASSWORD_PARAMETER = re.compile(r"(\bpassword\s*=\s*)('(?:[^'\\]|\\.)*'|[^\s&#]*)", re.IGNORECASE)


def default_data_dir() -> Path:
    """``$HYBRIDSTORE_DATA_DIR``, else ``$MORAG_REMOTE_JOBS_DATA_DIR``, else ./data/remote_jobs."""
    for variable in ("HYBRIDSTORE_DATA_DIR", "MORAG_REMOTE_JOBS_DATA_DIR"):
        value = os.environ.get(variable)
        if value:
            return Path(value)
    return DEFAULT_DATA_DIR


def is_http_url(target: str) -> bool:
    """True for ``http://`` and ``https://`` URLs (a ``hybridstore serve``)."""
    return target.startswith(("http://", "https://"))


def is_database_url(target: str) -> bool:
    """True for ``postgresql://`` and ``postgres://`` URLs."""
    return target.startswith(("postgresql://", "postgres://"))


def resolve_target(target: str | os.PathLike[str] | None = None) -> str:
    """The store ``target`` names: a ``postgresql://`` or ``http(s)://`` URL, or a
    directory path.

    None means ``$HYBRIDSTORE_URL`` if set, else the default data directory; a
    ``file://`` URL becomes its path. Other schemes and libpq ``key=value`` strings are
    refused (``BackendUnavailable``) rather than taken for directory names, and an empty
    path (``InvalidArgument``) rather than taken for the current directory; so is an empty
    ``$HYBRIDSTORE_URL`` rather than taken for "unset" (a deployment whose URL went
    missing must not quietly use a local directory).
    """
    if target is None:
        target = os.environ.get("HYBRIDSTORE_URL")
        if target is not None and not target.strip():
            raise InvalidArgument(
                "$HYBRIDSTORE_URL is set but empty: set it to a directory or a URL, or unset it"
            )
    if target is None:
        return str(default_data_dir())
    text = os.fspath(target)
    if not text.strip():
        raise InvalidArgument(f"empty store path {text!r}: name a directory or a URL")
    if is_database_url(text) or is_http_url(text):
        return text
    if _LIBPQ_KEYWORDS.match(text):
        raise BackendUnavailable(
            "a key=value connection string is not accepted: use a postgresql:// URL"
        )
    if text.startswith("file://"):
        url = urlparse(text)
        if url.netloc not in ("", "localhost"):
            # file://tmp/x is host "tmp", path "/x": not what anyone means by it.
            raise InvalidArgument(
                f"{text!r} names the host {url.netloc!r}: write file:///path (three slashes)"
                " for an absolute path, or give the path itself"
            )
        path = unquote(url.path)
        if not path:
            raise InvalidArgument(f"{text!r} names no directory")
        return path
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise BackendUnavailable(
            f"no backend for {scheme}:// URLs (use a path, file://, postgresql:// or http(s)://)"
        )
    return text


def init_command(path: str | os.PathLike[str]) -> str:
    """The command that creates a data directory at ``path``, ready to paste."""
    return f"hybridstore --data-dir {shlex.quote(os.fspath(path))} init"


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
        raise StoreNotFound(where, init_command(where), f"{what}, so not a data directory")
    if not create:
        raise StoreNotFound(where, init_command(where), f"no data directory at {where}")


def describe_target(target: str) -> str:
    """``target`` for display, every password replaced by ``***``.

    Covers the forms a DSN can carry one in: a URL's ``user:password@`` (up to the last
    ``@`` before the path, so an ``@`` inside the password is hidden too), and a
    ``password=`` parameter, in a URL's query or a libpq ``key=value`` string (quoted
    values included). Everything else is shown as given.
    """
    if "://" in target:
        scheme, rest = target.split("://", 1)
        authority, sep, path = _split_authority(rest)
        if "@" in authority:
            userinfo, host = authority.rsplit("@", 1)
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            authority = f"{userinfo}@{host}"
        target = f"{scheme}://{authority}{sep}{path}"
    return _PASSWORD_PARAMETER.sub(r"\1***", target)


def _split_authority(rest: str) -> tuple[str, str, str]:
    """``rest`` (after ``scheme://``) as (authority, separator, the remainder)."""
    # The user info ends at the last "@" before the query; the authority at the first
    # "/", "?" or "#" after it (a password may hold "/" or "@"; a host never does).
    at = rest.rfind("@", 0, _first(rest, "?"))
    end = _first(rest, "/?#", start=at + 1)
    return rest[:end], rest[end : end + 1], rest[end + 1 :]


def _first(text: str, characters: str, start: int = 0) -> int:
    """The index of the first of ``characters`` in ``text`` from ``start``; else its length."""
    found = [i for c in characters if (i := text.find(c, start)) >= 0]
    return min(found, default=len(text))
