"""The data directory on disk: where each job's file lives, atomic writes, strict reads.

Layout::

    DATA_DIR/<status>/<job id>.json   one body per job, in the directory of its status
    DATA_DIR/.locks/                  lock files (filelock)
    DATA_DIR/.quarantine/             unreadable files moved aside, each with a .reason
    DATA_DIR/.spares/                 old copies of moved jobs, to be refilled (spares.py)

A write goes to a temp file in the target directory (``.<id>.<token>.tmp``) or to a rested
spare (``spares.py``), is fsynced, renamed over the final name and the directory is
fsynced, so a reader sees the old body or the new one, never a torn one (a reader that
opened an old copy about to be refilled sees it change, and reads the path again).
Nothing here follows a symlink or leaves the data directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import json
import os
import re
import secrets
import stat
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import ValidationError

from .errors import CorruptJobFile, StorageError, UnsupportedFileSystem
from .model import JOB_ID_PATTERN, JobStatus, RemoteJob
from .spares import SparePool

__all__ = [
    "MAX_READ_BYTES",
    "JobFile",
    "Layout",
    "Prepared",
    "ScanEntry",
    "discard",
    "parse_job",
    "prepare_many",
    "publish_many",
    "read_job_file",
    "write_many",
]

JOB_SUFFIX = ".json"
#: No job file larger than this is read (256 MiB), whatever a store's own write limit:
#: a bound on the memory one hostile file can take, far above any real job.
MAX_READ_BYTES = 256 * 1024 * 1024
TMP_SUFFIX = ".tmp"
_OPEN_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_WRITE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


# The temp files ``write_many`` makes: ``.<job id>.json.<12 hex digits>.tmp``.
_TEMP_NAME = re.compile(
    rf"\.({JOB_ID_PATTERN.pattern}){re.escape(JOB_SUFFIX)}\.[0-9a-f]{{12}}{re.escape(TMP_SUFFIX)}"
)


class _Duplicate(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(f"duplicate key {key!r}")
            seen.add(key)
    return result


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_job(data: bytes, path: object, expected_id: str | None = None) -> RemoteJob:
    """Parse an untrusted job body strictly; ``CorruptJobFile`` naming ``path`` if invalid.

    Refused: invalid UTF-8, invalid JSON (also NaN/Infinity, duplicate keys, nesting too
    deep to parse), a JSON value that is not an object, a body the model rejects, and an id
    other than ``expected_id`` (the file's name).
    """
    if not data:
        raise CorruptJobFile(path, "empty file")
    try:
        obj = json.loads(
            data.decode("utf-8"),
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constants,
        )
    except UnicodeDecodeError:
        raise CorruptJobFile(path, "not valid UTF-8") from None
    except RecursionError:
        raise CorruptJobFile(path, "JSON nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, duplicate keys, NaN
        raise CorruptJobFile(path, f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise CorruptJobFile(path, f"JSON is a {type(obj).__name__}, not an object")
    try:
        job = RemoteJob.model_validate(obj)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise CorruptJobFile(path, f"invalid job: {where}: {first['msg']}") from None
    except RecursionError:
        raise CorruptJobFile(path, "JSON nested too deeply") from None
    if expected_id is not None and job.id != expected_id:
        raise CorruptJobFile(path, f"id {job.id!r} does not match the file name")
    return job


class JobFile(NamedTuple):
    """A job file read and parsed: the job, the file's exact bytes, its mtime (µs)."""

    job: RemoteJob
    data: bytes
    mtime_us: int


def _parse_quickly(data: bytes, path: object, job_id: str, *, known: bool = False) -> RemoteJob:
    """``parse_job`` in one pass of pydantic's JSON parser, for point reads: it refuses the
    same bodies except that a duplicate key is not noticed (the last one wins), which
    ``verify`` and ``reindex`` (strict) still report. A refused body is parsed again
    strictly, so the error explains it the same way. A ``known`` body passed every check
    before: its JSON values are not walked again (``RemoteJob.from_json``)."""
    try:
        job = RemoteJob.from_json(data) if known else RemoteJob.model_validate_json(data)
    except ValueError:
        return parse_job(data, path, job_id)
    if job.id != job_id:
        raise CorruptJobFile(path, f"id {job.id!r} does not match the file name")
    return job


def read_job_file(
    path: str | Path,
    max_bytes: int,
    job_id: str,
    status: JobStatus,
    *,
    strict: bool = True,
    moved_ok: bool = False,
    known: bytes | None = None,
) -> JobFile:
    """Read and strictly parse one job file.

    ``FileNotFoundError`` if it is not there. A symlink, a FIFO or anything but a regular
    file is ``CorruptJobFile``, never followed or waited on; so is a file larger than
    ``max_bytes``, one whose id is not ``job_id`` or whose status is not ``status`` (its
    directory), unless ``moved_ok``: then such a file (moved by hand) is returned as it is.
    ``strict=False`` parses faster but lets a duplicate key through. ``known`` is a body
    that passed every check before (the sidecar's copy of the job): a file of exactly those
    bytes is parsed the fast way, since the strict parse could not refuse it.
    """
    # A file being replaced is renamed over, never written in place, but the old copy of
    # a moved job may be refilled as a spare (``spares``) once it has left its directory:
    # a body that changed while we read it is read again from the path, and a file that
    # keeps changing has been moved away.
    for _ in range(_READ_ATTEMPTS):
        data, info = _read_whole(path, max_bytes)
        if info is not None:
            break
    else:
        raise FileNotFoundError(errno.ENOENT, "job file changed while being read", str(path))
    if data == known:
        job = _parse_quickly(data, path, job_id, known=True)
    elif strict:
        job = parse_job(data, path, job_id)
    else:
        job = _parse_quickly(data, path, job_id)
    if job.status is not status and not moved_ok:
        raise CorruptJobFile(path, f"status {job.status.value!r} does not match its directory")
    return JobFile(job, data, info.st_mtime_ns // 1000)


_READ_ATTEMPTS = 3


def _read_whole(path: str | Path, max_bytes: int) -> tuple[bytes, os.stat_result | None]:
    """The bytes of the job file at ``path`` and its status, or ``(b"", None)`` if it
    changed while being read (its ctime or size moved) or is no longer at ``path``."""
    try:
        fd = os.open(path, _OPEN_READ)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise CorruptJobFile(path, "is a symlink (not followed)") from None
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            raise FileNotFoundError(errno.ENOENT, "no such job file", str(path)) from None
        raise CorruptJobFile(path, f"cannot open: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise CorruptJobFile(path, "not a regular file")
        if info.st_size > max_bytes:
            raise CorruptJobFile(path, f"{info.st_size} bytes, over the {max_bytes} limit")
        chunks = []
        remaining = info.st_size + 1  # one more byte tells us if it grew meanwhile
        while remaining > 0:
            chunk = os.read(fd, remaining)
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
        after = os.fstat(fd)
    except OSError as exc:
        raise CorruptJobFile(path, f"cannot read: {exc.strerror}") from None
    finally:
        os.close(fd)
    if (after.st_ctime_ns, after.st_size) != (info.st_ctime_ns, info.st_size):
        return b"", None
    # And the path still names what was read: a reader stalled between its open and its
    # first fstat may hold an old copy that was parked, refilled and renamed elsewhere.
    try:
        now = os.lstat(path)
    except FileNotFoundError:
        return b"", None
    if (now.st_ino, now.st_dev) != (info.st_ino, info.st_dev):
        return b"", None
    return b"".join(chunks), info


def fsync_dir(directory: str | Path) -> None:
    """Make a directory's entries (a rename, an unlink) durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def write_many(
    files: Sequence[tuple[str | Path, str, bytes]],
    *,
    durable: bool,
    spares: SparePool | None = None,
) -> None:
    """Replace each ``directory/name`` with ``data`` atomically (and, if ``durable``,
    durably), for a batch of ``(directory, name, data)`` made durable together.

    Every temp file is written first, then all are made durable at once, then renamed in
    order, then each directory is fsynced once: a batch costs about one flush of the disk
    rather than two per file. A batch of ``SYNCFS_AT`` files or more is made durable by one
    ``syncfs`` of the file system where that is trusted (``_syncfs_for``), smaller ones by
    one fsync per file (``syncfs`` also flushes other programs' writes to the same file
    system: worth it only in bulk).

    With ``spares``, a body goes into a spare file when the pool has one rested
    (``spares.SparePool``) instead of a new temp file: no inode or block to allocate.

    On failure nothing is retried (after a failed fsync the kernel may have dropped the
    dirty pages, so a retry could lie) and ``StorageError`` says how far the batch got:
    ``renamed`` files (the first ones) replaced their old file, or, with ``in_place``, all
    of them did but may not be durable. The temp files not renamed are removed.

    The two halves, ``prepare_many`` and ``publish_many``, may run apart: nothing is
    visible until the second.
    """
    publish_many(files, prepare_many(files, durable=durable, spares=spares), durable=durable)


class Prepared(NamedTuple):
    """Bodies written by ``prepare_many``, not yet in place: where each one is (in the
    batch's order), and the spare pools' directories they came from."""

    temps: list[str]
    pools: list[str]


def prepare_many(
    files: Sequence[tuple[str | Path, str, bytes]],
    *,
    durable: bool,
    spares: SparePool | None = None,
) -> Prepared:
    """The first half of ``write_many``: every body in a temp file (or a spare) and, if
    ``durable``, made durable; nothing renamed. If it fails (``StorageError``), the temp
    files are removed; ``discard`` removes them when the batch is given up later."""
    # Paths as plain strings: a batch builds several per file, and a Path costs more to
    # build than the rename it names.
    temps: list[str] = []
    try:
        pools = _write_temps(files, temps, durable, spares)
    except BaseException:
        discard(Prepared(temps, []))
        raise
    return Prepared(temps, pools)


def discard(prepared: Prepared) -> None:
    """Remove the temp files of a prepared batch that will not be published."""
    for tmp in prepared.temps:
        _unlink_quietly(tmp)


def publish_many(
    files: Sequence[tuple[str | Path, str, bytes]], prepared: Prepared, *, durable: bool
) -> None:
    """The second half of ``write_many``: rename each prepared body into place, then (if
    ``durable``) fsync each directory once; ``StorageError`` as ``write_many`` says."""
    temps = prepared.temps
    for done, ((directory, name, _), tmp) in enumerate(zip(files, temps, strict=True)):
        target = f"{directory}/{name}"
        try:
            os.replace(tmp, target)
        except OSError as exc:
            for left in temps[done:]:
                _unlink_quietly(left)
            raise StorageError(target, exc, renamed=done) from exc
    if durable:
        # The directories refilled spares left first: on a file system without a journal,
        # a spare's new name must not reach the disk while its old one may still be there.
        directories = dict.fromkeys(directory for directory, _, _ in files)
        for directory in [*prepared.pools, *directories]:
            try:
                fsync_dir(directory)
            except OSError as exc:
                raise StorageError(directory, exc, in_place=True) from exc


# A batch of this many files is made durable with one syncfs instead of one fsync each:
# bulk writes (add_many, imports), where one flush of the whole file system pays for
# itself even when other programs' writes wait on it too; not a claim or a few completes.
SYNCFS_AT = 64
# File systems whose syncfs reports the write-back errors of every file on them (an
# overlay, for one, may not pass its upper layer's up): elsewhere each file is fsynced.
_SYNCFS_FILE_SYSTEMS = frozenset({"ext4", "xfs", "btrfs"})


def _write_temps(
    files: Sequence[tuple[str | Path, str, bytes]],
    temps: list[str],
    durable: bool,
    spares: SparePool | None,
) -> list[str]:
    """Write each body to a spare or a new temp file beside its target (appended to
    ``temps`` as they are taken) and, if ``durable``, make them all durable. Returns the
    directories the spares it took are in."""
    syncfs = _syncfs_for(files) if durable and len(files) >= SYNCFS_AT else None
    # syncfs reports the write-back errors of the file system since the descriptor it is
    # given was opened: open it before the first temp file is written.
    fs_fd = _open_directory(files[0][0]) if syncfs is not None else -1
    to_fsync: list[int] = []  # open descriptors of the temp files, when fsynced one by one
    left: dict[str, None] = {}
    try:
        for directory, name, data in files:
            spare = spares.take() if spares is not None else None
            if spare is not None:
                tmp, fd, pool = spare
                left[pool] = None
            else:
                tmp = f"{directory}/.{name}.{secrets.token_hex(6)}{TMP_SUFFIX}"
                try:
                    fd = os.open(tmp, _OPEN_WRITE, 0o644)
                except OSError as exc:
                    raise StorageError(tmp, exc) from exc
            temps.append(tmp)
            keep = durable and syncfs is None
            if keep:
                to_fsync.append(fd)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if spare is not None:  # written over from its start: cut its older body
                    os.ftruncate(fd, len(data))
            except OSError as exc:
                raise StorageError(tmp, exc) from exc
            finally:
                if not keep:
                    os.close(fd)
        if len(to_fsync) > 1 and (start_writeback := _start_writeback()) is not None:
            # Start every file's write-back before waiting on the first: the disk then
            # takes the batch's writes together instead of one round trip per fsync. A
            # hint only (its errors surface in the fsync below), so its result is unused.
            for fd in to_fsync:
                start_writeback(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)
        for fd, tmp in zip(to_fsync, temps, strict=False):  # to_fsync: all or none
            try:
                os.fsync(fd)
            except OSError as exc:
                raise StorageError(tmp, exc) from exc
        if syncfs is not None and syncfs(fs_fd) != 0:
            err = ctypes.get_errno()
            raise StorageError(files[0][0], OSError(err, os.strerror(err)))
    finally:
        for fd in to_fsync:
            os.close(fd)
        if fs_fd >= 0:
            os.close(fs_fd)
    return list(left)


def _open_directory(path: str | Path) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise StorageError(path, exc) from exc


def _syncfs_for(files: Sequence[tuple[str | Path, str, bytes]]) -> Callable[[int], int] | None:
    """``syncfs`` for the file system of a batch's directories, or None where one flush of
    it is not known to make the batch durable with every error reported: the directories
    on more than one file system, a file system not in ``_SYNCFS_FILE_SYSTEMS``, or a
    kernel before 5.8 (whose syncfs does not report write-back errors)."""
    directories = {directory for directory, _, _ in files}
    try:
        if len({os.stat(directory).st_dev for directory in directories}) != 1:
            return None
    except OSError:
        return None  # the write itself will say what is wrong
    return _syncfs(str(next(iter(directories))))


@functools.cache
def _syncfs(directory: str) -> Callable[[int], int] | None:
    """``syncfs(2)`` when it can be trusted for ``directory``'s file system (see
    ``_syncfs_for``; asked once per directory): 0 on success, else -1 with errno set."""
    release = os.uname().release.split("-")[0].split(".")
    try:
        kernel = (int(release[0]), int(release[1]))
    except (IndexError, ValueError):
        return None
    if sys.platform != "linux" or kernel < (5, 8):
        return None
    if file_system_type(Path(directory)) not in _SYNCFS_FILE_SYSTEMS:
        return None
    try:
        call: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    return call


_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start write-back of dirty pages, do not wait


@functools.cache
def _start_writeback() -> Callable[[int, int, int, int], int] | None:
    """Linux's ``sync_file_range(2)``, or None where there is none."""
    if sys.platform != "linux":
        return None
    try:
        call = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    call.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    call.restype = ctypes.c_int
    return call


def remove_file(path: str | Path, *, durable: bool) -> bool:
    """Unlink ``path`` (and fsync its directory); False if it was not there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise StorageError(path, exc) from exc
    if durable:
        directory = os.path.dirname(path)
        try:
            fsync_dir(directory)
        except OSError as exc:
            raise StorageError(directory, exc, in_place=True) from exc
    return True


# File systems where flock/fcntl locks and SQLite's locking are not reliable.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb",
        "smb2",
        "smb3",
        "smbfs",
        "afs",
        "9p",
        "ncpfs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "davfs",
        "fuse.sshfs",
        "fuse.s3fs",
        "fuse.rclone",
        "fuse.gcsfuse",
        "fuse.goofys",
        "fuse.blobfuse",
        "fuse.blobfuse2",
        "fuse.juicefs",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.davfs2",
        "fuse.mountpoint-s3",
    }
)


def file_system_type(path: Path, mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the file system holding ``path`` (Linux), or None if unknown."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as handle:
            table = [line.split() for line in handle]
    except OSError:
        return None
    target = os.path.realpath(path)
    best, best_type = "", None
    for fields in table:
        if len(fields) < 3:
            continue
        mount = fields[1].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type


def current_boot_id(source: str = "/proc/sys/kernel/random/boot_id") -> str | None:
    """The running kernel's boot id (Linux): it changes with every boot, crash or not."""
    try:
        with open(source, encoding="ascii") as handle:
            return handle.read().strip() or None
    except OSError:
        return None


def check_local_file_system(path: Path) -> None:
    """Refuse a data directory on a network file system (``UnsupportedFileSystem``)."""
    kind = file_system_type(path)
    if kind in NETWORK_FILE_SYSTEMS:
        raise UnsupportedFileSystem(
            f"{path} is on a {kind} file system, where file locks and SQLite are not"
            " reliable; keep the data directory on a local disk, or use the PostgreSQL"
            " backend (postgresql://...) to share jobs between machines"
        )


@dataclass(frozen=True)
class ScanEntry:
    """One entry met while walking the status directories."""

    status: JobStatus
    path: Path
    kind: str  # "job", "temp" or "foreign"
    job_id: str | None = None


class Layout:
    """Paths inside one data directory. Creates nothing until ``create`` is called."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.locks = root / ".locks"
        self.quarantine = root / ".quarantine"
        # Plain strings for the hot read path: building Path objects costs more than the
        # open() they are for.
        self._dirs = {status: os.path.join(root, status.value) for status in JobStatus}

    def status_dir(self, status: JobStatus) -> Path:
        return self.root / status.value

    def status_dir_name(self, status: JobStatus) -> str:
        """``status_dir`` as a string, for the write path."""
        return self._dirs[status]

    def job_path(self, status: JobStatus, job_id: str) -> Path:
        return self.root / status.value / f"{job_id}{JOB_SUFFIX}"

    def job_file(self, status: JobStatus, job_id: str) -> str:
        """``job_path`` as a string, for reads."""
        return f"{self._dirs[status]}/{job_id}{JOB_SUFFIX}"

    def lock_path(self, name: str) -> Path:
        return self.locks / f"{name}.lock"

    def create(self) -> None:
        """Create the data directory, the status directories and ``.locks``."""
        self.root.mkdir(parents=True, exist_ok=True)
        for status in JobStatus:
            self.status_dir(status).mkdir(exist_ok=True)
        self.locks.mkdir(exist_ok=True)

    def looks_like_store(self) -> bool:
        """Whether the directory holds a store (a status directory or the sidecar), of this
        design or the older one: what a reader may open without creating one."""
        return any(os.path.isdir(d) for d in self._dirs.values()) or os.path.exists(
            self.root / "hybridstore.sqlite3"
        )

    def locate(self, job_id: str) -> list[JobStatus]:
        """Every status directory holding ``job_id``'s file (normally one, or none)."""
        return [s for s in JobStatus if os.path.lexists(self.job_file(s, job_id))]

    def temp_files(self, job_id: str) -> list[Path]:
        """Temp files a write of ``job_id`` may have left behind."""
        return self.temps_of({job_id}).get(job_id, [])

    def temps_of(self, job_ids: set[str]) -> dict[str, list[Path]]:
        """The temp files of writes of ``job_ids``, by job: one listing of each status
        directory, for many jobs at once. Exactly the names ``write_many`` makes, owned by
        their job id in full (another job's id may start with this one's)."""
        found: dict[str, list[Path]] = {}
        for status in JobStatus:
            directory = self.status_dir(status)
            try:
                names = os.listdir(directory)
            except FileNotFoundError:
                continue
            for name in names:
                match = _TEMP_NAME.fullmatch(name) if name.startswith(".") else None
                if match and match.group(1) in job_ids:
                    found.setdefault(match.group(1), []).append(directory / name)
        return found

    @staticmethod
    def temp_owner(path: Path) -> str | None:
        """The job id a temp file of ``write_many`` was written for, or None if the name
        is not one ``write_many`` makes."""
        match = _TEMP_NAME.fullmatch(path.name)
        return match.group(1) if match else None

    def scan(self) -> Iterator[ScanEntry]:
        """Walk the six status directories (the only listing the store ever does)."""
        for status in JobStatus:
            directory = self.status_dir(status)
            try:
                entries = list(os.scandir(directory))
            except FileNotFoundError:
                continue
            for entry in entries:
                name = entry.name
                path = directory / name
                if name.startswith(".") and name.endswith(TMP_SUFFIX):
                    yield ScanEntry(status, path, "temp")
                elif name.endswith(JOB_SUFFIX) and JOB_ID_PATTERN.fullmatch(
                    name[: -len(JOB_SUFFIX)]
                ):
                    yield ScanEntry(status, path, "job", name[: -len(JOB_SUFFIX)])
                else:
                    yield ScanEntry(status, path, "foreign")

    def quarantine_file(self, path: Path, reason: str) -> Path:
        """Move ``path`` into ``.quarantine/`` with a ``.reason`` note beside it."""
        self.quarantine.mkdir(exist_ok=True)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        target = self.quarantine / f"{stamp}-{path.parent.name}-{path.name}"
        while os.path.lexists(target):
            target = target.with_name(f"{target.name}.{secrets.token_hex(2)}")
        os.rename(path, target)
        note = f"original: {path}\nreason: {reason}\ntime: {stamp}\n"
        target.with_name(target.name + ".reason").write_text(note, encoding="utf-8")
        return target

    def is_old_temp(self, path: Path, max_age: float) -> bool:
        """A temp file older than ``max_age`` seconds: no write is still using it."""
        try:
            return time.time() - os.lstat(path).st_mtime > max_age
        except FileNotFoundError:
            return False
