"""The HTTP server's door: bearer tokens and roles, the dashboard's session and CSRF
checks, and the request body cap, enforced by ``Guard`` before any route runs."""

from __future__ import annotations

import re

from fastapi import Response
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .tokens import ADMIN, WORKER, TokenTable

__all__ = ["CSRF_HEADER", "SESSION_COOKIE", "Guard", "json_error"]

SESSION_COOKIE = "hybridstore_session"
CSRF_HEADER = "x-csrf-token"

# (method, path) a worker token may call; every other route needs admin.
_WORKER_ROUTES = [
    ("POST", re.compile(r"/claims")),
    ("POST", re.compile(r"/completions")),
    ("POST", re.compile(r"/jobs/[^/]+/(heartbeat|complete|fail|release)")),
    ("GET", re.compile(r"/jobs/[^/]+")),
]
_PUBLIC_ROUTES = [
    ("GET", re.compile(r"/healthz")),
    ("GET", re.compile(r"/login")),
    ("POST", re.compile(r"/login")),
    ("POST", re.compile(r"/logout")),
    ("GET", re.compile(r"/static/dashboard\.(js|css)")),
]
# The dashboard: a browser with the session cookie (admin only).
_DASHBOARD = re.compile(r"/|/ui/.*")


def _matches(routes: list[tuple[str, re.Pattern[str]]], method: str, path: str) -> bool:
    return any(m == method and p.fullmatch(path) for m, p in routes)


def json_error(status: int, code: str, message: str) -> Response:
    """An error response in the ``httpwire`` shape (401 adds the Bearer challenge)."""
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": code, "message": message}, status_code=status, headers=headers)


class Guard:
    """Authentication, roles, CSRF for the dashboard, and the request body cap.

    * ``Authorization: Bearer TOKEN`` for the API; a missing or unknown token is 401, a
      token whose role may not make the call 403, before any route runs.
    * The dashboard (``/`` and ``/ui/…``) takes the session cookie set by ``POST /login``
      instead; its POSTs need the CSRF header and, when the browser sends one, an
      ``Origin`` equal to the server's own.
    * A body longer than ``max_body`` is refused with 413 before it is read whole.
    """

    def __init__(self, app: ASGIApp, tokens: TokenTable, max_body: int) -> None:
        self.app = app
        self.tokens = tokens
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        body, refusal = await self._read_body(scope, receive)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # the disconnect, for long polls

        await self.app(scope, replay, send)

    def _refusal(self, scope: Scope) -> Response | None:
        method, path = scope["method"], scope["path"]
        if _matches(_PUBLIC_ROUTES, method, path):
            return None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        if _DASHBOARD.fullmatch(path) and not auth:
            session = _cookie(headers.get("cookie", ""), SESSION_COOKIE)
            if self.tokens.session_role(session) != ADMIN:
                if method == "GET" and path == "/":
                    return Response(status_code=303, headers={"Location": "/login"})
                return json_error(401, "unauthorized", "log in first")
            if method != "GET":
                assert session is not None
                if headers.get(CSRF_HEADER, "") != TokenTable.csrf_for(session):
                    return json_error(403, "forbidden", "missing or wrong CSRF token")
                origin = headers.get("origin")
                if origin is not None and not _same_origin(origin, headers.get("host", "")):
                    return json_error(403, "forbidden", "cross-site request refused")
            return None
        scheme, _, token = auth.partition(" ")
        role = self.tokens.role_of(token.strip()) if scheme.lower() == "bearer" else None
        if role is None:
            return json_error(401, "unauthorized", "a valid bearer token is required")
        if role == ADMIN:
            return None
        if role == WORKER and _matches(_WORKER_ROUTES, method, path):
            return None
        return json_error(403, "forbidden", f"a {role} token may not {method} {path}")

    async def _read_body(self, scope: Scope, receive: Receive) -> tuple[bytes, Response | None]:
        too_large = json_error(
            413, "request_too_large", f"request body over the limit of {self.max_body} bytes"
        )
        for key, value in scope["headers"]:
            if key == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return b"", json_error(400, "invalid_body", "bad Content-Length")
                if declared > self.max_body:
                    return b"", too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return b"", too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks), None


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name:
            return value
    return None


def _same_origin(origin: str, host: str) -> bool:
    return origin.split("://", 1)[-1].rstrip("/") == host
