"""``hybridstore serve`` and ``HttpJobRepository`` beyond the contract suite: security
rules (each test fails if its rule breaks), long polls, the client's errors, several
servers on one database.

The contract itself runs over HTTP in ``tests/contract`` (backends ``http`` and
``http-postgres``).
"""

from __future__ import annotations

import hmac
import multiprocessing
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from hybridstore import (
    AccessDenied,
    HttpJobRepository,
    InvalidTransition,
    JobAlreadyExists,
    JobStatus,
    JobStore,
    RemoteJob,
    open_repository,
)
from hybridstore.tokens import TokenTable, load_tokens
from tests.conftest import new_job
from tests.http_support import (
    ADMIN_TOKEN,
    REPO,
    WORKER_TOKEN,
    ServerProcess,
    server_env,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
WORKER = {"Authorization": f"Bearer {WORKER_TOKEN}"}
WRONG_TOKEN = "wrong-token-that-must-not-be-logged-42"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("http-security")
    started = ServerProcess(str(root / "data"), root / "server.log")
    started.data_dir = root / "data"  # type: ignore[attr-defined]
    yield started
    started.stop()


@pytest.fixture
def direct(server: ServerProcess) -> Iterator[JobStore]:
    """The server's data directory, opened directly (emptied first)."""
    with JobStore(server.data_dir, durable=False) as store:  # type: ignore[attr-defined]
        for job in store.find():
            store.delete(job.id)
        yield store


def snapshot(store: JobStore) -> list[dict[str, Any]]:
    return [job.model_dump() for job in store.find()]


def call(server: ServerProcess, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, server.url + path, timeout=10, **kwargs)


# Every route with a body that would change something if it ran.
def routes(job_id: str) -> list[tuple[str, str, Any]]:
    job = new_job(id="new-one").model_dump(mode="json")
    return [
        ("GET", "/jobs", None),
        ("GET", "/count", None),
        ("GET", "/stats", None),
        ("GET", "/expired", None),
        ("GET", "/old-jobs", None),
        ("GET", "/ingestion-tasks/newest?id=x", None),
        ("POST", "/jobs", job),
        ("POST", "/jobs/batch", [job]),
        ("PUT", f"/jobs/{job_id}", {**job, "id": job_id, "status": "cancelled"}),
        ("DELETE", f"/jobs/{job_id}", None),
        ("POST", f"/jobs/{job_id}/cancel", {}),
        ("POST", f"/jobs/{job_id}/requeue", {}),
        ("POST", "/expire", {"now": "2100-01-01T00:00:00Z"}),
        ("POST", "/cleanup", {"days_old": 0, "now": "2100-01-01T00:00:00Z"}),
        ("GET", f"/jobs/{job_id}", None),
        ("POST", "/claims", {"worker_id": "w"}),
        ("POST", f"/jobs/{job_id}/heartbeat", {"worker_id": "w"}),
        ("POST", f"/jobs/{job_id}/complete", {"worker_id": "w"}),
        ("POST", "/completions", {"worker_id": "w", "results": {job_id: None}}),
        ("POST", f"/jobs/{job_id}/release", {"worker_id": "w"}),
        ("POST", f"/jobs/{job_id}/fail", {"worker_id": "w", "error_message": "x"}),
        ("GET", "/", None),
        ("GET", "/ui/data", None),
        ("POST", f"/ui/jobs/{job_id}/cancel", None),
    ]


WORKER_ALLOWED = {"/claims", "/heartbeat", "/complete", "/completions", "/fail", "/release"}


def _worker_may(method: str, path: str) -> bool:
    if method == "GET" and path.startswith("/jobs/"):
        return True
    return method == "POST" and any(path.endswith(p) for p in WORKER_ALLOWED)


# -- tokens ---------------------------------------------------------------------------------


def test_tokens_are_compared_in_constant_time_with_every_entry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr("hybridstore.tokens.hmac.compare_digest", spy)
    table = TokenTable([("admin", "a" * 20), ("worker", "w" * 20), ("worker", "x" * 20)])
    assert table.role_of("a" * 20) == "admin"
    # Every entry compared, even after the first matched: no early exit to time.
    assert len(calls) == 3
    assert table.role_of("w" * 20) == "worker"
    assert table.role_of("nope" * 5) is None
    assert table.role_of("") is None
    assert len(calls) == 9


def test_token_file_and_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens"
    path.write_text("# comment\n\nadmin " + "a" * 20 + "\nworker " + "w" * 20 + "\n")
    monkeypatch.setenv("HYBRIDSTORE_API_TOKENS", "admin:" + "z" * 20)
    table = load_tokens(path)  # the file wins over the variable
    assert table.role_of("w" * 20) == "worker" and table.role_of("z" * 20) is None
    assert load_tokens().role_of("z" * 20) == "admin"
    assert "a" * 20 not in repr(table)
    path.write_text("root " + "a" * 20 + "\n")
    with pytest.raises(ValueError, match="unknown role"):
        load_tokens(path)
    path.write_text("admin short\n")
    with pytest.raises(ValueError, match="shorter"):
        load_tokens(path)


@pytest.mark.parametrize("configured", ["", "   ", None])
def test_serve_refuses_to_start_without_a_token(tmp_path: Path, configured: str | None) -> None:
    env = server_env()
    env.pop("HYBRIDSTORE_API_TOKENS")
    args = []
    if configured is not None:
        (tmp_path / "tokens").write_text(configured)
        args = ["--token-file", str(tmp_path / "tokens")]
    done = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "--data-dir", str(tmp_path / "d"), "serve",
         "--port", "1", *args],
        env=env, capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no API token" in lines[0], done.stderr
    assert not (tmp_path / "d").exists(), "refused before touching the store"


