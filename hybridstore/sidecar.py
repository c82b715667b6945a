"""The SQLite sidecar: a derived index of the job files, built with sqlite-utils.

It holds one row per job (the queried fields and a copy of the body) and the intents of
writes in flight or not yet cleared. It is never the truth: ``JobStore`` rebuilds it from
the files when it is missing or unreadable, after migrating an older schema, and on the
first open after a reboot; a newer schema is refused. WAL mode lets readers go on while one
writer commits; every write transaction is ``BEGIN IMMEDIATE`` behind a write gate, so
writers queue instead of failing with "database is locked".
"""

from __future__ import annotations

import contextlib
import errno
import os
import sqlite3
import threading
import urllib.parse
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from .errors import LockTimeout, SchemaError, StorageError
from .locks import WriteGate
from .migrations import Migration, load_migrations
from .model import JobStatus
from .rows import Row, where_clause

__all__ = ["FOREIGN", "SIDECAR_NAME", "Sidecar"]

SIDECAR_NAME = "hybridstore.sqlite3"
#: ``Sidecar.health``'s verdict on another tool's SQLite database in the sidecar's place.
FOREIGN = "not a hybridstore sidecar (another tool's SQLite database?)"
# SQLite result codes that mean the file itself is damaged (SQLITE_CORRUPT, SQLITE_NOTADB).
_DAMAGED = frozenset({11, 26})
_HEADER = b"SQLite format 3\x00"
# Connections abandoned in a forked child: closing them there could checkpoint or unlock
# on the parent's behalf, so they are kept alive and never touched again.
_ABANDONED: list[sqlite3.Connection] = []
# Every sidecar of this process, quiesced around fork(): the forking thread takes each
# one's lock first, so no other thread is inside a statement or a transaction at that
# moment. Otherwise the child would inherit a thread lock held forever, and SQLite's
# per-process lock bookkeeping of a connection caught mid-transaction, which makes the
# child's own new connection wait forever for a write lock that nobody holds.
_LIVE: weakref.WeakSet[Sidecar] = weakref.WeakSet()
_HELD: list[Sidecar] = []
# The sidecar of each directory this process has open, shared by all its stores: see
# ``Sidecar.shared``.
_SHARED: dict[str, Sidecar] = {}
_SHARED_LOCK = threading.Lock()
# Guards ``_HEADER_FDS``; taken with a sidecar's lock held (opening), so never before one.
_HEADER_LOCK = threading.Lock()


def _before_fork() -> None:
    # In the order every thread takes them: the registry, each sidecar, the header lock.
    _SHARED_LOCK.acquire()
    for sidecar in list(_LIVE):
        sidecar.lock.acquire()
        _HELD.append(sidecar)
    _HEADER_LOCK.acquire()


def _after_fork_in_parent() -> None:
    _HEADER_LOCK.release()
    while _HELD:
        _HELD.pop().lock.release()
    _SHARED_LOCK.release()


def _after_fork_in_child() -> None:
    while _HELD:
        _HELD.pop().lock = threading.RLock()
    # The parent's stores are not the child's users: the child's own opens count anew.
    for sidecar in _SHARED.values():
        sidecar.users.clear()
    global _SHARED_LOCK, _HEADER_LOCK
    _SHARED_LOCK = threading.Lock()
    _HEADER_LOCK = threading.Lock()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)

# SQLite result codes that mean the disk refused a write, as the errno users know.
_STORAGE_ERRNO = {
    sqlite3.SQLITE_FULL: errno.ENOSPC,
    sqlite3.SQLITE_IOERR: errno.EIO,
    sqlite3.SQLITE_READONLY: errno.EROFS,
    sqlite3.SQLITE_CANTOPEN: errno.EIO,
}


def storage_error(path: Path, exc: sqlite3.Error) -> StorageError | None:
    """``exc`` as the typed ``StorageError`` if the disk refused a write, else None."""
    code = getattr(exc, "sqlite_errorcode", None)
    number = None if code is None else _STORAGE_ERRNO.get(code & 0xFF)
    if number is None:
        return None
    return StorageError(path, OSError(number, f"sidecar: {exc}"))


