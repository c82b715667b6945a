"""The one-commit write protocol: job locks, intents, rows and files, and recovery.

Every operation that changes jobs goes through ``Journal.commit_many`` (``commit`` is the
batch of one); for each job of the batch:

1. take the job's lock (``locks.StripeLocks``) and read its current file;
2. in one short ``BEGIN IMMEDIATE`` commit, write the job's new row and an intent naming
   this write (a random token);
3. change the files: write the new body atomically into its status directory, then remove
   the old one if the status changed (fsyncs included when ``durable``); release the lock.

A batch does step 2 for all its jobs in one commit and step 3 for all together
(``files.write_many``). The intent is cleared lazily, by this process's next write
transaction (``transaction``): one commit per write. So the row leads the files by at most
one write, never lags them, and the file at the row's status is always the newest copy of a
job.

A process killed anywhere in 2-3 leaves an intent naming the job. Whoever next takes the
job's lock, or the next store opened on the directory (``recover_intents``), checks such a
job: if its files say exactly what its row says the write finished and the intent is merely
dropped, otherwise that job's row is re-derived from its files (``repair_locked``). Recovery
costs what the crash touched, not a full reindex. An intent is cleared by (job id, token)
wherever the clearer judged the write without holding the files still: a rebuild may have
disowned it meanwhile (``Sidecar`` rows stay the index's; intents are this module's).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import rows
from .ahead import BodiesAhead
from .errors import CorruptJobFile, DuplicateJob, JobTooLarge, LockTimeout, StorageError
from .files import (
    JOB_SUFFIX,
    JobFile,
    Layout,
    fsync_dir,
    publish_many,
    read_job_file,
    remove_file,
    write_many,
)
from .lifecycle import holds_key, moved_into, next_version
from .locks import StripeLocks
from .logs import get_logger
from .model import JobStatus, RemoteJob, parse_status, utcnow
from .rows import Row, row_for
from .sidecar import Sidecar
from .spares import SparePool

__all__ = ["BUSY_RETRY_WAIT", "Change", "Journal", "clear_intent", "disown_intents"]

log = get_logger("hybridstore")

# How long a sweep waits, the second time, for a job whose lock was busy the first.
BUSY_RETRY_WAIT = 0.25
# Writes that carry no new content from the caller: ``max_job_bytes`` limits what a caller
# stores (add, save, import, a result, an error), not the bookkeeping of a job that another
# process stored under a larger limit.
_UNLIMITED = frozenset({"claim", "heartbeat", "expire", "cancel", "move", "release"})
_STATUSES = {status.value: status for status in JobStatus}
# A batch of this many files writes them in a thread while its rows commit (``BodiesAhead``).
AHEAD_AT = 64
# How the intents such a batch commits before its rows are marked (tokens are hex).
BODIES_FIRST = "bodies-"
# A batch with this many jobs without a row, in a store of at most this many times as many
# jobs, looks for files of theirs in one listing of the status directories
# (``Journal._listed_files``) rather than six lstat calls a job.
LIST_FILES_AT = 64
LIST_FILES_RATIO = 8
# A job's row and intent (``Journal.states``): one job, or a JSON array of ids.
_STATE_OF_ONE = (
    "SELECT (SELECT status FROM jobs WHERE id = ?), (SELECT version FROM jobs WHERE id = ?),"
    " (SELECT token FROM intents WHERE job_id = ?), (SELECT body FROM jobs WHERE id = ?)"
)
_STATES_OF_MANY = (
    "SELECT asked.value, jobs.status, jobs.version, intents.token, jobs.body"
    " FROM json_each(?) AS asked LEFT JOIN jobs ON jobs.id = asked.value"
    " LEFT JOIN intents ON intents.job_id = asked.value"
)

#: One job of a batch write: (job id, current job or None, new job or None: a delete).
Change = tuple[str, RemoteJob | None, RemoteJob | None]
# ... and as ``commit_many`` carries it: the new job as stored, and its body.
_Encoded = tuple[str, RemoteJob | None, RemoteJob | None, bytes]

# The intents of this process's finished writes, per sidecar (shared by every store of the
# process on its directory) and per connection: (connection generation, job id -> token).
# Each write transaction deletes them in passing, which spares every write a commit of its
# own. A reopened database (replaced, or after fork) starts empty: they belonged to the old.
_SETTLED: weakref.WeakKeyDictionary[Sidecar, tuple[int, int, dict[str, str]]] = (
    weakref.WeakKeyDictionary()
)


def now_us() -> int:
    return time.time_ns() // 1000


def _set_intents(conn: sqlite3.Connection, tokens: list[tuple[str, str]], operation: str) -> None:
    """Record an intent for each (job id, token) of a write."""
    started_us = now_us()
    conn.executemany(
        "INSERT OR REPLACE INTO intents (job_id, operation, started_us, token) VALUES (?, ?, ?, ?)",
        [(job_id, operation, started_us, token) for job_id, token in tokens],
    )


def clear_intent(conn: sqlite3.Connection, job_id: str, token: str | None = None) -> None:
    """Delete the job's intent; only if it still carries ``token`` when one is given."""
    if token is None:
        conn.execute("DELETE FROM intents WHERE job_id = ?", (job_id,))
    else:
        conn.execute("DELETE FROM intents WHERE job_id = ? AND token = ?", (job_id, token))


