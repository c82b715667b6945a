"""hybridstore beside its peers: the same jobs, the same processes, one run.

Who is measured (each with its own durable defaults, as a user gets them):

- **hybridstore** (``JobStore``), durable (the default: every job file fsynced, then
  renamed, then its directory fsynced, before a call returns; the SQLite sidecar in WAL
  with ``synchronous=NORMAL``) and ``durable=False`` (no fsync at all);
- **hybridstore's PostgreSQL backend** (``open_repository("postgresql://…")``), one fresh
  schema per measurement, when a server answers;
- **huey**'s ``SqliteStorage`` (the storage layer huey's consumer uses): ``enqueue`` of
  bytes; ``dequeue`` (deletes the row: no lease) and ``put_data(id, result,
  is_result=True)``, which is what ``Huey.put_result`` stores as a task's result;
- **persist-queue**'s ``SQLiteAckQueue``: ``put``; ``get`` + ``ack`` (the row is marked
  unacked, then acked; nothing else is stored);
- **the older JSON-index design** (``benchmarks/legacy_store.py``): enqueue only, with
  ``save_job``. It has no claim: a worker of that design listed the pending directory and
  saved the job as processing, with nothing to stop two workers taking the same job and a
  cost that grows with every pending job, so a take + finish would measure something no
  one should build.

Every implementation gets the same jobs: ``RemoteJob``s shaped like the suite's population
(``benchmarks/dataset.py``), padded to ``PAYLOAD_BYTES`` of JSON, and the same job dicts
(``job.model_dump(mode="json")``) for the queues: huey stores bytes (``json.dumps``),
persist-queue pickles (its default serialiser). Building the jobs is not timed;
serialising them is (it is part of every ``add``, ``enqueue`` and ``put``).

Two measurements per implementation and repetition:

- **enqueue**: one process puts ``jobs`` jobs into a fresh, empty store, one call per job
  (and, for hybridstore and PostgreSQL, ``add_many`` in batches of ``BATCH``); jobs/s.
- **take + finish**: a fresh store is filled (untimed), ``os.sync()`` is called, then
  ``procs`` forked worker processes, each with its own handle opened before a start
  barrier, take and finish jobs until none is left. Timed: from the barrier's release
  to the last worker's end; jobs/s = jobs ÷ that wall-clock time. Each worker records
  every id it was handed; **duplicates** = deliveries of an id beyond its first. Afterwards
  the store is asked how many jobs ended finished (completed / result stored / acked).

Repetitions interleave the implementations (their order rotates each repetition), so a
change of machine load hits all of them alike; the report takes medians. Every enqueue
repetition runs before the first take + finish, and the stores are removed only at the
end (why: the comment in ``PeersRun.run``).

    python -m benchmarks.peers --jobs 2000 --procs 4 --reps 3 --json out.json

PostgreSQL: ``$HYBRIDSTORE_BENCH_PG_DSN``, else ``$HYBRIDSTORE_TEST_PG_DSN``, else
``postgresql://postgres@127.0.0.1:5432/test``; skipped without a server, unless
``HYBRIDSTORE_BENCH_REQUIRE_PG=1`` (then an error). Stores go under ``--dir`` (default
``$HYBRIDSTORE_BENCH_CACHE``, else ``/var/tmp/hybridstore-bench``), removed afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import platform
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks.dataset import new_job
from benchmarks.legacy_store import LegacyJobStore
from benchmarks.provenance import pg_unreachable, source_digest
from hybridstore import JobStore, RemoteJob, open_repository
from hybridstore.repository import JobRepository

__all__ = ["PeersRun", "main", "run"]

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_DIR = Path("/var/tmp/hybridstore-bench")
#: The stored JSON body of each job (compact), in bytes.
PAYLOAD_BYTES = 1024
#: ``add_many`` batch size for the batched enqueue.
BATCH = 500
#: ``claim_many`` size for the batched take + finish.
CLAIM_BATCH = 16
#: What a worker stores as a job's result.
RESULT: dict[str, Any] = {"pages": 12, "characters": 48_213, "language": "en"}
BARRIER_TIMEOUT = 900.0
PG_SETTINGS = ("fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
               "shared_buffers", "autovacuum")
_CTX = multiprocessing.get_context("fork")


# -- the jobs -----------------------------------------------------------------------------


def make_jobs(count: int, seed: int = 14) -> list[RemoteJob]:
    """``count`` pending jobs like the suite's, each padded to ``PAYLOAD_BYTES`` of JSON."""
    rng = random.Random(seed)
    jobs = []
    for _ in range(count):
        job = new_job(rng)
        options = dict(job.task_options)
        options["note"] = ""
        short = len(job.model_copy(update={"task_options": options}).model_dump_json())
        options["note"] = "x" * max(0, PAYLOAD_BYTES - short)
        jobs.append(job.model_copy(update={"task_options": options}))
    return jobs


