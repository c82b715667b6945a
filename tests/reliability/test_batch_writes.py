"""Batch writes (``files.write_many`` and ``Journal.commit_many``): how far a failed batch
got is known exactly, the jobs it did not reach are as they were, and one flush makes a
large batch durable."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest

import hybridstore.files as files_module
from hybridstore import DuplicateJob, JobStatus, JobStore, StorageError

from ._support import assert_consistent, make_job, temp_files


def _files(directory: Path, count: int) -> list[tuple[Path, str, bytes]]:
    return [(directory, f"f{n}.json", f"body {n}".encode()) for n in range(count)]


def _fail_at_call(monkeypatch: pytest.MonkeyPatch, name: str, at: int) -> None:
    """Make the ``at``-th call (from 1) of ``os.<name>`` in ``files`` fail with EIO."""
    real, calls = getattr(os, name), [0]

    def failing(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == at:
            raise OSError(errno.EIO, "Input/output error")
        return real(*args, **kwargs)

    monkeypatch.setattr(files_module.os, name, failing)


@pytest.mark.parametrize("count", [3, files_module.SYNCFS_AT + 2])
def test_a_rename_failing_mid_batch_says_how_many_are_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    _fail_at_call(monkeypatch, "replace", 3)
    with pytest.raises(StorageError) as caught:
        files_module.write_many(_files(tmp_path, count), durable=True)
    assert caught.value.renamed == 2 and not caught.value.in_place
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f0.json", "f1.json"]
    assert (tmp_path / "f1.json").read_bytes() == b"body 1"


@pytest.mark.parametrize("count", [3, files_module.SYNCFS_AT + 2])
def test_a_failed_flush_puts_nothing_in_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, count: int
) -> None:
    if count >= files_module.SYNCFS_AT:
        if files_module._syncfs_for(_files(tmp_path, 1)) is None:
            pytest.skip("syncfs is not used on this file system")
        monkeypatch.setattr(files_module, "_syncfs", lambda directory: lambda fd: -1)
    else:
        _fail_at_call(monkeypatch, "fsync", 2)
    with pytest.raises(StorageError) as caught:
        files_module.write_many(_files(tmp_path, count), durable=True)
    assert caught.value.renamed == 0 and not caught.value.in_place
    assert list(tmp_path.iterdir()) == []  # no target, no temp file


def test_a_large_batch_is_flushed_once_a_small_one_file_by_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if files_module._syncfs_for(_files(tmp_path, 1)) is None:
        pytest.skip("syncfs is not used on this file system")
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(files_module.os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd)))
    files_module.write_many(_files(tmp_path, files_module.SYNCFS_AT), durable=True)
    assert len(fsyncs) == 1  # the directory only: the files went with one syncfs
    fsyncs.clear()
    files_module.write_many(_files(tmp_path, files_module.SYNCFS_AT - 1)[1:], durable=True)
    assert len(fsyncs) == files_module.SYNCFS_AT - 2 + 1  # each file, then the directory


def test_a_claim_batch_that_fails_mid_write_leaves_the_rest_claimable(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Of 5 claims written together, the 3rd rename fails: the first two are in place (their
    rows stand, repaired at the next touch), the other three are pending again at once."""
    with JobStore(data_dir) as store:
        jobs = store.add_many([make_job(f"j{n}") for n in range(5)])
        _fail_at_call(monkeypatch, "replace", 3)
        with pytest.raises(StorageError):
            store.claim_many("w", 5)
        monkeypatch.undo()
        assert temp_files(data_dir) == []
        assert {j.id for j in store.find(status="pending")} == {"j2", "j3", "j4"}
        again = store.claim_many("w2", 5)
        assert sorted(j.id for j in again) == ["j2", "j3", "j4"]
        assert [store.get(j.id).status for j in jobs] == [JobStatus.PROCESSING] * 5  # type: ignore[union-attr]
    with JobStore(data_dir) as reopened:
        assert_consistent(reopened)
        assert reopened.verify().ok


def test_a_bulk_batch_refused_after_its_bodies_were_written_leaves_nothing(
    data_dir: Path,
) -> None:
    """A bulk batch writes its bodies while its rows commit, its intents committed first.
    Refused in that commit (a unique key already held), it leaves no temp file, no intent
    and no job of the batch, and the store takes the same jobs once the key is free."""
    import hybridstore.journal as journal_module

    with JobStore(data_dir) as store:
        holder = store.add(make_job("holder", unique_key="K"))
        batch = [make_job(f"b{n}") for n in range(journal_module.AHEAD_AT + 5)]
        batch[40] = make_job("b40", unique_key="K")
        with pytest.raises(DuplicateJob):
            store.add_many(batch)
        assert temp_files(data_dir) == []
        assert store.journal.intents() == []
        assert store.count() == 1 and store.get("b0") is None
        store.cancel(holder.id)  # a cancelled job holds no key
        assert len(store.add_many(batch)) == len(batch)
    with JobStore(data_dir) as reopened:
        assert_consistent(reopened)
        assert reopened.count() == len(batch) + 1


def test_a_bulk_batch_whose_bodies_fail_to_write_leaves_nothing(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The thread writing a bulk batch's bodies fails (EIO on the 10th): the batch is a
    StorageError, its rows are put back, and no temp file, intent or job of it is left."""
    import hybridstore.journal as journal_module

    with JobStore(data_dir) as store:
        batch = [make_job(f"b{n}") for n in range(journal_module.AHEAD_AT + 5)]
        _fail_at_call(monkeypatch, "write", 10)
        with pytest.raises(StorageError):
            store.add_many(batch)
        monkeypatch.undo()
        assert temp_files(data_dir) == []
        assert store.journal.unsettled_intents() == []
        assert store.count() == 0 and store.get("b0") is None
        assert len(store.add_many(batch)) == len(batch)
    with JobStore(data_dir) as reopened:
        assert_consistent(reopened)
        assert reopened.count() == len(batch)


def test_a_bulk_writer_killed_before_its_rows_leaves_no_temp_file_to_a_live_store(
    data_dir: Path,
) -> None:
    """Found by a cold review: a bulk writer killed after its bodies were written but
    before its rows committed leaves rows and files that agree, and temp files. A store
    already open elsewhere that next writes those jobs (no open, so no recovery at open)
    removes them: the early intents are marked as such."""
    import hybridstore.journal as journal_module

    batch = [make_job(f"b{n}") for n in range(journal_module.AHEAD_AT + 6)]
    with JobStore(data_dir) as store:
        pid = os.fork()
        if pid == 0:  # the bulk writer, killed inside its row commit
            try:
                import hybridstore.ahead

                writer = JobStore(data_dir)

                def killed(*args: Any, **kwargs: Any) -> Any:
                    os._exit(9)

                # The bodies at once, before the rows (not beside them): all are written.
                hybridstore.ahead.BodiesAhead.IN_THREAD = False
                journal_module.Journal._write_rows = killed  # type: ignore[method-assign]
                writer.add_many(batch)
            finally:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        assert os.WEXITSTATUS(status) == 9
        assert len(temp_files(data_dir)) == len(batch)
        assert len(store.add_many(batch)) == len(batch)
        assert temp_files(data_dir) == []
    with JobStore(data_dir) as reopened:
        assert_consistent(reopened)