# -- 401 and 403 change nothing -------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": f"Bearer {WRONG_TOKEN}"},
                                     {"Authorization": f"Basic {ADMIN_TOKEN}"},
                                     {"Authorization": ADMIN_TOKEN}])
def test_no_valid_token_is_401_everywhere_and_changes_nothing(
    server: ServerProcess, direct: JobStore, headers: dict[str, str]
) -> None:
    job = direct.add(new_job())
    claimed = direct.claim_next("w")
    assert claimed is not None and claimed.id == job.id
    before = snapshot(direct)
    for method, path, body in routes(job.id):
        response = call(server, method, path, json=body, headers=headers,
                        follow_redirects=False)
        if path == "/" and not headers:  # the dashboard sends a browser to its login page
            assert response.status_code == 303, path
            continue
        assert response.status_code == 401, (method, path, response.text)
        assert response.json()["error"] == "unauthorized"
        assert WRONG_TOKEN not in response.text
    assert snapshot(direct) == before


def test_a_worker_token_gets_403_outside_the_worker_calls(
    server: ServerProcess, direct: JobStore
) -> None:
    job = direct.add(new_job())
    done = direct.add(new_job(status=JobStatus.FAILED))
    before = snapshot(direct)
    refused = []
    for method, path, body in routes(done.id):
        if _worker_may(method, path):
            continue
        response = call(server, method, path, json=body, headers=WORKER)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"] == "forbidden"
        refused.append(path)
    assert snapshot(direct) == before
    assert len(refused) >= 15
    # The worker calls themselves work.
    worker = HttpJobRepository(server.url, token=WORKER_TOKEN)
    claimed = worker.claim_next("w1")
    assert claimed is not None and claimed.id == job.id
    assert worker.get(job.id) == claimed
    beat = worker.heartbeat(job.id, "w1", attempt=claimed.attempt)
    assert worker.complete(job.id, "w1", {"ok": 1}, attempt=beat.attempt).result_data == {"ok": 1}
    with pytest.raises(AccessDenied) as caught:
        worker.add(new_job())
    assert caught.value.status == 403
    with pytest.raises(AccessDenied):
        worker.statistics()
    worker.close()


def test_the_client_raises_access_denied_with_a_wrong_token(server: ServerProcess) -> None:
    with HttpJobRepository(server.url, token=WRONG_TOKEN) as repo:
        with pytest.raises(AccessDenied) as caught:
            repo.count()
        assert caught.value.status == 401
        assert isinstance(caught.value, PermissionError)
        assert WRONG_TOKEN not in str(caught.value) and WRONG_TOKEN not in repr(repo)
        assert repo.healthy()  # /healthz needs no token


def test_healthz_needs_no_token(server: ServerProcess) -> None:
    response = call(server, "GET", "/healthz")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


# -- bodies, ids, JSON -----------------------------------------------------------------------