def payload(job: RemoteJob) -> dict[str, Any]:
    """The job as the queues get it: the same dict hybridstore stores."""
    return job.model_dump(mode="json")


# -- PostgreSQL ---------------------------------------------------------------------------


def server_dsn() -> str:
    return (os.environ.get("HYBRIDSTORE_BENCH_PG_DSN") or os.environ.get("HYBRIDSTORE_TEST_PG_DSN")
            or DEFAULT_DSN)


def schema_dsn(dsn: str, schema: str) -> str:
    """``dsn`` (a ``postgresql://`` URL) with its search_path set to ``schema``."""
    base, _, query = dsn.partition("?")
    kept = [part for part in query.split("&") if part and not part.startswith("options=")]
    return f"{base}?" + "&".join([*kept, f"options=-csearch_path%3D{schema}"])


class PgSchemas:
    """Fresh schemas on one server, each dropped when done with."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.run = f"hs_peers_{uuid.uuid4().hex[:8]}"
        self.count = 0

    @contextlib.contextmanager
    def fresh(self) -> Iterator[str]:
        import psycopg

        self.count += 1
        schema = f"{self.run}_{self.count}"
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        try:
            yield schema_dsn(self.dsn, schema)
        finally:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def server_info(self) -> dict[str, Any]:
        import psycopg

        from hybridstore.config import describe_target

        with psycopg.connect(self.dsn, autocommit=True, connect_timeout=5) as conn:
            row = conn.execute("SHOW server_version").fetchone()
            settings = {}
            for name in PG_SETTINGS:
                found = conn.execute("SELECT setting, unit FROM pg_settings WHERE name = %s",
                                     (name,)).fetchone()
                if found is not None:
                    value, unit = found
                    if unit == "8kB" and str(value).isdigit():
                        settings[name] = f"{int(value) * 8 / 1024:g}MB"
                    else:
                        settings[name] = f"{value}{unit or ''}"
        return {"server": describe_target(self.dsn), "version": row[0] if row else "?",
                "settings": settings}


# -- forked workers -----------------------------------------------------------------------

# A worker factory runs in the child, before the start barrier: it opens the child's own
# handle and returns the loop, which takes and finishes jobs until none is left and
# returns the ids it was handed, in order (one entry per delivery).
WorkerLoop = Callable[[], list[str]]
WorkerFactory = Callable[[int], WorkerLoop]


def _child(index: int, factory: WorkerFactory, start: Any, end: Any, out: Any) -> None:
    ids: list[str] | None = None
    error = None
    try:
        loop = factory(index)
        start.wait(BARRIER_TIMEOUT)
        try:
            ids = loop()
        finally:
            end.wait(BARRIER_TIMEOUT)
    except BaseException:
        error = traceback.format_exc()
        start.abort()
        end.abort()
    out.put((index, ids, error))
    out.close()
    out.join_thread()
    os._exit(0)


def run_workers(procs: int, factory: WorkerFactory) -> tuple[float, list[list[str]]]:
    """Fork ``procs`` workers; the wall-clock seconds from the start barrier's release to
    the last worker's end, and what each worker was handed."""
    start, end = _CTX.Barrier(procs + 1), _CTX.Barrier(procs + 1)
    out = _CTX.Queue()
    children = [_CTX.Process(target=_child, args=(i, factory, start, end, out), daemon=True)
                for i in range(procs)]
    for child in children:
        child.start()
    seconds = None
    with contextlib.suppress(Exception):  # a broken barrier: a child failed, reported below
        start.wait(BARRIER_TIMEOUT)
        began = time.perf_counter()
        end.wait(BARRIER_TIMEOUT)
        seconds = time.perf_counter() - began
    results: dict[int, list[str]] = {}
    errors = []
    for _ in children:
        index, ids, error = out.get(timeout=BARRIER_TIMEOUT)
        if error is not None:
            errors.append(f"worker {index}:\n{error}")
        else:
            results[index] = ids
    for child in children:
        child.join(30)
        if child.is_alive():
            child.kill()
    if errors or seconds is None:
        raise RuntimeError("take + finish workers failed:\n" + "\n".join(errors))
    return seconds, [results[i] for i in range(procs)]


