"""``copy_jobs``: every job moves with its version and timestamps; a second run changes
nothing; the count check and ``verify`` catch what does not match."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hybridstore import InvalidArgument, JobStatus, JobStore, PostgresJobRepository
from hybridstore.memory import MemoryJobRepository
from hybridstore.transfer import compare_jobs, copy_jobs
from tests.conftest import T0, new_job

JOBS = 300


def fill(store: JobStore, total: int = JOBS) -> dict[str, int]:
    """Jobs in every status, with versions above 1 and awkward values; returns counts."""
    rng = random.Random(5)
    for n in range(total):
        store.add(
            new_job(
                id=f"copy-{n:04d}" if n % 7 else f"Copy-{n:04d}",  # byte order: "C" < "c"
                content_type=rng.choice(["audio", "video", "document"]),
                # Some share a created_at, so the id decides their order.
                created_at=T0 + timedelta(seconds=n // 3),
                task_options={"n": n, "big": 1e20, "tiny": 1e-7, "text": "héllo ✓"},
                max_retries=rng.choice([0, 0, 1, 3]),
            )
        )
    for _ in range(total * 2 // 3):  # the rest stays pending
        job = store.claim_next("w1", lease_seconds=60)
        assert job is not None
        roll = rng.random()
        if roll < 0.3:
            store.complete(job.id, "w1", {"pages": job.task_options["n"]}, attempt=job.attempt)
        elif roll < 0.5:
            store.fail(job.id, "w1", "boom", attempt=job.attempt)
        elif roll < 0.6:
            store.cancel(job.id)
        elif roll < 0.7:
            store.heartbeat(job.id, "w1", lease_seconds=600)
        elif roll < 0.8:  # a lease that ran out: back to pending, or timeout
            assert job.timeout_at is not None
            store.expire_overdue(now=job.timeout_at + timedelta(seconds=1))
    counts = store.statistics()["status_counts"]
    assert all(counts[s.value] for s in JobStatus), counts  # every status is represented
    return dict(counts)


@pytest.fixture
def source(tmp_path: Path) -> Iterator[JobStore]:
    with JobStore(tmp_path / "source", durable=False) as store:
        fill(store)
        yield store


@pytest.fixture
def pg(pg_schema_dsn: str) -> Iterator[PostgresJobRepository]:
    with PostgresJobRepository(pg_schema_dsn) as repo:
        yield repo


def snapshot(repo: Any) -> dict[str, dict[str, Any]]:
    return {job.id: job.model_dump() for job in repo.find()}


def test_file_store_to_postgres_and_back(
    source: JobStore, pg: PostgresJobRepository, tmp_path: Path
) -> None:
    seen: list[tuple[int, int]] = []
    report = copy_jobs(source, pg, batch_size=64, progress=lambda d, t: seen.append((d, t)))
    assert report.ok, report.to_dict()
    assert (report.read, report.written, report.unchanged) == (JOBS, JOBS, 0)
    assert report.source_counts == report.target_counts == source.statistics()["status_counts"]
    assert seen[-1] == (JOBS, JOBS) and len(seen) == 5  # one call per batch of 64
    # Versions, timestamps and values identical, in the same (byte) order.
    assert snapshot(pg) == snapshot(source)
    assert [j.id for j in pg.find()] == [j.id for j in source.find()]
    assert any(j.version > 2 for j in pg.find())
    assert type(pg.find()[0].task_options["big"]) is float

    # Copying back into a new directory gives the same jobs again.
    with JobStore(tmp_path / "back", durable=False) as back:
        again = copy_jobs(pg, back, verify=True)
        assert again.ok and again.verified and again.written == JOBS, again.to_dict()
        assert snapshot(back) == snapshot(source)
        assert back.verify().ok


def test_a_second_copy_changes_nothing(source: JobStore, pg: PostgresJobRepository) -> None:
    copy_jobs(source, pg, batch_size=100)
    import psycopg

    def rows() -> list[tuple[Any, ...]]:
        # updated_at moves on any write: unchanged means nothing was written.
        with psycopg.connect(pg.dsn) as conn:
            return conn.execute(
                "SELECT id, version, created_at, updated_at FROM remote_jobs ORDER BY id"
            ).fetchall()

    before = rows()
    report = copy_jobs(source, pg, batch_size=100, verify=True)
    assert report.ok and report.verified, report.to_dict()
    assert (report.written, report.unchanged) == (0, JOBS)
    assert rows() == before


def test_the_source_moving_on_is_copied_and_a_target_change_is_kept(
    source: JobStore, pg: PostgresJobRepository
) -> None:
    copy_jobs(source, pg)
    moved, touched = source.find(status=JobStatus.PENDING, limit=2)
    newer = source.save(moved.model_copy(update={"error_message": "edited in the source"}))
    kept = pg.save(touched.model_copy(update={"error_message": "edited in the target"}))
    report = copy_jobs(source, pg, verify=True)
    assert report.written == 1 and pg.get(moved.id) == newer
    assert report.conflicts == [touched.id] and pg.get(touched.id) == kept
    assert not report.ok
    assert [(d.job_id, d.kind) for d in report.differences] == [(touched.id, "different")]
    assert (
        "error_message" in report.differences[0].detail
        and "version" in report.differences[0].detail
    )


def test_count_check_and_verify_report_missing_and_extra_jobs(
    source: JobStore, pg: PostgresJobRepository
) -> None:
    copy_jobs(source, pg)
    gone = source.find(limit=1)[0]
    assert pg.delete(gone.id)
    extra = pg.add(new_job(id="only-in-target"))
    found = {(d.job_id, d.kind) for d in compare_jobs(source, pg, batch_size=50)}
    assert found == {(gone.id, "missing"), (extra.id, "extra")}
    pg.delete(extra.id)
    report = copy_jobs(source, pg)  # puts the missing job back
    assert report.ok and report.written == 1


def test_file_store_to_file_store_needs_no_server(source: JobStore, tmp_path: Path) -> None:
    with JobStore(tmp_path / "copy", durable=False) as target:
        first = copy_jobs(source, target, batch_size=50, verify=True)
        second = copy_jobs(source, target, batch_size=50, verify=True)
        assert first.ok and first.written == JOBS
        assert second.ok and second.written == 0 and second.unchanged == JOBS
        assert snapshot(target) == snapshot(source)


def test_a_target_that_cannot_import_is_refused(source: JobStore) -> None:
    with pytest.raises(InvalidArgument, match="import_jobs"):
        copy_jobs(source, MemoryJobRepository())
    with pytest.raises(InvalidArgument, match="batch_size"):
        copy_jobs(source, source, batch_size=0)


# -- a data directory is copied as its files say ----------------------------------------


def _spoil(store: JobStore) -> tuple[str, str, str]:
    """Three hand-made problems: a job file deleted, one corrupted, one the index does not
    list (a copy of another job's file under a new id). Returns their ids."""
    gone, broken, model = (job.id for job in store.find(status=JobStatus.PENDING, limit=3))
    (store.data_dir / "pending" / f"{gone}.json").unlink()
    (store.data_dir / "pending" / f"{broken}.json").write_text("{not json")
    body = json.loads((store.data_dir / "pending" / f"{model}.json").read_text())
    body["id"] = "unlisted-by-hand"
    (store.data_dir / "pending" / "unlisted-by-hand.json").write_text(json.dumps(body))
    return gone, broken, "unlisted-by-hand"


def test_a_file_store_is_copied_as_its_files_say(source: JobStore, tmp_path: Path) -> None:
    gone, broken, unlisted = _spoil(source)
    with JobStore(tmp_path / "copy", durable=False) as target:
        report = copy_jobs(source, target, batch_size=64, verify=True)
        copied = {job.id for job in target.find()}
        assert gone not in copied and broken not in copied and unlisted in copied
        assert len(copied) == JOBS - 1  # two left behind, one found
        assert [(s.job_id, s.kind) for s in report.skipped] == [
            (gone, "gone"),
            (broken, "unreadable"),
        ]
        assert report.skipped[1].path.endswith(f"pending/{broken}.json")
        assert "invalid JSON" in report.skipped[1].detail
        # What the files hold is what was counted, read and compared.
        assert report.read == JOBS - 1 and report.source_counts == report.target_counts
        assert report.verified and report.differences == []
        # An unreadable job was left behind: the copy is not complete.
        assert not report.ok and report.to_dict()["skipped"][1]["kind"] == "unreadable"
    # A job whose file is gone is no job: without the unreadable one the copy is ok.
    (source.data_dir / "pending" / f"{broken}.json").unlink()
    with JobStore(tmp_path / "copy2", durable=False) as target:
        report = copy_jobs(source, target, verify=True)
        assert report.ok, report.to_dict()
        assert [s.kind for s in report.skipped] == ["gone", "gone"]


def test_an_edited_job_file_is_copied_as_edited(source: JobStore, tmp_path: Path) -> None:
    job = source.find(status=JobStatus.PENDING, limit=1)[0]
    path = source.data_dir / "pending" / f"{job.id}.json"
    body = json.loads(path.read_text())
    body["task_options"] = {"edited": "by hand"}
    path.write_text(json.dumps(body))
    with JobStore(tmp_path / "copy", durable=False) as target:
        assert copy_jobs(source, target).ok
        copied = target.get(job.id)
        assert copied is not None and copied.task_options == {"edited": "by hand"}
