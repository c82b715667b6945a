"""The dashboard at ``/``: counts, the jobs of a status (paged), one job in full, and
requeue / cancel buttons, for admins in a browser.

Server-rendered HTML (every value escaped) refreshed by ``static/dashboard.js``, which
polls ``GET /ui/data`` and writes text nodes only. A browser logs in with an admin token
at ``/login``; it gets an HttpOnly, SameSite=Strict cookie derived from the token (never
the token). The buttons POST with a CSRF header derived from the cookie, and ``Guard``
also refuses a POST whose ``Origin`` is another site.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from html import escape
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from .errors import BackendUnavailable
from .model import RemoteJob, parse_status
from .repository import JobRepository
from .tokens import TokenTable

__all__ = ["PAGE_SIZE", "add_dashboard"]

PAGE_SIZE = 25
SESSION_COOKIE = "hybridstore_session"

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px}
th{background:#f3f3f3;text-align:left}a{color:#0645ad}nav a{margin-right:1em}
pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;word-break:break-all}
.error{color:#b00}
"""


def _page(title: str, body: str, csrf: str = "") -> str:
    meta = f'<meta name="csrf-token" content="{escape(csrf)}">' if csrf else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title>{meta}<style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def _login_page(message: str = "") -> str:
    note = f'<p class="error" id="login-error">{escape(message)}</p>' if message else ""
    return _page(
        "hybridstore: log in",
        "<h1>hybridstore</h1>"
        f'{note}<form method="post" action="/login">'
        '<label>Admin token <input type="password" name="token" id="token"'
        ' autocomplete="current-password" required></label> '
        '<button type="submit" id="login">Log in</button></form>',
    )


def _summary(job: RemoteJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": job.status.value,
        "content_type": job.content_type,
        "worker_id": job.worker_id,
        "created_at": job.created_at.isoformat(),
        "retry_count": job.retry_count,
        "progress": getattr(job, "progress", None),
        "error_message": job.error_message,
    }