# -- the implementations ------------------------------------------------------------------


@dataclass
class Enqueue:
    """One enqueue measurement: ``put(workdir, jobs)`` returns the timed seconds."""

    key: str
    label: str
    impl: str
    put: Callable[[Path, list[RemoteJob]], float]
    needs_pg: bool = False


@dataclass
class TakeFinish:
    """One take + finish measurement.

    ``prepare(workdir, jobs)`` fills a fresh store (untimed) and returns a context: what the
    workers need to open it (``factory(context)``) and to check it (``finished(context)``:
    how many distinct jobs ended finished). ``cleanup(context)`` releases it.
    """

    key: str
    label: str
    impl: str
    prepare: Callable[[Path, list[RemoteJob]], Any]
    factory: Callable[[Any], WorkerFactory]
    finished: Callable[[Any], int]
    cleanup: Callable[[Any], None] = lambda context: None
    needs_pg: bool = False
    notes: dict[str, Any] = field(default_factory=dict)


def _timed(call: Callable[[Any], object], items: list[Any]) -> float:
    """Seconds to ``call`` each item in turn (after an untimed ``os.sync()``, so that no
    earlier write is billed to this one)."""
    os.sync()
    began = time.perf_counter()
    for item in items:
        call(item)
    return time.perf_counter() - began


def _batches(jobs: list[RemoteJob], size: int) -> list[list[RemoteJob]]:
    return [jobs[i:i + size] for i in range(0, len(jobs), size)]


# hybridstore, file store


def _hs_enqueue(*, durable: bool, batched: bool) -> Callable[[Path, list[RemoteJob]], float]:
    def put(workdir: Path, jobs: list[RemoteJob]) -> float:
        with JobStore(workdir / "store", durable=durable) as store:
            if batched:
                seconds = _timed(store.add_many, _batches(jobs, BATCH))
            else:
                seconds = _timed(store.add, jobs)
            assert store.count() == len(jobs)
        return seconds

    return put


def _hs_prepare(durable: bool) -> Callable[[Path, list[RemoteJob]], Any]:
    def prepare(workdir: Path, jobs: list[RemoteJob]) -> Any:
        path = workdir / "store"
        with JobStore(path) as store:
            for batch in _batches(jobs, BATCH):
                store.add_many(batch)
        return {"target": str(path), "durable": durable}

    return prepare


def _open(context: dict[str, Any]) -> JobRepository:
    if "dsn" in context:
        return open_repository(context["dsn"])
    return JobStore(context["target"], durable=context["durable"])


def _repo_one_at_a_time(context: dict[str, Any]) -> WorkerFactory:
    def factory(index: int) -> WorkerLoop:
        repo = _open(context)
        worker = f"peers-{index}"

        def loop() -> list[str]:
            seen: list[str] = []
            while (job := repo.claim_next(worker)) is not None:
                seen.append(job.id)
                repo.complete(job.id, worker, RESULT, attempt=job.attempt)
            return seen

        return loop

    return factory


