"""``Worker``: a worker loop that needs nothing else: claim, run a handler, complete or fail.

>>> def convert(job):                                   # doctest: +SKIP
...     return {"pages": 12}                            # a dict (or None) completes the job
>>> Worker(open_repository(), convert, content_types=["document"]).run()  # doctest: +SKIP

While the handler works, a background thread renews the lease every third of it (with the
claim's ``attempt``, so a worker whose lease was lost and taken back cannot renew it).
With ``prefetch=N`` the worker claims up to N jobs at once (one ``claim_many``), works
through them in claim order and renews the leases of all it holds; on a graceful stop the
ones it has not started go back, ready and with no retry used. An
exception fails the job with ``"<ExceptionType>: <message>"`` (retried after the default
back-off while retries remain). SIGTERM or SIGINT stops the worker after the current job; a
second one gives the job back at once: pending again, ready, and no retry used. Without
``burst`` an idle worker polls with a back-off (50 ms doubling to 1 s: never a busy loop,
and new work is picked up within a second); with ``burst`` it returns once no job is ready.

It runs on any ``JobRepository``. It logs one structlog event per step of a job (claimed,
completed, failed, lost, given back) with the job id, content type and attempt; never the
options, results or error messages, which may hold secrets.
"""

from __future__ import annotations

import inspect
import os
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any

from . import lifecycle
from .errors import (
    BackendUnavailable,
    HybridStoreError,
    InvalidArgument,
    InvalidTransition,
    JobNotFound,
    JobTooLarge,
    LockTimeout,
    NotJobOwner,
    VersionConflict,
)
from .logs import get_logger
from .model import JobStatus, RemoteJob, utcnow
from .repository import JobRepository, claim_arguments

__all__ = ["Handler", "Worker", "WorkerSummary", "default_worker_id"]

#: What a handler is: it gets the claimed job; a dict (the result) or None completes it.
Handler = Callable[[RemoteJob], "dict[str, Any] | None"]

# How much of a handler's exception a failed job keeps (a message can be any size).
_MESSAGE_LIMIT = 4000
# The store is briefly unreachable: wait and try again rather than die.
_TRANSIENT = (BackendUnavailable, LockTimeout)
# The job is no longer ours: the lease was lost and taken back, or it was cancelled/deleted.
_NOT_OURS = (NotJobOwner, InvalidTransition, JobNotFound)


def _check_takes_one_job(handler: Callable[..., Any]) -> None:
    """``InvalidArgument`` now, rather than every job failing later, if ``handler`` cannot
    be called with one job."""
    try:
        signature = inspect.signature(handler)
    except (TypeError, ValueError):
        return  # a builtin or C function without a signature: let the call tell
    try:
        signature.bind(None)
    except TypeError:
        name = getattr(handler, "__name__", repr(handler))
        raise InvalidArgument(
            f"the handler {name}{signature} cannot be called with one argument (the job)"
        ) from None