def disown_intents(conn: sqlite3.Connection) -> tuple[set[str], dict[str, Row]]:
    """Give every intent a token no writer holds, so that none is cleared as settled, and
    return the jobs they name with the current rows of those that have one: a rebuild that
    calls this may read a job's files in the middle of a write, so it keeps the row the
    writer committed, and the intent stays until the job is checked again."""
    in_flight = {r[0] for r in conn.execute("SELECT job_id FROM intents")}
    kept = rows.rows_of(conn, in_flight)
    conn.execute("UPDATE intents SET token = ''")
    return in_flight, kept


def takes_key(current: RemoteJob | None, new: RemoteJob) -> bool:
    """Whether writing ``new`` over ``current`` makes it hold a unique key it did not hold:
    the write must then find no other active holder (``DuplicateJob``)."""
    if not holds_key(new):
        return False
    return current is None or not holds_key(current) or current.unique_key != new.unique_key


def _refuse_a_held_key(
    conn: sqlite3.Connection, job: RemoteJob, batch: dict[str, str] | None = None
) -> None:
    """``DuplicateJob`` if another active job holds ``job``'s unique key: one stored (read
    inside the caller's write transaction, which writers take one at a time) or one earlier
    in the same ``batch`` (key -> job id)."""
    assert job.unique_key is not None
    holder = (batch or {}).get(job.unique_key) or rows.key_holder(conn, job.unique_key, job.id)
    if holder is not None:
        raise DuplicateJob(job.id, job.unique_key, holder)