def has_complete_many(repo: object) -> bool:
    return hasattr(repo, "complete_many")


def _repo_batched(context: dict[str, Any]) -> WorkerFactory:
    def factory(index: int) -> WorkerLoop:
        repo = _open(context)
        worker = f"peers-{index}"
        complete_many = getattr(repo, "complete_many", None)

        def loop() -> list[str]:
            seen: list[str] = []
            while jobs := repo.claim_many(worker, CLAIM_BATCH):
                seen.extend(job.id for job in jobs)
                if complete_many is not None:
                    complete_many(worker, {job.id: RESULT for job in jobs},
                                  attempts={job.id: job.attempt for job in jobs})
                else:
                    for job in jobs:
                        repo.complete(job.id, worker, RESULT, attempt=job.attempt)
            return seen

        return loop

    return factory


def _repo_finished(context: dict[str, Any]) -> int:
    repo = _open(context)
    try:
        assert repo.count(status=["pending", "processing"]) == 0, "jobs left unfinished"
        return repo.count(status="completed")
    finally:
        repo.close()


# hybridstore, PostgreSQL


def _pg_enqueue(schemas: PgSchemas, *, batched: bool) -> Callable[[Path, list[RemoteJob]], float]:
    def put(workdir: Path, jobs: list[RemoteJob]) -> float:
        with schemas.fresh() as dsn:
            repo = open_repository(dsn)
            try:
                repo.count()  # the schema is created on first use: not timed
                if batched:
                    seconds = _timed(repo.add_many, _batches(jobs, BATCH))
                else:
                    seconds = _timed(repo.add, jobs)
                assert repo.count() == len(jobs)
            finally:
                repo.close()
        return seconds

    return put


def _pg_prepare(schemas: PgSchemas) -> Callable[[Path, list[RemoteJob]], Any]:
    def prepare(workdir: Path, jobs: list[RemoteJob]) -> Any:
        import psycopg

        stack = contextlib.ExitStack()
        try:
            dsn = stack.enter_context(schemas.fresh())
            repo = open_repository(dsn)
            try:
                for batch in _batches(jobs, BATCH):
                    repo.add_many(batch)
            finally:
                repo.close()
            # What autovacuum would have done by then on a live table (the server may run
            # without it): statistics for the planner.
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("ANALYZE remote_jobs")
        except BaseException:
            stack.close()
            raise
        return {"dsn": dsn, "schema": stack}

    return prepare


def _pg_cleanup(context: dict[str, Any]) -> None:
    context["schema"].close()


# huey


def _huey_storage(path: Path) -> Any:
    from huey.storage import SqliteStorage  # type: ignore[import-untyped]

    return SqliteStorage(name="peers", filename=str(path))


def _huey_enqueue(workdir: Path, jobs: list[RemoteJob]) -> float:
    storage = _huey_storage(workdir / "huey.db")
    items = [payload(job) for job in jobs]
    try:
        seconds = _timed(lambda item: storage.enqueue(json.dumps(item).encode()), items)
        assert storage.queue_size() == len(jobs)
    finally:
        storage.close()
    return seconds


def _huey_prepare(workdir: Path, jobs: list[RemoteJob]) -> Any:
    storage = _huey_storage(workdir / "huey.db")
    try:
        for job in jobs:
            storage.enqueue(json.dumps(payload(job)).encode())
    finally:
        storage.close()
    return {"path": workdir / "huey.db"}


def _huey_factory(context: dict[str, Any]) -> WorkerFactory:
    def factory(index: int) -> WorkerLoop:
        storage = _huey_storage(context["path"])

        def loop() -> list[str]:
            seen: list[str] = []
            while (data := storage.dequeue()) is not None:
                job_id = json.loads(bytes(data))["id"]
                seen.append(job_id)
                storage.put_data(job_id, json.dumps(RESULT).encode(), is_result=True)
            return seen

        return loop

    return factory