# One read-only descriptor per database file (by device and inode) that this process ever
# read a header from, kept open until the process ends. Closing *any* descriptor of a file
# drops every POSIX lock the process holds on it, SQLite's included: a header read through
# a descriptor that is then closed would drop the shared lock by which a live connection
# of this process (of this or another store, or one not yet collected) tells other
# processes not to checkpoint and delete the WAL under it. Its later commits would then be
# invisible to every other process.
_HEADER_FDS: dict[tuple[int, int], int] = {}


def _read_header(path: Path) -> bytes:
    """The first 100 bytes of ``path`` (fewer if it is shorter), never closing a
    descriptor of it."""
    info = os.stat(path)
    key = (info.st_dev, info.st_ino)
    with _HEADER_LOCK:
        fd = _HEADER_FDS.get(key)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
            opened = os.fstat(fd)
            if (opened.st_dev, opened.st_ino) != key:
                # Replaced between the stat and the open: keep it under its own key.
                _HEADER_FDS[(opened.st_dev, opened.st_ino)] = fd
                raise FileNotFoundError(errno.ENOENT, "replaced while opened", str(path))
            _HEADER_FDS[key] = fd
    return os.pread(fd, 100, 0)


class Sidecar:
    """One connection to the sidecar database, shared by every store of one process on one
    directory and by their threads (``Sidecar.shared``).

    A lock serialises the connection between threads; a fork is noticed by pid and the
    child opens its own connection.

    Why one per process: one connection per directory is all a process needs (WAL readers
    do not block each other; writers queue on the gate anyway), and a store opened per
    request then costs no health check, no migration check and no intent recovery.
    """

    @classmethod
    def shared(cls, path: Path, user: object, *, gate: Path | None = None) -> Sidecar:
        """This process's sidecar at ``path``, created on first use, for ``user`` (a store),
        who must ``release`` it."""
        key = os.path.realpath(path)
        with _SHARED_LOCK:
            sidecar = _SHARED.get(key)
            if sidecar is None:
                sidecar = cls(path, gate=gate)
                _SHARED[key] = sidecar
            sidecar.users.add(id(user))
            return sidecar

    def release(self, user: object, *, before_close: Callable[[], None] | None = None) -> None:
        """``user`` is done with a ``shared`` sidecar: the last one calls ``before_close``
        (errors ignored: what it would clear is checked by the next open) and closes the
        connection. (A store inherited across fork() is no user in the child: its close
        leaves the child's connection to the child's own stores, or to the process's end.)
        """
        # Closed under the registry's lock: a store opening meanwhile would otherwise make
        # a second sidecar and read the header while this connection still holds locks.
        with _SHARED_LOCK:
            if id(user) not in self.users:
                return
            self.users.discard(id(user))
            if self.users:
                return
            with self.lock:
                if self.is_open() and before_close is not None:
                    with contextlib.suppress(sqlite3.Error, StorageError, LockTimeout):
                        before_close()
                self.close()
            key = os.path.realpath(self.path)
            if _SHARED.get(key) is self:
                del _SHARED[key]

    def __init__(self, path: Path, *, gate: Path | None = None, busy_timeout: float = 60.0) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.lock = threading.RLock()
        #: Opened immutable, for a store on a read-only file system (see ``connect``).
        self.read_only = False
        #: The stores of this process using this sidecar (``shared``/``release``), by id.
        self.users: set[int] = set()
        _LIVE.add(self)
        self._db: sqlite_utils.Database | None = None
        self._pid = 0
        #: Counts the connections this object opened: a write compares it before and after
        #: its file step to learn that a thread reopened a replaced database. (Not the
        #: inode: the new file may reuse the number of the one just closed.)
        self.generation = 0
        self._inode = 0
        # Writers of every process queue on the gate before BEGIN IMMEDIATE (see
        # ``locks.WriteGate``); SQLite's busy timeout stays the fallback for writers that
        # do not use it.
        self._gate = None if gate is None else WriteGate(gate)

    # -- connection -----------------------------------------------------------------------

    def connect(self) -> None:
        """Open (or reopen) the connection; creates an empty database if none exists.

        On a read-only file system the database is opened immutable: nothing can change it
        there, so SQLite needs neither its locks nor a -shm file."""
        with self.lock:
            if self.read_only:
                conn = sqlite3.connect(
                    f"file:{urllib.parse.quote(str(self.path))}?immutable=1",
                    uri=True,
                    isolation_level=None,
                    check_same_thread=False,
                )
                db = sqlite_utils.Database(conn)
            else:
                conn = sqlite3.connect(
                    # Absolute: SQLite may take a name starting with "file:" for a URI.
                    os.path.abspath(self.path),
                    timeout=self.busy_timeout,
                    isolation_level=None,  # explicit BEGIN IMMEDIATE / COMMIT only
                    check_same_thread=False,
                )
                db = sqlite_utils.Database(conn)
                if db.journal_mode != "wal":
                    db.enable_wal()
                # The files are the truth and are fsynced; the index only needs to survive
                # a process crash, which WAL with synchronous=NORMAL does. A machine crash
                # may lose its last commits: the first open after a reboot rebuilds it.
                conn.execute("PRAGMA synchronous = NORMAL")
            self._db = db
            self._pid = os.getpid()
            self.generation += 1
            try:
                self._inode = os.stat(self.path).st_ino
            except FileNotFoundError:
                self._inode = 0  # deleted as we opened it: ``replaced()`` says so

    def is_open(self) -> bool:
        """Whether this process has a connection open (one inherited across fork() does
        not count)."""
        return self._db is not None and self._pid == os.getpid()

    @property
    def conn(self) -> sqlite3.Connection:
        if self._db is None or self._pid != os.getpid():
            if self._db is not None:
                _ABANDONED.append(self._db.conn)
                self._db = None
            self.connect()
        assert self._db is not None
        return self._db.conn

    @property
    def db(self) -> sqlite_utils.Database:
        self.conn  # noqa: B018 - reconnects after a fork
        assert self._db is not None
        return self._db

    def replaced(self) -> bool:
        """The database file was deleted or replaced since this connection opened it."""
        try:
            return os.stat(self.path).st_ino != self._inode
        except FileNotFoundError:
            return True

    def close(self) -> None:
        with self.lock:
            if self._db is not None and self._pid == os.getpid():
                self._db.conn.close()
            self._db = None
            if self._gate is not None:
                self._gate.close()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        with self.lock:
            conn = self.conn
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` … ``COMMIT``; rolled back if the block raises."""
        if self.read_only:
            raise StorageError(self.path, OSError(errno.EROFS, "read-only file system"))
        with self.lock:
            conn = self.conn
            gate = self._gate
            if gate is not None:
                gate.enter(self.busy_timeout)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    # A COMMIT that failed (disk full, I/O error) can leave the transaction
                    # open, holding the write lock of every process: always roll back.
                    if conn.in_transaction:
                        with contextlib.suppress(sqlite3.Error):
                            conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError as exc:
                error = storage_error(self.path, exc)
                if error is None:
                    raise
                raise error from exc
            finally:
                if gate is not None:
                    gate.leave()

    # -- health and schema ----------------------------------------------------------------

    def health(self) -> str | None:
        """None if the file looks like a usable database, else why it is not."""
        try:
            header = _read_header(self.path)
        except FileNotFoundError:
            return "missing"
        except OSError as exc:
            return f"unreadable: {exc.strerror}"
        if len(header) == 0:
            return None  # an empty file is a new database
        if len(header) < 100 or not header.startswith(_HEADER):
            return "not a SQLite database"
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        wal = Path(f"{self.path}-wal")
        try:
            wal_empty = not wal.exists() or wal.stat().st_size == 0
            if wal_empty and os.path.getsize(self.path) < page_size * pages:
                return "truncated"
        except FileNotFoundError:
            return "missing"  # deleted while we looked at it
        try:
            with self.lock:
                return self._foreign()
        except sqlite3.DatabaseError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _DAMAGED:
                # Busy, locked, an I/O error while another process opens or closes it:
                # no verdict on the file, which other processes may be using.
                raise StorageError(self.path, OSError(errno.EIO, f"sidecar: {exc}")) from exc
            return f"unreadable: {exc}"

    def _foreign(self) -> str | None:
        """Why a readable SQLite database is not a hybridstore sidecar, or None if it is
        one (or empty)."""
        tables = set(self.db.table_names())
        if not tables:
            return None
        if "schema_migrations" not in tables:
            return FOREIGN
        known = {m.version: m.name for m in load_migrations("sidecar")}
        try:
            applied = dict(self.conn.execute("SELECT version, name FROM schema_migrations"))
        except sqlite3.OperationalError:
            return FOREIGN  # a schema_migrations table of another shape
        if any(known.get(version, name) != name for version, name in applied.items()):
            return FOREIGN  # another tool's migrations
        if applied and "jobs" not in tables:
            return "damaged: the jobs table is missing"
        if "jobs" in tables:
            self.conn.execute("SELECT count(*) FROM jobs").fetchone()
        return None

    def schema_version(self) -> int:
        """The highest migration applied (0 for an empty database)."""
        with self.lock:
            if "schema_migrations" not in self.db.table_names():
                return 0
            row = self.conn.execute("SELECT max(version) FROM schema_migrations").fetchone()
            return int(row[0] or 0)

    def pending_migrations(self) -> list[Migration]:
        """Migrations not applied yet; ``SchemaError`` if the database is newer than us."""
        known = load_migrations("sidecar")
        current = self.schema_version()
        if current > len(known):
            raise SchemaError(
                f"{self.path}: sidecar schema version {current} is newer than this"
                f" hybridstore understands ({len(known)}); upgrade hybridstore"
            )
        return known[current:]

    def migrate(self) -> list[Migration]:
        """Apply pending migrations, each in its own transaction; return those applied."""
        applied = []
        with self.lock:
            for migration in self.pending_migrations():
                with self.transaction() as conn:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
                        " version INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                        " applied_at TEXT NOT NULL)"
                    )
                    # Another process may have applied it while we waited for the lock.
                    done = conn.execute(
                        "SELECT 1 FROM schema_migrations WHERE version = ?",
                        (migration.version,),
                    ).fetchone()
                    if done:
                        continue
                    for statement in _statements(migration.sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?, ?)",
                        (
                            migration.version,
                            migration.name,
                            datetime.now(UTC).isoformat(),
                        ),
                    )
                applied.append(migration)
        return applied

    # -- rows (call inside ``transaction``) ---------------------------------------------

    @staticmethod
    def set_meta(conn: sqlite3.Connection, key: str, value: str) -> None:
        conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def get_meta(self, key: str) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key = ?", (key,))
        return str(rows[0][0]) if rows else None

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read statement (the journal reads its intents through it too)."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def status_of(self, job_id: str) -> str | None:
        rows = self.query("SELECT status FROM jobs WHERE id = ?", (job_id,))
        return rows[0][0] if rows else None

    def row(self, job_id: str) -> Row | None:
        rows = self.query("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Row(*rows[0]) if rows else None

    def bodies(
        self,
        filters: Mapping[str, Sequence[str]],
        limit: int | None = None,
        offset: int = 0,
    ) -> list[bytes]:
        where, params = where_clause(filters)
        sql = f"SELECT body FROM jobs{where} ORDER BY created_us, id LIMIT ? OFFSET ?"
        return [r[0] for r in self.query(sql, [*params, -1 if limit is None else limit, offset])]

    def count(self, filters: Mapping[str, Sequence[str]]) -> int:
        """How many jobs match; from job_counts unless an ingestion task is asked for."""
        where, params = where_clause(filters)
        if "ingestion_task_id" in filters:
            return int(self.query(f"SELECT count(*) FROM jobs{where}", params)[0][0])
        if "worker_id" in filters:
            where += " AND has_worker = 1"
        sql = f"SELECT coalesce(sum(jobs), 0) FROM job_counts{where}"
        return int(self.query(sql, params)[0][0])

    def newest_for_task(self, ingestion_task_id: str) -> tuple[str, str] | None:
        rows = self.query(
            "SELECT id, status FROM jobs WHERE ingestion_task_id = ?"
            " ORDER BY created_us DESC, id DESC LIMIT 1",
            (ingestion_task_id,),
        )
        return (rows[0][0], rows[0][1]) if rows else None

    def bodies_before(
        self, column: str, statuses: Sequence[JobStatus], before_us: int
    ) -> list[bytes]:
        """Bodies of jobs in ``statuses`` whose ``column`` (timeout_us, finished_us) is
        before ``before_us``, in find order."""
        assert column in ("timeout_us", "finished_us")
        marks = ", ".join("?" * len(statuses))
        return [
            r[0]
            for r in self.query(
                f"SELECT body FROM jobs WHERE status IN ({marks}) AND {column} < ?"
                " ORDER BY created_us, id",
                [*(s.value for s in statuses), before_us],
            )
        ]

    def ids_timed_out(self, status: JobStatus, before_us: int) -> list[str]:
        return [
            r[0]
            for r in self.query(
                "SELECT id FROM jobs WHERE status = ? AND timeout_us < ? ORDER BY timeout_us, id",
                (status.value, before_us),
            )
        ]

    def claim_candidates(
        self, content_types: Sequence[str] | None, limit: int, now_us: int
    ) -> list[str]:
        """The first ready jobs in claim order (highest priority, oldest, id) of those
        content types: pending with no ``not_before``, read from the head of an index, and
        delayed jobs whose ``not_before`` has passed, read from the index of that instant.
        Delayed jobs still waiting are never read."""
        # INDEXED BY: without statistics the planner may take the status index and sort
        # every pending job; these partial indexes are what keeps a claim flat in store size.
        ready = (
            "SELECT id, priority, created_us FROM jobs INDEXED BY {index}"
            " WHERE status = 'pending' AND not_before_us IS NULL{ct}"
            " ORDER BY {order}priority DESC, created_us, id LIMIT ?"
        )
        due = (
            "SELECT id, priority, created_us FROM jobs INDEXED BY jobs_delayed"
            " WHERE status = 'pending' AND not_before_us IS NOT NULL AND not_before_us <= ?{ct}"
            " ORDER BY not_before_us LIMIT ?"
        )
        rows: list[Any] = []
        # One ordered index range per content type, merged here: a single IN (...) query
        # would sort every pending job of those types on each claim.
        for content_type in [None] if content_types is None else dict.fromkeys(content_types):
            if content_type is None:
                ct, params, index, order = "", [], "jobs_ready", ""
            else:
                ct, params = " AND content_type = ?", [content_type]
                index, order = "jobs_ready_content_type", "content_type, "
            rows += self.query(ready.format(ct=ct, index=index, order=order), [*params, limit])
            rows += self.query(due.format(ct=ct), [now_us, *params, limit])
        rows.sort(key=lambda r: (-r[1], r[2], r[0].encode()))
        return [r[0] for r in rows[:limit]]

    def abandoned(self, content_types: Sequence[str] | None, now_us: int, limit: int) -> list[str]:
        """Processing jobs (of those content types) whose lease ended before ``now_us``,
        by lease end: what a claim takes back before it looks for ready jobs."""
        if content_types is None:
            sql = (
                "SELECT id FROM jobs WHERE status = 'processing' AND timeout_us < ?"
                " ORDER BY timeout_us, id LIMIT ?"
            )
            return [r[0] for r in self.query(sql, (now_us, limit))]
        marks = ", ".join("?" * len(content_types))
        sql = (
            "SELECT id FROM jobs WHERE status = 'processing' AND timeout_us < ?"
            f" AND content_type IN ({marks}) ORDER BY timeout_us, id LIMIT ?"
        )
        return [r[0] for r in self.query(sql, (now_us, *content_types, limit))]

    def grouped_counts(self, column: str) -> dict[str, int]:
        """Jobs per status, content type or worker (jobs without a worker left out)."""
        assert column in ("status", "content_type", "worker_id")
        where = " WHERE has_worker = 1" if column == "worker_id" else ""
        sql = f"SELECT {column}, sum(jobs) FROM job_counts{where} GROUP BY 1 ORDER BY 1"
        return {str(k): int(n) for k, n in self.query(sql)}

    def totals(self) -> tuple[int, int]:
        """(number of jobs, bytes of bodies)."""
        sql = "SELECT coalesce(sum(jobs), 0), coalesce(sum(bytes), 0) FROM job_counts"
        n, size = self.query(sql)[0]
        return int(n), int(size)

    def all_rows(self) -> dict[str, Row]:
        """Every row, for ``verify``."""
        return {r[0]: Row(*r) for r in self.query("SELECT * FROM jobs")}


def _statements(sql: str) -> list[str]:
    """Split a migration file into whole statements (a trigger's body holds semicolons)."""
    statements: list[str] = []
    pending = ""
    for line in sql.splitlines(keepends=True):
        if not pending and (not line.strip() or line.lstrip().startswith("--")):
            continue
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    if pending.strip():
        raise SchemaError(f"migration ends inside a statement: {pending.strip()[:60]!r}")
    return statements
