"""Disk full, I/O errors, read-only file systems and oversized jobs.

Injected ENOSPC/EIO/EROFS at each system call of a save (open of the temp file, write,
fsync, replace, the directory's open and fsync, the unlink of a moved job's old file), for
an update in place, a move to another status and a new job; a real tmpfs filled to the
last byte; a tmpfs remounted read-only; ``max_job_bytes``. Each failure is a typed
``StorageError``; a failure before the rename leaves the previous version, the sidecar
row and no intent or temp file behind, and the store works again with no repair; an
fsync failure is raised at once, never retried into a success.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import hybridstore.files as files_module
import hybridstore.spares as spares_module
from hybridstore import (
    HybridStoreError,
    JobStatus,
    JobStore,
    JobTooLarge,
    RemoteJob,
    StorageError,
)
from hybridstore.store import DEFAULT_MAX_JOB_BYTES

from ._support import assert_consistent, make_job, snapshot, temp_files


@pytest.fixture(autouse=True)
def _no_spares(monkeypatch: pytest.MonkeyPatch) -> None:
    # The faults here are injected into the file layer's own calls (``files.os``): old
    # copies are removed and bodies go to new temp files, as in a store with no spare
    # (tests/reliability/test_spares.py covers the pool).
    monkeypatch.setattr(spares_module, "CAPACITY", 0)


def _tree(data_dir: Path) -> dict[str, tuple[Any, ...]]:
    """The data directory's files, but the sidecar's and the lock files."""
    return {k: v for k, v in snapshot(data_dir).items() if "sqlite3" not in k and ".locks" not in k}


class _FaultyOs:
    """``os`` as ``hybridstore.files`` sees it, with one call failing."""

    def __init__(self, name: str, code: int, nth: int, when: Callable[..., bool]) -> None:
        self.name, self.code, self.nth, self.when = name, code, nth, when
        self.seen = 0
        self.calls: list[str] = []

    def __getattr__(self, attr: str) -> Any:
        real = getattr(os, attr)
        if attr not in ("open", "write", "fsync", "replace", "unlink", "close"):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(attr)
            if attr == self.name and self.when(*args):
                self.seen += 1
                if self.seen == self.nth:
                    raise OSError(self.code, os.strerror(self.code))
            return real(*args, **kwargs)

        return call


def _creates(path: Any, flags: int, *rest: Any) -> bool:
    return bool(flags & os.O_CREAT)


def _opens_dir(path: Any, flags: int, *rest: Any) -> bool:
    return bool(flags & os.O_DIRECTORY)


def _always(*args: Any) -> bool:
    return True


# (fault id, os call, errno, nth matching call, predicate, phase)
FAULTS = [
    ("open-temp-ENOSPC", "open", errno.ENOSPC, 1, _creates, "before"),
    ("open-temp-EROFS", "open", errno.EROFS, 1, _creates, "before"),
    ("write-ENOSPC", "write", errno.ENOSPC, 1, _always, "before"),
    ("write-EIO", "write", errno.EIO, 1, _always, "before"),
    ("fsync-file-EIO", "fsync", errno.EIO, 1, _always, "before"),
    ("fsync-file-ENOSPC", "fsync", errno.ENOSPC, 1, _always, "before"),
    ("replace-EIO", "replace", errno.EIO, 1, _always, "before"),
    ("replace-EROFS", "replace", errno.EROFS, 1, _always, "before"),
    ("open-dir-EIO", "open", errno.EIO, 1, _opens_dir, "after-rename"),
    ("fsync-dir-EIO", "fsync", errno.EIO, 2, _always, "after-rename"),
    ("unlink-old-EIO", "unlink", errno.EIO, 1, _always, "after-rename"),
]


def _scenario_job(store: JobStore, scenario: str) -> tuple[RemoteJob | None, RemoteJob]:
    """(the stored job before, the job to save) for one scenario."""
    if scenario == "new":
        return None, make_job("target")
    stored = store.add(make_job("target", task_options={"v": 1}))
    if scenario == "update":
        return stored, stored.model_copy(update={"task_options": {"v": 2}})
    return stored, stored.model_copy(update={"status": JobStatus.CANCELLED})


CASES = [
    pytest.param(fault, scenario, id=f"{fault[0]}-{scenario}")
    for fault in FAULTS
    for scenario in ("update", "move", "new")
    if scenario == "move" or fault[1] != "unlink"  # only a move unlinks during a save
]


@pytest.mark.parametrize(("fault", "scenario"), CASES)
def test_injected_storage_errors_during_a_save(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, fault: tuple[Any, ...], scenario: str
) -> None:
    _, call, code, nth, when, phase = fault
    store = JobStore(data_dir)
    store.add(make_job("bystander"))
    before, new = _scenario_job(store, scenario)
    row_before = store._sidecar.row("target")
    tree_before = _tree(data_dir)

    faulty = _FaultyOs(call, code, nth, when)
    monkeypatch.setattr(files_module, "os", faulty)
    with pytest.raises(StorageError) as caught:
        store.save(new)
    monkeypatch.setattr(files_module, "os", os)

    err = caught.value
    assert isinstance(err, HybridStoreError) and isinstance(err, OSError)
    assert err.errno == code and faulty.seen == nth
    assert "target" in str(err) or str(data_dir) in str(err)
    # An fsync that failed is never retried: no fsync call follows the failed one.
    if call == "fsync":
        assert faulty.calls.count("fsync") == nth
    assert temp_files(data_dir) == []  # no temp file left, whatever failed

    if phase == "before":
        # Nothing changed: the previous version, its row, no intent.
        assert not err.in_place
        tree_after = _tree(data_dir)
        assert tree_after == tree_before
        assert store._sidecar.row("target") == row_before
        assert store.journal.unsettled_intents() == []
        assert store.get("target") == before
        assert_consistent(store)  # consistent with no repair
    else:
        # The new body reached its directory but the save was not reported as a success.
        # The intent names the job; the next touch re-derives it (here: the next open).
        assert err.in_place
        assert store.journal.unsettled_intents() == ["target"]
        store.close()
        store = JobStore(data_dir)
        got = store.get("target")
        assert got is not None and got.version == (before.version if before else 0) + 1
        assert_consistent(store)
    # The store works again at once: another save, a claim, a verify.
    current = store.get("target")
    again = store.save((current or new).model_copy(update={"task_options": {"v": 3}}))
    assert again.version == (current.version if current else 0) + 1
    assert store.claim_next("w") is not None
    assert_consistent(store)
    store.close()


def test_a_delete_whose_unlink_fails_keeps_the_job(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with JobStore(data_dir) as store:
        stored = store.add(make_job("target"))
        monkeypatch.setattr(files_module, "os", _FaultyOs("unlink", errno.EIO, 1, _always))
        with pytest.raises(StorageError):
            store.delete("target")
        monkeypatch.setattr(files_module, "os", os)
        assert store.get("target") == stored
        assert store.journal.unsettled_intents() == []
        assert_consistent(store)
        assert store.delete("target")
        assert_consistent(store)


# -- max_job_bytes ---------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [10_000, None], ids=["limit-10k", "default-limit"])
def test_a_huge_job_is_refused_before_anything_is_written(
    data_dir: Path, limit: int | None
) -> None:
    kwargs = {} if limit is None else {"max_job_bytes": limit}
    cap = limit or DEFAULT_MAX_JOB_BYTES
    with JobStore(data_dir, **kwargs) as store:
        small = store.add(make_job("small"))
        before = _tree(data_dir)
        row = store._sidecar.row("small")
        huge = {"blob": "x" * (cap + 1)}
        for attempt in (
            lambda: store.add(make_job("huge", task_options=huge)),
            lambda: store.save(make_job("huge", task_options=huge)),
            lambda: store.save(small.model_copy(update={"task_options": huge})),
            lambda: store.complete(store.claim_next("w").id, "w", huge),  # type: ignore[union-attr]
        ):
            with pytest.raises(JobTooLarge) as caught:
                attempt()
            assert isinstance(caught.value, ValueError) and str(cap) in str(caught.value)
        after = _tree(data_dir)
        # Only the claim (a legitimate write) changed "small"; nothing huge landed.
        assert not any("huge" in k for k in after)
        assert store.journal.unsettled_intents() == []
        assert store.get("small").version == 2  # type: ignore[union-attr]
        assert row is not None and set(before) - set(after) <= {"pending/small.json"}
        # Right at the limit is fine.
        body_len = len(make_job("edge", task_options={"blob": ""}).to_json())
        edge = store.add(make_job("edge", task_options={"blob": "x" * (cap - body_len - 2)}))
        assert len(edge.to_json()) <= cap
        assert_consistent(store)


# -- a real small file system ----------------------------------------------------------------


@contextlib.contextmanager
def _tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def _fill(directory: Path) -> Path:
    """Fill the file system to the last byte; returns the filler file."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_disk_full_on_a_real_tmpfs(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "mnt", "2m") as mount:
        data_dir = mount / "data"
        store = JobStore(data_dir)
        jobs = [store.add(make_job(f"j{i}")) for i in range(20)]
        claimed = store.claim_next("w")
        assert claimed is not None
        filler = _fill(mount)
        failures = 0
        for attempt in (
            lambda: store.add(make_job("new-one", task_options={"pad": "x" * 8192})),
            lambda: store.save(jobs[5].model_copy(update={"task_options": {"pad": "y" * 8192}})),
            lambda: store.complete(claimed.id, "w", {"pad": "z" * 8192}),
        ):
            try:
                attempt()
            except HybridStoreError as exc:
                assert isinstance(exc, StorageError), repr(exc)
                failures += 1
        assert failures == 3, "a write succeeded on a full disk"
        assert temp_files(data_dir) == []
        assert store.get("new-one") is None
        assert store.get(jobs[5].id) == jobs[5]
        assert store.get(claimed.id) == claimed
        # Space returns: the store works again with no repair.
        filler.unlink()
        assert store.journal.unsettled_intents() == []
        store.add(make_job("new-one"))
        store.complete(claimed.id, "w")
        assert_consistent(store)
        store.close()
        with JobStore(data_dir) as reopened:
            assert len(assert_consistent(reopened)) == 21