def _huey_finished(context: dict[str, Any]) -> int:
    storage = _huey_storage(context["path"])
    try:
        assert storage.queue_size() == 0, "jobs left in the queue"
        return int(storage.result_store_size())
    finally:
        storage.close()


# persist-queue


def _pq_queue(path: Path) -> Any:
    from persistqueue import SQLiteAckQueue

    return SQLiteAckQueue(str(path))


def _pq_enqueue(workdir: Path, jobs: list[RemoteJob]) -> float:
    queue = _pq_queue(workdir / "pq")
    items = [payload(job) for job in jobs]
    try:
        seconds = _timed(queue.put, items)
        assert queue.qsize() == len(jobs)
    finally:
        queue.close()
    return seconds


def _pq_prepare(workdir: Path, jobs: list[RemoteJob]) -> Any:
    queue = _pq_queue(workdir / "pq")
    try:
        for job in jobs:
            queue.put(payload(job))
    finally:
        queue.close()
    return {"path": workdir / "pq"}


def _pq_factory(context: dict[str, Any]) -> WorkerFactory:
    def factory(index: int) -> WorkerLoop:
        from persistqueue.exceptions import Empty

        # Opened before the start barrier: opening one resumes unacked items (its
        # ``auto_resume`` default), which must not happen while others work.
        queue = _pq_queue(context["path"])

        def loop() -> list[str]:
            seen: list[str] = []
            while True:
                try:
                    item = queue.get(block=False)
                except Empty:
                    return seen
                seen.append(item["id"])
                queue.ack(item)

        return loop

    return factory


def _pq_finished(context: dict[str, Any]) -> int:
    import sqlite3 as sq

    # Counted from the file, without opening a queue (which would resume unacked items).
    conn = sq.connect(Path(context["path"]) / "data.db")
    try:
        rows = dict(conn.execute(
            "SELECT status, COUNT(*) FROM ack_queue_default GROUP BY status").fetchall())
    finally:
        conn.close()
    assert set(rows) <= {5}, f"items not acked: {rows}"
    return int(rows.get(5, 0))


# the older JSON-index design


def _legacy_enqueue(workdir: Path, jobs: list[RemoteJob]) -> float:
    from benchmarks.dataset import legacy_body

    store = LegacyJobStore(workdir / "legacy")
    bodies = [legacy_body(job) for job in jobs]
    seconds = _timed(store.save_job, bodies)
    assert len(store.find_jobs_by_status("pending")) == len(jobs)
    return seconds


def enqueues(schemas: PgSchemas | None) -> list[Enqueue]:
    found = [
        Enqueue("hs_add", "hybridstore, add", "hybridstore",
                _hs_enqueue(durable=True, batched=False)),
        Enqueue("hs_add_many", f"hybridstore, add_many ({BATCH} a batch)", "hybridstore",
                _hs_enqueue(durable=True, batched=True)),
        Enqueue("hs_nd_add", "hybridstore durable=False, add", "hybridstore-nondurable",
                _hs_enqueue(durable=False, batched=False)),
        Enqueue("hs_nd_add_many", f"hybridstore durable=False, add_many ({BATCH} a batch)",
                "hybridstore-nondurable", _hs_enqueue(durable=False, batched=True)),
        Enqueue("huey_enqueue", "huey SqliteStorage, enqueue", "huey", _huey_enqueue),
        Enqueue("pq_put", "persist-queue SQLiteAckQueue, put", "persist-queue", _pq_enqueue),
        Enqueue("legacy_save", "older JSON-index design, save_job", "legacy", _legacy_enqueue),
    ]
    if schemas is not None:
        found[4:4] = [
            Enqueue("pg_add", "hybridstore PostgreSQL, add", "postgres",
                    _pg_enqueue(schemas, batched=False), needs_pg=True),
            Enqueue("pg_add_many", f"hybridstore PostgreSQL, add_many ({BATCH} a batch)",
                    "postgres", _pg_enqueue(schemas, batched=True), needs_pg=True),
        ]
    return found