def test_bodies_over_the_job_size_limit_get_413_and_change_nothing(
    server: ServerProcess, direct: JobStore
) -> None:
    big = new_job(task_options={"blob": "x" * (8 * 1024 * 1024 + 100_000)})
    response = call(server, "POST", "/jobs", content=big.to_json(), headers=ADMIN)
    assert response.status_code == 413 and response.json()["error"] == "request_too_large"

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server counts as it reads
        yield b'{"ingestion_task_id": "t", "source_file_path": "/f", "content_type": "x",'
        for _ in range(90):
            yield b'"pad": "' + b"y" * 100_000 + b'",'
        yield b'"z": 1}'

    response = httpx.post(server.url + "/jobs", content=chunks(), headers=ADMIN, timeout=30)
    assert response.status_code == 413
    # Unauthenticated and huge: refused before reading it.
    response = call(server, "POST", "/jobs", content=big.to_json())
    assert response.status_code in (401, 413)
    assert direct.count() == 0
    with HttpJobRepository(server.url, token=ADMIN_TOKEN) as repo, pytest.raises(ValueError):
        repo.add(big)


HOSTILE_PATHS = [
    "/jobs/..%2Fx", "/jobs/%2e%2e%2fetc%2fpasswd", "/jobs/x%00y", "/jobs/%00", "/jobs/a%2Fb",
    "/jobs/" + "a" * 200, "/jobs/j%C3%B6b", "/jobs/job%0A", "/jobs/.hidden",
    "/jobs/%2e%2e/complete", "/jobs/x%00/cancel", "/jobs/%ff%fe",
]


@pytest.mark.parametrize("path", HOSTILE_PATHS)
def test_hostile_ids_get_a_4xx_never_a_500(
    server: ServerProcess, direct: JobStore, path: str
) -> None:
    for method in ("GET", "DELETE", "PUT", "POST"):
        target = path if method != "POST" or path.count("/") > 2 else path + "/cancel"
        response = call(server, method, target, headers=ADMIN, json={"worker_id": "w"})
        assert 400 <= response.status_code < 500, (method, target, response.text)
        assert "Traceback" not in response.text
        assert response.json()["error"]
    assert direct.count() == 0


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/jobs", b"{bad"),
        ("POST", "/jobs", b"[1, 2"),
        ("POST", "/jobs", b'{"id": "../x", "ingestion_task_id": "t", "source_file_path": "/f",'
                          b' "content_type": "x"}'),
        ("POST", "/jobs", b'{"ingestion_task_id": "t"}'),
        ("POST", "/jobs", b"\xff\xfe\x00"),
        ("POST", "/jobs/batch", b'{"not": "a list"}'),
        ("POST", "/jobs/batch", b"[{]"),
        ("PUT", "/jobs/abc", b"null"),
        ("POST", "/claims", b"{"),
        ("POST", "/claims", b'{"worker_id": "w", "lease_seconds": "soon"}'),
        ("POST", "/claims", b'{"worker_id": "w", "n": -3}'),
        ("POST", "/claims", b'{"worker_id": "w", "wait": "forever"}'),
        ("POST", "/claims", b'{"worker_id": "w", "surprise": 1}'),
        ("POST", "/jobs/abc/fail", b'{"worker_id": "w"}'),
        ("POST", "/expire", b'{"now": "yesterday"}'),
        ("GET", "/jobs?status=../etc", b""),
        ("GET", "/jobs?limit=-1", b""),
        ("GET", "/jobs?limit=many", b""),
    ],
)
def test_malformed_requests_get_a_4xx_never_a_500(
    server: ServerProcess, direct: JobStore, method: str, path: str, body: bytes
) -> None:
    response = call(server, method, path, content=body, headers=ADMIN)
    assert 400 <= response.status_code < 500, response.text
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.json()["error"] in (
        "malformed_json", "invalid_body", "invalid_job", "invalid_argument", "invalid_job_id",
        "job_not_found",
    )
    assert direct.count() == 0


# -- logs and binding ------------------------------------------------------------------------


