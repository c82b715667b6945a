"""Batch writes on the file store: many jobs, one sidecar commit, their files made durable
together (``Journal.commit_many``).

A batch takes every job's lock first (``Journal.lock_all``: stripes in ascending order, so
two batches never wait for each other in a circle), reads every job and checks the whole
batch, and only then writes: a refusal writes nothing. Imports go in chunks of
``IMPORT_CHUNK`` jobs, so that a long copy never holds the locks of every job for its whole
length, and claimers wait at most one chunk's write.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from . import lifecycle
from .errors import JobAlreadyExists, JobNotFound
from .journal import Change, Journal
from .lifecycle import next_version
from .model import RemoteJob, validate_job_id
from .repository import ImportResult, import_action

__all__ = ["IMPORT_CHUNK", "Batches"]

#: How many jobs an import writes at once.
IMPORT_CHUNK = 256


class Batches:
    """The batch writes of one store."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def add(self, batch: Sequence[RemoteJob]) -> list[RemoteJob]:
        """Store new jobs (ids checked and distinct, versions set), all or none:
        ``JobAlreadyExists`` for a stored id, ``DuplicateJob`` for a held key."""
        with self.journal.lock_all(job.id for job in batch):
            currents = self.journal.load_many_locked([job.id for job in batch])
            for job, current in zip(batch, currents, strict=True):
                if current is not None:
                    raise JobAlreadyExists(job.id)
            return _stored(self.journal.commit_many([(job.id, None, job) for job in batch], "add"))

    def complete(
        self,
        worker_id: str,
        batch: Sequence[tuple[str, dict[str, Any] | None, int | None]],
        now: datetime,
    ) -> list[RemoteJob]:
        """``complete_many``'s (job id, result, attempt), ids checked, all or none."""
        with self.journal.lock_all(job_id for job_id, _, _ in batch):
            changes: list[Change] = []
            currents = self.journal.load_many_locked([job_id for job_id, _, _ in batch])
            for (job_id, result, attempt), current in zip(batch, currents, strict=True):
                if current is None:
                    raise JobNotFound(job_id)
                new = lifecycle.complete(current, worker_id, result, attempt, now)
                changes.append((job_id, current, next_version(current, new)))
            return _stored(self.journal.commit_many(changes, "complete"))

    def import_jobs(self, jobs: Iterable[RemoteJob]) -> ImportResult:
        """Store jobs exactly as given, ``import_action`` deciding each, a chunk at a time."""
        result = ImportResult()
        for chunk in _chunks(jobs, IMPORT_CHUNK):
            with self.journal.lock_all(job.id for job in chunk):
                changes: list[Change] = []
                currents = self.journal.load_many_locked([job.id for job in chunk])
                for job, current in zip(chunk, currents, strict=True):
                    action = import_action(current, job)
                    if action in ("insert", "replace"):
                        changes.append((job.id, current, job))
                    result.record(job.id, action)
                if changes:
                    self.journal.commit_many(changes, "import")
        return result


def _stored(jobs: list[RemoteJob | None]) -> list[RemoteJob]:
    return [job for job in jobs if job is not None]


def _chunks(jobs: Iterable[RemoteJob], size: int) -> Iterator[list[RemoteJob]]:
    """``jobs`` in lists of at most ``size``, ids checked; a job whose id is already in the
    current list starts the next one (one write per job and chunk)."""
    chunk: list[RemoteJob] = []
    ids: set[str] = set()
    for job in jobs:
        validate_job_id(job.id)
        if len(chunk) == size or job.id in ids:
            yield chunk
            chunk, ids = [], set()
        chunk.append(job)
        ids.add(job.id)
    if chunk:
        yield chunk
