"""Environment checks at open: a data directory on a network file system is refused.

NFS, CIFS/SMB, 9p, Ceph, FUSE-based remote mounts...: file locks and SQLite's locking are
not reliable there, so ``JobStore`` refuses to open with ``UnsupportedFileSystem`` naming
the file system and pointing to the PostgreSQL backend, before anything is written. The
mount table is a fake one here (mounting NFS needs a server); the lookup is the real one.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import hybridstore.files as files_module
from hybridstore import HybridStoreError, JobStore, UnsupportedFileSystem

from ._support import make_job

REMOTE = [
    "nfs",
    "nfs4",
    "cifs",
    "smb3",
    "9p",
    "ceph",
    "glusterfs",
    "fuse.sshfs",
    "fuse.rclone",
    "fuse.s3fs",
    "fuse.mountpoint-s3",
]


@pytest.fixture
def fake_mounts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    table = tmp_path / "mounts"
    real = files_module.file_system_type

    def lookup(path: Path, mounts: str = str(table)) -> str | None:
        return real(path, str(table))

    monkeypatch.setattr(files_module, "file_system_type", lookup)
    return table


@pytest.mark.parametrize("fstype", REMOTE)
def test_a_network_file_system_is_refused_before_anything_is_written(
    tmp_path: Path, fake_mounts: Path, fstype: str
) -> None:
    share = tmp_path / "share dir"  # a space: written as \040 in the mount table
    share.mkdir()
    fake_mounts.write_text(
        "/dev/vda / ext4 rw 0 0\n"
        f"server:/export {str(share).replace(' ', chr(92) + '040')} {fstype} rw 0 0\n"
    )
    data_dir = share / "data"
    with pytest.raises(UnsupportedFileSystem) as caught:
        JobStore(data_dir)
    message = str(caught.value)
    assert isinstance(caught.value, HybridStoreError)
    assert fstype in message and "postgresql://" in message and str(data_dir) in message
    assert not data_dir.exists()  # refused before creating anything
    # Reached through a symlink from a local directory: still refused.
    link = tmp_path / "local-link"
    link.symlink_to(share, target_is_directory=True)
    with pytest.raises(UnsupportedFileSystem):
        JobStore(link / "data")
    assert os.listdir(share) == []


def test_local_file_systems_open(tmp_path: Path, fake_mounts: Path) -> None:
    fake_mounts.write_text(f"/dev/vda / ext4 rw 0 0\ntmpfs {tmp_path} tmpfs rw 0 0\n")
    with JobStore(tmp_path / "data") as store:
        store.add(make_job("local"))
        assert store.verify().ok
