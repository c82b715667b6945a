"""Every lock of a file store: the job stripes, the sidecar's write gate, the coarse locks.

* **Job stripes** (``StripeLocks``): a job is locked through the one of ``LOCK_STRIPES``
  files in ``.locks/`` that its id hashes to, with ``fcntl.flock`` on a descriptor the
  process keeps open: 2-4 µs a lock, where filelock costs 100-400 µs (its thread and fork
  bookkeeping), a third of a non-durable write. flock belongs to the open file
  description, so two threads sharing the descriptor would not exclude each other: each
  stripe is paired with a thread lock. A forked child inherits the descriptors, and with
  them whatever the parent holds: it drops them and opens its own (``os.register_at_fork``).
  One set per process and directory, whatever the number of stores.
* **The write gate** (``WriteGate``): writers of every process queue on one flock before
  ``BEGIN IMMEDIATE``, instead of SQLite's busy handler, which polls with sleeps of 1, 2,
  5, 10 ms and under several writing processes costs more than the transactions.
* **Coarse locks** (``coarse_lock``): opening and rebuilding the sidecar, rarely taken,
  where filelock's timeouts, reentrancy and portability earn their cost.

Every wait is bounded and ends in ``LockTimeout``; it polls with short sleeps rather than
blocking, so that a holder stopped for good (SIGSTOP) cannot hang every waiter.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

from filelock import FileLock, Timeout

from .errors import LockTimeout, StorageError

__all__ = ["LOCK_STRIPES", "StripeLocks", "WriteGate", "coarse_lock"]

# Two jobs share a stripe about once in 256: they then wait for each other, briefly. Each
# stripe costs a kept descriptor once used, so the number stays far below common limits.
LOCK_STRIPES = 256
_OPEN = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC


def _flock_within(fd: int, deadline: float, longest_sleep: float = 0.002) -> bool:
    """Take an exclusive flock on ``fd`` by ``deadline`` (monotonic); False if not.

    flock has no timed wait, so a busy lock is asked again after sleeps that double up to
    ``longest_sleep``: about the time the lock is usually held, since a waiter that sleeps
    longer than that leaves the lock idle."""
    delay = 0.00005
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            now = time.monotonic()
            if now >= deadline:
                return False
            time.sleep(min(delay, deadline - now))
            delay = min(delay * 2, longest_sleep)


class StripeLocks:
    """The job locks of one data directory, for every store of this process
    (``StripeLocks.of``)."""

    _by_directory: ClassVar[dict[str, StripeLocks]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._users: set[int] = set()
        self._fds: dict[int, int] = {}
        self._threads = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._opening = threading.Lock()

    @classmethod
    def of(cls, directory: Path, user: object) -> StripeLocks:
        """This process's stripe locks in ``directory`` (``.locks/`` of a data directory),
        for ``user`` (a store), who must ``release`` them."""
        key = os.path.realpath(directory)
        with cls._registry_lock:
            locks = cls._by_directory.get(key)
            if locks is None:
                locks = cls._by_directory[key] = cls(directory)
            locks._users.add(id(user))
            return locks

    def release(self, user: object) -> None:
        """``user`` is done: the last one closes the descriptors (no lock is held then)."""
        with self._registry_lock:
            if id(user) not in self._users:
                return  # a store inherited across fork(): not a user in this process
            self._users.discard(id(user))
            if self._users:
                return
            key = os.path.realpath(self.directory)
            if self._by_directory.get(key) is self:
                del self._by_directory[key]
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}

    @staticmethod
    def stripe(job_id: str) -> int:
        return zlib.crc32(job_id.encode("utf-8", "surrogatepass")) % LOCK_STRIPES

    def path(self, job_id: str) -> Path:
        """The lock file ``job_id`` is locked through."""
        return self.directory / f"jobs-{self.stripe(job_id):04d}.lock"

    def _fd(self, stripe: int) -> int:
        fd = self._fds.get(stripe)
        if fd is None:
            with self._opening:
                fd = self._fds.get(stripe)
                if fd is None:
                    path = self.directory / f"jobs-{stripe:04d}.lock"
                    try:
                        fd = os.open(path, _OPEN, 0o644)
                    except OSError as exc:
                        # A read-only or full file system, a deleted .locks directory.
                        raise StorageError(path, exc) from exc
                    self._fds[stripe] = fd
        return fd

    def acquire(self, job_id: str, timeout: float) -> None:
        """Lock ``job_id``, waiting at most ``timeout`` seconds (``LockTimeout``)."""
        if not self._take(job_id, time.monotonic() + timeout, timeout):
            raise LockTimeout(job_id, timeout, self.path(job_id))

    def try_acquire(self, job_id: str) -> bool:
        """Lock ``job_id`` if nobody holds it (nor another job of its stripe)."""
        return self._take(job_id, 0.0, 0.0)

    def _take(self, job_id: str, deadline: float, timeout: float) -> bool:
        stripe = self.stripe(job_id)
        thread_lock = self._threads[stripe]
        took = thread_lock.acquire(timeout=timeout) if timeout > 0 else thread_lock.acquire(False)
        if not took:
            return False
        try:
            if _flock_within(self._fd(stripe), deadline):
                return True
        except BaseException:
            thread_lock.release()
            raise
        thread_lock.release()
        return False

    def unlock(self, job_id: str) -> None:
        """Release ``job_id``'s lock."""
        stripe = self.stripe(job_id)
        fcntl.flock(self._fds[stripe], fcntl.LOCK_UN)
        self._threads[stripe].release()

    @contextmanager
    def held(self, job_id: str, timeout: float) -> Iterator[None]:
        """``job_id`` locked for the block."""
        self.acquire(job_id, timeout)
        try:
            yield
        finally:
            self.unlock(job_id)

    def _forget_after_fork(self) -> None:
        # The inherited descriptors share the parent's open file descriptions, and so its
        # flocks: closing them here leaves the parent's locks alone (an unlock would not).
        for fd in self._fds.values():
            os.close(fd)
        self._fds = {}
        self._users = set()
        self._threads = [threading.Lock() for _ in range(LOCK_STRIPES)]
        self._opening = threading.Lock()


