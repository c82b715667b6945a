"""The HTTP face of a ``JobRepository``: the ASGI app ``hybridstore serve`` runs.

Resources (JSON in and out; a job is ``RemoteJob``'s own JSON, id under ``id``):

==========================================  =======  =====================================
``GET /healthz``                            nobody   ``{"status": "ok"}``
``GET /jobs?status=&content_type=&…``       admin    ``find`` (a filter repeated: any of)
``GET /count?…``                            admin    ``{"count": n}``
``POST /jobs[?if_duplicate=return]``        admin    ``add`` → 201
``POST /jobs/batch``                        admin    ``add_many`` (a JSON array) → 201
``GET /jobs/{id}``                          worker   ``get`` (404 ``job_not_found``)
``PUT /jobs/{id}[?expected_version=N]``     admin    ``save``
``DELETE /jobs/{id}``                       admin    ``delete`` (404 when there was none)
``POST /claims``                            worker   ``claim_next`` / ``claim_many``, long-poll
``POST /jobs/{id}/heartbeat``               worker   ``heartbeat``
``POST /jobs/{id}/complete``                worker   ``complete``
``POST /completions``                       worker   ``complete_many``
``POST /jobs/{id}/release``                 worker   ``release``
``POST /jobs/{id}/fail``                    worker   ``fail``
``POST /jobs/{id}/cancel``                  admin    ``cancel``
``POST /jobs/{id}/requeue``                 admin    ``requeue``
``GET /ingestion-tasks/newest?id=T``        admin    ``find_by_ingestion_task`` (null if none)
``GET /expired?now=``                       admin    ``expired``
``GET /old-jobs?days_old=&now=``            admin    ``old_jobs``
``GET /stats``                              admin    ``statistics``
``POST /expire``                            admin    ``expire_overdue``
``POST /cleanup``                           admin    ``cleanup`` → ``{"deleted": n}``
==========================================  =======  =====================================

Errors: ``{"error": CODE, "message": TEXT, ...}`` (``httpwire``); never a traceback.
Authentication, roles and the body cap are enforced by ``Guard`` (``httpguard``), an ASGI
middleware that runs before any route, so a refused request reaches neither a handler nor
the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .errors import HybridStoreError, InvalidArgument, JobNotFound
from .httpguard import Guard, json_error
from .httpwire import CLAIM_WAIT_MAX, error_body
from .logs import get_logger
from .model import RemoteJob, validate_job_id
from .repository import IfDuplicate, JobRepository
from .tokens import TokenTable

__all__ = ["CLAIM_WAIT_MAX", "Guard", "app_from_environment", "create_app"]

log = get_logger("hybridstore.http")

DEFAULT_MAX_BODY = 8 * 1024 * 1024
# Room for the envelope around a job (a claim's or a batch's fields) above the job limit.
BODY_SLACK = 64 * 1024
# The longest a waiting claim sleeps between two looks at the store when nothing wakes it.
POLL_MAX = 2.0


# A query parameter that may repeat (``?status=failed&status=timeout``: any of them).
_Many = Annotated[list[str] | None, Query()]


# -- request bodies -------------------------------------------------------------------------
# Values are passed to the repository as given, so its own checks (and messages) apply.


class _Body(BaseModel):
    # Strict: "5" is not taken for 5 seconds, nor true for 1; the client raises
    # InvalidArgument for what the body refuses, as the repository would.
    model_config = ConfigDict(extra="forbid", strict=True)


class ClaimBody(_Body):
    worker_id: Any
    content_types: list[Any] | None = None
    lease_seconds: float = 300
    #: None: claim_next (a list of at most one job); a number: claim_many(n).
    n: int | None = None
    #: Seconds to wait for a job when none is ready (cut to CLAIM_WAIT_MAX).
    wait: float = 0.0


class HeartbeatBody(_Body):
    worker_id: Any
    lease_seconds: float = 300
    attempt: int | None = None
    progress: float | None = None
    message: str | None = None


class CompleteBody(_Body):
    worker_id: Any
    result_data: Any = None
    attempt: int | None = None


class ReleaseBody(_Body):
    worker_id: Any
    attempt: int | None = None


class CompletionsBody(_Body):
    worker_id: Any
    results: dict[str, Any]
    attempts: dict[str, int] | None = None


class FailBody(_Body):
    worker_id: Any
    error_message: Any
    attempt: int | None = None
    retry_in: float | None = None


class RequeueBody(_Body):
    reset_retries: bool = False


class MaintenanceBody(_Body):
    now: datetime | None = None
    days_old: float = 7


# -- waking waiting claims ------------------------------------------------------------------


class Wakeup:
    """Waiting claims sleep on this; writes through this server that may make a job
    ready wake them at once. (Writes by other processes are seen at the next look, at
    most ``POLL_MAX`` later.)"""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, timeout: float) -> None:
        event = self._event
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)


# -- the app ---------------------------------------------------------------------------------


def _job_response(job: RemoteJob, status: int = 200) -> Response:
    return Response(job.to_json(), status_code=status, media_type="application/json")


def _jobs_response(jobs: Sequence[RemoteJob], status: int = 200) -> Response:
    body = b"[" + b",".join(job.to_json() for job in jobs) + b"]"
    return Response(body, status_code=status, media_type="application/json")


def _validation_message(exc: ValidationError | RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p != "body")
        parts.append(f"{where}: {error.get('msg')}" if where else str(error.get("msg")))
    return "; ".join(parts) or "invalid request"


def _parse_job(raw: bytes) -> RemoteJob:
    try:
        return RemoteJob.model_validate_json(raw)
    except ValidationError as exc:
        raise _BadBody(exc) from None


_B = TypeVar("_B", bound=BaseModel)


async def _read(request: Request, model: type[_B]) -> _B:
    """The request's JSON body as ``model`` (an empty body: the defaults), whatever the
    Content-Type says, so ``curl -d '{...}'`` works as is."""
    raw = await request.body()
    key = _repeated_key(raw)
    if key is not None:  # JSON lets the last one win silently: which did the caller mean?
        raise _BadBody(f"the key {key!r} appears twice in the request body", "invalid_argument")
    try:
        return model.model_validate_json(raw if raw.strip() else b"{}")
    except ValidationError as exc:
        raise _BadBody(exc, "invalid_argument") from None


def _repeated_key(raw: bytes) -> str | None:
    """A key that appears twice in one object of the JSON ``raw``, or None (also when
    ``raw`` is not JSON: validation says so)."""
    repeated: list[str] = []

    def pairs_hook(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            repeated.append(next(key for key in keys if keys.count(key) > 1))
        return dict(pairs)

    try:
        json.loads(raw or b"{}", object_pairs_hook=pairs_hook)
    except (ValueError, RecursionError):
        return None
    return repeated[0] if repeated else None


class _BadBody(Exception):
    def __init__(self, exc: ValidationError | str, code: str = "invalid_job") -> None:
        if isinstance(exc, str):
            super().__init__(exc)
            self.code = code
            return
        super().__init__(_validation_message(exc))
        json_invalid = any(e.get("type") == "json_invalid" for e in exc.errors())
        self.code = "malformed_json" if json_invalid else code


def _filters(
    status: list[str] | None,
    content_type: list[str] | None,
    worker_id: list[str] | None,
    ingestion_task_id: list[str] | None,
) -> dict[str, Any]:
    return {
        "status": status,
        "content_type": content_type,
        "worker_id": worker_id,
        "ingestion_task_id": ingestion_task_id,
    }


def create_app(
    repo: JobRepository,
    tokens: TokenTable,
    *,
    max_body: int | None = None,
    claim_wait_max: float = CLAIM_WAIT_MAX,
    dashboard: bool = True,
) -> FastAPI:
    """The ASGI app serving ``repo`` to the holders of ``tokens``.

    ``max_body`` (bytes): requests with a longer body get 413; default the store's job
    size limit (``max_job_bytes``, 8 MiB) plus room for the request's other fields.
    """
    if max_body is None:
        max_body = int(getattr(repo, "max_job_bytes", DEFAULT_MAX_BODY)) + BODY_SLACK
    app = FastAPI(
        title="hybridstore",
        summary="Jobs for remote workers: claim, heartbeat, complete, fail.",
        version=_version(),
    )
    wakeup = Wakeup()

    async def call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await run_in_threadpool(function, *args, **kwargs)

    # -- errors ---------------------------------------------------------------------------

    @app.exception_handler(HybridStoreError)
    async def store_error(_request: Request, exc: HybridStoreError) -> Response:
        status, body = error_body(exc)
        if status >= 500:
            log.error("store_error", error=body["error"], message=body["message"])
        return JSONResponse(body, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        json_invalid = any(e.get("type") == "json_invalid" for e in exc.errors())
        code = "malformed_json" if json_invalid else "invalid_body"
        return json_error(400, code, _validation_message(exc))

    @app.exception_handler(_BadBody)
    async def bad_body(_request: Request, exc: _BadBody) -> Response:
        return json_error(400, exc.code, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return json_error(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(_request: Request, exc: Exception) -> Response:
        if isinstance(exc, (TypeError, ValueError)):
            # A value of the wrong kind that got past the checks: the caller's, not ours.
            return json_error(400, "invalid_argument", f"invalid argument ({type(exc).__name__})")
        log.error("unexpected_error", error=type(exc).__name__)
        return json_error(500, "internal_error", "internal server error")

    # -- health and reads -----------------------------------------------------------------

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/jobs")
    async def find(
        status: _Many = None,
        content_type: _Many = None,
        worker_id: _Many = None,
        ingestion_task_id: _Many = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Response:
        filters = _filters(status, content_type, worker_id, ingestion_task_id)
        return _jobs_response(await call(repo.find, **filters, limit=limit, offset=offset))

    @app.get("/count")
    async def count(
        status: _Many = None,
        content_type: _Many = None,
        worker_id: _Many = None,
        ingestion_task_id: _Many = None,
    ) -> dict[str, int]:
        filters = _filters(status, content_type, worker_id, ingestion_task_id)
        return {"count": await call(repo.count, **filters)}

    @app.get("/jobs/{job_id}")
    async def get(job_id: str) -> Response:
        job = await call(repo.get, job_id)
        if job is None:
            raise JobNotFound(job_id)
        return _job_response(job)

    @app.get("/ingestion-tasks/newest")
    async def newest(id: str) -> Response:
        job = await call(repo.find_by_ingestion_task, id)
        if job is None:
            return Response(b"null", media_type="application/json")
        return _job_response(job)

    @app.get("/expired")
    async def expired(now: datetime | None = None) -> Response:
        return _jobs_response(await call(repo.expired, now))

    @app.get("/old-jobs")
    async def old_jobs(days_old: float = 7, now: datetime | None = None) -> Response:
        return _jobs_response(await call(repo.old_jobs, days_old, now))

    @app.get("/stats")
    async def stats() -> dict[str, Any]:
        result: dict[str, Any] = await call(repo.statistics)
        return result

    # -- writes ---------------------------------------------------------------------------

    @app.post("/jobs", status_code=201)
    async def add(request: Request, if_duplicate: str | None = None) -> Response:
        job = _parse_job(await request.body())
        if if_duplicate not in (None, "raise", "return"):
            raise InvalidArgument("if_duplicate must be 'raise' or 'return'")
        mode: IfDuplicate = "return" if if_duplicate == "return" else "raise"
        stored = await call(repo.add, job, if_duplicate=mode)
        wakeup.notify()
        return _job_response(stored, 201)

    @app.post("/jobs/batch", status_code=201)
    async def add_many(request: Request) -> Response:
        try:
            raw = json.loads(await request.body())
        except ValueError:
            return json_error(400, "malformed_json", "the body is not JSON")
        if not isinstance(raw, list):
            raise InvalidArgument("POST /jobs/batch takes a JSON array of jobs")
        try:
            jobs = [RemoteJob.model_validate(item) for item in raw]
        except ValidationError as exc:
            raise _BadBody(exc) from None
        stored = await call(repo.add_many, jobs)
        wakeup.notify()
        return _jobs_response(stored, 201)

    @app.put("/jobs/{job_id}")
    async def save(request: Request, job_id: str, expected_version: int | None = None) -> Response:
        validate_job_id(job_id)
        job = _parse_job(await request.body())
        if job.id != job_id:
            raise InvalidArgument(f"the body's id {job.id!r} is not the path's {job_id!r}")
        stored = await call(repo.save, job, expected_version=expected_version)
        wakeup.notify()
        return _job_response(stored)

    @app.delete("/jobs/{job_id}")
    async def delete(job_id: str) -> dict[str, bool]:
        if not await call(repo.delete, job_id):
            raise JobNotFound(job_id)
        return {"deleted": True}

    @app.post("/claims")
    async def claims(request: Request) -> Response:
        body = await _read(request, ClaimBody)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + min(max(body.wait, 0.0), claim_wait_max)
        kwargs: dict[str, Any] = {"lease_seconds": body.lease_seconds}
        if body.content_types is not None:
            kwargs["content_types"] = body.content_types

        def claim() -> list[RemoteJob]:
            if body.n is None:
                job = repo.claim_next(body.worker_id, **kwargs)
                return [] if job is None else [job]
            return list(repo.claim_many(body.worker_id, body.n, **kwargs))

        delay = 0.05
        while True:
            jobs = await call(claim)
            remaining = deadline - loop.time()
            if jobs or remaining <= 0 or await request.is_disconnected():
                return _jobs_response(jobs)
            await wakeup.wait(min(delay, remaining))
            delay = min(delay * 2, POLL_MAX)

    @app.post("/jobs/{job_id}/heartbeat")
    async def heartbeat(request: Request, job_id: str) -> Response:
        body = await _read(request, HeartbeatBody)
        job = await call(
            repo.heartbeat,
            job_id,
            body.worker_id,
            lease_seconds=body.lease_seconds,
            attempt=body.attempt,
            progress=body.progress,
            message=body.message,
        )
        return _job_response(job)

    @app.post("/jobs/{job_id}/complete")
    async def complete(request: Request, job_id: str) -> Response:
        body = await _read(request, CompleteBody)
        job = await call(
            repo.complete, job_id, body.worker_id, body.result_data, attempt=body.attempt
        )
        return _job_response(job)

    @app.post("/jobs/{job_id}/release")
    async def release(request: Request, job_id: str) -> Response:
        body = await _read(request, ReleaseBody)
        job = await call(repo.release, job_id, body.worker_id, attempt=body.attempt)
        wakeup.notify()
        return _job_response(job)

    @app.post("/completions")
    async def complete_many(request: Request) -> Response:
        body = await _read(request, CompletionsBody)
        jobs = await call(repo.complete_many, body.worker_id, body.results, attempts=body.attempts)
        return _jobs_response(jobs)

    @app.post("/jobs/{job_id}/fail")
    async def fail(request: Request, job_id: str) -> Response:
        body = await _read(request, FailBody)
        job = await call(
            repo.fail,
            job_id,
            body.worker_id,
            body.error_message,
            attempt=body.attempt,
            retry_in=body.retry_in,
        )
        wakeup.notify()
        return _job_response(job)

    @app.post("/jobs/{job_id}/cancel")
    async def cancel(request: Request, job_id: str) -> Response:
        return _job_response(await call(repo.cancel, job_id))

    @app.post("/jobs/{job_id}/requeue")
    async def requeue(request: Request, job_id: str) -> Response:
        validate_job_id(job_id)
        body = await _read(request, RequeueBody)
        job = await call(repo.requeue, job_id, reset_retries=body.reset_retries)
        wakeup.notify()
        return _job_response(job)

    @app.post("/expire")
    async def expire(request: Request) -> Response:
        body = await _read(request, MaintenanceBody)
        jobs = await call(repo.expire_overdue, body.now)
        wakeup.notify()
        return _jobs_response(jobs)

    @app.post("/cleanup")
    async def cleanup(request: Request) -> dict[str, int]:
        body = await _read(request, MaintenanceBody)
        return {"deleted": await call(repo.cleanup, body.days_old, body.now)}

    if dashboard:
        from .dashboard import add_dashboard

        add_dashboard(app, repo, tokens, wakeup.notify)

    app.add_middleware(Guard, tokens=tokens, max_body=max_body)
    app.state.repository = repo
    return app


def _version() -> str:
    from . import __version__

    return __version__


# -- running it -----------------------------------------------------------------------------

TARGET_VARIABLE = "HYBRIDSTORE_SERVE_TARGET"
TOKEN_FILE_VARIABLE = "HYBRIDSTORE_SERVE_TOKEN_FILE"


def app_from_environment() -> FastAPI:
    """The app for a uvicorn worker process (``serve --workers N``): the store and the
    token file come from the variables ``serve`` set before starting them."""
    from .factory import open_repository
    from .tokens import load_tokens

    tokens = load_tokens(os.environ.get(TOKEN_FILE_VARIABLE) or None)
    repo = open_repository(os.environ[TARGET_VARIABLE])
    return create_app(repo, tokens)


def serve(
    target: str,
    tokens: TokenTable,
    *,
    host: str,
    port: int,
    token_file: str | None,
    workers: int = 1,
    log_level: str = "info",
) -> None:
    """Run uvicorn on ``host:port`` serving ``target`` (already resolved)."""
    import uvicorn

    from .config import describe_target
    from .factory import open_repository

    shown = describe_target(target)
    line = (
        f"hybridstore: serving {shown} on http://{host}:{port}"
        f" ({len(tokens)} token{'s' if len(tokens) != 1 else ''}"
        f"{f', {workers} workers' if workers > 1 else ''}; TLS: put a reverse proxy in front)"
    )
    print(line, file=sys.stderr, flush=True)
    if workers > 1:
        os.environ[TARGET_VARIABLE] = target
        if token_file is not None:
            os.environ[TOKEN_FILE_VARIABLE] = os.path.abspath(token_file)
        uvicorn.run(
            "hybridstore.httpapi:app_from_environment",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            log_level=log_level,
            server_header=False,
        )
        return
    repo = open_repository(target)
    try:
        app = create_app(repo, tokens)
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)
    finally:
        repo.close()
