"""A job file moved by hand between status directories is taken as moved, never
quarantined or dropped: into ``pending/`` a requeue, into ``cancelled/`` a cancel."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

import hybridstore.maintenance
from hybridstore import JobStatus, JobStore
from hybridstore.cli import cli
from tests.conftest import new_job


def _failed_job(store: JobStore, job_id: str) -> None:
    store.add(new_job(id=job_id, max_retries=0))
    claimed = store.claim_next("w")
    assert claimed is not None and claimed.id == job_id
    store.fail(job_id, "w", "ValueError: boom", attempt=claimed.attempt)


def _move(data_dir: Path, job_id: str, src: str, dst: str) -> None:
    os.rename(data_dir / src / f"{job_id}.json", data_dir / dst / f"{job_id}.json")


def test_moved_into_pending_is_a_requeue_taken_in_by_the_next_open(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JobStore(data_dir) as store:
        _failed_job(store, "again")
    _move(data_dir, "again", "failed", "pending")
    monkeypatch.setattr(hybridstore.maintenance, "TEMP_SWEEP_EVERY", 0)
    with JobStore(data_dir) as store:
        job = store.get("again")
        assert job is not None and job.status is JobStatus.PENDING
        assert job.completed_at is None and job.worker_id is None
        assert job.error_message == "ValueError: boom"  # kept as history
        claimed = store.claim_next("w2")
        assert claimed is not None and claimed.id == "again"
        assert store.verify().ok
    assert not (data_dir / ".quarantine").exists()


def test_moved_into_cancelled_is_a_cancel_taken_in_by_reindex(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        store.add(new_job(id="stop-it"))
    _move(data_dir, "stop-it", "pending", "cancelled")
    with JobStore(data_dir) as store:
        report = store.verify()
        assert [(p.kind, p.job_id) for p in report.drift] == [("moved", "stop-it")]
        store.reindex()
        job = store.get("stop-it")
        assert job is not None and job.status is JobStatus.CANCELLED
        assert job.completed_at is not None and job.version == 2
        assert store.count(status="cancelled") == 1 and store.claim_next("w") is None
        assert store.verify().ok
    assert not (data_dir / ".quarantine").exists()


def test_verify_repair_takes_a_moved_job_in(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        _failed_job(store, "by-cli")
    _move(data_dir, "by-cli", "failed", "pending")
    runner = CliRunner()
    verified = runner.invoke(cli, ["--data-dir", str(data_dir), "verify"])
    assert verified.exit_code == 1 and "moved" in verified.output
    repaired = runner.invoke(cli, ["--data-dir", str(data_dir), "verify", "--repair"])
    assert repaired.exit_code == 0, repaired.output
    with JobStore(data_dir) as store:
        job = store.get("by-cli")
        assert job is not None and job.status is JobStatus.PENDING
        assert store.verify().ok and store.claim_next("w") is not None
    assert not (data_dir / ".quarantine").exists()


def test_a_copied_file_changes_nothing_until_repair_and_readers_never_write(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a newcomer: ``cp completed/ID.json failed/`` then ``hybridstore stats`` (a
    reader) quarantined the original and rewrote the job as failed. A copy is not a move:
    readers change nothing, an open's look leaves a job with two copies alone, and
    ``repair`` keeps the copy whose body matches its directory."""
    from tests.reliability._support import snapshot

    with JobStore(data_dir) as store:
        store.add(new_job(id="done"))
        claimed = store.claim_next("w")
        assert claimed is not None
        finished = store.complete("done", "w", {"pages": 3}, attempt=claimed.attempt)
    original = data_dir / "completed" / "done.json"
    (data_dir / "failed" / "done.json").write_bytes(original.read_bytes())
    monkeypatch.setattr(hybridstore.maintenance, "TEMP_SWEEP_EVERY", 0)
    before = snapshot(data_dir)
    runner = CliRunner()
    for args in (["stats"], ["list"], ["show", "done"], ["verify"]):
        runner.invoke(cli, ["--data-dir", str(data_dir), *args])
    after = snapshot(data_dir)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not {k for k in changed if not k.startswith("hybridstore.sqlite3")}, changed
    with JobStore(data_dir) as store:  # a writer's open: its look leaves the two copies
        assert original.exists() and (data_dir / "failed" / "done.json").exists()
        assert [p.kind for p in store.verify().drift] == ["duplicate"]
        store.repair()
        assert store.get("done") == finished
        assert store.verify().ok
    assert original.exists() and not (data_dir / "failed" / "done.json").exists()


