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
from hybridstore import JobStatus, JobStore, StorageError

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
