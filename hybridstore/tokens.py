"""API tokens for ``hybridstore serve``: who may call what.

Tokens come from a token file (one ``ROLE TOKEN`` a line; blank lines and ``#`` comments
ignored) or from ``$HYBRIDSTORE_API_TOKENS`` (``ROLE:TOKEN`` pairs, comma-separated).
Roles: ``admin`` may make every call; ``worker`` only the calls a worker needs
(``WORKER_CALLS``). A token is checked against every configured token with
``hmac.compare_digest``, so neither the comparison nor the loop stops early on a match.

Nothing here logs or shows a token: error messages name the line, never its content.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from pathlib import Path

from .errors import InvalidArgument
from .logs import get_logger

log = get_logger("hybridstore.serve")

__all__ = ["ADMIN", "ROLES", "WORKER", "WORKER_CALLS", "TokenTable", "load_tokens"]

ADMIN = "admin"
WORKER = "worker"
ROLES = (ADMIN, WORKER)
#: The repository calls a worker token may make; everything else needs ``admin``.
WORKER_CALLS = frozenset({"claim_next", "claim_many", "heartbeat", "complete", "fail", "get"})
# Shorter tokens are guessable; refuse them rather than serve behind one.
MIN_TOKEN_LENGTH = 16
ENV_VARIABLE = "HYBRIDSTORE_API_TOKENS"


@dataclass(frozen=True)
class _Entry:
    role: str
    token: bytes


class TokenTable:
    """The configured tokens and their roles."""

    def __init__(self, entries: list[tuple[str, str]]) -> None:
        for role, token in entries:
            if role not in ROLES:
                raise InvalidArgument(f"unknown role {role!r} (roles: admin, worker)")
            if len(token) < MIN_TOKEN_LENGTH:
                raise InvalidArgument(
                    f"{'an' if role == 'admin' else 'a'} {role} token is shorter than"
                    f" {MIN_TOKEN_LENGTH} characters"
                )
        self._entries = [_Entry(role, token.encode()) for role, token in entries]

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:  # never the tokens themselves
        roles = sorted({e.role for e in self._entries})
        return f"TokenTable({len(self._entries)} tokens, roles {roles})"

    def role_of(self, token: str | None) -> str | None:
        """The role of ``token``, or None. Constant time in the token's content: every
        entry is compared, with ``hmac.compare_digest``, whatever matched before."""
        if not token:
            return None
        given = token.encode("utf-8", "surrogateescape")
        found: str | None = None
        for entry in self._entries:
            if hmac.compare_digest(given, entry.token) and found is None:
                found = entry.role
        return found

    # -- browser sessions --------------------------------------------------------------------
    # A dashboard cookie is not the token itself but a MAC derived from it, so the browser
    # never holds the API token; it stops working when the token is removed from the file.

    def session_for(self, token: str) -> str | None:
        """The cookie value for an admin ``token``, or None if it is not an admin token."""
        if self.role_of(token) != ADMIN:
            return None
        return _derive(token.encode(), b"dashboard-session")

    def session_role(self, session: str | None) -> str | None:
        """``admin`` if ``session`` is the cookie of a configured admin token."""
        if not session:
            return None
        given = session.encode("ascii", "replace")
        found = None
        for entry in self._entries:
            if entry.role != ADMIN:
                continue
            if hmac.compare_digest(given, _derive(entry.token, b"dashboard-session").encode()):
                found = ADMIN
        return found

    @staticmethod
    def csrf_for(session: str) -> str:
        """The CSRF token that goes with a session cookie (sent back in a header)."""
        return _derive(session.encode(), b"dashboard-csrf")


def _derive(key: bytes, purpose: bytes) -> str:
    return hmac.new(key, purpose, hashlib.sha256).hexdigest()


def parse_token_file(text: str) -> list[tuple[str, str]]:
    """``ROLE TOKEN`` lines; ``InvalidArgument`` naming the line number of a bad one."""
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        parts = stripped.split()
        if len(parts) != 2:
            raise InvalidArgument(f"token file line {number}: expected 'ROLE TOKEN'")
        entries.append((parts[0], parts[1]))
    return entries


def parse_token_variable(text: str) -> list[tuple[str, str]]:
    """``ROLE:TOKEN,ROLE:TOKEN``; ``InvalidArgument`` naming the position of a bad pair."""
    entries = []
    for number, pair in enumerate(text.split(","), 1):
        if not pair.strip():
            continue
        role, sep, token = pair.strip().partition(":")
        if not sep or not token:
            raise InvalidArgument(f"${ENV_VARIABLE} pair {number}: expected 'ROLE:TOKEN'")
        entries.append((role, token))
    return entries


def load_tokens(token_file: str | os.PathLike[str] | None = None) -> TokenTable:
    """The tokens of ``token_file``, else of ``$HYBRIDSTORE_API_TOKENS``.

    ``InvalidArgument`` when none is configured: a server without a token would serve
    everyone, so it must not start.
    """
    if token_file is not None:
        try:
            text = Path(token_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidArgument(
                f"cannot read token file {os.fspath(token_file)}: {exc.strerror or exc}"
            ) from None
        entries = parse_token_file(text)
        where = f"token file {os.fspath(token_file)}"
    else:
        entries = parse_token_variable(os.environ.get(ENV_VARIABLE, ""))
        where = f"${ENV_VARIABLE}"
    if not entries:
        unset = token_file is None and ENV_VARIABLE not in os.environ
        state = "is not set" if unset else "is empty"
        raise InvalidArgument(
            f"no API token configured ({where} {state}): refusing to serve without one;"
            f" give --token-file FILE ('ROLE TOKEN' lines) or set {ENV_VARIABLE}"
            " ('ROLE:TOKEN,ROLE:TOKEN'; roles admin and worker)"
        )
    if token_file is not None and Path(token_file).stat().st_mode & 0o077:
        log.warning(
            "token_file_readable_by_others",
            path=os.fspath(token_file),
            advice=f"chmod 600 {os.fspath(token_file)}",
        )
    return TokenTable(entries)