def default_worker_id() -> str:
    """``<host>-<pid>``: unique among live workers, and readable in ``list --worker``."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class WorkerSummary:
    """What one ``Worker.run`` did."""

    #: jobs whose handler returned and whose completion was stored
    completed: int = 0
    #: jobs whose handler raised (stored as a failed attempt: retried or failed)
    failed: int = 0
    #: jobs whose lease was lost before the outcome could be stored (the outcome dropped)
    lost: int = 0
    #: jobs given back, unfinished, on a second SIGTERM/SIGINT
    given_back: int = 0
    #: jobs claimed
    claimed: int = 0
    #: wall time of the run, seconds
    seconds: float = 0.0
    #: why it returned: "idle" (burst and no job ready), "max_jobs", "signal" or "stop"
    stopped_by: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Wake(BaseException):
    """Raised by the signal handler to cut an idle wait short."""


class _GiveBack(BaseException):
    """Raised by the signal handler into the handler on a second signal."""


class Worker:
    """Runs ``handler(job)`` on the jobs it claims from ``repo``, until told to stop.

    ``worker_id`` defaults to ``default_worker_id()``; ``content_types`` (None: any) and
    ``lease_seconds`` are passed to ``claim_next``. ``prefetch`` is how many jobs one claim
    takes (``claim_many``): more than one saves a write per job on a busy queue, at the
    price of holding jobs that other workers could have started. The class attributes
    below tune the loop (override them on an instance or a subclass).
    """

    #: first and longest idle wait between polls of an empty store, seconds
    idle_min_seconds: float = 0.05
    idle_max_seconds: float = 1.0
    #: how long a claim may wait in the server for work, on a store that can (HTTP);
    #: also the longest a SIGTERM waits for an idle worker there
    long_poll_seconds: float = 5.0
    #: heartbeats run every ``lease_seconds * heartbeat_fraction`` seconds
    heartbeat_fraction: float = 1 / 3
    #: seconds before a failed job is retried; None: the store's default back-off
    retry_in: float | None = None

    def __init__(
        self,
        repo: JobRepository,
        handler: Handler,
        *,
        worker_id: str | None = None,
        content_types: Sequence[str] | None = None,
        lease_seconds: float = 300,
        prefetch: int = 1,
    ) -> None:
        if not callable(handler):
            raise InvalidArgument("handler must be callable (it is given the claimed job)")
        _check_takes_one_job(handler)
        if isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 1:
            raise InvalidArgument(f"prefetch must be a positive integer, got {prefetch!r}")
        self.prefetch = prefetch
        self.repo = repo
        self.handler = handler
        self.worker_id = default_worker_id() if worker_id is None else worker_id
        self.content_types = claim_arguments(self.worker_id, content_types, lease_seconds)
        self.lease_seconds = lease_seconds
        self._log = get_logger("hybridstore.worker").bind(worker_id=self.worker_id)
        self._stopping = False
        self._signals = 0
        self._in_handler = False
        self._idle = False
        self._current: RemoteJob | None = None
        # The jobs claimed and not yet finished, whose leases the heartbeat thread renews;
        # the lock keeps a beat from landing on a job being finished.
        self._held: dict[str, RemoteJob] = {}
        self._held_lock = threading.Lock()
        #: the summary of the run under way (or the last one), updated as jobs end: still
        #: there when ``run`` was left by an exception the handler let through
        self.summary = WorkerSummary()

    def __repr__(self) -> str:
        return f"Worker({self.worker_id!r}, content_types={self.content_types!r})"

    # -- control ----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to return after the current job (as a first SIGTERM does);
        safe to call from another thread or from the handler."""
        self._stopping = True

    def report_progress(self, progress: float | None, message: str | None = None) -> RemoteJob:
        """From the handler: store ``progress`` (in [0, 1]) and ``message`` on the current
        job now (a heartbeat that also renews the lease). ``InvalidTransition`` outside a
        job."""
        job = self._current
        if job is None:
            raise InvalidTransition("-", "report progress on", "not working on a job")
        return self.repo.heartbeat(
            job.id,
            self.worker_id,
            lease_seconds=self.lease_seconds,
            attempt=job.attempt,
            progress=progress,
            message=message,
        )

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # No logging here: the interrupted code may hold the log stream's lock.
        self._signals += 1
        self._stopping = True
        if self._signals >= 2 and self._in_handler:
            raise _GiveBack()
        if self._idle:
            raise _Wake()

    # -- the loop ---------------------------------------------------------------------------

    def run(self, *, burst: bool = False, max_jobs: int | None = None) -> WorkerSummary:
        """Work until stopped (a signal, ``stop()``), until ``max_jobs`` jobs were handled,
        or, with ``burst``, until no job is ready. Returns the summary.

        SIGTERM/SIGINT handlers are installed only when called from the main thread (and
        the previous ones restored on return)."""
        if max_jobs is not None and (
            isinstance(max_jobs, bool) or not isinstance(max_jobs, int) or max_jobs < 0
        ):
            raise InvalidArgument(f"max_jobs must be a non-negative integer, got {max_jobs!r}")
        summary = self.summary = WorkerSummary()
        started = time.monotonic()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                previous[signum] = signal.signal(signum, self._on_signal)
        self._stopping = False
        self._signals = 0
        self._log.info("worker.started", content_types=self.content_types, burst=burst)
        try:
            summary.stopped_by = self._loop(summary, burst, max_jobs)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            summary.seconds = time.monotonic() - started
        self._log.info("worker.stopped", **summary.to_dict())
        return summary

    def _loop(self, summary: WorkerSummary, burst: bool, max_jobs: int | None) -> str:
        # A store that can hold a claim open until work arrives (``HttpJobRepository``'s
        # ``claim_wait``): an idle worker then waits in the server, one request per
        # ``long_poll_seconds``, and wakes as soon as a job is added, instead of polling.
        # Not in burst mode, which must return as soon as no job is ready.
        long_poll = not burst and hasattr(self.repo, "claim_wait")
        saved = getattr(self.repo, "claim_wait", None)
        if long_poll:
            self.repo.claim_wait = self.long_poll_seconds  # type: ignore[attr-defined]
        try:
            return self._claim_loop(summary, burst, max_jobs)
        finally:
            if long_poll:
                self.repo.claim_wait = saved  # type: ignore[attr-defined]

    def _claim_loop(self, summary: WorkerSummary, burst: bool, max_jobs: int | None) -> str:
        delay = self.idle_min_seconds
        queue: deque[RemoteJob] = deque()  # claimed, not started
        beating = threading.Event()
        beater = threading.Thread(
            target=self._heartbeats, args=(beating,), name="hybridstore-heartbeats", daemon=True
        )
        beater.start()
        try:
            while True:
                if self._stopping:
                    return "signal" if self._signals else "stop"
                if not queue:
                    if max_jobs is not None and summary.claimed >= max_jobs:
                        return "max_jobs"
                    want = self.prefetch
                    if max_jobs is not None:
                        want = min(want, max_jobs - summary.claimed)
                    try:
                        claimed = self._claim(want)
                    except _TRANSIENT as exc:
                        if burst and isinstance(exc, BackendUnavailable):
                            raise  # "until no job is ready": unknown, so say so
                        self._log.warning(
                            "worker.store_unavailable", error=type(exc).__name__, reason=str(exc)
                        )
                        claimed = []
                    if not claimed:
                        if burst:
                            return "idle"
                        self._idle_wait(delay)
                        delay = min(delay * 2, self.idle_max_seconds)
                        continue
                    delay = self.idle_min_seconds
                    summary.claimed += len(claimed)
                    with self._held_lock:
                        self._held.update((job.id, job) for job in claimed)
                    queue.extend(claimed)
                job = queue.popleft()
                with self._held_lock:
                    ours = self._held.get(job.id) is job
                if ours:
                    self._work(job, summary)
                else:  # its lease was lost while it waited (taken back, cancelled, deleted)
                    summary.lost += 1
                    self._log.warning("job.lost", job_id=job.id, reason="lease lost before start")
        finally:
            beating.set()
            beater.join()
            for job in queue:  # claimed but never started: back to the queue
                self._let_go(job)
                given = self._give_back(job)
                summary.given_back += int(given)
                summary.lost += int(not given)
                self._log.info("job.given_back" if given else "job.lost", job_id=job.id)

    def _claim(self, n: int) -> list[RemoteJob]:
        if n == 1:
            job = self.repo.claim_next(
                self.worker_id, content_types=self.content_types, lease_seconds=self.lease_seconds
            )
            return [] if job is None else [job]
        return self.repo.claim_many(
            self.worker_id, n, content_types=self.content_types, lease_seconds=self.lease_seconds
        )

    def _let_go(self, job: RemoteJob) -> None:
        """Stop renewing ``job``'s lease (before finishing it, so no beat lands after)."""
        with self._held_lock:
            if self._held.get(job.id) is job:
                del self._held[job.id]

    def _idle_wait(self, seconds: float) -> None:
        try:
            self._idle = True
            if not self._stopping:
                time.sleep(seconds)
        except _Wake:
            pass
        finally:
            self._idle = False

    def _work(self, job: RemoteJob, summary: WorkerSummary) -> None:
        log = self._log.bind(job_id=job.id, content_type=job.content_type, attempt=job.attempt)
        log.info("job.claimed", retry_count=job.retry_count, priority=job.priority)
        self._current = job
        began = time.monotonic()
        result: Any = None
        error: BaseException | None = None
        give_back = False
        try:
            try:
                self._in_handler = True
                if self._signals >= 2:  # a second signal arrived just before the handler
                    raise _GiveBack()
                result = self.handler(job)
                self._in_handler = False
            except _GiveBack:
                give_back = True
            except Exception as exc:
                error = exc
            except BaseException:
                # SystemExit, KeyboardInterrupt...: the worker stops now; the job goes back
                # rather than wait out its lease.
                self._let_go(job)
                self._give_back(job)
                raise
            finally:
                self._in_handler = False
        except _GiveBack:  # the signal landed on the line after the handler's return
            give_back = True
        finally:
            self._let_go(job)
            self._current = None
        seconds = round(time.monotonic() - began, 3)
        if give_back:
            given = self._give_back(job)
            summary.given_back += int(given)
            summary.lost += int(not given)
            log.warning("job.given_back" if given else "job.lost", seconds=seconds)
            return
        if error is None and result is not None and not isinstance(result, dict):
            error = TypeError(
                f"the handler returned {type(result).__name__}, expected a dict or None"
            )
        try:
            if error is None:
                try:
                    self.repo.complete(job.id, self.worker_id, result, attempt=job.attempt)
                except (InvalidArgument, JobTooLarge) as exc:  # a result that cannot be stored
                    error = exc
                else:
                    summary.completed += 1
                    log.info("job.completed", seconds=seconds)
                    return
            message = f"{type(error).__name__}: {error}"[:_MESSAGE_LIMIT]
            if self.retry_in is None:
                stored = self.repo.fail(job.id, self.worker_id, message, attempt=job.attempt)
            else:
                stored = self.repo.fail(
                    job.id, self.worker_id, message, attempt=job.attempt, retry_in=self.retry_in
                )
            summary.failed += 1
            log.warning(
                "job.failed",
                seconds=seconds,
                error_type=type(error).__name__,
                status=stored.status.value,
                retry_at=stored.not_before.isoformat()
                if stored.not_before and stored.status is JobStatus.PENDING
                else None,
            )
        except (*_NOT_OURS, *_TRANSIENT) as exc:
            # The lease ran out and the job was taken back (or cancelled, deleted): the
            # fencing refused our outcome, which is what it is for. Nothing to undo.
            summary.lost += 1
            log.warning("job.lost", seconds=seconds, reason=type(exc).__name__)

    def _heartbeats(self, done: threading.Event) -> None:
        """Renew the lease of every job held, every ``lease_seconds * heartbeat_fraction``
        seconds, until ``done``."""
        interval = max(self.lease_seconds * self.heartbeat_fraction, 0.01)
        while not done.wait(interval):
            with self._held_lock:
                held = list(self._held.values())
            self._beat_each(held)

    def _beat_each(self, held: list[RemoteJob]) -> None:
        for job in held:
            with self._held_lock:
                # The same claim still (not a later claim of the same job: its attempt
                # would be refused, and that refusal must not drop the new claim).
                if self._held.get(job.id) is job:
                    self._beat(job)

    def _beat(self, job: RemoteJob) -> None:
        log = self._log.bind(job_id=job.id, attempt=job.attempt)
        try:
            self.repo.heartbeat(
                job.id, self.worker_id, lease_seconds=self.lease_seconds, attempt=job.attempt
            )
        except _NOT_OURS as exc:
            log.warning("job.lease_lost", reason=type(exc).__name__)
            del self._held[job.id]
        except HybridStoreError as exc:  # try again at the next beat
            log.warning("job.heartbeat_failed", error=type(exc).__name__)

    def _give_back(self, job: RemoteJob) -> bool:
        """Make our job pending and ready again without using a retry (``release``, which
        a worker token may call over HTTP). False if it is no longer ours or the store
        refused; never raises, so that every job to give back is tried."""
        try:
            if hasattr(self.repo, "release"):
                self.repo.release(job.id, self.worker_id, attempt=job.attempt)
                return True
            return self._give_back_by_save(job)
        except (*_NOT_OURS, *_TRANSIENT):
            return False
        except HybridStoreError as exc:
            self._log.warning("job.give_back_failed", job_id=job.id, error=type(exc).__name__)
            return False

    def _give_back_by_save(self, job: RemoteJob) -> bool:
        """``release`` from the primitives, for a repository written before it existed: a
        conditional save of ``lifecycle.release``."""
        for _ in range(5):
            stored = self.repo.get(job.id)
            if stored is None:
                return False
            released = lifecycle.release(stored, self.worker_id, job.attempt, utcnow())
            try:
                self.repo.save(released, expected_version=stored.version)
                return True
            except VersionConflict:
                continue  # written meanwhile (taken back?): look again
        return False
