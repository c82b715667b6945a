"""Writes: durable add, status transition, and claim throughput with 1 and 4 processes.

Everything here runs on the per-session work copy of each store (or, for the older design,
a full copy), so the cached stores stay as built. ``hybridstore-nondurable`` is the same
store opened with ``durable=False``: the difference is what the fsyncs cost.

Every round starts with ``os.sync()`` in its untimed setup. On ext4 (data=ordered) an fsync
commits the journal, which first writes out the dirty data of every file with newly
allocated blocks, whoever wrote it: without the sync, the unsynced writes of the previous
benchmark (``durable=False``, the older design) or of any other process would be billed
to the next fsync measured here.
"""

from __future__ import annotations

import os
import random
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from benchmarks.claimers import ClaimPool, repository_claimer, restore_claimed, synced
from benchmarks.conftest import BenchData
from benchmarks.dataset import DATASET_NOW, legacy_body, new_job
from benchmarks.limits import connect, fsync_dir, limit_name, row_values
from hybridstore import JobStatus, JobStore, RemoteJob

# Jobs toggled between processing and completed by the transition benchmark.
TRANSITION_POOL = 40


def _store_for(bench: BenchData, impl: str, size: int) -> JobStore:
    return bench.work_store(size, durable=impl == "hybridstore")


def _flip(job: RemoteJob) -> RemoteJob:
    if job.status is JobStatus.PROCESSING:
        return job.model_copy(update={"status": JobStatus.COMPLETED,
                                      "completed_at": DATASET_NOW})
    return job.model_copy(update={"status": JobStatus.PROCESSING, "completed_at": None})