def batched_label(prefix: str, available: bool) -> str:
    finish = "complete_many" if available else "complete each (no complete_many yet)"
    return f"{prefix}, claim_many({CLAIM_BATCH}) + {finish}"


def take_finishes(schemas: PgSchemas | None) -> list[TakeFinish]:
    file_batched = has_complete_many(JobStore)
    found = [
        TakeFinish("hs_claim", "hybridstore, claim_next + complete", "hybridstore",
                   _hs_prepare(True), _repo_one_at_a_time, _repo_finished),
        TakeFinish("hs_claim_many", batched_label("hybridstore", file_batched), "hybridstore",
                   _hs_prepare(True), _repo_batched, _repo_finished,
                   notes={"complete_many": file_batched}),
        TakeFinish("hs_nd_claim", "hybridstore durable=False, claim_next + complete",
                   "hybridstore-nondurable", _hs_prepare(False), _repo_one_at_a_time,
                   _repo_finished),
        TakeFinish("huey_dequeue", "huey SqliteStorage, dequeue + put_data (result)", "huey",
                   _huey_prepare, _huey_factory, _huey_finished),
        TakeFinish("pq_get_ack", "persist-queue SQLiteAckQueue, get + ack", "persist-queue",
                   _pq_prepare, _pq_factory, _pq_finished),
    ]
    if schemas is not None:
        from hybridstore.postgres import PostgresJobRepository

        pg_batched = has_complete_many(PostgresJobRepository)
        found[3:3] = [
            TakeFinish("pg_claim", "hybridstore PostgreSQL, claim_next + complete", "postgres",
                       _pg_prepare(schemas), _repo_one_at_a_time, _repo_finished,
                       _pg_cleanup, needs_pg=True),
            TakeFinish("pg_claim_many", batched_label("hybridstore PostgreSQL", pg_batched),
                       "postgres", _pg_prepare(schemas), _repo_batched, _repo_finished,
                       _pg_cleanup, needs_pg=True, notes={"complete_many": pg_batched}),
        ]
    return found


