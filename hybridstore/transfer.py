"""Copying every job from one backend into another, versions and timestamps intact.

``copy_jobs(source, target)`` pages through ``source.find()`` and hands each page to
``target.import_jobs()``, a backend method that writes jobs exactly as given (the ordinary
``save`` would give them new versions). It ends with a per-status count check and, with
``verify=True``, compares every job. Running it twice changes nothing: a job already
stored identically is left alone.

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

from .errors import InvalidArgument
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


@dataclass
class CopyReport:
    """The outcome of ``copy_jobs``; ``ok`` when the target now matches the source."""

    source: str
    target: str
    read: int = 0
    written: int = 0
    unchanged: int = 0
    conflicts: list[str] = field(default_factory=list)
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
    def ok(self) -> bool:
        """Counts match, no conflict was kept, and verification (if run) found nothing."""
        return self.counts_match and not self.conflicts and not self.differences

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


def _jobs(repo: JobRepository, size: int) -> Iterator[RemoteJob]:
    for page in _pages(repo, size):
        yield from page


def _status_counts(repo: JobRepository) -> dict[str, int]:
    return {status.value: repo.count(status=status) for status in JobStatus}


def _order_key(job: RemoteJob) -> tuple[datetime, bytes]:
    # The contract's order on every backend: created_at, then id in byte order.
    return job.created_at, job.id.encode()


def compare_jobs(
    source: JobRepository, target: JobRepository, *, batch_size: int = 500
) -> list[Difference]:
    """Every job on which ``source`` and ``target`` disagree, field by field.

    Both are read once, in the contract's order (created_at, then id in byte order), and
    merged like two sorted lists, so memory stays at two pages whatever the size.
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
    # A job whose created_at differs sorts to two places: pair it up again by id.
    for job_id, job in only_source.items():
        other = only_target.pop(job_id, None)
        if other is None:
            found.append(Difference(job_id, "missing", "in the source, not in the target"))
        else:
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
    for page in _pages(source, batch_size):
        result = target.import_jobs(page)
        report.read += len(page)
        report.written += result.written
        report.unchanged += result.unchanged
        report.conflicts.extend(result.conflicts)
        if progress is not None:
            progress(report.read, max(total, report.read))
    report.source_counts = _status_counts(source)
    report.target_counts = _status_counts(target)
    if verify:
        report.differences = compare_jobs(source, target, batch_size=batch_size)
        report.verified = True
    report.seconds = time.perf_counter() - started
    return report
