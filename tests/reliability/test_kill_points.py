"""Crash consistency: SIGKILL at every file-system call and SQL statement of a workload.

A child process runs add → claim → complete (plus fail/retry, a save that moves the file,
delete, expire and cleanup) and kills itself at its k-th instrumented call; the parent steps
k through every call of every operation. After each crash the parent reopens the store
and checks that every job body parses, every acknowledged step is visible, the step in
flight is either fully applied or absent, no job is in two places, no temp file or intent
is left, the sidecar equals a fresh scan (``verify`` clean) and the store keeps working.

A second net kills several busy writer processes at random times.
"""

from __future__ import annotations

import collections
import os
import random
import shutil
import signal
import sqlite3
import time
from pathlib import Path

import pytest

from hybridstore import (
    InvalidTransition,
    JobNotFound,
    JobStatus,
    JobStore,
    NotJobOwner,
    RemoteJob,
    VersionConflict,
)
from hybridstore.files import Layout, read_job_file
from hybridstore.sidecar import SIDECAR_NAME

from . import _killpoints as kp
from ._support import assert_consistent, job_files, make_job

# -- helpers ---------------------------------------------------------------------------------


def _calibrate(tmp_path: Path) -> list[tuple[int, int, str, str]]:
    data_dir = tmp_path / "calibrate"
    trace = tmp_path / "calibrate.trace"
    acks = tmp_path / "calibrate.acks"
    code = kp.run_child(kp._child_workload, str(data_dir), str(acks), str(trace), 0, False, 0)
    assert code == 0
    assert kp.read_acks(acks) == list(range(len(kp.STEPS)))
    with JobStore(data_dir) as store:
        jobs = assert_consistent(store)
    assert {j: (v.status.value, v.version) for j, v in jobs.items()} == kp.STEPS[-1].after
    return kp.read_trace(trace)


def _raw_bodies_parse(data_dir: Path) -> None:
    """Before anyone repairs anything, every file under a job's name is a whole body."""
    layout = Layout(data_dir)
    for job_id, statuses in job_files(data_dir).items():
        for status in statuses:
            read_job_file(layout.job_path(status, job_id), 1 << 30, job_id, status)


def _unfinished_writes(data_dir: Path) -> list[str]:
    """The jobs whose intent marks a write that did not finish, read straight from the
    sidecar and the files: the row (committed with the intent) and the files disagree.
    Intents of finished writes, which their process clears lazily, are left out."""
    path = data_dir / SIDECAR_NAME
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        intents = conn.execute(
            "SELECT i.job_id, j.status, j.version"
            " FROM intents i LEFT JOIN jobs j ON j.id = i.job_id"
        ).fetchall()
    finally:
        conn.close()
    files = job_files(data_dir)
    layout = Layout(data_dir)
    unfinished = []
    for job_id, status, version in intents:
        where = [s.value for s in files.get(job_id, [])]
        if status is None:
            finished = not where
        elif where != [status]:
            finished = False
        else:
            path = layout.job_path(JobStatus(status), job_id)
            found = read_job_file(path, 1 << 30, job_id, JobStatus(status))
            finished = found.job.version == version
        if not finished:
            unfinished.append(job_id)
    return unfinished


def _check_recovered(data_dir: Path, acked: list[int], context: str) -> None:
    assert acked == list(range(len(acked))), (context, acked)
    _raw_bodies_parse(data_dir)
    with JobStore(data_dir) as store:
        jobs = assert_consistent(store)
        state = {j: (v.status.value, v.version) for j, v in jobs.items()}
        before, after = kp.allowed_states(len(acked))
        for job_id in set(before) | set(after) | set(state):
            assert state.get(job_id) in (before.get(job_id), after.get(job_id)), (
                f"{context}: {job_id} is {state.get(job_id)}, expected "
                f"{before.get(job_id)} (before the step in flight) or "
                f"{after.get(job_id)} (after it); acked {len(acked)} steps"
            )
        # The recovered store works at once: no job hidden, no lock left behind.
        probe = store.add(make_job("probe"))
        pending = {j.id for j in store.find(status="pending")}
        claimed = []
        while (got := store.claim_next("after-crash")) is not None:
            claimed.append(got.id)
            store.complete(got.id, "after-crash")
        assert set(claimed) == pending and probe.id in claimed
        assert_consistent(store)


# -- the kill-point runner -------------------------------------------------------------------