@pytest.mark.impls("hybridstore", "hybridstore-nondurable", "limit", "legacy")
def test_add(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    rng = random.Random(f"add-{impl}-{size}")
    n_rounds = bench.rounds(30 if impl == "legacy" else 300, 5)
    record("add")
    if impl.startswith("hybridstore"):
        store = _store_for(bench, impl, size)
        before = store.count()

        def setup() -> Any:
            return (new_job(rng),), {}

        benchmark.pedantic(store.add, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)
        if benchmark.stats is not None:
            assert store.count() == before + n_rounds + 1
    elif impl == "limit":
        writer = bench.limit_writer(size)

        def setup() -> Any:
            job = new_job(rng).model_copy(update={"version": 1})
            body = job.to_json()
            return (job.id, body, row_values(job.model_dump(mode="json"), body)), {}

        benchmark.pedantic(writer.add, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)
    else:
        legacy = bench.legacy_work(size)

        def setup() -> Any:
            return (legacy_body(new_job(rng)),), {}

        def save(job: dict[str, Any]) -> None:
            assert legacy.save_job(job)

        benchmark.pedantic(save, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)


@pytest.mark.impls("hybridstore", "hybridstore-nondurable", "limit", "legacy")
def test_transition(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    """``save`` of a job whose status changed (processing ↔ completed): the file moves."""
    rng = random.Random(f"transition-{impl}-{size}")
    n_rounds = bench.rounds(30 if impl == "legacy" else 300, 5)
    record("transition")
    start = DATASET_NOW - timedelta(minutes=5)
    pool = [
        new_job(rng, status=JobStatus.PROCESSING, worker_id="worker-1", started_at=start)
        for _ in range(TRANSITION_POOL)
    ]
    turn = iter(range(10**9))
    if impl.startswith("hybridstore"):
        store = _store_for(bench, impl, size)
        pool = [store.add(job) for job in pool]
        slot = 0

        def setup() -> Any:
            nonlocal slot
            slot = next(turn) % TRANSITION_POOL
            return (_flip(pool[slot]),), {}

        def save(job: RemoteJob) -> None:
            pool[slot] = store.save(job)

        benchmark.pedantic(save, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)
        stored = store.get(pool[0].id)
        assert stored is not None and stored.version == pool[0].version
    elif impl == "limit":
        writer = bench.limit_writer(size)
        for job in pool:
            job = job.model_copy(update={"version": 1})
            body = job.to_json()
            writer.add(job.id, body, row_values(job.model_dump(mode="json"), body))

        def setup() -> Any:
            slot = next(turn) % TRANSITION_POOL
            old = pool[slot]
            job = _flip(old).model_copy(update={"version": old.version + 1})
            pool[slot] = job
            body = job.to_json()
            row = row_values(job.model_dump(mode="json"), body)
            return (job.id, old.status.value, body, row), {}

        benchmark.pedantic(writer.transition, setup=synced(setup), rounds=n_rounds,
                           warmup_rounds=1)
    else:
        legacy = bench.legacy_work(size)
        bodies = [legacy_body(job) for job in pool]
        for initial in bodies:
            assert legacy.save_job(initial)

        def setup() -> Any:
            slot = next(turn) % TRANSITION_POOL
            flipped = dict(bodies[slot])
            if flipped["status"] == "processing":
                flipped.update(status="completed", completed_at=DATASET_NOW.replace(
                    tzinfo=None).isoformat())
            else:
                flipped.update(status="processing", completed_at=None)
            bodies[slot] = flipped
            return (flipped,), {}

        def save_legacy(job: dict[str, Any]) -> None:
            assert legacy.save_job(job)

        benchmark.pedantic(save_legacy, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)


# -- claims -------------------------------------------------------------------------------

CLAIMER = "bench-claimer-{}"


def _limit_claimer(root: Path, sidecar: Path, names: list[list[str]]) -> Any:
    """Per claim: rename pending/x → processing/x (in the work copy's own directories),
    fsync both directories, one SQLite commit updating the job's row."""
    pending, processing = root / "pending", root / "processing"

    def factory(index: int) -> Any:
        conn = connect(sidecar)
        mine = names[index]
        worker = CLAIMER.format(index)

        def claim(round_number: int, n: int) -> None:
            job_id = mine[n]
            os.rename(pending / limit_name(job_id), processing / limit_name(job_id))
            fsync_dir(processing)
            fsync_dir(pending)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE jobs SET status = 'processing', worker_id = ? WHERE id = ?",
                         (worker, job_id))
            conn.execute("COMMIT")

        return claim

    return factory


@pytest.mark.parametrize("processes", [1, 4])
@pytest.mark.impls("hybridstore", "hybridstore-nondurable", "limit")
def test_claim(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int,
               processes: int) -> None:
    """Claim throughput: ``processes`` real processes released together by a barrier, each
    claiming its quota; the time of a round is the wall-clock time of all its claims."""
    pending_jobs = bench.manifest(size)["status_counts"]["pending"]
    quota = (100 if processes == 1 else 50) if not bench.quick else 10
    quota = min(quota, pending_jobs // processes // 2 * 2 or 1)
    claims = quota * processes
    n_rounds = bench.rounds(10, 2)
    if impl.startswith("hybridstore"):
        store = bench.work_store(size, durable=False)  # the parent's handle, for restoring
        restore_claimed(store, CLAIMER, 4)
        work_dir, durable = bench.work_dir(size), impl == "hybridstore"
        factory = repository_claimer(lambda: JobStore(work_dir, durable=durable), CLAIMER)

        def setup() -> None:
            restore_claimed(store, CLAIMER, processes)

        def teardown() -> None:
            restore_claimed(store, CLAIMER, processes)
    else:
        root = bench.work_dir(size)
        sidecar = bench.limit_sidecar(size)
        conn = connect(sidecar)
        chosen = conn.execute(
            "SELECT id, body FROM jobs WHERE status = 'pending' ORDER BY created_us, id LIMIT ?",
            (claims,),
        ).fetchall()
        ids = [job_id for job_id, _ in chosen]
        for job_id, body in chosen:
            (root / "pending" / limit_name(job_id)).write_bytes(body)
        names = [ids[i * quota:(i + 1) * quota] for i in range(processes)]
        factory = _limit_claimer(root, sidecar, names)

        def setup() -> None:
            moved = [job_id for job_id in ids
                     if (root / "processing" / limit_name(job_id)).exists()]
            for job_id in moved:
                os.rename(root / "processing" / limit_name(job_id),
                          root / "pending" / limit_name(job_id))
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("UPDATE jobs SET status = 'pending', worker_id = NULL WHERE id = ?",
                             [(job_id,) for job_id in moved])
            conn.execute("COMMIT")

        def teardown() -> None:
            setup()
            for job_id in ids:
                (root / "pending" / limit_name(job_id)).unlink()
            conn.close()

    record(f"claim_{processes}p", ops=claims, processes=processes, quota=quota)
    with ClaimPool(processes, quota, factory) as pool:
        setup()
        benchmark.pedantic(pool.run_round, setup=synced(setup), rounds=n_rounds, warmup_rounds=1)
        pool.check()
    teardown()
    if benchmark.stats is not None:
        median = benchmark.stats.stats.median
        benchmark.extra_info["claims_per_s"] = round(claims / median, 1)


@pytest.mark.impls("limit")
def test_create_file(benchmark: Any, bench: BenchData, record: Any, impl: str, size: int) -> None:
    """Creating one empty file in a status directory of the work copy: a reference for how
    much each file a write creates (temp file, lock file) costs on this disk."""
    directory = bench.work_dir(size) / "pending"
    names = (f".bench-create-{n}.tmp" for n in range(10**9))
    created: list[str] = []

    def setup() -> Any:
        path = str(directory / next(names))
        created.append(path)
        return (path,), {}

    def create(path: str) -> None:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))

    record("create_file")
    benchmark.pedantic(create, setup=synced(setup), rounds=bench.rounds(300, 20), warmup_rounds=1)
    for path in created:
        os.unlink(path)
