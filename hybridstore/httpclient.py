"""``HttpJobRepository``: a ``JobRepository`` that talks to ``hybridstore serve``.

Every call is one HTTP request; the server's refusals come back as the same typed errors
the store raised (``httpwire``), and a refused token as ``AccessDenied``. Ids, statuses
and filters are checked here first, like every backend checks them, so a hostile id never
leaves the process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any

import httpx

from .errors import BackendUnavailable, HybridStoreError, JobNotFound
from .httpwire import CLAIM_WAIT_MAX, error_from_body
from .model import RemoteJob, as_utc, validate_job_id
from .repository import (
    Filter,
    IfDuplicate,
    check_page,
    claim_arguments,
    completions,
    filter_values,
)

__all__ = ["HttpJobRepository"]

TOKEN_VARIABLE = "HYBRIDSTORE_TOKEN"


class HttpJobRepository:
    """The repository served at ``url`` (``http://HOST:PORT``), as the holder of ``token``
    (default ``$HYBRIDSTORE_TOKEN``).

    ``claim_wait`` (seconds, default 0): how long ``claim_next``/``claim_many`` let the
    server wait for a job when none is ready, instead of answering "none" at once. The
    server holds the request (a long poll, cut to 30 s) and answers as soon as a job is
    ready, so an idle worker makes one request per ``claim_wait`` rather than a busy loop.
    0 keeps the contract's "None when nothing is ready, now"; a ``Worker`` raises it.
    Each call may also pass ``wait=``.

    ``timeout`` (seconds) bounds every other request.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        claim_wait: float = 0.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise BackendUnavailable(f"not an http(s):// URL: {url!r}")
        self.url = url.rstrip("/")
        self.claim_wait = claim_wait
        self.timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_VARIABLE) or None
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._pid = os.getpid()

    def __repr__(self) -> str:  # never the token
        return f"HttpJobRepository({self.url!r})"

    # -- plumbing -------------------------------------------------------------------------

    def _http(self) -> httpx.Client:
        if os.getpid() != self._pid:  # a forked child gets its own connections
            headers = dict(self._client.headers)
            self._client = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout)
            self._pid = os.getpid()
        return self._client

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        content: bytes | None = None,
        params: Any = None,
        timeout: float | None = None,
    ) -> Any:
        kwargs: dict[str, Any] = {"params": params}
        if content is not None:
            kwargs["content"] = content
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["content"] = json.dumps(body, default=_json_default).encode()
            kwargs["headers"] = {"Content-Type": "application/json"}
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            response = self._http().request(method, path, **kwargs)
        except httpx.TransportError as exc:
            # Not reached (down, restarting, a network fault): a worker waits and tries again.
            raise BackendUnavailable(
                f"{self.url}: cannot reach the server ({type(exc).__name__}: {exc});"
                " is 'hybridstore serve' running there?"
            ) from None
        except httpx.HTTPError as exc:
            raise HybridStoreError(f"{self.url}: {type(exc).__name__}: {exc}") from None
        if response.status_code >= 400:
            try:
                error = response.json()
            except ValueError:
                error = None
            raise error_from_body(response.status_code, error)
        return response.json()

    @staticmethod
    def _job(data: Any) -> RemoteJob:
        return RemoteJob.model_validate(data)

    @classmethod
    def _jobs(cls, data: Any) -> list[RemoteJob]:
        return [cls._job(item) for item in data]

    # -- storage --------------------------------------------------------------------------

    def add(self, job: RemoteJob, *, if_duplicate: IfDuplicate = "raise") -> RemoteJob:
        params = {"if_duplicate": if_duplicate} if if_duplicate != "raise" else None
        return self._job(self._request("POST", "/jobs", content=job.to_json(), params=params))

    def add_many(self, jobs: Iterable[RemoteJob]) -> list[RemoteJob]:
        content = b"[" + b",".join(job.to_json() for job in jobs) + b"]"
        return self._jobs(self._request("POST", "/jobs/batch", content=content))

    def save(self, job: RemoteJob, *, expected_version: int | None = None) -> RemoteJob:
        params = {"expected_version": expected_version} if expected_version is not None else None
        path = f"/jobs/{validate_job_id(job.id)}"
        return self._job(self._request("PUT", path, content=job.to_json(), params=params))

    def get(self, job_id: str) -> RemoteJob | None:
        try:
            return self._job(self._request("GET", f"/jobs/{validate_job_id(job_id)}"))
        except JobNotFound:
            return None

    def delete(self, job_id: str) -> bool:
        try:
            self._request("DELETE", f"/jobs/{validate_job_id(job_id)}")
        except JobNotFound:
            return False
        return True

    # -- queries --------------------------------------------------------------------------

    @staticmethod
    def _filter_params(**filters: Any) -> list[tuple[str, str]] | None:
        """Query parameters for the filters; None when one is an empty list (matches
        nothing, which a query string cannot say)."""
        values = filter_values(**filters)
        if any(not chosen for chosen in values.values()):
            return None
        return [(name, value) for name, chosen in values.items() for value in chosen]

    def find(
        self,
        *,
        status: Filter = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> list[RemoteJob]:
        check_page(limit, offset)
        params = self._filter_params(
            status=status,
            content_type=content_type,
            worker_id=worker_id,
            ingestion_task_id=ingestion_task_id,
        )
        if params is None:
            return []
        if limit is not None:
            params.append(("limit", str(limit)))
        if offset:
            params.append(("offset", str(offset)))
        return self._jobs(self._request("GET", "/jobs", params=params))

    def count(
        self,
        *,
        status: Filter = None,
        content_type: Filter = None,
        worker_id: Filter = None,
        ingestion_task_id: Filter = None,
    ) -> int:
        params = self._filter_params(
            status=status,
            content_type=content_type,
            worker_id=worker_id,
            ingestion_task_id=ingestion_task_id,
        )
        if params is None:
            return 0
        return int(self._request("GET", "/count", params=params)["count"])

    def find_by_ingestion_task(self, task_id: str) -> RemoteJob | None:
        from .errors import InvalidArgument

        if not isinstance(task_id, str):
            raise InvalidArgument("the ingestion task id must be a string")
        data = self._request("GET", "/ingestion-tasks/newest", params={"id": task_id})
        return None if data is None else self._job(data)

    def expired(self, now: datetime | None = None) -> list[RemoteJob]:
        return self._jobs(self._request("GET", "/expired", params=_now(now)))

    def old_jobs(self, days_old: float = 7, now: datetime | None = None) -> list[RemoteJob]:
        params = {"days_old": days_old, **_now(now)}
        return self._jobs(self._request("GET", "/old-jobs", params=params))

    def statistics(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/stats")
        return result

    # -- lifecycle ------------------------------------------------------------------------

    def _claim(
        self,
        worker_id: str,
        n: int | None,
        content_types: Sequence[str] | None,
        lease_seconds: float,
        wait: float | None,
    ) -> list[RemoteJob]:
        wanted = claim_arguments(worker_id, content_types, lease_seconds)
        seconds = self.claim_wait if wait is None else wait
        seconds = min(max(float(seconds), 0.0), CLAIM_WAIT_MAX)
        body = {
            "worker_id": worker_id,
            "content_types": wanted,
            "lease_seconds": lease_seconds,
            "n": n,
            "wait": seconds,
        }
        data = self._request("POST", "/claims", body=body, timeout=self.timeout + seconds)
        return self._jobs(data)

    def claim_next(
        self,
        worker_id: str,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
        wait: float | None = None,
    ) -> RemoteJob | None:
        jobs = self._claim(worker_id, None, content_types, lease_seconds, wait)
        return jobs[0] if jobs else None

    def claim_many(
        self,
        worker_id: str,
        n: int,
        *,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
        wait: float | None = None,
    ) -> list[RemoteJob]:
        return self._claim(worker_id, n, content_types, lease_seconds, wait)

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        lease_seconds: float = 300,
        attempt: int | None = None,
        progress: float | None = None,
        message: str | None = None,
    ) -> RemoteJob:
        body = {
            "worker_id": worker_id,
            "lease_seconds": lease_seconds,
            "attempt": attempt,
            "progress": progress,
            "message": message,
        }
        return self._job(self._request("POST", _action(job_id, "heartbeat"), body=body))

    def complete(
        self,
        job_id: str,
        worker_id: str,
        result_data: dict[str, Any] | None = None,
        *,
        attempt: int | None = None,
    ) -> RemoteJob:
        body = {"worker_id": worker_id, "result_data": result_data, "attempt": attempt}
        return self._job(self._request("POST", _action(job_id, "complete"), body=body))

    def release(self, job_id: str, worker_id: str, *, attempt: int | None = None) -> RemoteJob:
        body = {"worker_id": worker_id, "attempt": attempt}
        return self._job(self._request("POST", _action(job_id, "release"), body=body))

    def complete_many(
        self,
        worker_id: str,
        results: Mapping[str, dict[str, Any] | None],
        *,
        attempts: Mapping[str, int] | None = None,
    ) -> list[RemoteJob]:
        batch = completions(worker_id, results, attempts)
        if not batch:
            return []
        body = {
            "worker_id": worker_id,
            "results": {job_id: result for job_id, result, _ in batch},
            "attempts": {job_id: attempt for job_id, _, attempt in batch if attempt is not None},
        }
        return self._jobs(self._request("POST", "/completions", body=body))

    def fail(
        self,
        job_id: str,
        worker_id: str,
        error_message: str,
        *,
        attempt: int | None = None,
        retry_in: float | None = None,
    ) -> RemoteJob:
        body = {
            "worker_id": worker_id,
            "error_message": error_message,
            "attempt": attempt,
            "retry_in": retry_in,
        }
        return self._job(self._request("POST", _action(job_id, "fail"), body=body))

    def cancel(self, job_id: str) -> RemoteJob:
        return self._job(self._request("POST", _action(job_id, "cancel"), body={}))

    def requeue(self, job_id: str, *, reset_retries: bool = False) -> RemoteJob:
        body = {"reset_retries": reset_retries}
        return self._job(self._request("POST", _action(job_id, "requeue"), body=body))

    def expire_overdue(self, now: datetime | None = None) -> list[RemoteJob]:
        return self._jobs(self._request("POST", "/expire", body=_now(now)))

    def cleanup(self, days_old: float = 7, now: datetime | None = None) -> int:
        body = {"days_old": days_old, **_now(now)}
        return int(self._request("POST", "/cleanup", body=body)["deleted"])

    # -- handle ---------------------------------------------------------------------------

    def healthy(self) -> bool:
        """True when the server answers ``GET /healthz`` (no token needed)."""
        try:
            return self._http().get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> HttpJobRepository:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _action(job_id: str, action: str) -> str:
    return f"/jobs/{validate_job_id(job_id)}/{action}"


def _now(now: datetime | None) -> dict[str, str]:
    return {} if now is None else {"now": as_utc(now).isoformat()}


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return as_utc(value).isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")