def _after_fork_in_child() -> None:
    StripeLocks._registry_lock = threading.Lock()
    for locks in StripeLocks._by_directory.values():
        locks._forget_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class WriteGate:
    """One flock that the writers of every process queue on before a sidecar transaction.

    Thread exclusion is the caller's (the sidecar's connection lock); after a fork, the
    inherited descriptor shares the parent's lock, so the child opens its own."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1
        self._pid = 0

    def _descriptor(self) -> int:
        if self._fd < 0 or self._pid != os.getpid():
            try:
                self._fd = os.open(self.path, _OPEN, 0o644)
            except OSError as exc:
                raise StorageError(self.path, exc) from exc
            self._pid = os.getpid()
        return self._fd

    def enter(self, timeout: float) -> None:
        """Take the gate within ``timeout`` seconds (``LockTimeout``)."""
        # Held for one sidecar commit (a fraction of a millisecond): ask again soon.
        if not _flock_within(self._descriptor(), time.monotonic() + timeout, 0.0002):
            raise LockTimeout(None, timeout, self.path)

    def leave(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = -1


@contextmanager
def coarse_lock(lock: FileLock, timeout: float) -> Iterator[None]:
    """Hold a filelock for the block (``LockTimeout``; ``StorageError`` if its file
    cannot be created)."""
    try:
        lock.acquire(timeout=timeout)
    except Timeout:
        raise LockTimeout(None, timeout, lock.lock_file) from None
    except OSError as exc:
        raise StorageError(lock.lock_file, exc) from exc
    try:
        yield
    finally:
        lock.release()