def test_a_move_that_would_take_a_held_unique_key_keeps_the_store_usable(data_dir: Path) -> None:
    """Found by a cold review: a cancelled job moved by hand into ``pending/`` while another
    job holds its unique key made every open, reindex and repair raise ``DuplicateJob``.
    Now the move is taken without the key (two active jobs never share one)."""
    with JobStore(data_dir) as store:
        store.add(new_job(id="a", unique_key="K"))
        store.cancel("a")
        store.add(new_job(id="b", unique_key="K"))
    _move(data_dir, "a", "cancelled", "pending")
    (data_dir / "hybridstore.sqlite3").unlink()  # the next open rebuilds and takes it in
    with JobStore(data_dir) as store:
        moved = store.get("a")
        assert moved is not None and moved.status is JobStatus.PENDING
        assert moved.unique_key is None
        holder = store.get("b")
        assert holder is not None and holder.unique_key == "K"
        assert store.reindex().indexed == 2 and store.verify().ok


def test_a_rebuild_keeps_the_original_of_a_job_copied_by_hand(data_dir: Path) -> None:
    """Found by a cold review: a rebuild quarantined the real file of a completed job copied
    into ``pending/`` and requeued the job, even when a reader opened the store."""
    from tests.reliability._support import snapshot

    with JobStore(data_dir) as store:
        store.add(new_job(id="done"))
        claimed = store.claim_next("w")
        assert claimed is not None
        finished = store.complete("done", "w", {"ok": 1}, attempt=claimed.attempt)
    copy = data_dir / "pending" / "done.json"
    copy.write_bytes((data_dir / "completed" / "done.json").read_bytes())
    (data_dir / "hybridstore.sqlite3").unlink()
    files = {k: v for k, v in snapshot(data_dir).items() if not k.startswith("hybridstore.")}
    with JobStore(data_dir, create=False) as reader:  # rebuilds the index, moves no file
        assert reader.get("done") == finished
    after = {k: v for k, v in snapshot(data_dir).items() if not k.startswith("hybridstore.")}
    assert after == files
    with JobStore(data_dir) as store:
        store.reindex()
        assert store.get("done") == finished
        assert not copy.exists() and (data_dir / "completed" / "done.json").exists()
        assert store.verify().ok


def test_a_reader_recovering_a_moved_job_moves_no_file(data_dir: Path) -> None:
    """A reader's open re-derives the rows of other processes' unfinished writes; when such
    a job's file was also moved by hand, the reader indexes it as it is and leaves the
    rewrite to a writer."""
    from tests.reliability._support import snapshot

    JobStore(data_dir).close()
    pid = os.fork()
    if pid == 0:  # a process that adds and goes away, its intent not cleared
        JobStore(data_dir).add(new_job(id="left"))
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    _move(data_dir, "left", "pending", "cancelled")
    files = {k: v for k, v in snapshot(data_dir).items() if not k.startswith("hybridstore.")}
    with JobStore(data_dir, create=False) as reader:
        assert reader.get("left") is not None
    after = {k: v for k, v in snapshot(data_dir).items() if not k.startswith("hybridstore.")}
    assert after == files
    with JobStore(data_dir) as writer:  # a writer's repair takes the move in
        writer.repair()
        job = writer.get("left")
        assert job is not None and job.status is JobStatus.CANCELLED
        assert writer.verify().ok
