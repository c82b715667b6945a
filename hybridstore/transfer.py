"""Copying every job from one backend into another, versions and timestamps intact.

``copy_jobs(source, target)`` pages through ``source.find()`` and hands each page to
``target.import_jobs()``, a backend method that writes jobs exactly as given (the ordinary
``save`` would give them new versions). It ends with a per-status count check and, with
``verify=True``, compares every job. Running it twice changes nothing: a job already
stored identically is left alone.

A data directory is copied as its files say, not as its index says: each job is read from
its file, a job the index lists whose file is gone is not copied, an unreadable file is not
copied, a job file the index does not list is; the report's ``skipped`` names the first two.

The primitives every backend's ``import_jobs`` shares (``import_action``, ``ImportResult``,
``SupportsImport``) live with the contract in ``hybridstore.repository``; they are
re-exported here for code that imported them from this module.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from .errors import CorruptJobFile, InvalidArgument
from .model import JobStatus, RemoteJob
from .repository import (
    ImportAction,
    ImportResult,
    JobRepository,
    SupportsImport,
    import_action,
    same_job,
)

ProgressCallback = Callable[[int, int], None]

__all__ = [
    "CopyReport",
    "Difference",
    "ImportAction",
    "ImportResult",
    "Skipped",
    "SupportsImport",
    "compare_jobs",
    "copy_jobs",
    "import_action",
]


@dataclass(frozen=True)
class Difference:
    """One job on which source and target disagree after a copy."""

    job_id: str
    #: "missing" (not in the target), "extra" (only in the target) or "different".
    kind: str
    detail: str


@dataclass(frozen=True)
class Skipped:
    """A job of a data directory that was not copied, because of what its files say."""

    job_id: str | None
    #: "gone" (the index lists the job, its file is gone) or "unreadable" (the file is not
    #: a valid job; ``verify --repair`` quarantines it).
    kind: str
    path: str
    detail: str


@dataclass
class CopyReport:
    """The outcome of ``copy_jobs``; ``ok`` when the target now matches the source."""

    source: str
    target: str
    read: int = 0
    written: int = 0
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)
    #: jobs of a data directory not copied: gone or unreadable files
    skipped: list[Skipped] = field(default_factory=list)
    source_counts: dict[str, int] = field(default_factory=dict)
    target_counts: dict[str, int] = field(default_factory=dict)
    verified: bool = False
    differences: list[Difference] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def counts_match(self) -> bool:
        """The per-status counts of source and target are equal."""
        return self.source_counts == self.target_counts

    @property
    def unreadable(self) -> list[Skipped]:
        """The skipped jobs whose file exists but could not be read: they were not copied."""
        return [s for s in self.skipped if s.kind == "unreadable"]

    @property
    def ok(self) -> bool:
        """Counts match, no conflict was kept, no job was left behind unreadable, and
        verification (if run) found nothing. (A job whose file is gone is no job: skipping
        it does not make a copy fail.)"""
        return (
            self.counts_match
            and not self.conflicts
            and not self.unreadable
            and not self.differences
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with ``ok`` and ``counts_match``."""
        return {**asdict(self), "ok": self.ok, "counts_match": self.counts_match}


def _pages(repo: JobRepository, size: int) -> Iterator[list[RemoteJob]]:
    # Offset paging is all the protocol offers; it is exact while nobody writes the source,
    # and the count check at the end catches a source that changed under the copy.
    offset = 0
    while True:
        page = repo.find(limit=size, offset=offset)
        if page:
            yield page
        if len(page) < size:
            return
        offset += len(page)


def _file_store(repo: JobRepository) -> Any:
    """``repo`` if it is a data directory (whose files are the truth), else None."""
    from .store import JobStore

    return repo if isinstance(repo, JobStore) else None


def _file_pages(
    store: Any, size: int, skipped: list[Skipped] | None = None
) -> Iterator[list[RemoteJob]]:
    """The jobs of a data directory as their files say, a page at a time: the index's
    jobs, each read from its file (the index only names them, in order), then the job
    files the index does not list. What cannot be copied is added to ``skipped``."""
    seen: set[str] = set()

    def skip(job_id: str | None, kind: str, path: str, detail: str) -> None:
        if skipped is not None:
            skipped.append(Skipped(job_id, kind, path, detail))

    def read(job_id: str, indexed: RemoteJob | None) -> RemoteJob | None:
        seen.add(job_id)
        try:
            job: RemoteJob | None = store.get(job_id)
        except CorruptJobFile as exc:
            skip(job_id, "unreadable", str(exc.path), exc.reason)
            return None
        if job is None and indexed is not None:
            path = store.data_dir / indexed.status.value / f"{job_id}.json"
            skip(job_id, "gone", str(path), "the index lists it, its file is gone")
        return job

    for page in _pages(store, size):
        jobs = [job for indexed in page if (job := read(indexed.id, indexed)) is not None]
        if jobs:
            yield jobs
    # Files the index does not know (written by hand, or copied in), and unreadable files
    # the index never listed: verify finds both, changing nothing.
    unlisted: list[RemoteJob] = []
    for problem in store.verify().problems:
        if problem.job_id in seen:
            continue
        if problem.kind == "unreadable":
            skip(problem.job_id, "unreadable", problem.path, problem.reason)
        elif problem.kind in ("missing", "moved") and problem.job_id is not None:
            job = read(problem.job_id, None)
            if job is not None:
                unlisted.append(job)
        if len(unlisted) == size:
            yield unlisted
            unlisted = []
    if unlisted:
        yield unlisted


