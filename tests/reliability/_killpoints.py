"""The kill-point machinery: run a workload in a child process that SIGKILLs itself at
its k-th file-system call or SQL statement, and the model of what each step must leave.

Instrumented calls (patched in the child only): ``os.open``, ``os.write``,
``os.ftruncate``, ``os.fsync``, ``os.replace``, ``os.rename``, ``os.unlink``, ``os.mkdir``,
``io.open`` (used by
``Path.write_text``) and every ``execute``/``executemany`` of the sidecar's SQLite
connection (a ``sqlite3.Connection`` subclass given as ``factory=``). A kill "at" a call
happens just before it runs, so the state after call k-1 is what survives; for
``os.write`` the "torn" mode writes half the bytes first, then dies.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sqlite3
import threading
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from hybridstore import JobStatus, JobStore, RemoteJob
from tests.conftest import T0

FS_CALLS = ("open", "write", "ftruncate", "fsync", "replace", "rename", "unlink", "mkdir")
_ORIG = {name: getattr(os, name) for name in FS_CALLS}
_ORIG_IO_OPEN = io.open
_ORIG_CONNECT = sqlite3.connect

LATER = T0 + timedelta(days=3650)


def _job(job_id: str, n: int) -> RemoteJob:
    return RemoteJob(
        id=job_id,
        ingestion_task_id=f"task-{job_id}",
        source_file_path=f"/in/{job_id}.pdf",
        content_type="document",
        created_at=T0 + timedelta(seconds=n),
        max_retries=1,
    )


# -- the workload and its model ------------------------------------------------------------

State = dict[str, tuple[str, int]]  # job id -> (status, version)


@dataclass(frozen=True)
class Step:
    name: str
    after: State  # the state of every job once this step is acknowledged


def run_step(store: JobStore, index: int) -> None:
    """Perform step ``index`` of the workload (see ``STEPS``)."""
    name = STEPS[index].name
    op, _, arg = name.partition(" ")
    if op == "add":
        store.add(_job(arg, index))
    elif op == "claim":
        got = store.claim_next("w1", lease_seconds=60)
        assert got is not None and got.id == arg, (name, got)
    elif op == "complete":
        store.complete(arg, "w1", {"pages": 3})
    elif op == "fail":
        store.fail(arg, "w1", "converter crashed", retry_in=0)  # ready again at once
    elif op == "cancel-by-save":
        current = store.get(arg)
        assert current is not None
        store.save(
            current.model_copy(update={"status": JobStatus.CANCELLED}),
            expected_version=current.version,
        )
    elif op == "delete":
        assert store.delete(arg)
    elif op == "expire":
        assert [j.id for j in store.expire_overdue(now=LATER)] == [arg]
    elif op == "cleanup":
        assert store.cleanup(days_old=1, now=LATER) == int(arg)
    elif op == "add_many":
        store.add_many([_job(job_id, index) for job_id in arg.split(",")])
    elif op == "claim_many":
        wanted = arg.split(",")
        got = store.claim_many("w1", len(wanted), lease_seconds=60)
        assert [job.id for job in got] == wanted, (name, got)
    elif op == "complete_many":
        store.complete_many("w1", {job_id: {"pages": 1} for job_id in arg.split(",")})
    else:  # pragma: no cover
        raise AssertionError(name)


_BATCH = [f"b{n}" for n in range(9)]  # added together; b8 stays pending


def _steps() -> list[Step]:
    plan: list[tuple[str, State]] = [
        ("add k0", {"k0": ("pending", 1)}),
        ("claim k0", {"k0": ("processing", 2)}),
        ("complete k0", {"k0": ("completed", 3)}),
        ("add k1", {"k1": ("pending", 1)}),
        ("claim k1", {"k1": ("processing", 2)}),
        ("fail k1", {"k1": ("pending", 3)}),  # a retry remains: back to pending
        ("claim k1", {"k1": ("processing", 4)}),
        ("fail k1", {"k1": ("failed", 5)}),  # no retry left
        ("add k2", {"k2": ("pending", 1)}),
        ("cancel-by-save k2", {"k2": ("cancelled", 2)}),  # save that moves the file
        ("delete k0", {"k0": ("", 0)}),
        ("add k3", {"k3": ("pending", 1)}),
        ("claim k3", {"k3": ("processing", 2)}),
        ("expire k3", {"k3": ("pending", 3)}),  # lease ran out, a retry remains
        ("cleanup 2", {"k1": ("", 0), "k2": ("", 0)}),  # deletes two terminal jobs
        ("add k4", {"k4": ("pending", 1)}),
        # Batches: of SYNCFS_AT files or more (made durable by one syncfs) and fewer (one
        # fsync each).
        (f"add_many {','.join(_BATCH)}", dict.fromkeys(_BATCH, ("pending", 1))),
        (
            f"claim_many k3,k4,{','.join(_BATCH[:6])}",
            {"k3": ("processing", 4), "k4": ("processing", 2)}
            | dict.fromkeys(_BATCH[:6], ("processing", 2)),
        ),
        (
            f"complete_many k3,k4,{','.join(_BATCH[:6])}",
            {"k3": ("completed", 5), "k4": ("completed", 3)}
            | dict.fromkeys(_BATCH[:6], ("completed", 3)),
        ),
        ("claim_many b6,b7", dict.fromkeys(_BATCH[6:8], ("processing", 2))),
        ("complete_many b6,b7", dict.fromkeys(_BATCH[6:8], ("completed", 3))),
    ]
    steps: list[Step] = []
    state: State = {}
    for name, change in plan:
        state = {**state, **change}
        steps.append(Step(name, {k: v for k, v in state.items() if v[0]}))
    return steps


STEPS = _steps()


def allowed_states(acked: int) -> tuple[State, State]:
    """(state after the last acknowledged step, state after the step in flight)."""
    before = STEPS[acked - 1].after if acked > 0 else {}
    after = STEPS[acked].after if acked < len(STEPS) else before
    return before, after


# -- the child ----------------------------------------------------------------------------------


class _Killer:
    def __init__(self, kill_at: int, torn: bool, trace_fd: int | None) -> None:
        self.kill_at = kill_at
        self.torn = torn
        self.trace_fd = trace_fd
        self.count = 0
        self.armed = False
        self.step = -1
        self.lock = threading.Lock()

    def tick(self, kind: str, detail: str = "", write: tuple[int, Any] | None = None) -> None:
        if not self.armed:
            return
        with self.lock:  # a bulk batch writes its bodies from a second thread
            self.count += 1
            self._at(kind, detail, write)

    def _at(self, kind: str, detail: str, write: tuple[int, Any] | None) -> None:
        if self.trace_fd is not None:
            line = f"{self.count}\t{self.step}\t{kind}\t{detail}\n".encode()
            _ORIG["write"](self.trace_fd, line)
        if self.count == self.kill_at:
            if write is not None and self.torn:
                fd, data = write
                data = bytes(data)
                _ORIG["write"](fd, data[: max(1, len(data) // 2)])
            os.kill(os.getpid(), signal.SIGKILL)


# The batches of 8 below are written as bulk batches are: intents marked first, then the
# bodies, then the rows, then one syncfs. The protocol is the same at any threshold, and 8
# keeps the runner's kill points few. The bodies are written before the rows rather than
# by a second thread beside them, so that the k-th call is the same call in every run;
# the states a kill can leave differ only in which temp files exist.
SYNCFS_AT = 8


def _install(killer: _Killer) -> None:
    import hybridstore.ahead
    import hybridstore.files
    import hybridstore.journal
    import hybridstore.spares

    hybridstore.files.SYNCFS_AT = SYNCFS_AT
    hybridstore.journal.AHEAD_AT = SYNCFS_AT
    hybridstore.ahead.BodiesAhead.IN_THREAD = False
    # Spares are refilled at once, so that every move after the first refills the old copy
    # an earlier step parked: the kill points cover parking, refilling and its fsyncs.
    hybridstore.spares.REST_SECONDS = 0.0

    def wrap(name: str) -> Any:
        orig = _ORIG[name]

        def patched(*args: Any, **kwargs: Any) -> Any:
            detail = os.fspath(args[0]) if args and not isinstance(args[0], int) else ""
            if name == "write":
                killer.tick("write", "", (args[0], args[1]))
            else:
                killer.tick(name, str(detail))
            return orig(*args, **kwargs)

        return patched

    for name in FS_CALLS:
        setattr(os, name, wrap(name))

    def io_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        if not isinstance(file, int):
            killer.tick("io.open", f"{os.fspath(file)} {mode}")
        return _ORIG_IO_OPEN(file, mode, *args, **kwargs)

    io.open = io_open  # type: ignore[assignment]

    class CountingConnection(sqlite3.Connection):
        def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            killer.tick("sql", " ".join(sql.split())[:60])
            return super().execute(sql, *args)

        def executemany(self, sql: str, *args: Any) -> sqlite3.Cursor:  # type: ignore[override]
            killer.tick("sql", " ".join(sql.split())[:60])
            return super().executemany(sql, *args)

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        kwargs["factory"] = CountingConnection
        return _ORIG_CONNECT(*args, **kwargs)

    sqlite3.connect = connect  # type: ignore[assignment]


def _append(path: str, line: str) -> None:
    fd = _ORIG["open"](path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        _ORIG["write"](fd, line.encode())
    finally:
        os.close(fd)


def _child_workload(
    data_dir: str, ack_path: str, trace_path: str | None, kill_at: int, torn: bool, first_step: int
) -> None:
    trace_fd = None
    if trace_path:
        trace_fd = _ORIG["open"](trace_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    killer = _Killer(kill_at, torn, trace_fd)
    _install(killer)
    store = JobStore(data_dir)
    killer.armed = True
    for index in range(first_step, len(STEPS)):
        killer.step = index
        run_step(store, index)
        _append(ack_path, f"{index}\n")
    os._exit(0)


def _child_open(data_dir: str, trace_path: str | None, kill_at: int) -> None:
    """Open the store (recovering what a crash left) with the killer armed from the start."""
    trace_fd = None
    if trace_path:
        trace_fd = _ORIG["open"](trace_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    killer = _Killer(kill_at, False, trace_fd)
    _install(killer)
    killer.armed = True
    JobStore(data_dir).close()
    os._exit(0)


_CTX = multiprocessing.get_context("fork")


def run_child(target: Any, *args: Any) -> int:
    """Run ``target(*args)`` in a forked child; return its exit code (-9 when killed)."""
    proc = _CTX.Process(target=target, args=args)
    proc.start()
    proc.join(60)
    if proc.exitcode is None:  # pragma: no cover - a hang is a failure, not a wait
        proc.kill()
        proc.join()
        raise AssertionError("child hung")
    return int(proc.exitcode)


def read_acks(path: Path) -> list[int]:
    if not path.exists():
        return []
    return [int(line) for line in path.read_text().split()]


def read_trace(path: Path) -> list[tuple[int, int, str, str]]:
    events = []
    for line in path.read_text().splitlines():
        count, step, kind, detail = line.split("\t", 3)
        events.append((int(count), int(step), kind, detail))
    return events
