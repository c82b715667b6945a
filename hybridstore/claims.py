"""Claims on the file store: abandoned leases taken back, then ready jobs in claim order.

A claim reads its candidates from the sidecar (the head of the ready index, and the delayed
jobs whose time has come), takes each candidate's lock without waiting, re-reads the job
under it and moves on if someone else was faster: no job is ever claimed twice, and a busy
candidate never makes a claimer wait while others are free. The jobs one call claims are
written together (one sidecar commit, their files made durable at once).
"""

from __future__ import annotations

import random
import time
from datetime import datetime

from . import lifecycle
from .errors import InvalidArgument, LockTimeout
from .journal import Change, Journal
from .lifecycle import next_version
from .locks import StripeLocks
from .logs import get_logger
from .model import JobStatus, RemoteJob, utcnow
from .rows import to_us
from .sidecar import Sidecar

__all__ = ["CLAIM_BATCH", "TAKE_BACK_BATCH", "Claims"]

log = get_logger("hybridstore")

# How many abandoned leases one claim takes back at most.
TAKE_BACK_BATCH = 32
# How many claim candidates one sidecar query fetches.
CLAIM_BATCH = 16


class Claims:
    """The claims of one store."""

    def __init__(self, sidecar: Sidecar, journal: Journal, *, lock_timeout: float) -> None:
        self.sidecar = sidecar
        self.journal = journal
        self.lock_timeout = lock_timeout

    def claim(
        self, worker_id: str, n: int, wanted: list[str] | None, lease_seconds: float
    ) -> list[RemoteJob]:
        """Up to ``n`` (> 0) ready jobs of the ``wanted`` content types (None: any) for
        ``worker_id``, in claim order; the arguments are checked by the caller."""
        now = utcnow()
        self._take_back_abandoned(wanted, now)
        claimed: list[RemoteJob] = []
        # Jobs that cannot be claimed at all (a counter at its limit): passed over.
        unclaimable: set[str] = set()
        deadline = time.monotonic() + self.lock_timeout
        while len(claimed) < n:
            found = self.sidecar.claim_candidates(
                wanted, CLAIM_BATCH + len(unclaimable) + n, to_us(now)
            )
            candidates = [job_id for job_id in found if job_id not in unclaimable]
            if not candidates:
                # A job whose claim was interrupted looks processing until it is repaired.
                if self.journal.unsettled_intents() and self.journal.recover_intents():
                    continue
                break
            got, busy = self._claim_round(
                candidates, n - len(claimed), worker_id, wanted, lease_seconds, now, unclaimable
            )
            claimed.extend(got)
            if busy and not candidates:
                if claimed:
                    break  # the rest are mid-claim elsewhere: what we have will do
                if time.monotonic() > deadline:
                    # Every candidate stayed locked for the whole wait.
                    raise LockTimeout(None, self.lock_timeout, self.journal.layout.locks)
                time.sleep(0.0005)  # every candidate is mid-claim elsewhere
        return claimed

    def _claim_round(
        self,
        candidates: list[str],
        want: int,
        worker_id: str,
        wanted: list[str] | None,
        lease_seconds: float,
        now: datetime,
        unclaimable: set[str],
    ) -> tuple[list[RemoteJob], int]:
        """Claim up to ``want`` of ``candidates`` (taken from the front of the list) in one
        write (``Journal.commit_many``): lock up to ``want`` of them without waiting, re-read
        them together, keep those still ready. Stops when a candidate turns out taken since
        the query (the list is stale: the caller asks again). Returns the claimed jobs and
        how many candidates were busy (locked elsewhere)."""
        held: dict[int, str] = {}  # lock stripe -> the job it was taken for
        picked: list[Change] = []
        busy = 0
        stale = False
        try:
            while candidates and len(picked) < want and not stale:
                locked: list[str] = []
                while candidates and len(picked) + len(locked) < want:
                    job_id = candidates.pop(0)
                    stripe = StripeLocks.stripe(job_id)
                    if stripe not in held:  # a stripe we hold already locks this job too
                        if not self.journal.try_lock(job_id):
                            busy += 1
                            # Other claimers walk the same list: go on from a random point
                            # rather than colliding with them again on every next candidate.
                            random.shuffle(candidates)
                            continue
                        held[stripe] = job_id
                    locked.append(job_id)
                for job_id, current in zip(
                    locked, self.journal.load_many_for_batch(locked), strict=True
                ):
                    if current is None or not self._still_ready(current, wanted, now):
                        self._reindex_if_offered(job_id, wanted, now)
                        stale = True  # taken since the query: the list is stale, ask again
                        continue
                    try:
                        claimed = lifecycle.claim(current, worker_id, lease_seconds, utcnow())
                        new = next_version(current, claimed)
                        new.check_storable()
                    except InvalidArgument as exc:
                        log.warning("unclaimable_job", job_id=job_id, reason=str(exc))
                        unclaimable.add(job_id)
                        continue
                    picked.append((job_id, current, new))
            stored = self.journal.commit_many(picked, "claim") if picked else []
        finally:
            for job_id in held.values():
                self.journal.unlock(job_id)
        return [job for job in stored if job is not None], busy

    @staticmethod
    def _still_ready(job: RemoteJob, wanted: list[str] | None, now: datetime) -> bool:
        return lifecycle.is_ready(job, now) and (wanted is None or job.content_type in wanted)

    def _reindex_if_offered(self, job_id: str, wanted: list[str] | None, now: datetime) -> None:
        """A candidate found taken or changed under its lock: if the index still offers it,
        its row is stale (a file edited by hand): re-derive it, or every query would offer
        the same job again."""
        row = self.sidecar.row(job_id)
        if (
            row is not None
            and row.status == JobStatus.PENDING.value
            and (row.not_before_us is None or row.not_before_us <= to_us(now))
            and (wanted is None or row.content_type in wanted)
        ):
            self.journal.repair_locked(job_id)

    def _take_back_abandoned(self, wanted: list[str] | None, now: datetime) -> None:
        """Abandoned leases (of the asked content types) become pending again, or timeout,
        before a claim looks for ready jobs: no cron needed. A busy one is left for the
        next claim."""
        for job_id in self.sidecar.abandoned(wanted, to_us(now), TAKE_BACK_BATCH):
            if not self.journal.try_lock(job_id):
                continue
            try:
                current = self.journal.load_for_batch(job_id)
                if current is not None and lifecycle.is_overdue(current, now):
                    self.journal.store_next(current, lifecycle.take_back(current, now), "expire")
            finally:
                self.journal.unlock(job_id)