@pytest.mark.slow
def test_kill_at_every_call_of_every_operation(tmp_path: Path) -> None:
    trace = _calibrate(tmp_path)
    kinds = collections.Counter(kind for _, _, kind, _ in trace)
    # The runner really reaches every kind of call of the write protocol.
    for kind in ("open", "write", "fsync", "replace", "unlink", "sql"):
        assert kinds[kind] > 0, kinds
    # ... and every step of the workload has kill points.
    assert {step for _, step, _, _ in trace} == set(range(len(kp.STEPS)))

    outcomes: collections.Counter[str] = collections.Counter()
    for k, step, kind, detail in trace:
        data_dir = tmp_path / f"k{k}"
        acks = tmp_path / f"k{k}.acks"
        code = kp.run_child(kp._child_workload, str(data_dir), str(acks), None, k, False, 0)
        assert code == -signal.SIGKILL, (k, kind, detail, code)
        acked = kp.read_acks(acks)
        assert len(acked) == step, (k, step, acked)
        outcomes["write unfinished" if _unfinished_writes(data_dir) else "none unfinished"] += 1
        _check_recovered(
            data_dir, acked, f"kill at call {k} ({kind} {detail}) of step {kp.STEPS[step].name!r}"
        )
        shutil.rmtree(data_dir)
    # Both halves of the protocol were hit: crashes before the row and intent commit (or
    # after the files were done), and crashes between the two.
    assert outcomes["write unfinished"] > 0 and outcomes["none unfinished"] > 0, outcomes
    print(f"{len(trace)} kill points over {len(kp.STEPS)} steps: {dict(kinds)}; {outcomes}")


@pytest.mark.slow
def test_torn_write_at_every_write_call(tmp_path: Path) -> None:
    """The child writes half of a buffer, then dies: the half-written temp file is never
    seen under a job's name and is cleaned up by the recovery."""
    trace = _calibrate(tmp_path)
    writes = [(k, step) for k, step, kind, _ in trace if kind == "write"]
    assert len(writes) >= len([s for s in kp.STEPS if not s.name.startswith(("delete", "cleanup"))])
    for k, step in writes:
        data_dir = tmp_path / f"t{k}"
        acks = tmp_path / f"t{k}.acks"
        code = kp.run_child(kp._child_workload, str(data_dir), str(acks), None, k, True, 0)
        assert code == -signal.SIGKILL
        acked = kp.read_acks(acks)
        assert len(acked) == step
        _check_recovered(data_dir, acked, f"torn write at call {k} of step {kp.STEPS[step].name!r}")
        shutil.rmtree(data_dir)


@pytest.mark.slow
def test_kill_during_recovery(tmp_path: Path) -> None:
    """A crash while the next open repairs an earlier crash loses nothing either.

    For one crash state per step that left an intent, the reopening process is itself
    killed at each of its calls; a third open must then satisfy the same invariants as a
    clean recovery."""
    trace = _calibrate(tmp_path)
    # Per step, the richest crash state to recover from: killed at the unlink of the old
    # file (a move: the job is in two directories; a delete: the file is still there), or
    # for steps without one, at the fsync of the temp file (a whole temp file is left), or
    # for a batch made durable by one syncfs, at its first rename (whole temp files left).
    chosen: dict[int, int] = {}
    for k, step, kind, _ in trace:
        if kind == "unlink" and step not in chosen:
            chosen[step] = k
    for i, (k, step, kind, _) in enumerate(trace):
        if kind == "fsync" and trace[i - 1][2] == "write" and step not in chosen:
            chosen[step] = k
    for k, step, kind, _ in trace:
        if kind == "replace" and step not in chosen:
            chosen[step] = k
    assert set(chosen) == set(range(len(kp.STEPS)))
    tried = 0
    for step, k in sorted(chosen.items()):
        base = tmp_path / f"base{k}"
        acks = tmp_path / f"base{k}.acks"
        code = kp.run_child(kp._child_workload, str(base), str(acks), None, k, False, 0)
        assert code == -signal.SIGKILL
        assert _unfinished_writes(base), (k, kp.STEPS[step].name)  # a crash in the file step
        acked = kp.read_acks(acks)
        calib = tmp_path / f"rc{k}"
        shutil.copytree(base, calib)
        rtrace = tmp_path / f"rc{k}.trace"
        assert kp.run_child(kp._child_open, str(calib), str(rtrace), 0) == 0
        shutil.rmtree(calib)
        events = kp.read_trace(rtrace)
        assert events, "the reopen did nothing"
        for j, _, kind, detail in events:
            crashed = tmp_path / f"r{k}-{j}"
            shutil.copytree(base, crashed)
            code = kp.run_child(kp._child_open, str(crashed), None, j)
            assert code == -signal.SIGKILL
            _check_recovered(
                crashed,
                acked,
                f"kill at recovery call {j} ({kind} {detail}) after crash at call {k}",
            )
            shutil.rmtree(crashed)
            tried += 1
        shutil.rmtree(base)
    assert tried > 150, tried
    print(f"{tried} kills during recovery, from {len(chosen)} crash states")


# -- the second net: random-time kills of busy writers --------------------------------------

EXPECTED = (VersionConflict, NotJobOwner, InvalidTransition, JobNotFound)