def test_read_only_file_system(tmp_path: Path) -> None:
    """The data directory's file system is (re)mounted read-only: the store can be read
    (get, find, count, statistics, verify), without a lock file or a sidecar write; a
    write is a typed StorageError (EROFS); nothing changes, and once the file system is
    writable again the store opens and works with no repair."""
    with _tmpfs(tmp_path / "mnt", "4m") as mount:
        data_dir = mount / "data"
        with JobStore(data_dir) as store:
            stored = store.add(make_job("kept"))
        tree = _tree(data_dir)
        done = subprocess.run(["mount", "-o", "remount,ro", str(mount)], capture_output=True)
        if done.returncode != 0:
            pytest.skip("cannot remount read-only here")
        try:
            with JobStore(data_dir) as reader:
                assert reader.read_only
                assert reader.get("kept") == stored
                assert reader.find() == [stored]
                assert reader.count(status="pending") == 1
                assert reader.statistics()["total_jobs"] == 1
                assert reader.verify().ok
                with pytest.raises(StorageError) as caught:
                    reader.add(make_job("refused"))
                assert caught.value.errno == errno.EROFS
                assert str(data_dir) in str(caught.value)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mount)], capture_output=True)
        assert _tree(data_dir) == tree
        with JobStore(data_dir) as reopened:
            assert assert_consistent(reopened) == {"kept": stored}
            reopened.save(stored.model_copy(update={"task_options": {"v": 2}}))
            assert_consistent(reopened)


def test_add_many_whose_file_step_fails_leaves_no_ghost_row(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by a cold review: when the second of three files failed before its rename, its
    row and intent stayed: counted, listed, holding its unique key, yet no file."""
    import hybridstore.journal as journal_module

    real = journal_module.write_many

    def failing_second(files: list[tuple[str, str, bytes]], **options: Any) -> None:
        # As ``write_many`` fails when the second rename does: the first is in place.
        real(files[:1], **options)
        directory, name, _ = files[1]
        error = OSError(errno.ENOSPC, "No space left")
        raise StorageError(f"{directory}/{name}", error, renamed=1)

    with JobStore(data_dir) as store:
        monkeypatch.setattr(journal_module, "write_many", failing_second)
        jobs = [make_job(f"j{i}", unique_key=f"K{i}") for i in range(3)]
        with pytest.raises(StorageError):
            store.add_many(jobs)
        monkeypatch.undo()
        assert [j.id for j in store.find()] == ["j0"] and store.count() == 1
        store.add(make_job("other", unique_key="K1"))  # the key of the job not written
        assert store.verify().ok