# -- the machine and the settings ---------------------------------------------------------


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def _git(*args: str) -> str | None:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              timeout=30, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def machine_info(workdir: Path) -> dict[str, Any]:
    from hybridstore.files import file_system_type

    return {
        "cpu_count": os.cpu_count(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": _cpu_model(),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "file_system": file_system_type(workdir),
        "data_dir": str(workdir.parent),
        "system": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "sqlite": sqlite3.sqlite_version,
    }


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


_SYNC = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


def library_settings(workdir: Path) -> dict[str, dict[str, Any]]:
    """Each library's SQLite settings as its defaults leave them, read from a live handle."""
    found: dict[str, dict[str, Any]] = {}
    probe = workdir / "settings"
    probe.mkdir(parents=True, exist_ok=True)
    storage = _huey_storage(probe / "huey.db")
    try:
        conn = storage.conn
        found["huey"] = {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": _SYNC.get(conn.execute("PRAGMA synchronous").fetchone()[0]),
            "fsync_argument": storage._fsync,
            "commit": "each enqueue, dequeue and put_data is its own transaction"
                      " (dequeue: BEGIN EXCLUSIVE, select, delete)",
        }
    finally:
        storage.close()
    queue = _pq_queue(probe / "pq")
    try:
        conn = queue._getter
        found["persist-queue"] = {
            "journal_mode": conn.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": _SYNC.get(conn.execute("PRAGMA synchronous").fetchone()[0]),
            "auto_commit": queue.auto_commit,
            "multithreading": queue.multithreading,
            "auto_resume": True,
            "commit": "each put, get and ack commits (get: select, then a separate update"
                      " marking the row unacked)",
        }
    finally:
        queue.close()
    with JobStore(probe / "store") as store:
        store.count()
    conn = sqlite3.connect(probe / "store" / _sidecar_name())
    try:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
    finally:
        conn.close()
    found["hybridstore"] = {
        "journal_mode": journal,
        "synchronous": "NORMAL",
        "durable": "job file fsynced, renamed, directory fsynced before each call returns;"
                   " durable=False: no fsync",
    }
    shutil.rmtree(probe, ignore_errors=True)
    return found


def _sidecar_name() -> str:
    from hybridstore.sidecar import SIDECAR_NAME

    return SIDECAR_NAME


# -- the run ------------------------------------------------------------------------------


@dataclass
class PeersRun:
    jobs: int = 2000
    procs: int = 4
    reps: int = 3
    base_dir: Path | None = None
    with_pg: bool | None = None  # None: when a server answers
    only: list[str] | None = None  # keys to run (default: all)
    log: Callable[[str], None] = lambda message: None

    def run(self) -> dict[str, Any]:
        started = time.time()
        load_before = os.getloadavg()
        base = self.base_dir or Path(os.environ.get("HYBRIDSTORE_BENCH_CACHE") or DEFAULT_DIR)
        base.mkdir(parents=True, exist_ok=True)
        workroot = Path(tempfile.mkdtemp(prefix="peers-", dir=base))
        skipped: dict[str, str] = {}
        schemas = None
        pg_info = None
        dsn = server_dsn()
        if self.with_pg is not False:
            reason = pg_unreachable(dsn)
            if reason is None:
                schemas = PgSchemas(dsn)
                pg_info = schemas.server_info()
            elif self.with_pg or os.environ.get("HYBRIDSTORE_BENCH_REQUIRE_PG") == "1":
                raise RuntimeError(f"{reason} (HYBRIDSTORE_BENCH_REQUIRE_PG=1)")
            else:
                skipped["postgres"] = reason
        else:
            skipped["postgres"] = "not asked for"
        jobs = make_jobs(self.jobs)
        enq = [e for e in enqueues(schemas) if not self.only or e.key in self.only]
        take = [t for t in take_finishes(schemas) if not self.only or t.key in self.only]
        enqueue_runs: dict[str, list[float]] = {e.key: [] for e in enq}
        take_runs: dict[str, list[dict[str, Any]]] = {t.key: [] for t in take}
        machine = machine_info(workroot)
        # Every enqueue is measured before any take + finish, and no store is removed
        # before the end: on ext4 without a journal (these machines' file system), each new
        # file skips over every inode freed in the last minute or more, so a measurement that
        # creates files after one that removed thousands would pay for those removals too.
        # The take + finish measurements remove files themselves (a job's file moves on each
        # claim and finish), and each pays for its own removals and for those before it.
        try:
            settings = library_settings(workroot)
            for rep in range(self.reps):
                for e in _rotate(enq, rep):
                    workdir = workroot / f"{e.key}-{rep}"
                    workdir.mkdir()
                    seconds = e.put(workdir, jobs)
                    enqueue_runs[e.key].append(self.jobs / seconds)
                    self.log(f"rep {rep + 1}: {e.label}: {self.jobs / seconds:,.0f} jobs/s")
            for rep in range(self.reps):
                for t in _rotate(take, rep):
                    workdir = workroot / f"{t.key}-{rep}"
                    workdir.mkdir()
                    result = self._take_finish(t, workdir, jobs)
                    take_runs[t.key].append(result)
                    self.log(f"rep {rep + 1}: {t.label}: {result['rate']:,.0f} jobs/s,"
                             f" {result['duplicates']} duplicates")
        finally:
            shutil.rmtree(workroot, ignore_errors=True)
        machine.update(loadavg_at_start=[round(x, 2) for x in load_before],
                       loadavg_at_end=[round(x, 2) for x in os.getloadavg()])
        dirty = _git("status", "--porcelain", "--", "hybridstore")
        return {
            "kind": "hybridstore-peers",
            "format": 1,
            "date": datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "run_seconds": round(time.time() - started, 1),
            "params": {"jobs": self.jobs, "procs": self.procs, "reps": self.reps,
                       "payload_bytes": PAYLOAD_BYTES, "batch": BATCH,
                       "claim_batch": CLAIM_BATCH},
            "git_commit": _git("rev-parse", "HEAD"),
            "hybridstore_uncommitted_changes": dirty.splitlines() if dirty else [],
            "hybridstore_source_digest": source_digest(),
            "machine": machine,
            "versions": {name: _version(name) for name in
                         ("hybridstore", "huey", "persist-queue", "psycopg", "pydantic")},
            "postgres": pg_info,
            "settings": settings,
            "skipped": skipped,
            "enqueue": {e.key: {"label": e.label, "impl": e.impl, "runs": enqueue_runs[e.key],
                                "median": statistics.median(enqueue_runs[e.key])}
                        for e in enq},
            "take_finish": {t.key: _take_summary(t, take_runs[t.key]) for t in take},
        }

    def _take_finish(self, t: TakeFinish, workdir: Path, jobs: list[RemoteJob]) -> dict[str, Any]:
        context = t.prepare(workdir, jobs)
        try:
            os.sync()
            seconds, delivered = run_workers(self.procs, t.factory(context))
            finished = t.finished(context)
        finally:
            t.cleanup(context)
        every = [job_id for ids in delivered for job_id in ids]
        unique = set(every)
        return {
            "seconds": round(seconds, 4),
            "rate": self.jobs / seconds,
            "deliveries": len(every),
            "unique": len(unique),
            "duplicates": len(every) - len(unique),
            "missing": len({job.id for job in jobs} - unique),
            "finished": finished,
            "per_worker": [len(ids) for ids in delivered],
        }


def _rotate(items: list[Any], by: int) -> list[Any]:
    if not items:
        return items
    by %= len(items)
    return items[by:] + items[:by]


def _take_summary(t: TakeFinish, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "label": t.label, "impl": t.impl, "notes": t.notes, "runs": runs,
        "median": statistics.median(r["rate"] for r in runs),
        "median_seconds": statistics.median(r["seconds"] for r in runs),
        "duplicates": [r["duplicates"] for r in runs],
        "missing": [r["missing"] for r in runs],
        "finished": [r["finished"] for r in runs],
    }


def run(jobs: int = 2000, procs: int = 4, reps: int = 3, **options: Any) -> dict[str, Any]:
    """One comparison (see the module's doc); the result as JSON-ready data."""
    return PeersRun(jobs=jobs, procs=procs, reps=reps, **options).run()


def _print_table(data: Mapping[str, Any]) -> None:
    print(f"\n{data['params']['jobs']:,} jobs of ~{PAYLOAD_BYTES} B, "
          f"{data['params']['procs']} processes, medians of {data['params']['reps']}")
    for key, entry in data["enqueue"].items():
        print(f"  enqueue  {entry['label']:<60} {entry['median']:>9,.0f} jobs/s  [{key}]")
    for key, entry in data["take_finish"].items():
        print(f"  take+fin {entry['label']:<60} {entry['median']:>9,.0f} jobs/s"
              f"  duplicates {entry['duplicates']}  [{key}]")
    for name, reason in data["skipped"].items():
        print(f"  skipped  {name}: {reason}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--dir", type=Path, default=None,
                        help="where the stores go (default $HYBRIDSTORE_BENCH_CACHE, else"
                             f" {DEFAULT_DIR})")
    parser.add_argument("--no-pg", action="store_true", help="leave PostgreSQL out")
    parser.add_argument("--only", default=None,
                        help="comma-separated keys to run (e.g. hs_claim,pq_get_ack)")
    args = parser.parse_args(argv)
    data = PeersRun(
        jobs=args.jobs, procs=args.procs, reps=args.reps, base_dir=args.dir,
        with_pg=False if args.no_pg else None,
        only=args.only.split(",") if args.only else None,
        log=lambda message: print(message, file=sys.stderr, flush=True),
    ).run()
    _print_table(data)
    if args.json:
        args.json.write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