def _busy_writer(data_dir: str, log_path: str, name: str, seed: int) -> None:
    """Mixed writes forever; logs "begin" before and "ack" after each one, and any
    unexpected error (e.g. "database is locked") as "error"."""
    rng = random.Random(seed)
    store = JobStore(data_dir)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(*fields: object) -> None:
        os.write(fd, ("\t".join(str(f) for f in fields) + "\n").encode())

    n = 0
    mine: list[str] = []
    while True:
        n += 1
        roll = rng.random()
        try:
            if roll < 0.35 or not mine:
                # One job, or a batch (of up to 12: made durable by one syncfs from 8).
                batch = [
                    RemoteJob(
                        id=f"{name}-{n}-{i}",
                        ingestion_task_id="t",
                        content_type="c",
                        source_file_path="/in/x",
                    )
                    for i in range(1 if rng.random() < 0.5 else rng.randint(2, 12))
                ]
                log("begin", "add", batch[0].id)
                added = store.add_many(batch) if len(batch) > 1 else [store.add(batch[0])]
                for stored in added:
                    mine.append(stored.id)
                    log("ack", "add", stored.id, stored.version)
            elif roll < 0.7:
                log("begin", "claim", "")
                got_many = store.claim_many(name, rng.choice((1, 1, 3, 10)), lease_seconds=60)
                for got in got_many:
                    log("ack", "claim", got.id, got.version)
                finished = [got for got in got_many if rng.random() < 0.7]
                if finished:
                    log("begin", "complete", finished[0].id)
                    completed = store.complete_many(
                        name,
                        {got.id: {"n": n} for got in finished},
                        attempts={got.id: got.attempt for got in finished},
                    )
                    for done in completed:
                        log("ack", "complete", done.id, done.version)
                for got in got_many:
                    if got not in finished:
                        log("begin", "fail", got.id)
                        done = store.fail(got.id, name, "boom", attempt=got.attempt, retry_in=0)
                        log("ack", "fail", done.id, done.version)
            elif roll < 0.85:
                job_id = rng.choice(mine)
                current = store.get(job_id)
                if current is None:
                    continue
                log("begin", "save", job_id)
                saved = store.save(
                    current.model_copy(update={"task_options": {"n": n}}),
                    expected_version=current.version,
                )
                log("ack", "save", saved.id, saved.version)
            else:
                job_id = mine.pop(rng.randrange(len(mine)))
                current = store.get(job_id)
                if current is None or not current.status.is_terminal:
                    continue
                log("begin", "delete", job_id)
                assert store.delete(job_id)
                log("ack", "delete", job_id, 0)
        except EXPECTED:
            continue
        except Exception as exc:
            log("error", type(exc).__name__, repr(str(exc)))


@pytest.mark.slow
def test_random_kills_of_busy_writers(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    JobStore(data_dir).close()
    rng = random.Random(4)
    writers: dict[int, tuple[object, str]] = {}
    logs: list[Path] = []
    serial = 0

    def start() -> None:
        nonlocal serial
        serial += 1
        log_path = tmp_path / f"w{serial}.log"
        logs.append(log_path)
        proc = kp._CTX.Process(
            target=_busy_writer, args=(str(data_dir), str(log_path), f"w{serial}", serial)
        )
        proc.start()
        writers[serial] = (proc, str(log_path))

    for _ in range(4):
        start()
    deadline = time.monotonic() + 12
    kills = 0
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(0.02, 0.25))
        victim = rng.choice(list(writers))
        proc, _ = writers.pop(victim)
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        proc.join()  # type: ignore[attr-defined]
        kills += 1
        start()
    for proc, _ in writers.values():
        os.kill(proc.pid, signal.SIGKILL)  # type: ignore[attr-defined]
        proc.join()  # type: ignore[attr-defined]

    acked: dict[str, int] = {}
    deleted: set[str] = set()
    in_flight_delete: set[str] = set()
    errors: list[str] = []
    acks = 0
    for log_path in logs:
        if not log_path.exists():
            continue
        last_begin = None
        for line in log_path.read_text().splitlines():
            fields = line.split("\t")
            if fields[0] == "error":
                errors.append(line)
            elif fields[0] == "begin":
                last_begin = fields
            elif fields[0] == "ack" and len(fields) == 4:
                acks += 1
                last_begin = None
                op, job_id, version = fields[1], fields[2], int(fields[3])
                if op == "delete":
                    deleted.add(job_id)
                else:
                    acked[job_id] = max(acked.get(job_id, 0), version)
        if last_begin is not None and last_begin[1] == "delete":
            in_flight_delete.add(last_begin[2])
    assert errors == []
    assert kills >= 30 and acks > 200, (kills, acks)

    with JobStore(data_dir) as store:
        jobs = assert_consistent(store)
    for job_id, version in acked.items():
        if job_id in deleted:
            assert job_id not in jobs, job_id
        elif job_id in in_flight_delete and job_id not in jobs:
            continue
        else:
            assert job_id in jobs, f"acknowledged {job_id} v{version} was lost"
            assert jobs[job_id].version >= version, (job_id, jobs[job_id].version, version)