class Journal:
    """The write protocol of one store: its locks, its intents, its commits, its recovery.

    ``stripes`` None means a read-only store: nothing can write there, so there is nothing
    to lock. ``on_replaced`` reopens the sidecar when a write finds it replaced."""

    def __init__(
        self,
        layout: Layout,
        sidecar: Sidecar,
        stripes: StripeLocks | None,
        *,
        durable: bool,
        lock_timeout: float,
        max_job_bytes: int,
        read_limit: int,
        on_replaced: Callable[[], None],
        spares: SparePool | None = None,
    ) -> None:
        self.layout = layout
        #: Where the old copies of moved jobs go, to hold later bodies (durable stores).
        self.spares = spares
        self.sidecar = sidecar
        self.stripes = stripes
        self.durable = durable
        self.lock_timeout = lock_timeout
        self.max_job_bytes = max_job_bytes
        self.read_limit = read_limit
        self._on_replaced = on_replaced
        #: The jobs the last sweep (``each_locked``) passed over, busy.
        self.last_skipped: list[str] = []
        #: Whether a repair rewrites a job moved by hand as that move (stores opened to
        #: write); a reader leaves the file as it is and indexes its body.
        self.takes_in_moves = True

    # -- intents --------------------------------------------------------------------------

    def _settled(self) -> dict[str, str]:
        entry = _SETTLED.get(self.sidecar)
        key = (os.getpid(), self.sidecar.generation)
        if entry is None or entry[:2] != key:
            entry = (*key, {})
            _SETTLED[self.sidecar] = entry
        return entry[2]

    def _settle(self, job_id: str, token: str) -> None:
        """The write recorded with ``token`` is complete on disk: its intent goes with this
        process's next write transaction (or ``flush``)."""
        with self.sidecar.lock:
            self._settled()[job_id] = token

    def is_settled(self, job_id: str, token: str) -> bool:
        """Whether this process finished the write that recorded ``token``."""
        return self._settled().get(job_id) == token

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A sidecar write transaction that also clears the intents of this process's
        finished writes."""
        with self.sidecar.transaction() as conn:
            settled = self._settled()
            cleared = list(settled.items())
            if cleared:
                conn.executemany("DELETE FROM intents WHERE job_id = ? AND token = ?", cleared)
            yield conn
        with self.sidecar.lock:  # as ``_settle`` writes them
            for job_id, token in cleared:
                if settled.get(job_id) == token:
                    del settled[job_id]

    def flush(self) -> None:
        """Clear the intents of this process's finished writes now (one commit)."""
        if self._settled():
            with self.transaction():
                pass

    def intents(self) -> list[tuple[str, str]]:
        """(job id, token) of every recorded intent, oldest first."""
        rows = self.sidecar.query("SELECT job_id, token FROM intents ORDER BY started_us")
        return [(r[0], r[1]) for r in rows]

    def unsettled_intents(self) -> list[str]:
        """The jobs whose intent is not one of this process's finished writes: writes in
        flight in other processes, finished there but not yet cleared, or interrupted."""
        return [job_id for job_id, token in self.intents() if not self.is_settled(job_id, token)]

    def state(self, job_id: str) -> tuple[str | None, int, str | None]:
        """(status and version of the row, or None and 0; the token of its intent, or None)."""
        return self.states([job_id])[0][:3]

    def states(self, job_ids: Sequence[str]) -> list[tuple[str | None, int, str | None, bytes]]:
        """``state`` of each job, with the body its row holds (``b""`` if none), in one
        query: a batch asks once, not once per job."""
        if not job_ids:
            return []
        if len(job_ids) == 1:  # the common case, without the JSON round trip
            found = self.sidecar.query(_STATE_OF_ONE, (job_ids[0],) * 4)
        else:
            by_id = {
                row[0]: row[1:]
                for row in self.sidecar.query(_STATES_OF_MANY, (json.dumps(list(job_ids)),))
            }
            found = [by_id[job_id] for job_id in job_ids]
        return [
            (status, version or 0, token, body or b"") for status, version, token, body in found
        ]

    # -- locks ----------------------------------------------------------------------------

    @contextmanager
    def lock(self, job_id: str, timeout: float | None = None) -> Iterator[None]:
        """Hold ``job_id``'s lock (``LockTimeout`` after ``lock_timeout``)."""
        if self.stripes is None:  # read-only: nothing can write there, nothing to exclude
            yield
            return
        with self.stripes.held(job_id, self.lock_timeout if timeout is None else timeout):
            yield

    @contextmanager
    def lock_all(self, job_ids: Iterable[str]) -> Iterator[None]:
        """Hold the locks of every job in ``job_ids`` (a batch): each stripe once, in
        ascending order, so that two batches never wait for each other in a circle."""
        if self.stripes is None:
            yield
            return
        by_stripe: dict[int, str] = {}
        for job_id in job_ids:
            by_stripe.setdefault(StripeLocks.stripe(job_id), job_id)
        taken: list[str] = []
        try:
            for stripe in sorted(by_stripe):
                self.stripes.acquire(by_stripe[stripe], self.lock_timeout)
                taken.append(by_stripe[stripe])
            yield
        finally:
            for job_id in reversed(taken):
                self.stripes.unlock(job_id)

    def try_lock(self, job_id: str) -> bool:
        """Lock ``job_id`` if it is free, without waiting; release with ``_unlock``."""
        return True if self.stripes is None else self.stripes.try_acquire(job_id)

    def unlock(self, job_id: str) -> None:
        if self.stripes is not None:
            self.stripes.unlock(job_id)

    def each_locked(self, job_ids: Iterable[str], sweep: str) -> Iterator[str]:
        """Yield each job id while holding its lock, skipping jobs a writer keeps locked.

        A sweep over many jobs (expiry, cleanup, verify, repair) must not fail, or wait
        ``lock_timeout`` per job, because one writer is stopped inside a write (SIGSTOP, a
        long fsync): like ``SKIP LOCKED``, a busy job is passed over, asked again once
        after the others, and then left to the next sweep (logged as ``skipped_busy_jobs``;
        ``self.last_skipped`` names them)."""
        busy: list[str] = []
        for job_id in job_ids:
            if not self.try_lock(job_id):
                busy.append(job_id)
                continue
            try:
                yield job_id
            finally:
                self.unlock(job_id)
        skipped: list[str] = []
        for job_id in busy:
            try:
                with self.lock(job_id, min(self.lock_timeout, BUSY_RETRY_WAIT)):
                    yield job_id
            except LockTimeout:
                skipped.append(job_id)
        #: The jobs the last sweep of this store passed over, busy.
        self.last_skipped = skipped
        if skipped:
            log.warning("skipped_busy_jobs", sweep=sweep, jobs=skipped[:20], count=len(skipped))

    def read(
        self,
        job_id: str,
        status: JobStatus,
        *,
        strict: bool = True,
        moved_ok: bool = False,
        known: bytes | None = None,
    ) -> JobFile:
        return read_job_file(
            self.layout.job_file(status, job_id),
            self.read_limit,
            job_id,
            status,
            strict=strict,
            moved_ok=moved_ok,
            known=known,
        )

    def load_locked(self, job_id: str) -> RemoteJob | None:
        """The job as its file says, holding its lock; repairs its row first if needed."""
        return self._load_locked(job_id, *self.states([job_id])[0])

    def load_many_locked(self, job_ids: Sequence[str]) -> list[RemoteJob | None]:
        """``load_locked`` of each job, holding every lock; their rows asked in one query."""
        states = self.states(job_ids)
        listed = self._listed_files(sum(1 for state in states if state[0] is None))
        return [
            self._load_locked(job_id, *state, listed=listed)
            for job_id, state in zip(job_ids, states, strict=True)
        ]

    def _listed_files(self, without_row: int) -> frozenset[str] | None:
        """The names in every status directory, when a batch has many jobs without a row
        (an ``add_many``, an import) and the store is not much larger than the batch: one
        listing then costs less than six ``lstat`` calls for each of them (in a directory
        of thousands, each of those looks up a name that is not there). None otherwise."""
        if without_row < LIST_FILES_AT or self.sidecar.totals()[0] > LIST_FILES_RATIO * without_row:
            return None
        names: set[str] = set()
        for status in JobStatus:
            try:
                names.update(os.listdir(self.layout.status_dir_name(status)))
            except FileNotFoundError:
                continue
            except OSError:
                return None  # asked name by name, which reports the error as it should
        return frozenset(names)

    def _load_locked(
        self,
        job_id: str,
        status: str | None,
        version: int,
        token: str | None,
        body: bytes,
        *,
        listed: frozenset[str] | None = None,
    ) -> RemoteJob | None:
        if token is not None and not self.is_settled(job_id, token):
            # Another process's write (none can be in flight: we hold the lock). Finished
            # if the files say exactly what the row says; else interrupted: repair.
            settled, job = self.settled_job(job_id, status, version)
            if not settled:
                return self.reload_locked(job_id)
            if token.startswith(BODIES_FIRST):
                # A bulk batch killed before its rows committed: its rows and files still
                # agree, but its temp files are there.
                for temp in self.layout.temp_files(job_id):
                    temp.unlink(missing_ok=True)
            return job
        if status is None:
            # No job, or a file the index does not know (``locate`` costs six lstat calls).
            if listed is not None:
                unknown_file = f"{job_id}{JOB_SUFFIX}" in listed
            else:
                unknown_file = bool(self.layout.locate(job_id))
            return self.reload_locked(job_id) if unknown_file else None
        try:
            # The row's body was checked when it was written (``_encode``) or parsed
            # strictly when indexed: a file that still holds it need not be parsed strictly.
            return self.read(job_id, _STATUSES[status], known=body).job
        except FileNotFoundError:
            # The row points at a file someone removed by hand: trust the files.
            return self.reload_locked(job_id)

    def reload_locked(self, job_id: str) -> RemoteJob | None:
        """Re-derive the job's row from its files, then read it."""
        self.repair_locked(job_id)
        status = self.sidecar.status_of(job_id)
        return None if status is None else self.read(job_id, _STATUSES[status]).job

    def settled_job(
        self, job_id: str, status: str | None, version: int
    ) -> tuple[bool, RemoteJob | None]:
        """Whether the job's files agree with its row (status, version), holding its lock,
        and the job if they do: one copy, in the row's directory, of the row's version (or
        no copy and no row). A write that did not finish always breaks one of these.
        ``CorruptJobFile`` if that copy is unreadable."""
        where = self.layout.locate(job_id)
        if status is None:
            return not where, None
        if where != [_STATUSES[status]]:
            return False, None
        try:
            job = self.read(job_id, _STATUSES[status]).job
        except FileNotFoundError:
            return False, None
        return job.version == version, job

    def commit(
        self,
        job_id: str,
        current: RemoteJob | None,
        new: RemoteJob | None,
        operation: str,
    ) -> RemoteJob | None:
        """Steps 2–3 of the write protocol; the caller holds the job's lock and has read
        ``current`` (None if the job does not exist); ``new`` None deletes the job."""
        return self.commit_many([(job_id, current, new)], operation)[0]

    def commit_many(self, changes: Sequence[Change], operation: str) -> list[RemoteJob | None]:
        """Steps 2–3 of the write protocol for a batch of ``(job id, current, new)``: the
        caller holds every job's lock and read its ``current`` (None: a new job); ``new``
        None deletes it. Returns the stored jobs, in order.

        Every row and intent in one transaction, which also checks every unique key taken
        against the stored jobs and the batch (``DuplicateJob``: nothing written). Then the
        files: every new body written and made durable together (``files.write_many``), then
        the old copies of moved or deleted jobs removed. A bulk batch commits its intents
        first, on their own, and writes its bodies (``BodiesAhead``) while its rows commit;
        it renames them once they have. Should a file step fail, the
        jobs whose files were not touched get their rows back; the others keep their
        intent, so the next touch of each re-derives its row.
        """
        batch = [
            (job_id, current, *(self._encode(new, operation) if new else (None, b"")))
            for job_id, current, new in changes
        ]
        tokens = [secrets.token_hex(8) for _ in batch]
        files = [
            (self.layout.status_dir_name(new.status), f"{job_id}{JOB_SUFFIX}", body)
            for job_id, _, new, body in batch
            if new is not None
        ]
        intents = [(job_id, token) for (job_id, *_), token in zip(batch, tokens, strict=True)]
        ahead = None
        early: list[tuple[str, str]] = []
        if len(files) >= AHEAD_AT:
            # A bulk batch writes its bodies (temp files, not visible yet) in a thread while
            # its rows commit: both wait mostly on the kernel or in SQLite, which release
            # the GIL. Intents marked as such commit first, on their own: a process killed
            # before its rows commit leaves them, and whoever judges one removes the job's
            # temp files. The row commit sets the intents again, unmarked (and so into the
            # sidecar it writes to, should another thread have reopened it meanwhile).
            early = [(job_id, f"{BODIES_FIRST}{token}") for job_id, token in intents]
            with self.transaction() as conn:
                _set_intents(conn, early, operation)
            ahead = BodiesAhead(files, self.durable, self.spares)
        try:
            with self.transaction() as conn:
                befores = self._write_rows(conn, batch, operation, intents)
                connection = self.sidecar.generation
        except BaseException:
            if ahead is not None:
                ahead.discard()
                self._drop_intents_quietly(early)
            raise
        touched: set[int] = set()
        try:
            self._write_files(batch, files, ahead, touched)
        except StorageError:
            for i, ((job_id, *_), before, token) in enumerate(
                zip(batch, befores, tokens, strict=True)
            ):
                if i not in touched:
                    self._restore_quietly(job_id, before, token)
            raise
        except BaseException:
            if ahead is not None:  # an interrupt while the bodies were written: none stays
                ahead.discard()
            raise
        for (job_id, *_), token in zip(batch, tokens, strict=True):
            self._settle(job_id, token)
        if self.sidecar.replaced() or self.sidecar.generation != connection:
            # The sidecar was deleted or replaced during this write (and maybe reopened by
            # another thread since), so the rows went to the old one, and the new one may
            # have been rebuilt before our file step: re-derive these jobs in the new one
            # (we still hold their locks, so their files are final).
            self._on_replaced()
            for job_id, *_ in batch:
                self.repair_locked(job_id)
        return [new for _, _, new, _ in batch]

    def _write_rows(
        self,
        conn: sqlite3.Connection,
        batch: list[_Encoded],
        operation: str,
        intents: list[tuple[str, str]],
    ) -> list[Row | None]:
        """Step 2 of ``commit_many``, inside its transaction: every row (unique keys
        checked) and every intent. Returns each job's row before, to put back if the file
        step fails."""
        written_us = now_us()
        befores: list[Row | None] = []
        keys: dict[str, str] = {}  # unique key -> the job of the batch that took it
        added: list[Row] = []  # rows of new jobs, inserted together
        stored = rows.rows_of(conn, [job_id for job_id, current, *_ in batch if current])
        counts = rows.CountChanges()
        for job_id, current, new, body in batch:
            if new is not None and takes_key(current, new):
                assert new.unique_key is not None
                _refuse_a_held_key(conn, new, keys)
                keys[new.unique_key] = job_id
            row = None if new is None else row_for(new, body, written_us)
            if current is None and row is not None:
                # The caller found no job under its lock: no file, and no row either.
                added.append(row)
                befores.append(None)
            else:
                befores.append(rows.write_row(conn, job_id, row, stored.get(job_id), counts))
        counts.apply(conn)
        rows.put_rows(conn, added)
        _set_intents(conn, intents, operation)
        return befores

    def _write_files(
        self,
        batch: list[_Encoded],
        files: list[tuple[str, str, bytes]],
        ahead: BodiesAhead | None,
        touched: set[int],
    ) -> None:
        """The file step of ``commit_many``: the new bodies (``files``, written already by
        ``ahead`` in a bulk batch), then the removal of old copies (a move needs no fsync
        of the old directory: if its unlink is lost in a power cut, the durable new copy
        has the higher version and wins the rebuild that follows every reboot; a delete
        must be durable itself). A moved job's old copy is parked in the spare pool, when
        there is one, rather than removed. Adds to ``touched`` the index of each job whose
        files it changed, so that a failure can tell them from the others."""
        writes = [i for i, (_, _, new, _) in enumerate(batch) if new is not None]
        try:
            if ahead is None:
                write_many(files, durable=self.durable, spares=self.spares)
            else:
                publish_many(files, ahead.result(), durable=self.durable)
        except StorageError as exc:
            touched.update(writes if exc.in_place else writes[: exc.renamed])
            raise
        touched.update(writes)
        deleted: dict[str, None] = {}
        for i, (job_id, current, new, _) in enumerate(batch):
            if current is None or (new is not None and new.status is current.status):
                continue
            old = self.layout.job_file(current.status, job_id)
            if new is not None and self.spares is not None and self.spares.park(old):
                continue
            try:
                remove_file(old, durable=False)
            except StorageError as exc:
                if new is not None:  # the new body is in place, the old copy remains
                    raise StorageError(exc.path, exc.cause, in_place=True) from exc
                raise
            if new is None:
                touched.add(i)
                deleted[os.path.dirname(old)] = None
        if self.durable:
            for directory in deleted:
                try:
                    fsync_dir(directory)
                except OSError as exc:
                    raise StorageError(directory, exc, in_place=True) from exc

    def _encode(self, job: RemoteJob, operation: str) -> tuple[RemoteJob, bytes]:
        """The job as it will be stored and its body, checked before anything is touched:
        a status that names a directory, counters that fit, JSON values that the strict
        parse of a read accepts (reads trust a file that holds exactly its row's body: see
        ``_load_locked``), the size limit of writes."""
        if not isinstance(job.status, JobStatus):
            # Only a job built without validation (``model_construct``) gets here; its
            # status names a directory.
            job = job.model_copy(update={"status": parse_status(job.status)})
        job.check_storable()
        job.check_json_values()
        body = job.to_json()
        if len(body) > self.max_job_bytes and operation not in _UNLIMITED:
            raise JobTooLarge(job.id, len(body), self.max_job_bytes)
        return job, body

    def _drop_intents_quietly(self, intents: list[tuple[str, str]]) -> None:
        # A bulk batch refused after its intents committed (a held unique key): they go.
        # If that fails too, each is judged at the next ``recover_intents``: nothing changed.
        with (
            contextlib.suppress(sqlite3.Error, StorageError, LockTimeout),
            self.transaction() as conn,
        ):
            for job_id, token in intents:
                clear_intent(conn, job_id, token)

    def _restore_quietly(self, job_id: str, row: Row | None, token: str) -> None:
        # If that fails too, the intent stays: the next touch of the job re-derives its row.
        with (
            contextlib.suppress(sqlite3.Error, StorageError, LockTimeout),
            self.transaction() as conn,
        ):
            counts = rows.CountChanges()
            rows.write_row(conn, job_id, row, rows.rows_of(conn, [job_id]).get(job_id), counts)
            counts.apply(conn)
            # By token: a rebuild meanwhile disowned it, and its row may predate ``row``.
            clear_intent(conn, job_id, token)

    def store_next(self, current: RemoteJob, new: RemoteJob, operation: str) -> RemoteJob:
        stored = self.commit(current.id, current, next_version(current, new), operation)
        assert stored is not None
        return stored

    def load_for_batch(self, job_id: str) -> RemoteJob | None:
        """``load_locked`` for the calls that walk many jobs (claims, expiry, cleanup): an
        unreadable file is skipped and its row dropped, as a reindex would, instead of
        failing the call for every other job. ``verify`` reports it, ``repair`` quarantines it.
        """
        return self.load_many_for_batch([job_id])[0]

    def load_many_for_batch(self, job_ids: Sequence[str]) -> list[RemoteJob | None]:
        """``load_for_batch`` of each job, holding every lock; their rows asked in one query."""
        loaded: list[RemoteJob | None] = []
        for job_id, state in zip(job_ids, self.states(job_ids), strict=True):
            try:
                loaded.append(self._load_locked(job_id, *state))
            except CorruptJobFile as exc:
                log.warning("skipped_unreadable_job", job_id=job_id, reason=exc.reason)
                self.repair_locked(job_id)
                loaded.append(None)
        return loaded

    def copies(self, job_id: str) -> tuple[list[tuple[JobFile, Path]], list[tuple[Path, str]]]:
        """Every copy of a job on disk: the valid ones by ascending version (normally one),
        and the invalid ones with the reason."""
        copies: list[tuple[JobFile, Path]] = []
        invalid: list[tuple[Path, str]] = []
        for status in self.layout.locate(job_id):
            path = self.layout.job_path(status, job_id)
            try:
                copies.append((self.read(job_id, status, moved_ok=True), path))
            except FileNotFoundError:
                continue
            except CorruptJobFile as exc:
                invalid.append((path, exc.reason))
        # By version; of two copies of one version, the one whose body matches its
        # directory last (the winner): the other was copied by hand, not moved.
        copies.sort(key=lambda c: (c[0].job.version, c[0].job.status.value == c[1].parent.name))
        return copies, invalid

    def repair_locked(
        self, job_id: str, *, quarantine_invalid: bool = False, take_in_move: bool | None = None
    ) -> tuple[list[str], list[Path]]:
        """Re-derive one job's row from its files; the caller holds the job's lock.

        Keeps the highest version when the job is in several directories (the others are
        quarantined), removes the job's temp files (no write of it can be in flight), and
        clears its intent. Invalid files are skipped, or quarantined if asked. Returns what
        was done and where the quarantined files went.
        """
        actions: list[str] = []
        quarantined: list[Path] = []
        copies, invalid = self.copies(job_id)
        for path, reason in invalid:
            if quarantine_invalid:
                quarantined.append(self.layout.quarantine_file(path, reason))
                actions.append(f"quarantined {path}: {reason}")
        for temp in self.layout.temp_files(job_id):
            temp.unlink(missing_ok=True)
            actions.append(f"removed temp file {temp}")
        winner, winner_path = copies.pop() if copies else (None, None)
        for older, path in copies:
            reason = f"older copy (version {older.job.version}) of a job found in two directories"
            quarantined.append(self.layout.quarantine_file(path, reason))
            actions.append(f"quarantined {path}: {reason}")
        with self.transaction() as conn:
            if winner is None:
                rows.drop_row(conn, job_id)
            else:
                rows.put_rows(conn, [row_for(winner.job, winner.data, winner.mtime_us)])
            clear_intent(conn, job_id)
        actions.append(f"reindexed {job_id}" if winner else f"dropped row of {job_id}")
        if take_in_move is None:
            take_in_move = self.takes_in_moves
        if winner is not None and winner_path is not None and take_in_move:
            moved_to = JobStatus(winner_path.parent.name)
            if winner.job.status is not moved_to:
                # Moved by hand into another status directory: taken as that move.
                moved = moved_into(winner.job, moved_to, utcnow())
                try:
                    self.store_next(winner.job, moved, "move")
                except DuplicateJob as exc:
                    # Its unique key is held by another active job now: the move is taken,
                    # the key is not (a hand move cannot be refused, and two active jobs
                    # must not hold one key).
                    log.warning("moved_job_lost_its_key", job_id=job_id, holder=exc.existing_id)
                    self.store_next(
                        winner.job, moved.model_copy(update={"unique_key": None}), "move"
                    )
                actions.append(f"took {job_id} as moved by hand into {moved_to.value}")
        return actions, quarantined

    def recover_intents(self) -> int:
        """Check the jobs named by other processes' intents: drop the intents of finished
        writes, repair the jobs whose writer died mid-write; return how many were repaired.
        """
        recovered = 0
        # Not ours and finished: other processes', finished but not yet cleared, or dead.
        others = [
            (job_id, token)
            for job_id, token in self.intents()
            if not self.is_settled(job_id, token)
        ]
        # A bulk batch writer killed before its rows commit (its intents still marked
        # ``BODIES_FIRST``) leaves temp files whatever its rows say: listed once for all.
        early = {job_id for job_id, token in others if token.startswith(BODIES_FIRST)}
        temps = self.layout.temps_of(early) if early else {}
        for job_id, token in others:
            if not self.try_lock(job_id):
                # A live writer holds the job's lock stripe: this job's writer, which will
                # finish its own intent, or another job's, and a later pass checks this one.
                continue
            try:
                status, version, now_token = self.state(job_id)
                if now_token == token:
                    # No write of the job is in flight (we hold its lock), and a newer one
                    # would have replaced the intent before making any temp file: these
                    # are dead. Removed before the intent goes, so a kill here loses none.
                    for path in temps.get(job_id, []):
                        path.unlink(missing_ok=True)
                    try:
                        settled = self.settled_job(job_id, status, version)[0]
                    except CorruptJobFile:
                        settled = False  # the repair leaves the file out of the index
                    if settled:
                        with self.transaction() as conn:
                            # By token: a rebuild since our look may have disowned it.
                            clear_intent(conn, job_id, token)
                    else:
                        self.repair_locked(job_id)
                        recovered += 1
            finally:
                self.unlock(job_id)
        if recovered:
            log.warning(
                "recovered_interrupted_writes", jobs=recovered, data_dir=str(self.layout.root)
            )
        return recovered