@pytest.mark.postgres
def test_tokens_and_passwords_are_never_logged_or_echoed(
    tmp_path: Path, pg_schema_dsn: str
) -> None:
    password = "Pa55w0rd-never-shown"
    # Trust authentication ignores the password, so the server runs with one in its URL.
    dsn = pg_schema_dsn.replace("postgresql://postgres@", f"postgresql://postgres:{password}@")
    assert password in dsn
    server = ServerProcess(dsn, tmp_path / "server.log", args=())
    try:
        with HttpJobRepository(server.url, token=ADMIN_TOKEN) as repo:
            job = repo.add(new_job())
            repo.get(job.id)
            repo.statistics()
        for token in (WRONG_TOKEN, WORKER_TOKEN):
            call(server, "GET", "/stats", headers={"Authorization": f"Bearer {token}"})
        response = call(server, "POST", "/login", content=f"token={WRONG_TOKEN}",
                        headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert response.status_code == 401 and WRONG_TOKEN not in response.text
        call(server, "GET", f"/jobs?status={WRONG_TOKEN[:5]}", headers=ADMIN)
        # An error inside the store (the schema is gone) must not show the DSN either.
        import psycopg

        from tests.postgres_support import server_dsn

        schema = dsn.split("search_path%3D")[-1]
        with psycopg.connect(server_dsn(), autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        failing = call(server, "GET", "/stats", headers=ADMIN)
        assert failing.status_code >= 400 and password not in failing.text
    finally:
        server.stop()
    log = server.log()
    assert "serving postgresql://postgres:***@" in log, log
    assert '"GET /stats HTTP/1.1" 200' in log  # the access log is there...
    for secret in (password, ADMIN_TOKEN, WORKER_TOKEN, WRONG_TOKEN):
        assert secret not in log  # ...without a secret in it


def test_the_server_binds_to_loopback_unless_told(server: ServerProcess) -> None:
    import psutil

    listening = {
        c.laddr.ip
        for c in psutil.Process(server.process.pid).net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
    }
    assert listening == {"127.0.0.1"}
    assert "Uvicorn running on http://127.0.0.1:" in server.log()


def test_the_readme_says_where_tls_belongs() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Workers on other machines", 1)[1].split("\n## ", 1)[0]
    assert "hybridstore serve" in section and "--token-file" in section
    assert "proxy_pass" in section or "reverse_proxy" in section
    assert "--ssl-keyfile" in section or "TLS" in section


# -- the client ------------------------------------------------------------------------------


def test_open_repository_takes_an_http_url_and_a_token(
    server: ServerProcess, direct: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    with open_repository(server.url, token=ADMIN_TOKEN) as repo:
        assert isinstance(repo, HttpJobRepository)
        repo.add(new_job())
    monkeypatch.setenv("HYBRIDSTORE_URL", server.url + "/")
    monkeypatch.setenv("HYBRIDSTORE_TOKEN", ADMIN_TOKEN)
    with open_repository() as repo:
        assert repo.count() == 1
    monkeypatch.setenv("HYBRIDSTORE_TOKEN", WRONG_TOKEN)
    with open_repository() as repo, pytest.raises(AccessDenied):
        repo.count()
    # The CLI's reading commands follow $HYBRIDSTORE_URL too.
    monkeypatch.setenv("HYBRIDSTORE_TOKEN", ADMIN_TOKEN)
    from click.testing import CliRunner

    from hybridstore.cli import cli

    result = CliRunner().invoke(cli, ["stats", "--json"])
    assert result.exit_code == 0 and '"total_jobs": 1' in result.output


def test_errors_arrive_typed_with_their_fields(server: ServerProcess, direct: JobStore) -> None:
    from hybridstore import JobNotFound, NotJobOwner, VersionConflict

    with HttpJobRepository(server.url, token=ADMIN_TOKEN) as repo:
        job = repo.add(new_job())
        with pytest.raises(JobAlreadyExists) as exists:
            repo.add(job)
        assert exists.value.job_id == job.id
        with pytest.raises(VersionConflict) as conflict:
            repo.save(job, expected_version=7)
        assert (conflict.value.expected, conflict.value.actual) == (7, 1)
        with pytest.raises(JobNotFound) as missing:
            repo.cancel("ghost")
        assert missing.value.job_id == "ghost" and isinstance(missing.value, KeyError)
        claimed = repo.claim_next("w1")
        assert claimed is not None
        with pytest.raises(NotJobOwner, match="w2"):
            repo.complete(job.id, "w2")
        repo.cancel(job.id)
        with pytest.raises(InvalidTransition) as wrong:
            repo.cancel(job.id)
        assert wrong.value.status == "cancelled"


# -- long polls ------------------------------------------------------------------------------


def test_a_waiting_claim_is_woken_by_a_new_job(server: ServerProcess, direct: JobStore) -> None:
    worker = HttpJobRepository(server.url, token=WORKER_TOKEN, claim_wait=10)
    admin = HttpJobRepository(server.url, token=ADMIN_TOKEN)
    got: list[RemoteJob | None] = []
    started = time.monotonic()
    waiting = threading.Thread(target=lambda: got.append(worker.claim_next("idle")))
    waiting.start()
    time.sleep(0.5)
    job = admin.add(new_job())
    waiting.join(timeout=15)
    elapsed = time.monotonic() - started
    assert got and got[0] is not None and got[0].id == job.id
    assert elapsed < 2, f"the waiting claim took {elapsed:.1f} s to see the new job"
    # Nothing ready: it answers None after the wait, not at once and not never.
    started = time.monotonic()
    assert worker.claim_next("idle", wait=1.0) is None
    assert 0.9 <= time.monotonic() - started < 5
    # wait=0 (the default): at once.
    with HttpJobRepository(server.url, token=WORKER_TOKEN) as default:
        started = time.monotonic()
        assert default.claim_next("idle") is None
        assert time.monotonic() - started < 0.5
    worker.close()
    admin.close()


def test_a_job_added_by_another_process_is_seen_within_the_poll_interval(
    server: ServerProcess, direct: JobStore
) -> None:
    worker = HttpJobRepository(server.url, token=WORKER_TOKEN)
    timer = threading.Timer(0.3, lambda: direct.add(new_job()))
    started = time.monotonic()
    timer.start()
    job = worker.claim_next("idle", wait=10)
    assert job is not None
    assert time.monotonic() - started < 3.5  # POLL_MAX (2 s) plus slack
    worker.close()


def test_the_server_caps_the_wait() -> None:
    from fastapi.testclient import TestClient

    from hybridstore.httpapi import create_app
    from hybridstore.memory import MemoryJobRepository

    app = create_app(MemoryJobRepository(), TokenTable([("admin", ADMIN_TOKEN)]),
                     claim_wait_max=0.3)
    with TestClient(app) as client:
        started = time.monotonic()
        response = client.post("/claims", json={"worker_id": "w", "wait": 3600}, headers=ADMIN)
        assert response.status_code == 200 and response.json() == []
        assert time.monotonic() - started < 2


# -- several servers on one database ---------------------------------------------------------


def _claimer(url: str, name: str, out: Any) -> None:
    claimed = []
    with HttpJobRepository(url, token=WORKER_TOKEN) as repo:
        while (job := repo.claim_next(name)) is not None:
            repo.complete(job.id, name, attempt=job.attempt)
            claimed.append(job.id)
    out.put(claimed)


@pytest.mark.postgres
def test_two_servers_on_one_database_never_hand_out_a_job_twice(
    tmp_path: Path, pg_schema_dsn: str
) -> None:
    servers = [ServerProcess(pg_schema_dsn, tmp_path / f"s{i}.log") for i in range(2)]
    try:
        with HttpJobRepository(servers[0].url, token=ADMIN_TOKEN) as admin:
            ids = {admin.add(new_job()).id for _ in range(200)}
        context = multiprocessing.get_context("spawn")
        out = context.Queue()
        workers = [
            context.Process(target=_claimer, args=(servers[i % 2].url, f"w{i}", out))
            for i in range(4)
        ]
        for process in workers:
            process.start()
        results = [out.get(timeout=120) for _ in workers]
        for process in workers:
            process.join(timeout=30)
            assert process.exitcode == 0
        claimed = [job_id for result in results for job_id in result]
        assert [i for i, n in Counter(claimed).items() if n > 1] == []
        assert set(claimed) == ids
        assert all(result for result in results), "every worker got some jobs"
        with HttpJobRepository(servers[1].url, token=ADMIN_TOKEN) as admin:
            assert admin.count(status="completed") == 200
    finally:
        for server in servers:
            server.stop()


# -- the worker features (issue 12) over HTTP ------------------------------------------------


def test_requeue_duplicates_batches_and_progress_over_http(
    server: ServerProcess, direct: JobStore
) -> None:
    from hybridstore import errors

    with HttpJobRepository(server.url, token=ADMIN_TOKEN) as repo:
        first = repo.add(new_job(unique_key="doc-1"))
        with pytest.raises(errors.DuplicateJob) as duplicate:  # type: ignore[attr-defined]
            repo.add(new_job(unique_key="doc-1"))
        assert duplicate.value.existing_id == first.id
        assert isinstance(duplicate.value, JobAlreadyExists)
        assert repo.add(new_job(unique_key="doc-1"), if_duplicate="return").id == first.id
        batch = repo.add_many([new_job(), new_job()])
        assert [j.version for j in batch] == [1, 1]
        claimed = repo.claim_many("w", 2)
        assert len(claimed) == 2
        beat = repo.heartbeat(claimed[0].id, "w", progress=0.4, message="transcribing")
        assert (beat.progress, beat.progress_message) == (0.4, "transcribing")  # type: ignore[attr-defined]
        back = repo.fail(claimed[1].id, "w", "boom", retry_in=60)
        assert back.not_before is not None  # type: ignore[attr-defined]
        cancelled = repo.cancel(first.id)
        again = repo.requeue(cancelled.id, reset_retries=True)
        assert again.status is JobStatus.PENDING and again.retry_count == 0
        with pytest.raises(InvalidTransition):
            repo.requeue(again.id)


def test_importing_the_client_and_server_modules_needs_no_running_server() -> None:
    # The server module and the client import; neither connects at import time.
    code = "import hybridstore.httpapi, hybridstore.httpclient, hybridstore.dashboard"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": str(REPO)})


def test_an_unreachable_server_is_backend_unavailable_which_a_worker_waits_out() -> None:
    from hybridstore import BackendUnavailable, HttpJobRepository, Worker

    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]  # closed again: nothing listens there
    repo = HttpJobRepository(f"http://127.0.0.1:{port}", token="t", timeout=2)
    with pytest.raises(BackendUnavailable, match="hybridstore serve"):
        repo.get("job-1")
    with pytest.raises(BackendUnavailable):  # burst: "no job is ready" is unknown
        Worker(repo, lambda job: None).run(burst=True)
    worker = Worker(repo, lambda job: None)  # a long-running worker waits it out
    threading.Timer(0.5, worker.stop).start()
    summary = worker.run()
    assert (summary.stopped_by, summary.claimed) == ("stop", 0)


def test_a_worker_with_a_worker_token_gives_back_its_prefetched_jobs(
    server: ServerProcess, direct: JobStore
) -> None:
    """Found by a review: the give-back of a graceful stop used ``save`` (admin only), so
    over HTTP the unstarted jobs stayed leased until their lease ran out."""
    from hybridstore import HttpJobRepository, Worker

    jobs = [direct.add(new_job(priority=-n)) for n in range(3)]
    with HttpJobRepository(server.url, token=WORKER_TOKEN) as repo:
        worker = Worker(repo, lambda job: worker.stop(), worker_id="w1", prefetch=3)
        summary = worker.run()
    assert (summary.completed, summary.given_back, summary.lost) == (1, 2, 0)
    for job in jobs[1:]:
        back = direct.get(job.id)
        assert back is not None and back.status is JobStatus.PENDING and back.retry_count == 0


def test_a_body_with_a_repeated_key_is_refused_and_changes_nothing(
    server: ServerProcess, direct: JobStore
) -> None:
    job = direct.add(new_job())
    claimed = direct.claim_next("w")
    assert claimed is not None
    body = f'{{"worker_id": "w", "results": {{"{job.id}": null, "{job.id}": {{"a": 1}}}}}}'
    response = call(server, "POST", "/completions", content=body.encode(), headers=WORKER)
    assert response.status_code == 400 and "twice" in response.json()["message"]
    assert direct.get(job.id) == claimed


def test_a_token_file_others_can_read_is_warned_about(tmp_path: Path) -> None:
    from structlog.testing import capture_logs

    path = tmp_path / "tokens"
    path.write_text(f"admin {ADMIN_TOKEN}\n")
    path.chmod(0o644)
    with capture_logs() as logs:
        load_tokens(path)
    assert [entry["event"] for entry in logs] == ["token_file_readable_by_others"]
    assert ADMIN_TOKEN not in str(logs)
    path.chmod(0o600)
    with capture_logs() as logs:
        load_tokens(path)
    assert logs == []