def _source_pages(
    repo: JobRepository, size: int, skipped: list[Skipped] | None = None
) -> Iterator[list[RemoteJob]]:
    store = _file_store(repo)
    return _pages(repo, size) if store is None else _file_pages(store, size, skipped)


def _jobs(repo: JobRepository, size: int) -> Iterator[RemoteJob]:
    for page in _source_pages(repo, size):
        yield from page


def _status_counts(repo: JobRepository) -> dict[str, int]:
    return {status.value: repo.count(status=status) for status in JobStatus}


def _counted(jobs: list[RemoteJob], into: dict[str, int]) -> None:
    for job in jobs:
        into[job.status.value] += 1


def _order_key(job: RemoteJob) -> tuple[datetime, bytes]:
    # The contract's order on every backend: created_at, then id in byte order.
    return job.created_at, job.id.encode()


def compare_jobs(
    source: JobRepository, target: JobRepository, *, batch_size: int = 500
) -> list[Difference]:
    """Every job on which ``source`` and ``target`` disagree, field by field.

    Both are read once, in the contract's order (created_at, then id in byte order), and
    merged like two sorted lists, so memory stays at two pages whatever the size. A data
    directory is read as its files say (see the module's docstring).
    """
    found: list[Difference] = []
    only_source: dict[str, RemoteJob] = {}
    only_target: dict[str, RemoteJob] = {}
    left, right = _jobs(source, batch_size), _jobs(target, batch_size)
    a, b = next(left, None), next(right, None)
    while a is not None or b is not None:
        if b is None or (a is not None and _order_key(a) < _order_key(b)):
            assert a is not None
            only_source[a.id] = a
            a = next(left, None)
        elif a is None or _order_key(b) < _order_key(a):
            only_target[b.id] = b
            b = next(right, None)
        else:
            if not same_job(a, b):
                found.append(Difference(a.id, "different", _differing_fields(a, b)))
            a, b = next(left, None), next(right, None)
    # A job whose created_at differs sorts to two places (and a data directory's job files
    # the index does not list come last): pair them up again by id.
    for job_id, job in only_source.items():
        other = only_target.pop(job_id, None)
        if other is None:
            found.append(Difference(job_id, "missing", "in the source, not in the target"))
        elif not same_job(job, other):
            found.append(Difference(job_id, "different", _differing_fields(job, other)))
    found.extend(
        Difference(job_id, "extra", "in the target, not in the source") for job_id in only_target
    )
    return found


def _differing_fields(a: RemoteJob, b: RemoteJob) -> str:
    names = [name for name in RemoteJob.model_fields if getattr(a, name) != getattr(b, name)]
    return "fields differ: " + ", ".join(names)


def copy_jobs(
    source: JobRepository,
    target: JobRepository,
    *,
    batch_size: int = 500,
    progress: ProgressCallback | None = None,
    verify: bool = False,
) -> CopyReport:
    """Copy every job of ``source`` into ``target``, versions and timestamps kept.

    Batched (one ``import_jobs`` call per ``batch_size`` jobs) and idempotent: a job
    already stored identically is not written again, so a second run writes nothing. A
    target job that is newer than, or diverged from, the source's is kept and listed in
    ``conflicts``. Ends with a per-status count check; ``verify=True`` then compares every
    job. ``progress(done, total)`` is called after each batch. The target must support
    ``import_jobs`` (``InvalidArgument`` otherwise). Stop writers to the source first: a
    job written during the copy may be missed, which the count check then reports.

    A data directory as the source is copied as its files say: ``skipped`` lists the jobs
    its index lists whose file is gone (not copied, no failure) and the unreadable job
    files (not copied: ``ok`` is False); its ``source_counts`` are those of the jobs its
    files hold.
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgument(f"batch_size must be a positive integer, got {batch_size!r}")
    if not isinstance(target, SupportsImport):
        raise InvalidArgument(
            f"{target!r} cannot store jobs with their versions (it has no import_jobs)"
        )
    started = time.perf_counter()
    report = CopyReport(source=repr(source), target=repr(target))
    total = source.count()
    files = _file_store(source) is not None
    read_counts = {status.value: 0 for status in JobStatus}
    for page in _source_pages(source, batch_size, report.skipped):
        _counted(page, read_counts)
        result = target.import_jobs(page)
        report.read += len(page)
        report.written += result.written
        report.unchanged += result.unchanged
        report.conflicts.extend(result.conflicts)
        if progress is not None:
            progress(report.read, max(total, report.read))
    # A data directory's counts are what its files held; another backend's are counted
    # again, which catches a source that changed under the copy.
    report.source_counts = read_counts if files else _status_counts(source)
    report.target_counts = _status_counts(target)
    if verify:
        report.differences = compare_jobs(source, target, batch_size=batch_size)
        report.verified = True
    report.seconds = time.perf_counter() - started
    return report
