"""Spare files: the old copies of moved jobs, kept to hold the next bodies written.

A move (a claim, a finish, a retry) writes the job's new file and removes its old one.
Removing frees an inode and a block, and the next write allocates both again. On some
file systems that round trip is most of a write: ext4 without a journal (the machines
these figures come from) scans, for each new inode, past every inode freed in the last
minute or more, and with ``discard`` trims each freed block before ``unlink`` returns
(0.3 ms here). So a durable store parks an old copy in its process's pool instead (one
rename), and a later write fills that spare instead of creating a temp file: claim +
complete with 4 processes went from 550-670 to 810-830 jobs/s here (benchmarks/README).

What keeps this safe:

* **Only durable stores park**, and a spare is handed out only once the rename that
  parked it is durable (``take`` fsyncs the directory it left, once for all the spares
  parked from there since the last time): otherwise a power cut could leave the refilled
  inode under its old name as well.
* **A spare rests** ``REST_SECONDS`` before it is refilled, and is refilled only if it is
  still a regular file with one link. A reader that opened the old copy just before it
  was parked never parses a body being rewritten: ``files.read_job_file`` compares the
  file's ctime and size before and after it reads, and checks that its path still names
  the file it read.
* **One pool per process and data directory** (``.spares/<pid>-<token>/``), held with an
  flock for as long as the process uses it. A pool whose flock is free belongs to a
  process that is gone: the next writer's sweep removes it (``sweep_orphans``). A forked
  child never uses its parent's pool; it gets its own.
* **At most** ``CAPACITY`` spares; beyond that, old copies are removed as before. The
  last store of the process on the directory removes the pool when it closes.

Any failure here only means "no spare": the caller removes or creates files as before.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import os
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import ClassVar

from .model import JobStatus

__all__ = ["CAPACITY", "POOL_DIR", "REST_SECONDS", "SparePool", "sweep_orphans"]

#: The directory of the pools, in the data directory.
POOL_DIR = ".spares"
#: Spares one pool keeps at most (old bodies: a block each, 4 MB of disk at 4 KB blocks).
CAPACITY = 1024
#: Seconds a spare rests before it is refilled: far longer than a file-time tick (a
#: kernel tick, 10 ms at most, where the kernel has no fine-grained ctime), so that a
#: reader's before-and-after ctime tells a refill from the copy it opened.
REST_SECONDS = 0.25

# O_NONBLOCK: a FIFO put in a spare's place is refused, not waited on (a regular file
# ignores the flag).
_OPEN_SPARE = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class SparePool:
    """This process's spare files in one data directory, for every durable store of the
    process there (``SparePool.of``). Thread-safe."""

    _by_directory: ClassVar[dict[tuple[int, str], SparePool]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = root
        self._pid = os.getpid()
        self._users: set[int] = set()
        self._lock = threading.Lock()
        self._dir: Path | None = None  # created at the first park
        self._dir_name = ""  # the same, as a string: the hot path builds no Path
        self._fd = -1  # the pool directory, flocked while in use
        self._usable = True
        # Every file in the pool: (when parked, where it is, the directory it left), oldest
        # first.
        self._resting: collections.deque[tuple[float, str, str]] = collections.deque()
        # when the last fsync of each directory spares left began
        self._synced: dict[str, float] = {}

    @classmethod
    def of(cls, root: Path, user: object) -> SparePool:
        """This process's pool in the data directory ``root``, for ``user`` (a store),
        who must ``release`` it."""
        key = (os.getpid(), os.path.realpath(root))
        with cls._registry_lock:
            pool = cls._by_directory.get(key)
            if pool is None:
                pool = cls._by_directory[key] = cls(root)
            pool._users.add(id(user))
            return pool

    def release(self, user: object) -> None:
        """``user`` is done: the last one removes the pool and its spares."""
        with self._registry_lock:
            if id(user) not in self._users:
                return
            self._users.discard(id(user))
            if self._users:
                return
            key = (self._pid, os.path.realpath(self.root))
            if self._by_directory.get(key) is self:
                del self._by_directory[key]
        with self._lock:
            self._usable = False
            self._resting.clear()
            if self._dir is not None and self._fd >= 0 and self._pid == os.getpid():
                _remove_pool(self._fd, self._dir)
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def park(self, path: str) -> bool:
        """Move ``path`` (the old copy of a moved job, whose new copy is durable) into the
        pool; False if the pool cannot take it (the caller then removes it)."""
        with self._lock:
            if not self._usable or self._pid != os.getpid() or len(self._resting) >= CAPACITY:
                return False
            if self._dir is None and self._open() is None:
                return False
            target = f"{self._dir_name}/{secrets.token_hex(8)}"
            parked_at = time.monotonic()
            try:
                os.rename(path, target)
            except OSError:
                return False
            self._resting.append((parked_at, target, os.path.dirname(path)))
            return True

    def take(self) -> tuple[str, int, str] | None:
        """A rested spare, opened for writing: its path, its descriptor (the caller writes
        it from its start, truncates it to its length and closes it) and the pool's
        directory; or None.

        Before a spare is handed out, the directory it was parked from is fsynced (once
        for every spare parked from there until then): the refilled inode must not be
        found under its old name after a power cut."""
        with self._lock:
            if self._pid != os.getpid():
                return None
            ready = time.monotonic() - REST_SECONDS
            while self._resting and self._resting[0][0] <= ready:
                parked_at, path, source = self._resting.popleft()
                if self._synced.get(source, -1.0) < parked_at and not self._sync(source):
                    _unlink_quietly(path)
                    continue
                fd = _open_spare(path)
                if fd >= 0:
                    return path, fd, self._dir_name
        return None

    def _sync(self, directory: str) -> bool:
        started = time.monotonic()
        try:
            fd = os.open(directory, _OPEN_DIR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError:
            return False
        self._synced[directory] = started
        return True

    def _open(self) -> Path | None:
        """Create this process's pool (the lock held: ``park``); None if that fails."""
        self._usable = False  # unless all goes well
        parent = self.root / POOL_DIR
        directory = parent / f"{os.getpid()}-{secrets.token_hex(4)}"
        try:
            parent.mkdir(exist_ok=True)
            if not stat.S_ISDIR(os.lstat(parent).st_mode):  # a link: it would lead out
                return None
            directory.mkdir()
            fd = os.open(directory, _OPEN_DIR)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # A sweep may have taken the pool for an orphan between our mkdir and flock,
            # and removed it; and a spare must be renamed within one file system.
            mine = os.stat(directory)
            if (mine.st_ino, mine.st_dev) != (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
                raise OSError("pool removed meanwhile")
            if any(os.stat(self.root / s.value).st_dev != mine.st_dev for s in JobStatus):
                raise OSError("status directories on another file system")
        except OSError:
            os.close(fd)
            with contextlib.suppress(OSError):
                directory.rmdir()
            return None
        self._dir, self._fd, self._usable = directory, fd, True
        self._dir_name = str(directory)
        return directory

    def _forget_after_fork(self) -> None:
        # The child's copy of the descriptor shares the parent's flock: close it, and
        # leave the pool (and its spares) to the parent.
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
        self._fd = -1
        self._usable = False
        self._lock = threading.Lock()  # another thread may have held it at the fork
        self._resting.clear()


def _open_spare(path: str) -> int:
    """``path`` opened for writing if it is still a regular file with one link, else -1
    (and it is removed)."""
    try:
        fd = os.open(path, _OPEN_SPARE)
    except OSError:
        _unlink_quietly(path)
        return -1
    info = os.fstat(fd)
    if stat.S_ISREG(info.st_mode) and info.st_nlink == 1:
        return fd
    os.close(fd)
    _unlink_quietly(path)
    return -1


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _remove_pool(fd: int, directory: Path) -> None:
    """Remove the files of the pool open as ``fd``, then the pool if ``directory`` still
    names it. Everything goes through the descriptor: a pool swapped for a link meanwhile
    leads nowhere outside. A file with another link is left (after a power cut on a file
    system without a journal, a refilled spare may still be named here too)."""
    with contextlib.suppress(OSError):
        for entry in os.scandir(fd):
            with contextlib.suppress(OSError):
                if os.stat(entry.name, dir_fd=fd, follow_symlinks=False).st_nlink == 1:
                    os.unlink(entry.name, dir_fd=fd)
    with contextlib.suppress(OSError):
        parent = os.open(directory.parent, _OPEN_DIR)
        try:
            named = os.stat(directory.name, dir_fd=parent, follow_symlinks=False)
            mine = os.fstat(fd)
            if (named.st_ino, named.st_dev) == (mine.st_ino, mine.st_dev):
                os.rmdir(directory.name, dir_fd=parent)
        finally:
            os.close(parent)


def sweep_orphans(root: Path) -> int:
    """Remove the pools of processes that are gone (their flock is free); how many."""
    removed = 0
    try:
        entries = list(os.scandir(root / POOL_DIR))
    except OSError:
        return 0
    for entry in entries:
        try:
            fd = os.open(entry.path, _OPEN_DIR)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # in use
        try:
            _remove_pool(fd, Path(entry.path))
            removed += 1
        finally:
            os.close(fd)
    return removed


def _after_fork_in_child() -> None:
    SparePool._registry_lock = threading.Lock()
    for pool in SparePool._by_directory.values():
        pool._forget_after_fork()
    SparePool._by_directory = {}


os.register_at_fork(after_in_child=_after_fork_in_child)
