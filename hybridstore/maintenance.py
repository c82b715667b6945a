"""Keeping the sidecar in line with the files: opening and its health, rebuild, verify,
repair, and the periodic look for dead temp files and jobs moved by hand.

The write protocol (``journal``) keeps the index right write by write; what it cannot
see (a damaged or foreign sidecar, an older schema, a reboot, files edited or moved by
hand, the temp file of a killed writer) is this module's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from filelock import FileLock

from . import rows
from .errors import CorruptJobFile, StorageError
from .files import Layout, current_boot_id, read_job_file
from .journal import Journal, disown_intents, now_us
from .locks import coarse_lock
from .logs import get_logger
from .migrations import Migration
from .model import JobStatus
from .reports import Problem, ReindexReport, RepairReport, VerifyReport
from .rows import Row, counts_match, row_for, row_matches
from .sidecar import FOREIGN, Sidecar
from .spares import sweep_orphans

__all__ = ["TEMP_MAX_AGE", "TEMP_SWEEP_EVERY", "Maintenance", "is_read_only"]

log = get_logger("hybridstore")

# How often (seconds) an open may look for temp files left by killed writers.
TEMP_SWEEP_EVERY = 60
# A temp file older than this cannot belong to a write still in flight.
TEMP_MAX_AGE = 15 * 60

ProgressCallback = Callable[[int, int], None]


class Maintenance:
    """Rebuild, verify and repair for one store (``JobStore`` delegates to it)."""

    def __init__(
        self,
        layout: Layout,
        sidecar: Sidecar,
        journal: Journal,
        *,
        read_only: bool,
        writer: bool,
        read_limit: int,
        lock_timeout: float,
    ) -> None:
        self.layout = layout
        self.sidecar = sidecar
        self.journal = journal
        self.read_only = read_only
        #: Opened to write (``JobStore(create=True)``): only then may maintenance move or
        #: rewrite job files on its own (quarantine a leftover copy, take in a moved job).
        self.writer = writer and not read_only
        self.read_limit = read_limit
        self.lock_timeout = lock_timeout
        # Opening and rebuilding the sidecar: rare, filelock's job (see ``locks``).
        self._opening = FileLock(layout.lock_path(".sidecar"), fallback_to_soft=False)
        #: Sidecar migrations the last open applied (all of them for a new sidecar).
        self.migrations_applied: list[Migration] = []

    def _open_read_only(self) -> None:
        """Connect to the sidecar of a store on a read-only file system, which nothing can
        rebuild or migrate there: refuse one that is not usable as it is."""
        problem = self.sidecar_health()
        why = None
        if problem is not None:
            why = f"the sidecar is {problem}"
        else:
            self.sidecar.connect()
            if self.sidecar.pending_migrations():
                why = "the sidecar is of an older schema"
        if why is not None:
            self.sidecar.close()
            raise StorageError(
                self.sidecar.path,
                OSError(
                    errno.EROFS,
                    f"{why} and the store is on a read-only file system: run"
                    " 'hybridstore reindex' on a writable copy",
                ),
            )

    def open_sidecar(self) -> None:
        """Connect, migrate, and rebuild from the files when the sidecar is not usable."""
        if self.read_only:
            self._open_read_only()
            return
        sidecar = self.sidecar
        with coarse_lock(self._opening, self.lock_timeout * 12):
            problem = self.sidecar_health()
            if problem == "missing":
                # A -wal or -shm left from a deleted database must not be replayed into
                # the new one.
                for suffix in ("-wal", "-shm"):
                    Path(f"{sidecar.path}{suffix}").unlink(missing_ok=True)
            elif problem is not None:
                sidecar.close()
                kind = "foreign" if problem == FOREIGN else "corrupt"
                aside = sidecar.path.with_name(
                    f"{sidecar.path.name}.{kind}-{time.strftime('%Y%m%dT%H%M%S')}"
                )
                os.replace(sidecar.path, aside)
                for suffix in ("-wal", "-shm"):
                    Path(f"{sidecar.path}{suffix}").unlink(missing_ok=True)
                log.warning(
                    "sidecar_unusable", path=str(sidecar.path), reason=problem, moved_to=str(aside)
                )
            sidecar.connect()
            old_version = sidecar.schema_version()
            self.migrations_applied = sidecar.migrate()
            # The sidecar is not fsynced: a machine crash can lose its last commits (and
            # the intents that would point at them), so each boot starts from the files.
            boot = current_boot_id()
            rebooted = boot is not None and sidecar.get_meta("boot_id") != boot
            # A new sidecar has no rows; one of an older schema may lack rows or columns
            # its writers did not maintain: both are rebuilt from the files too.
            # A migration whose file starts "-- keeps rows" only adds what older rows
            # already mean; any other leaves rows its writers did not maintain.
            reshaped = any(not m.sql.startswith("-- keeps rows") for m in self.migrations_applied)
            if old_version == 0 or reshaped or rebooted:
                report = self.rebuild(None)
                if report.indexed or report.skipped or problem not in (None, "missing"):
                    reason = problem or (
                        "empty"
                        if old_version == 0
                        else "older schema"
                        if self.migrations_applied
                        else "new boot"
                    )
                    log.warning(
                        "sidecar_rebuilt",
                        path=str(sidecar.path),
                        reason=reason,
                        jobs=report.indexed,
                        skipped=len(report.skipped),
                    )
                if boot is not None:
                    with sidecar.transaction() as conn:
                        Sidecar.set_meta(conn, "boot_id", boot)

    def sidecar_health(self) -> str | None:
        """``Sidecar.health``, asked again a few times while SQLite gives no verdict (an
        I/O error or a busy file while another process opens or closes the database)."""
        for attempt in range(5):
            try:
                return self.sidecar.health()
            except StorageError:
                self.sidecar.close()
                if attempt == 4:
                    raise
                time.sleep(0.01 * 2**attempt)
        raise AssertionError("unreachable")

    def sweep_directories(self) -> None:
        """At most once a ``TEMP_SWEEP_EVERY`` per directory (it lists every status
        directory): remove the temp files no write owns any more, and take in the job files
        moved by hand between status directories.

        A write holds its job's lock from before it creates its temp file until after it
        renames it, so a temp file that still exists once we hold that lock is dead (its
        writer was killed): no need to wait ``TEMP_MAX_AGE`` for ``repair``. A job file in
        a directory its row does not name is re-derived under its lock: a write in flight
        has finished by then, and a file moved by hand is taken as moved."""
        last = self.sidecar.get_meta("temps_swept_us")
        if last is not None and now_us() - int(last) < TEMP_SWEEP_EVERY * 1_000_000:
            return
        with self.journal.transaction() as conn:
            Sidecar.set_meta(conn, "temps_swept_us", str(now_us()))
        entries = list(self.layout.scan())
        statuses = dict(self.sidecar.query("SELECT id, status FROM jobs"))
        elsewhere = {
            e.job_id
            for e in entries
            if e.kind == "job" and e.job_id and statuses.get(e.job_id) != e.status.value
        }
        self.take_in_moved(sorted(elsewhere))
        owners = {e.path: self.layout.temp_owner(e.path) for e in entries if e.kind == "temp"}
        removed = []
        for job_id in self.journal.each_locked({o for o in owners.values() if o}, "temps"):
            for path, owner in owners.items():
                if owner == job_id and os.path.lexists(path):
                    Path(path).unlink(missing_ok=True)
                    removed.append(str(path))
        if removed:
            log.warning("removed_dead_temp_files", count=len(removed), files=removed[:20])
        sweep_orphans(self.layout.root)  # the spare files of processes that are gone

    def rebuild(
        self, progress: ProgressCallback | None, *, explicit: bool = False
    ) -> ReindexReport:
        """Rebuild the index from the files. On open (not ``explicit``) a store opened to
        read moves no file; ``reindex``, asked for, acts as a writer (unless read-only)."""
        writer = self.writer or (explicit and not self.read_only)
        started = time.perf_counter()
        report = ReindexReport()
        with self.journal.transaction() as conn:
            # Holding the write gate while scanning, no write can commit: every write that
            # may change files during the scan committed its row and intent before it. The
            # scan can meet such a job mid-write (in no directory between two listings, in
            # two directories between a rename and an unlink), so its row is not taken from
            # the scan: it keeps the row its writer committed, which leads the files. Its
            # intent is disowned, so that no writer or check clears it as settled: the job
            # is checked against its files once the write is over (``_recover_intents``).
            in_flight, kept = disown_intents(conn)
            entries = list(self.layout.scan())
            total = sum(1 for e in entries if e.kind == "job")
            best: dict[str, Row] = {}
            ranks: dict[str, tuple[int, bool]] = {}
            paths: dict[str, Path] = {}
            copies: dict[str, int] = {}
            done = 0
            for entry in entries:
                if entry.kind != "job":
                    if entry.kind == "foreign" or self.layout.is_old_temp(entry.path, TEMP_MAX_AGE):
                        report.skipped.append(
                            Problem(entry.kind, str(entry.path), _why_skipped(entry.kind))
                        )
                    continue
                assert entry.job_id is not None
                try:
                    found = read_job_file(
                        entry.path, self.read_limit, entry.job_id, entry.status, moved_ok=True
                    )
                except FileNotFoundError:
                    continue
                except CorruptJobFile as exc:
                    report.skipped.append(
                        Problem("unreadable", str(entry.path), exc.reason, entry.job_id)
                    )
                else:
                    job = found.job
                    copies[job.id] = copies.get(job.id, 0) + 1
                    row = row_for(job, found.data, found.mtime_us)
                    # Of two copies, the higher version wins; of one version, the copy whose
                    # body matches its directory (the other was copied by hand).
                    rank = (row.version, job.status is entry.status)
                    other = best.get(job.id)
                    if other is not None:
                        if rank > ranks[job.id]:
                            loser_path = paths[job.id]
                        else:
                            loser_path, row, rank = entry.path, other, ranks[job.id]
                        if job.id not in in_flight and writer:
                            # No write of it is in flight: a leftover (a move whose unlink a
                            # power cut lost). Set aside, lest a later delete resurrect it.
                            reason = "older copy of a job found in two directories"
                            self.layout.quarantine_file(loser_path, reason)
                            report.skipped.append(
                                Problem(
                                    "duplicate", str(loser_path), f"{reason}: quarantined", job.id
                                )
                            )
                    if other is None or loser_path != entry.path:
                        best[job.id] = row
                        ranks[job.id] = rank
                        paths[job.id] = entry.path
                done += 1
                if progress is not None and (done % 500 == 0 or done == total):
                    progress(done, total)
            for job_id in in_flight:
                if job_id in kept:
                    best[job_id] = kept[job_id]
                else:
                    best.pop(job_id, None)  # a delete in flight, or never indexed
            rows.replace_all_rows(conn, best.values())
            report.indexed = len(best)
        if writer:
            # Jobs whose one file was moved by hand: taken as moved (a store opened to read
            # leaves them to writers, and a job with several copies to repair).
            self.take_in_moved(
                job_id
                for job_id, path in paths.items()
                if copies[job_id] == 1 and best[job_id].status != path.parent.name
            )
        report.seconds = time.perf_counter() - started
        return report

    def take_in_moved(self, job_ids: Iterable[str]) -> None:
        """Rewrite jobs whose one file was moved by hand into another status directory as
        that move (``lifecycle.moved_into``), and re-derive the rows of the others. A job
        with several copies (a file copied, not moved) is left alone: which copy is meant
        cannot be told, so ``verify`` reports it and ``repair`` decides, never a sweep."""
        for job_id in self.journal.each_locked(job_ids, "moved"):
            copies, invalid = self.journal.copies(job_id)
            if len(copies) != 1 or invalid:
                continue
            with contextlib.suppress(CorruptJobFile):
                self.journal.repair_locked(job_id, take_in_move=True)

    def verify(self) -> VerifyReport:
        """Compare the files with the sidecar; changes nothing.

        Reports rows without files (orphaned), files without rows (missing), rows that
        differ from their file (stale), jobs in two directories, unreadable job files,
        interrupted writes, old temp files, job counts that differ from the rows, and
        foreign entries (not counted as drift). Suspects found while other processes write
        are re-checked under the job's lock.
        """
        report = VerifyReport()
        suspects: set[str] = set()
        rows = self.sidecar.all_rows()
        seen: dict[str, int] = {}
        for entry in self.layout.scan():
            if entry.kind == "foreign":
                report.problems.append(Problem("foreign", str(entry.path), _why_skipped("foreign")))
            elif entry.kind == "temp":
                if self.layout.is_old_temp(entry.path, TEMP_MAX_AGE):
                    report.problems.append(Problem("temp", str(entry.path), _why_skipped("temp")))
            else:
                assert entry.job_id is not None
                seen[entry.job_id] = seen.get(entry.job_id, 0) + 1
                try:
                    found = read_job_file(entry.path, self.read_limit, entry.job_id, entry.status)
                except (FileNotFoundError, CorruptJobFile):
                    suspects.add(entry.job_id)
                    continue
                row = rows.get(entry.job_id)
                if row is None or not row_matches(row, found.job, found.data):
                    suspects.add(entry.job_id)
        suspects.update(job_id for job_id, n in seen.items() if n > 1)
        suspects.update(job_id for job_id in rows if job_id not in seen)
        suspects.update(self.journal.unsettled_intents())
        report.jobs = len(seen)
        for job_id in self.journal.each_locked(sorted(suspects), "verify"):
            report.problems.extend(self._check_locked(job_id))
        for job_id in self.journal.last_skipped:
            path = str(self.layout.locks)
            report.problems.append(Problem("busy", path, "a writer held its lock", job_id))
        with self.sidecar.snapshot() as conn:
            if not counts_match(conn):
                reason = "job counts differ from the rows (count and statistics are off)"
                report.problems.append(Problem("counts", str(self.sidecar.path), reason))
        return report

    def _check_locked(self, job_id: str) -> list[Problem]:
        """The drift of one job, judged while holding its lock."""
        copies, invalid = self.journal.copies(job_id)
        problems = [Problem("unreadable", str(path), reason, job_id) for path, reason in invalid]
        status, version, token = self.journal.state(job_id)
        # With an unreadable copy, whether the write finished cannot be told: the copy is
        # reported as unreadable, and the repair settles the rest.
        if (
            token is not None
            and not invalid
            and not self.journal.is_settled(job_id, token)
            and not self.journal.settled_job(job_id, status, version)[0]
        ):
            problems.append(
                Problem("intent", str(self.sidecar.path), "a write did not finish", job_id)
            )
        for older, path in copies[:-1]:
            reason = f"older copy (version {older.job.version})"
            problems.append(Problem("duplicate", str(path), reason, job_id))
        row = self.sidecar.row(job_id)
        if copies:
            newest, path = copies[-1]
            if newest.job.status.value != path.parent.name:
                reason = (
                    f"moved by hand from {newest.job.status.value} into {path.parent.name}:"
                    " taken in by repair or the job's next write"
                )
                problems.append(Problem("moved", str(path), reason, job_id))
            elif row is None:
                problems.append(Problem("missing", str(path), "file has no index row", job_id))
            elif not row_matches(row, newest.job, newest.data):
                problems.append(
                    Problem("stale", str(path), "index row differs from the file", job_id)
                )
        elif row is not None and not invalid:
            # (With an unreadable copy, that copy is the problem, reported above.)
            where = self.layout.job_path(JobStatus(row.status), job_id)
            problems.append(Problem("orphaned", str(where), "index row has no file", job_id))
        return problems

    def repair(self) -> RepairReport:
        """Fix what ``verify`` finds: rows re-derived from files, unreadable files and
        older duplicates moved to ``.quarantine/`` (with a reason), old temp files removed.
        Never deletes a job file."""
        found = self.verify()
        report = RepairReport(found=found)
        jobs = sorted({p.job_id for p in found.drift if p.job_id is not None})
        for job_id in self.journal.each_locked(jobs, "repair"):
            actions, quarantined = self.journal.repair_locked(
                job_id, quarantine_invalid=True, take_in_move=True
            )
            report.actions.extend(actions)
            report.quarantined.extend(str(path) for path in quarantined)
        report.busy = sorted(
            {
                *self.journal.last_skipped,
                *(p.job_id for p in found.problems if p.kind == "busy" and p.job_id),
            }
        )
        for problem in found.drift:
            if problem.kind == "temp":
                Path(problem.path).unlink(missing_ok=True)
                report.actions.append(f"removed temp file {problem.path}")
            elif problem.kind == "counts":
                with self.sidecar.transaction() as conn:
                    rows.recount(conn)
                report.actions.append("recounted the job counts from the rows")
        if found.drift:
            log.warning("repaired", data_dir=str(self.layout.root), actions=len(report.actions))
        return report


def is_read_only(path: Path) -> bool:
    """Whether ``path`` is on a file system mounted read-only."""
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _why_skipped(kind: str) -> str:
    return {
        "foreign": "not a job file (ignored)",
        "temp": "temp file of an interrupted write",
    }[kind]