def dashboard_data(
    repo: JobRepository, status: str, page: int, job_id: str | None
) -> dict[str, Any]:
    """What the dashboard shows: counts, one page of a status's jobs, one job in full."""
    stats = repo.statistics()
    chosen = parse_status(status)
    total = stats["status_counts"].get(chosen.value, 0)
    pages = max(1, -(-total // PAGE_SIZE))
    page = min(max(page, 1), pages)
    jobs = repo.find(status=chosen, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    job = repo.get(job_id) if job_id else None
    return {
        "status_counts": stats["status_counts"],
        "content_type_counts": stats["content_type_counts"],
        "total_jobs": stats["total_jobs"],
        "status": chosen.value,
        "page": page,
        "pages": pages,
        "jobs": [_summary(j) for j in jobs],
        "job": json.loads(job.to_json()) if job is not None else None,
    }


def _render(data: dict[str, Any], csrf: str) -> str:
    status = data["status"]

    def link(**query: Any) -> str:
        base = {"status": status}
        base.update(query)
        return escape("/?" + urlencode({k: v for k, v in base.items() if v is not None}))

    counts = "".join(
        f'<tr><td><a href="{link(status=s, page=None)}">{escape(s)}</a></td>'
        f'<td class="count" data-status="{escape(s)}">{n}</td></tr>'
        for s, n in data["status_counts"].items()
    )
    types = "".join(
        f"<tr><td>{escape(t)}</td><td>{n}</td></tr>" for t, n in data["content_type_counts"].items()
    )
    rows = "".join(
        f'<tr data-job-id="{escape(j["id"])}"><td><a href="{link(job=j["id"], page=data["page"])}">'
        f'{escape(j["id"])}</a></td><td class="status">{escape(j["status"])}</td>'
        f"<td>{escape(j['content_type'])}</td><td>{escape(str(j['worker_id'] or ''))}</td>"
        f"<td>{escape(j['created_at'])}</td><td>{j['retry_count']}</td></tr>"
        for j in data["jobs"]
    )
    job = data["job"]
    detail = ""
    if job is not None:
        progress = job.get("progress")
        shown = "" if progress is None else f"{float(progress) * 100:.0f} %"
        detail = (
            f'<h2>Job <span id="job-id">{escape(job["id"])}</span></h2>'
            f'<p>Status <b id="job-status">{escape(job["status"])}</b>'
            f' · progress <span id="job-progress">{escape(shown)}</span>'
            f' <span id="job-message">{escape(str(job.get("progress_message") or ""))}</span></p>'
            '<p><button id="requeue" data-action="requeue">Requeue</button> '
            '<button id="cancel" data-action="cancel">Cancel</button> '
            '<span id="action-result"></span></p>'
            f'<pre id="job-json">{escape(json.dumps(job, indent=2))}</pre>'
        )
    nav = (
        f'<a href="{link(page=data["page"] - 1)}" id="prev">previous</a>'
        if data["page"] > 1
        else ""
    ) + (
        f'<a href="{link(page=data["page"] + 1)}" id="next">next</a>'
        if data["page"] < data["pages"]
        else ""
    )
    body = (
        '<h1>hybridstore</h1><form method="post" action="/logout" style="float:right">'
        '<button type="submit">Log out</button></form>'
        f'<p>Total jobs: <b id="total">{data["total_jobs"]}</b></p>'
        '<h2>By status</h2><table id="status-counts"><tr><th>status</th><th>jobs</th></tr>'
        f"{counts}</table>"
        '<h2>By content type</h2><table id="type-counts"><tr><th>content type</th>'
        f"<th>jobs</th></tr>{types}</table>"
        f'<h2>Jobs <span id="list-status">{escape(status)}</span>, page '
        f'<span id="page">{data["page"]}</span> of <span id="pages">{data["pages"]}</span></h2>'
        '<table id="jobs"><tr><th>id</th><th>status</th><th>content type</th><th>worker</th>'
        f"<th>created</th><th>retries</th></tr>{rows}</table><nav>{nav}</nav>{detail}"
        '<script src="/static/dashboard.js"></script>'
    )
    return _page("hybridstore", body, csrf)


def add_dashboard(
    app: FastAPI, repo: JobRepository, tokens: TokenTable, notify: Callable[[], None]
) -> None:
    """Add the login, the dashboard page, its JSON and its two actions to ``app``.
    (``Guard`` checks the session cookie and the CSRF header before these run.)"""

    @app.get("/login", response_class=HTMLResponse)
    async def login_form() -> str:
        return _login_page()

    @app.post("/login")
    async def login(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        session = tokens.session_for(token)
        if session is None:
            return HTMLResponse(_login_page("That is not an admin token."), status_code=401)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            SESSION_COOKIE,
            session,
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
            path="/",
        )
        return response

    @app.post("/logout")
    async def logout() -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/", response_class=HTMLResponse)
    async def index(
        request: Request, status: str = "pending", page: int = 1, job: str | None = None
    ) -> str:
        session = request.cookies.get(SESSION_COOKIE, "")
        data = await run_in_threadpool(dashboard_data, repo, status, page, job)
        return _render(data, TokenTable.csrf_for(session))

    @app.get("/ui/data")
    async def data(status: str = "pending", page: int = 1, job: str | None = None) -> Any:
        return await run_in_threadpool(dashboard_data, repo, status, page, job)

    @app.post("/ui/jobs/{job_id}/{action}")
    async def act(job_id: str, action: str) -> Response:
        if action == "cancel":
            job = await run_in_threadpool(repo.cancel, job_id)
        elif action == "requeue":
            requeue = getattr(repo, "requeue", None)
            if requeue is None:
                raise BackendUnavailable("this store has no requeue")
            job = await run_in_threadpool(requeue, job_id)
            notify()
        else:
            return Response(status_code=404)
        return Response(job.to_json(), media_type="application/json")

    @app.get("/static/dashboard.js")
    async def script() -> Response:
        text = resources.files("hybridstore").joinpath("static/dashboard.js").read_text()
        return Response(text, media_type="text/javascript")
