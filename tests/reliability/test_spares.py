"""Spare files: a durable store refills the old copies of moved jobs instead of creating
and removing files, and no reader, crash or second process can tell (``spares.py``)."""

from __future__ import annotations

import fcntl
import multiprocessing
import os
from pathlib import Path
from typing import Any

import pytest

from hybridstore import JobStatus, JobStore, files, maintenance, spares
from hybridstore.files import read_job_file
from hybridstore.spares import POOL_DIR, SparePool
from tests.conftest import new_job


@pytest.fixture(autouse=True)
def _no_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spares, "REST_SECONDS", 0.0)


def _inodes(data_dir: Path, status: str) -> dict[str, int]:
    directory = data_dir / status
    return {p.stem: p.stat().st_ino for p in directory.glob("*.json")}


def _pools(data_dir: Path) -> list[Path]:
    pools = data_dir / POOL_DIR
    return sorted(pools.iterdir()) if pools.exists() else []


def test_moves_refill_the_old_copies_of_earlier_moves(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        jobs = [store.add(new_job()) for _ in range(6)]
        pending = _inodes(data_dir, "pending")
        claimed = store.claim_many("w", 6, lease_seconds=60)
        assert len(claimed) == 6
        # The pending copies were parked, not removed: the finishes refill them.
        assert len(list(_pools(data_dir)[0].iterdir())) == 6
        store.complete_many("w", {job.id: {"n": 1} for job in claimed})
        completed = _inodes(data_dir, "completed")
        assert set(completed.values()) == set(pending.values())
        for job in jobs:  # each body is whole and its own
            stored = store.get(job.id)
            assert stored is not None and stored.status is JobStatus.COMPLETED
            assert stored.result_data == {"n": 1}
        assert store.verify().ok


def test_a_refilled_spare_holds_exactly_its_new_body(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        big = store.add(new_job(task_options={"note": "x" * 5000}))
        small = store.add(new_job())
        store.claim_next("w", lease_seconds=60)  # parks big's pending copy (over 5 KB)
        claimed = store.claim_next("w", lease_seconds=60)  # refills it with a small body
        assert claimed is not None and claimed.id == small.id
        path = data_dir / "processing" / f"{small.id}.json"
        found = read_job_file(path, files.MAX_READ_BYTES, small.id, JobStatus.PROCESSING)
        assert path.stat().st_size == len(found.data) < 5000
        assert found.job == store.get(small.id)
        assert store.get(big.id) is not None


def test_a_store_that_is_not_durable_removes_old_copies(data_dir: Path) -> None:
    with JobStore(data_dir, durable=False) as store:
        store.add(new_job())
        assert store.claim_next("w", lease_seconds=60) is not None
        assert _pools(data_dir) == []


def test_the_last_store_of_the_process_removes_the_pool(data_dir: Path) -> None:
    first, second = JobStore(data_dir), JobStore(data_dir)
    first.add(new_job())
    assert second.claim_next("w", lease_seconds=60) is not None
    assert len(_pools(data_dir)) == 1  # one pool for both stores
    first.close()
    assert len(_pools(data_dir)) == 1
    second.close()
    assert _pools(data_dir) == []


def _park_and_die(data_dir: str) -> None:
    store = JobStore(data_dir)
    store.add(new_job())
    store.claim_next("w", lease_seconds=60)
    os._exit(0)  # no close: the pool stays behind


def _open_to_write(data_dir: str) -> None:
    maintenance.TEMP_SWEEP_EVERY = 0  # sweep at this open, however recent the last sweep
    JobStore(data_dir).close()


def _in_a_process(target: object, data_dir: Path) -> None:
    child = multiprocessing.get_context("spawn").Process(target=target, args=(str(data_dir),))
    child.start()
    child.join(60)
    assert child.exitcode == 0


def test_the_pool_of_a_process_that_is_gone_is_swept(data_dir: Path) -> None:
    with JobStore(data_dir) as mine:
        mine.add(new_job())
        mine.claim_next("w", lease_seconds=60)
        [my_pool] = _pools(data_dir)
        _in_a_process(_park_and_die, data_dir)
        assert len(_pools(data_dir)) == 2
        # The next writer's open sweeps: the dead process's pool goes, the live one stays.
        _in_a_process(_open_to_write, data_dir)
        assert _pools(data_dir) == [my_pool]
        assert mine.verify().ok


def test_a_spare_with_another_link_is_never_refilled(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for status in JobStatus:
        (root / status.value).mkdir(parents=True)
    old = root / "pending" / "a.json"
    old.write_text("old body")
    pool = SparePool.of(root, "user")
    try:
        assert pool.park(str(old))
        [parked] = list(_pools(root)[0].iterdir())
        os.link(parked, tmp_path / "someone-elses")
        assert pool.take() is None
        assert (tmp_path / "someone-elses").read_text() == "old body"
    finally:
        pool.release("user")


def test_a_forked_child_does_not_use_its_parents_pool(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for status in JobStatus:
        (root / status.value).mkdir(parents=True)
    pool = SparePool.of(root, "user")
    try:
        for name in ("a", "b"):
            (root / "pending" / f"{name}.json").write_text(name)
            assert pool.park(str(root / "pending" / f"{name}.json"))
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: nothing to take, nowhere to park
            (root / "pending" / "c.json").write_text("c")
            result = pool.take() is None and not pool.park(str(root / "pending" / "c.json"))
            os.write(write, b"1" if result else b"0")
            os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"1"
        os.waitpid(pid, 0)
        taken = pool.take()  # the parent's spares are intact
        assert taken is not None
        os.close(taken[1])
    finally:
        pool.release("user")


def test_a_reader_reads_again_a_file_that_changes_under_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = new_job()
    path = tmp_path / f"{job.id}.json"
    path.write_bytes(job.to_json())
    changed = job.model_copy(update={"version": 7, "task_options": {"note": "y" * 50}})
    real_read = os.read
    calls = []

    def read_while_refilled(fd: int, n: int) -> bytes:
        calls.append(fd)
        if len(calls) > 1:
            return real_read(fd, n)
        # The first read gets the start of the old body, then the inode is rewritten:
        # the rest comes from the new body, and the two halves make no job.
        start = real_read(fd, 10)
        with open(path, "r+b") as f:
            f.write(changed.to_json())
            f.truncate()
        return start

    monkeypatch.setattr(os, "read", read_while_refilled)
    found = read_job_file(path, files.MAX_READ_BYTES, job.id, JobStatus.PENDING)
    assert found.job == changed  # read again, whole

    def always_changing(fd: int, n: int) -> bytes:
        os.utime(path)
        os.chmod(path, 0o644 if os.stat(path).st_mode & 0o100 else 0o744)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", always_changing)
    with pytest.raises(FileNotFoundError, match="changed while being read"):
        read_job_file(path, files.MAX_READ_BYTES, job.id, JobStatus.PENDING)


def test_a_reader_holding_an_old_copy_refilled_under_another_name_never_parses_it(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JobStore(data_dir) as store:
        a, b = store.add(new_job()), store.add(new_job())
        path = str(data_dir / "pending" / f"{a.id}.json")
        real_open = os.open
        armed = [True]

        def open_then_refill(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            fd = real_open(file, flags, *args, **kwargs)
            if armed[0] and os.fspath(file) == path:
                armed[0] = False
                # Before the reader's first look at what it opened: A is claimed (its
                # pending copy parked), and B's claim refills that copy with B's body and
                # renames it to processing/B.json.
                assert store.claim_next("w", lease_seconds=60) == store.get(a.id)
                assert store.claim_next("w", lease_seconds=60) == store.get(b.id)
                assert (
                    os.fstat(fd).st_ino == os.stat(data_dir / "processing" / f"{b.id}.json").st_ino
                )
            return fd

        monkeypatch.setattr(os, "open", open_then_refill)
        got = store.get(a.id)  # opens A's old copy: it sees the path moved, and looks again
        assert got is not None and got.id == a.id and got.status is JobStatus.PROCESSING


def test_a_spare_is_not_refilled_before_it_has_rested(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spares, "REST_SECONDS", 60.0)
    with JobStore(data_dir) as store:
        store.add(new_job())
        pending = set(_inodes(data_dir, "pending").values())
        job = store.claim_next("w", lease_seconds=60)
        assert job is not None
        store.complete(job.id, "w", {})
        assert not set(_inodes(data_dir, "completed").values()) & pending
        assert len(list(_pools(data_dir)[0].iterdir())) == 2  # both old copies resting


def test_a_full_pool_removes_old_copies(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spares, "CAPACITY", 2)
    with JobStore(data_dir) as store:
        for _ in range(4):
            store.add(new_job())
        assert len(store.claim_many("w", 4, lease_seconds=60)) == 4
        assert len(list(_pools(data_dir)[0].iterdir())) == 2
        assert store.count(status="processing") == 4 and store.verify().ok


def test_the_directory_a_spare_left_is_made_durable_before_its_new_one(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a journal, the disk could otherwise hold the refilled inode under both names.
    synced: list[str] = []
    real = files.fsync_dir
    monkeypatch.setattr(files, "fsync_dir", lambda d: (synced.append(Path(d).name), real(d)))
    with JobStore(data_dir) as store:
        store.add(new_job())
        job = store.claim_next("w", lease_seconds=60)
        assert job is not None
        synced.clear()
        store.complete(job.id, "w", {})  # refills the pending copy the claim parked
        pool = _pools(data_dir)[0].name
        assert synced.index(pool) < synced.index("completed")


def test_a_sweep_never_follows_a_pool_swapped_for_a_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "data"
    pool = root / POOL_DIR / "999-gone"
    pool.mkdir(parents=True)
    (pool / "spare").write_text("old body")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "precious").write_text("keep me")
    real_flock = fcntl.flock

    def flock_then_swap(fd: int, operation: int) -> None:
        real_flock(fd, operation)
        os.rename(pool, tmp_path / "moved-away")  # someone swaps the pool for a link
        os.symlink(elsewhere, pool)

    monkeypatch.setattr(fcntl, "flock", flock_then_swap)
    spares.sweep_orphans(root)
    assert (elsewhere / "precious").read_text() == "keep me"
    assert not (tmp_path / "moved-away" / "spare").exists()  # the pool it locked was emptied
