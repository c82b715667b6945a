"""A hypothesis state machine: the file store against the in-memory model.

Rules drive add, save (with status changes, i.e. moves), claim, heartbeat, complete,
fail, cancel, expire, delete, cleanup, reindex, corrupting a job file, repair, deleting the
sidecar and reopening the store. After every step the files, the sidecar and the model
(``MemoryJobRepository``, which passes the same contract suite) must agree: the same jobs,
each in exactly its status directory, the same answers to reads and queries, and a clean
``verify`` except for the files this machine corrupted on purpose.
"""

from __future__ import annotations

import shutil
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from hybridstore import (
    CorruptJobFile,
    HybridStoreError,
    JobStatus,
    JobStore,
    RemoteJob,
)
from hybridstore.memory import MemoryJobRepository
from hybridstore.model import utcnow
from hybridstore.sidecar import SIDECAR_NAME

from ._support import T0, job_files

IDS = st.sampled_from(["a", "b", "c", "d", "e", "f"])
WORKERS = st.sampled_from(["w1", "w2"])
CONTENT = st.sampled_from(["audio", "video"])
STATUSES = st.sampled_from(list(JobStatus))


def _view(job: RemoteJob | None) -> Any:
    """What must agree between backends (timestamps are each backend's own 'now')."""
    if job is None:
        return None
    return (
        job.id,
        job.status,
        job.version,
        job.attempt,
        job.retry_count,
        job.max_retries,
        job.worker_id,
        job.error_message,
        job.result_data,
        job.task_options,
        job.content_type,
        job.created_at,
        job.started_at is None,
        job.completed_at is None,
        job.timeout_at is None,
    )


def _outcome(call: Any) -> Any:
    try:
        result = call()
    except HybridStoreError as exc:
        return ("error", type(exc).__name__)
    if isinstance(result, list):
        return [_view(j) if isinstance(j, RemoteJob) else j for j in result]
    return _view(result) if isinstance(result, RemoteJob) or result is None else result


class StoreVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="hs-machine-"))
        self.data_dir = self.tmp / "data"
        self.store = JobStore(self.data_dir, durable=False)
        self.model = MemoryJobRepository()
        self.corrupt: set[str] = set()
        self.created = 0

    def teardown(self) -> None:
        self.store.close()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _both(self, name: str, *args: Any, **kwargs: Any) -> Any:
        ours = _outcome(lambda: getattr(self.store, name)(*args, **kwargs))
        model = _outcome(lambda: getattr(self.model, name)(*args, **kwargs))
        assert ours == model, (name, args, kwargs, ours, model)
        return ours

    def _new_job(self, job_id: str, content_type: str, **fields: Any) -> RemoteJob:
        self.created += 1
        return RemoteJob(
            id=job_id,
            ingestion_task_id=f"t-{job_id}",
            content_type=content_type,
            source_file_path=f"/in/{job_id}",
            created_at=T0 + timedelta(seconds=self.created),
            max_retries=1,
            **fields,
        )

    # -- writes -------------------------------------------------------------------------------

    @rule(job_id=IDS, content_type=CONTENT)
    def add(self, job_id: str, content_type: str) -> None:
        if job_id in self.corrupt:
            return
        self._both("add", self._new_job(job_id, content_type))

    @rule(
        job_id=IDS,
        status=STATUSES,
        content_type=CONTENT,
        checked=st.booleans(),
        stale=st.booleans(),
    )
    def save(
        self, job_id: str, status: JobStatus, content_type: str, checked: bool, stale: bool
    ) -> None:
        if job_id in self.corrupt:
            return
        current = self.model.get(job_id)
        base = current or self._new_job(job_id, content_type)
        job = base.model_copy(update={"status": status, "task_options": {"n": self.created}})
        expected = None
        if checked:
            expected = (current.version if current else 0) + (1 if stale else 0)
        self._both("save", job, expected_version=expected)

    @rule(worker=WORKERS, only=st.one_of(st.none(), CONTENT.map(lambda c: [c])))
    def claim(self, worker: str, only: list[str] | None) -> None:
        # A corrupted job is skipped by the store's claims; the model no longer has it.
        self._both("claim_next", worker, content_types=only, lease_seconds=60)

    @rule(job_id=IDS, worker=WORKERS)
    def heartbeat(self, job_id: str, worker: str) -> None:
        if job_id not in self.corrupt:
            self._both("heartbeat", job_id, worker, lease_seconds=60)

    @rule(job_id=IDS, worker=WORKERS)
    def complete(self, job_id: str, worker: str) -> None:
        if job_id not in self.corrupt:
            self._both("complete", job_id, worker, {"done": job_id})

    @rule(job_id=IDS, worker=WORKERS)
    def fail(self, job_id: str, worker: str) -> None:
        if job_id not in self.corrupt:
            ours = _outcome(lambda: self.store.fail(job_id, worker, "boom"))
            model = _outcome(lambda: self.model.fail(job_id, worker, "boom"))
            assert ours == model, ("fail", job_id, worker, ours, model)

    @rule(job_id=IDS)
    def cancel(self, job_id: str) -> None:
        if job_id not in self.corrupt:
            self._both("cancel", job_id)

    @rule(job_id=IDS)
    def delete(self, job_id: str) -> None:
        if job_id not in self.corrupt:
            self._both("delete", job_id)

    @rule()
    def expire(self) -> None:
        self._both("expire_overdue", now=utcnow() + timedelta(days=1))

    @rule()
    def cleanup(self) -> None:
        self._both("cleanup", days_old=0.5, now=utcnow() + timedelta(days=1))

    # -- the store's own maintenance and damage -------------------------------------------------

    @rule()
    def reindex(self) -> None:
        report = self.store.reindex()
        assert {p.job_id for p in report.skipped} == self.corrupt
        assert report.indexed == len(self.model.find())

    @precondition(lambda self: self.model.count() > 0)
    @rule(data=st.data(), garbage=st.sampled_from([b"", b"{", b"[]", b'{"id": "zz"}', b"\xff"]))
    def corrupt_a_file(self, data: st.DataObject, garbage: bytes) -> None:
        victim = data.draw(st.sampled_from(sorted(j.id for j in self.model.find())))
        status = self.model.get(victim).status  # type: ignore[union-attr]
        (self.data_dir / status.value / f"{victim}.json").write_bytes(garbage)
        self.model.delete(victim)  # an unreadable file is not a job any more
        self.corrupt.add(victim)
        try:
            self.store.get(victim)
            raise AssertionError("a corrupt file was read as a job")
        except CorruptJobFile as exc:
            assert victim in str(exc)

    @rule()
    def repair(self) -> None:
        report = self.store.repair()
        assert len(report.quarantined) == len(self.corrupt)
        self.corrupt.clear()
        assert self.store.verify().ok

    @rule(with_wal=st.booleans())
    def delete_sidecar(self, with_wal: bool) -> None:
        for suffix in ("", "-wal", "-shm") if with_wal else ("",):
            Path(f"{self.data_dir / SIDECAR_NAME}{suffix}").unlink(missing_ok=True)

    @rule()
    def reopen(self) -> None:
        self.store.close()
        self.store = JobStore(self.data_dir, durable=False)

    # -- agreement after every step -------------------------------------------------------------

    @invariant()
    def files_sidecar_and_model_agree(self) -> None:
        model_jobs = {j.id: j for j in self.model.find()}
        # Files: each model job in exactly its status directory; nothing else but the
        # corrupt files, which sit where they were.
        where = job_files(self.data_dir)
        assert set(where) == set(model_jobs) | self.corrupt, (where, model_jobs, self.corrupt)
        for job_id, job in model_jobs.items():
            assert where[job_id] == [job.status], (job_id, where[job_id], job.status)
        # Reads: every job as the model has it.
        for job_id in ("a", "b", "c", "d", "e", "f"):
            if job_id not in self.corrupt:
                assert _view(self.store.get(job_id)) == _view(self.model.get(job_id))
        # Queries from the sidecar: same jobs, same order, same counts (corrupt aside).
        ours = [_view(j) for j in self.store.find() if j.id not in self.corrupt]
        assert ours == [_view(j) for j in self.model.find()]
        for status in JobStatus:
            got = [j.id for j in self.store.find(status=status) if j.id not in self.corrupt]
            assert got == [j.id for j in self.model.find(status=status)]
        # verify: clean, but for the files corrupted on purpose.
        report = self.store.verify()
        for problem in report.drift:
            assert problem.job_id in self.corrupt, problem
            assert problem.kind in ("unreadable", "orphaned"), problem
        if not self.corrupt:
            assert report.ok, report.to_dict()
        assert self.store.journal.unsettled_intents() == []


StoreVersusModel.TestCase.settings = settings(
    max_examples=60,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_store_against_the_model = StoreVersusModel.TestCase
