"""Eight processes of mixed writes on one data directory.

Each process runs ``OPS_PER_PROCESS`` operations: adds, saves (with and without a status
change, i.e. file moves), claims, completes, fails, cancels and deletes, on its own jobs
and on everybody's (claims take any job). At the end: zero "database is locked" or other
unexpected errors, zero temp files and intents left, the sidecar equals the files
(``verify`` clean), no acknowledged write lost, and no job claimed twice at once.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import time
from pathlib import Path

import pytest

from hybridstore import (
    InvalidTransition,
    JobNotFound,
    JobStatus,
    JobStore,
    NotJobOwner,
    RemoteJob,
    VersionConflict,
)

from ._support import assert_consistent

PROCESSES = 8
OPS_PER_PROCESS = 1000
EXPECTED = (VersionConflict, NotJobOwner, InvalidTransition, JobNotFound)


def _worker(data_dir: str, name: str, seed: int, ops: int, out: str) -> None:
    rng = random.Random(seed)
    store = JobStore(data_dir)
    mine: list[str] = []
    acked: dict[str, int] = {}
    deleted: list[str] = []
    claims: list[tuple[str, int]] = []
    errors: list[str] = []
    counts: dict[str, int] = {}
    for n in range(ops):
        roll = rng.random()
        op = "?"
        try:
            if roll < 0.25 or not mine:
                op = "add"
                job = store.add(
                    RemoteJob(
                        id=f"{name}-{n}",
                        ingestion_task_id=f"t{n % 7}",
                        source_file_path="/in/x",
                        content_type=rng.choice(["audio", "video", "document"]),
                    )
                )
                mine.append(job.id)
                acked[job.id] = job.version
            elif roll < 0.50:
                op = "claim"
                got = store.claim_next(name, lease_seconds=60)
                if got is not None:
                    claims.append((got.id, got.attempt))
                    counts["claim"] = counts.get("claim", 0) + 1
                    acked[got.id] = got.version
                    if rng.random() < 0.8:
                        op = "complete"
                        done = store.complete(got.id, name, {"n": n}, attempt=got.attempt)
                    else:
                        op = "fail"
                        done = store.fail(got.id, name, "boom", attempt=got.attempt, retry_in=0)
                    acked[done.id] = done.version
            elif roll < 0.75:
                op = "save"
                job_id = rng.choice(mine)
                current = store.get(job_id)
                if current is not None:
                    change: dict[str, object] = {"task_options": {"n": n}}
                    if rng.random() < 0.3 and not current.status.is_terminal:
                        op = "move"
                        change["status"] = JobStatus.CANCELLED  # a save that moves the file
                    saved = store.save(
                        current.model_copy(update=change), expected_version=current.version
                    )
                    acked[saved.id] = saved.version
            elif roll < 0.85:
                op = "cancel"
                job_id = rng.choice(mine)
                acked[job_id] = store.cancel(job_id).version
            else:
                op = "delete"
                job_id = mine.pop(rng.randrange(len(mine)))
                if store.delete(job_id):
                    deleted.append(job_id)
                    acked.pop(job_id, None)
                if not mine:
                    continue
            counts[op] = counts.get(op, 0) + 1
        except EXPECTED:
            counts["expected-refusal"] = counts.get("expected-refusal", 0) + 1
        except Exception as exc:  # every other error is a finding
            errors.append(f"{op}: {type(exc).__name__}: {exc}")
    store.close()
    Path(out).write_text(
        json.dumps(
            {
                "acked": acked,
                "deleted": deleted,
                "claims": claims,
                "errors": errors,
                "counts": counts,
            }
        )
    )


@pytest.mark.slow
def test_eight_processes_of_mixed_writes(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    JobStore(data_dir).close()
    ctx = multiprocessing.get_context("fork")
    outs = [tmp_path / f"out{i}.json" for i in range(PROCESSES)]
    procs = [
        ctx.Process(
            target=_worker, args=(str(data_dir), f"p{i}", 1000 + i, OPS_PER_PROCESS, str(outs[i]))
        )
        for i in range(PROCESSES)
    ]
    started = time.perf_counter()
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(240)
        assert proc.exitcode == 0
    elapsed = time.perf_counter() - started

    results = [json.loads(out.read_text()) for out in outs]
    errors = [e for r in results for e in r["errors"]]
    assert errors == [], errors[:20]
    assert not any("locked" in e for e in errors)
    totals: dict[str, int] = {}
    for r in results:
        for op, n in r["counts"].items():
            totals[op] = totals.get(op, 0) + n
    # The mix really happened, in every kind.
    for op in ("add", "claim", "complete", "fail", "save", "move", "cancel", "delete"):
        assert totals.get(op, 0) > 20, totals
    # No job was handed to two claimers with the same fencing number.
    claims = [tuple(c) for r in results for c in r["claims"]]
    assert len(claims) == len(set(claims))

    assert not [n for n in os.listdir(data_dir / ".locks") if n.endswith(".tmp")]
    with JobStore(data_dir) as store:
        jobs = assert_consistent(store)  # no temp file, no intent, verify clean
        deleted = {j for r in results for j in r["deleted"]}
        for r in results:
            for job_id, version in r["acked"].items():
                if job_id in deleted:
                    continue
                assert job_id in jobs, f"acknowledged {job_id} lost"
                assert jobs[job_id].version >= version
        assert not deleted & set(jobs)
    print(f"{PROCESSES}x{OPS_PER_PROCESS} mixed ops in {elapsed:.1f}s: {totals}")
