"""What is specific to the file backend: the layout, the sidecar, verify/repair, old data."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hybridstore import CorruptJobFile, JobAlreadyExists, JobStatus, JobStore, RemoteJob
from hybridstore.migrations import load_migrations
from hybridstore.sidecar import SIDECAR_NAME
from tests.conftest import T0, downgrade_sidecar, new_job


def job_files(data_dir: Path) -> list[str]:
    """Every entry under the status directories, as status/name."""
    return sorted(
        f"{status.value}/{name}"
        for status in JobStatus
        for name in os.listdir(data_dir / status.value)
    )


def test_layout_one_file_per_job_in_its_status_directory(store: JobStore, data_dir: Path) -> None:
    for name in ("pending", "processing", "completed", "failed", "timeout", "cancelled", ".locks"):
        assert (data_dir / name).is_dir()
    assert (data_dir / SIDECAR_NAME).is_file()
    store.add(new_job(id="j1"))
    assert job_files(data_dir) == ["pending/j1.json"]
    body = json.loads((data_dir / "pending" / "j1.json").read_bytes())
    assert body["id"] == "j1" and body["version"] == 1
    store.claim_next("w")
    assert job_files(data_dir) == ["processing/j1.json"]
    store.complete("j1", "w")
    assert job_files(data_dir) == ["completed/j1.json"]
    store.delete("j1")
    assert job_files(data_dir) == []


def test_reads_and_queries_never_list_a_directory(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    jobs = [store.add(new_job(timeout_at=T0, worker_id="w")) for _ in range(5)]

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("a query listed a directory")

    monkeypatch.setattr(os, "scandir", forbidden)
    monkeypatch.setattr(os, "listdir", forbidden)
    assert store.find(status="pending", limit=2) == jobs[:2]
    assert store.find(worker_id="w", content_type="document") == jobs
    assert store.count(status="pending") == 5
    assert store.get(jobs[0].id) == jobs[0]
    assert store.find_by_ingestion_task(jobs[1].ingestion_task_id) == jobs[1]
    assert len(store.expired(T0 + timedelta(days=1))) == 5
    assert store.old_jobs() == []
    assert store.statistics()["total_jobs"] == 5


def test_the_sidecar_is_rebuilt_when_deleted(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        stored = [store.add(new_job()) for _ in range(3)]
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data_dir / SIDECAR_NAME}{suffix}").unlink(missing_ok=True)
    with JobStore(data_dir) as store:
        assert store.find() == stored
        assert store.verify().ok


def test_a_garbage_sidecar_is_moved_aside_and_rebuilt(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        stored = store.add(new_job())
    (data_dir / SIDECAR_NAME).write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        Path(f"{data_dir / SIDECAR_NAME}{suffix}").unlink(missing_ok=True)
    with JobStore(data_dir) as store:
        assert store.find() == [stored]
    assert [p.name for p in data_dir.glob(f"{SIDECAR_NAME}.corrupt-*")]


def test_a_sidecar_of_an_older_schema_is_migrated(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        stored = store.add(new_job())
    downgrade_sidecar(data_dir / SIDECAR_NAME, 1)
    latest = len(load_migrations("sidecar"))
    with JobStore(data_dir) as store:
        assert [m.version for m in store.migrations_applied] == list(range(2, latest + 1))
        assert store.schema_version == latest
        assert store.count() == 1 and store.statistics()["total_jobs"] == 1
        assert store.get(stored.id) == stored
        assert store.claim_next("w") is not None


def test_a_migration_that_keeps_rows_migrates_in_place_without_a_rebuild(
    data_dir: Path,
) -> None:
    """0006 only adds columns whose defaults are what older bodies mean: the rows stay as
    they are (a rebuild would cost a scan of every file). A row made stale on purpose
    before the upgrade proves no rebuild ran; ``verify`` still reports it."""
    import sqlite3

    with JobStore(data_dir) as store:
        first = store.add(new_job())
        store.add(new_job())
    downgrade_sidecar(data_dir / SIDECAR_NAME, 5)
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    conn.execute("UPDATE jobs SET content_type = 'stale' WHERE id = ?", (first.id,))
    conn.commit()
    conn.close()
    with JobStore(data_dir) as store:
        assert [m.version for m in store.migrations_applied] == [6, 7]
        assert store.count(content_type="stale") == 1  # not rebuilt
        assert [p.kind for p in store.verify().drift] == ["stale"]
        assert store.claim_next("w") is not None  # the new claim indexes work


def test_job_counts_stay_right_once_writers_keep_them(data_dir: Path) -> None:
    """0007 drops the trigger that counted row updates: from then on the writers count
    them, a batch at a time. Counts kept by the trigger before the upgrade carry on, in
    place, and stay equal to the rows through claims, finishes, retries and deletes."""
    with JobStore(data_dir) as store:
        jobs = store.add_many([new_job(content_type=f"t{i % 3}") for i in range(30)])
        store.claim_many("w1", 5)
    downgrade_sidecar(data_dir / SIDECAR_NAME, 6)
    with JobStore(data_dir) as store:
        assert [m.version for m in store.migrations_applied] == [7]
        assert store.verify().ok  # the trigger's counts, carried over
        claimed = store.claim_many("w2", 12)
        store.complete_many("w2", {job.id: {"n": "x" * 50} for job in claimed[:8]})
        store.fail(claimed[8].id, "w2", "boom")  # retries left: pending again
        store.cancel(jobs[28].id)
        store.delete(jobs[29].id)
        store.heartbeat(claimed[9].id, "w2")
        assert store.verify().ok
        assert store.count() == 29
        assert store.count(status="completed") == 8
        assert store.count(status="cancelled") == 1
        assert store.count(status="processing", worker_id="w2") == 3
        assert store.count(status="processing", worker_id="w1") == 5
        stats = store.statistics()
        assert stats["total_jobs"] == sum(stats["status_counts"].values()) == 29
        assert stats["status_counts"]["pending"] == 29 - 8 - 1 - 3 - 5


def test_verify_reports_job_counts_that_drifted_and_repair_recounts_them(
    store: JobStore, data_dir: Path
) -> None:
    for _ in range(3):
        store.add(new_job())
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    conn.execute("UPDATE job_counts SET jobs = jobs + 5")
    conn.commit()
    conn.close()
    assert store.count() == 8  # counts come from job_counts
    assert [p.kind for p in store.verify().drift] == ["counts"]
    assert "recounted the job counts from the rows" in store.repair().actions
    assert store.verify().ok and store.count() == 3


@pytest.mark.parametrize(
    ("batch", "stored"),
    [(3, 0), (100, 0), (100, 900)],
    ids=["small-batch", "bulk-into-a-small-store", "bulk-into-a-larger-store"],
)
def test_add_many_refuses_an_id_whose_file_the_index_does_not_know(
    store: JobStore, data_dir: Path, batch: int, stored: int
) -> None:
    """A file put in by hand (not yet taken in) is a stored job: ``add_many`` refuses its
    id and writes nothing of the batch, whether it asks the directories name by name or,
    for a bulk batch into a store not much larger, lists them once."""
    if stored:
        store.add_many([new_job() for _ in range(stored)])
    by_hand = new_job(status=JobStatus.COMPLETED)
    (data_dir / "completed" / f"{by_hand.id}.json").write_bytes(by_hand.to_json())
    jobs = [new_job() for _ in range(batch - 1)]
    jobs.insert(batch // 2, new_job(id=by_hand.id))
    with pytest.raises(JobAlreadyExists, match=by_hand.id):
        store.add_many(jobs)
    assert store.count() == stored + 1  # the job put in by hand, now indexed
    assert store.get(by_hand.id) == by_hand
    assert all(store.get(job.id) is None for job in jobs if job.id != by_hand.id)


def test_the_first_open_after_a_reboot_rebuilds_the_sidecar(data_dir: Path) -> None:
    """The sidecar is not fsynced: a machine crash may lose its last commits, intents
    included. A new boot id makes the next open rebuild it from the (fsynced) files."""
    with JobStore(data_dir) as store:
        job = store.add(new_job())
        moved = store.claim_next("w")
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    # What a lost commit looks like: the row still says pending, and no intent says why.
    conn.execute("UPDATE jobs SET status = 'pending', version = 1 WHERE id = ?", (job.id,))
    conn.commit()
    with JobStore(data_dir) as store:
        assert not store.verify().ok  # same boot: nothing to suggest a crash
    conn.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'")
    conn.commit()
    conn.close()
    with JobStore(data_dir) as store:
        assert store.verify().ok
        assert store.get(job.id) == moved
        assert store.claim_next("w2") is None, "the job is not pending: no second claim"


def test_a_sidecar_of_a_newer_schema_is_refused(data_dir: Path) -> None:
    JobStore(data_dir).close()
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    conn.execute("INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01')")
    conn.commit()
    conn.close()
    from hybridstore import SchemaError

    with pytest.raises(SchemaError, match="newer"):
        JobStore(data_dir)


def test_an_older_json_index_directory_opens_as_is(tmp_path: Path) -> None:
    """Status directories, naive timestamps and the three index files of the old design."""
    data_dir = tmp_path / "old"
    for status in JobStatus:
        (data_dir / status.value).mkdir(parents=True)
    old_body = {
        "id": "legacy-1",
        "ingestion_task_id": "ingest-9",
        "source_file_path": "/in/x.mp3",
        "content_type": "audio",
        "task_options": {"lang": "en"},
        "status": "completed",
        "worker_id": "gpu-1",
        "created_at": "2026-01-01T12:00:00",
        "started_at": "2026-01-01T12:00:05",
        "completed_at": "2026-01-01T12:01:00",
        "error_message": None,
        "result_data": {"text": "hi"},
        "retry_count": 0,
        "max_retries": 3,
        "timeout_at": "2026-01-01T13:00:00",
    }
    (data_dir / "completed" / "legacy-1.json").write_text(json.dumps(old_body, indent=2))
    indexes = {
        "content_type_index.json": {"audio": ["legacy-1"]},
        "worker_index.json": {"gpu-1": ["legacy-1"]},
        "ingestion_task_index.json": {"ingest-9": "legacy-1"},
    }
    for name, content in indexes.items():
        (data_dir / name).write_text(json.dumps(content, indent=2))
    before = {name: (data_dir / name).read_bytes() for name in indexes}
    with JobStore(data_dir) as store:
        job = store.find_by_ingestion_task("ingest-9")
        assert job is not None and job.id == "legacy-1"
        assert job.created_at == T0 and job.created_at.tzinfo is not None
        assert job.version == 0 and job.attempt == 0
        assert store.find(worker_id="gpu-1") == [job]
        assert store.old_jobs(days_old=1, now=T0 + timedelta(days=2)) == [job]
        assert store.verify().ok
        assert store.reindex().indexed == 1
        saved = store.save(job)
        assert saved.version == 1
    assert {name: (data_dir / name).read_bytes() for name in indexes} == before


def test_reindex_skips_unreadable_files_and_reports_them(store: JobStore, data_dir: Path) -> None:
    good = store.add(new_job())
    (data_dir / "pending" / "broken.json").write_text('{"id": "broken", ')
    (data_dir / "failed" / "notes.txt").write_text("hello")
    report = store.reindex()
    assert report.indexed == 1
    kinds = {(p.kind, Path(p.path).name) for p in report.skipped}
    assert kinds == {("unreadable", "broken.json"), ("foreign", "notes.txt")}
    assert store.find() == [good]
    with pytest.raises(CorruptJobFile, match=r"broken\.json"):
        store.get("broken")


def test_verify_finds_each_kind_of_drift_and_repair_fixes_it(
    store: JobStore, data_dir: Path
) -> None:
    kept = store.add(new_job(id="kept"))
    orphan = store.add(new_job(id="orphan"))
    stale = store.add(new_job(id="stale"))
    twice = store.add(new_job(id="twice"))
    assert store.verify().ok
    (data_dir / "pending" / "orphan.json").unlink()  # row without file
    missing = new_job(id="missing").model_copy(update={"version": 3})
    (data_dir / "pending" / "missing.json").write_bytes(missing.to_json())  # file without row
    edited = stale.model_copy(update={"error_message": "edited by hand", "version": 5})
    (data_dir / "pending" / "stale.json").write_bytes(edited.to_json())
    newer = twice.model_copy(update={"status": JobStatus.FAILED, "version": 2})
    (data_dir / "failed" / "twice.json").write_bytes(newer.to_json())  # in two directories
    (data_dir / "completed" / "bad.json").write_bytes(b"\xff\xfe not json")
    old_temp = data_dir / "pending" / ".kept.json.abcdef.tmp"
    old_temp.write_bytes(b"{")
    os.utime(old_temp, (1, 1))
    young_temp = data_dir / "pending" / ".kept.json.123456.tmp"
    young_temp.write_bytes(b"{")  # a write in flight: not drift

    report = store.verify()
    found = {(p.kind, p.job_id) for p in report.drift}
    assert found == {
        ("orphaned", "orphan"),
        ("missing", "missing"),
        ("stale", "stale"),
        ("duplicate", "twice"),
        ("stale", "twice"),
        ("unreadable", "bad"),
        ("temp", None),
    }
    assert not report.ok

    repaired = store.repair()
    assert len(repaired.quarantined) == 2  # the older twice.json and bad.json
    assert store.verify().ok
    assert store.get("orphan") is None
    assert store.get("missing") == missing
    assert store.get("stale") == edited
    assert store.get("twice") == newer
    assert store.get("kept") == kept
    assert not old_temp.exists()
    quarantine = data_dir / ".quarantine"
    reasons = [p.read_text() for p in quarantine.glob("*.reason")]
    assert len(reasons) == 2 and any("UTF-8" in r for r in reasons)
    assert orphan.id not in {j.id for j in store.find()}


def test_each_write_is_one_sidecar_commit(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybridstore.sidecar import Sidecar

    commits: list[str] = []
    real = Sidecar.transaction

    def counted(self: Sidecar) -> object:
        commits.append("commit")
        return real(self)

    monkeypatch.setattr(Sidecar, "transaction", counted)
    job = store.add(new_job())
    store.claim_next("w")
    store.heartbeat(job.id, "w")
    store.complete(job.id, "w", {"ok": True})
    store.delete(job.id)
    assert len(commits) == 5


def _producer(data_dir: Path, added: Any, go: Any, ids: Any) -> None:
    """Another process: adds a job, and a second one when told, then closes."""
    with JobStore(data_dir) as producer:
        first = producer.add(new_job())
        ids.put(first.id)
        assert [job_id for job_id, _ in producer.journal.intents()] == [first.id]
        assert producer.journal.unsettled_intents() == []  # its own, finished
        added.set()
        go.wait(30)
        second = producer.add(new_job())  # clears nothing of the worker's
        ids.put(second.id)


def test_intents_of_finished_writes_are_cleared_later_and_never_repaired(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    worker = JobStore(data_dir)
    fork = multiprocessing.get_context("fork")
    added, go, ids = fork.Event(), fork.Event(), fork.Queue()
    producer = fork.Process(target=_producer, args=(data_dir, added, go, ids))
    producer.start()
    assert added.wait(30)
    first_id = ids.get(timeout=30)
    assert worker.journal.unsettled_intents() == [first_id]  # the producer's, left for later

    def no_repair(job_id: str, **kwargs: object) -> object:
        raise AssertionError(f"{job_id} was repaired, but its write had finished")

    monkeypatch.setattr(worker.journal, "repair_locked", no_repair)
    claimed = worker.claim_next("w")  # checks the producer's intent against the files
    assert claimed is not None and claimed.id == first_id
    assert [job_id for job_id, _ in worker.journal.intents()] == [first_id]  # now the worker's
    assert worker.journal.unsettled_intents() == []
    go.set()
    second_id = ids.get(timeout=30)
    producer.join(30)
    assert producer.exitcode == 0
    # The producer's close cleared its own second intent, and left the worker's.
    assert [job_id for job_id, _ in worker.journal.intents()] == [first_id]
    assert second_id != first_id
    worker.close()  # clears its own
    with JobStore(data_dir) as reopened:
        assert reopened.journal.intents() == []
        assert reopened.verify().ok


def test_an_interrupted_write_is_repaired_on_the_next_open(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = JobStore(data_dir)
    job = store.add(new_job())
    import hybridstore.journal as store_module

    def crash(*args: object, **kwargs: object) -> None:
        raise SystemExit("killed between the rename and the unlink of the old file")

    monkeypatch.setattr(store_module, "remove_file", crash)
    assert store.journal.spares is not None
    monkeypatch.setattr(store.journal.spares, "park", crash)  # nor parked as a spare
    with pytest.raises(SystemExit):
        store.claim_next("w")
    monkeypatch.undo()
    # The job is in two directories; one intent marks it.
    assert (data_dir / "processing" / f"{job.id}.json").exists()
    assert (data_dir / "pending" / f"{job.id}.json").exists()
    assert store.journal.unsettled_intents() == [job.id]
    assert not store.verify().ok
    store.close()
    with JobStore(data_dir) as reopened:
        assert reopened.journal.intents() == []
        assert not (data_dir / "pending" / f"{job.id}.json").exists()
        assert reopened.count(status="processing") == 1
        assert reopened.verify().ok


def test_a_job_larger_than_max_job_bytes_is_refused_before_writing(data_dir: Path) -> None:
    from hybridstore import JobTooLarge

    with JobStore(data_dir, max_job_bytes=2000) as store:
        with pytest.raises(JobTooLarge):
            store.add(new_job(task_options={"blob": "x" * 5000}))
        assert job_files(data_dir) == []
        assert store.count() == 0


def test_a_store_survives_its_sidecar_being_deleted_while_open(
    store: JobStore, data_dir: Path
) -> None:
    first = store.add(new_job())
    for suffix in ("", "-wal", "-shm"):
        Path(f"{data_dir / SIDECAR_NAME}{suffix}").unlink(missing_ok=True)
    second = store.add(new_job())
    assert store.find() == [first, second]
    assert store.verify().ok


def test_a_write_whose_sidecar_another_thread_reopened_meanwhile_is_indexed(
    store: JobStore, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hybridstore.journal as store_module

    real_write = store_module.write_many

    def sidecar_replaced_mid_write(*args: object, **kwargs: object) -> None:
        # The row is committed to the old sidecar; now it goes, and another thread of this
        # process reopens it (rebuilt from the files, which do not hold the job yet).
        monkeypatch.setattr(store_module, "write_many", real_write)
        for suffix in ("", "-wal", "-shm"):
            Path(f"{data_dir / SIDECAR_NAME}{suffix}").unlink(missing_ok=True)
        store._ready()
        real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(store_module, "write_many", sidecar_replaced_mid_write)
    job = store.add(new_job())
    assert store.find() == [job]
    assert store.claim_next("w") is not None
    assert store.verify().ok


def test_an_unreadable_file_under_another_process_intent_blocks_nothing(
    data_dir: Path,
) -> None:
    job = new_job()
    pid = os.fork()
    if pid == 0:  # a process that writes and goes away, leaving its intent
        JobStore(data_dir).add(job)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    (data_dir / "pending" / f"{job.id}.json").write_text("{ not json")
    with JobStore(data_dir) as other:  # opening checks the intent: no exception
        report = other.verify()
        assert [(p.kind, p.job_id) for p in report.drift] == [("unreadable", job.id)]
        assert other.expire_overdue() == []
        assert other.claim_next("w") is None
        other.repair()
        assert other.verify().ok and other.get(job.id) is None


def test_network_file_systems_are_refused(tmp_path: Path) -> None:
    from hybridstore import UnsupportedFileSystem
    from hybridstore.files import check_local_file_system, file_system_type

    mounts = tmp_path / "mounts"
    mounts.write_text(f"server:/export {tmp_path} nfs4 rw 0 0\n/dev/vda / ext4 rw 0 0\n")
    assert file_system_type(tmp_path / "data", str(mounts)) == "nfs4"
    assert file_system_type(Path("/usr"), str(mounts)) == "ext4"
    import hybridstore.files as files

    original = files.file_system_type
    files.file_system_type = lambda path: original(path, str(mounts))  # type: ignore[assignment]
    try:
        with pytest.raises(UnsupportedFileSystem, match="PostgreSQL"):
            check_local_file_system(tmp_path / "data")
        with pytest.raises(UnsupportedFileSystem):
            JobStore(tmp_path / "data")
    finally:
        files.file_system_type = original  # type: ignore[assignment]


def test_remote_job_from_a_store_is_a_copy(store: JobStore) -> None:
    job = store.add(new_job(task_options={"a": [1]}))
    fetched = store.get(job.id)
    assert fetched is not None
    fetched.task_options["a"].append(2)
    assert store.get(job.id) == job
    assert isinstance(fetched, RemoteJob)


def test_a_hand_edited_row_mismatch_does_not_make_claims_spin(
    store: JobStore, data_dir: Path
) -> None:
    """The index says audio, the file (edited by hand) says video: a claim for audio must
    not be offered the same job forever, and the row must follow the file."""
    job = store.add(new_job(content_type="audio"))
    edited = job.model_copy(update={"content_type": "video"})
    (data_dir / "pending" / f"{job.id}.json").write_bytes(edited.to_json())
    assert store.claim_next("w", content_types=["audio"]) is None
    assert store.count(content_type="audio") == 0
    assert store.verify().ok
    claimed = store.claim_next("w", content_types=["video"])
    assert claimed is not None and claimed.id == job.id


def test_verify_sees_a_stale_index_column_and_writes_do_not_keep_it(
    store: JobStore, data_dir: Path
) -> None:
    job = store.add(new_job(content_type="audio"))
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    conn.execute("UPDATE jobs SET content_type = 'video' WHERE id = ?", (job.id,))
    conn.commit()
    conn.close()
    # An edit of the sidecar by hand bypasses its writers, who keep the counts.
    assert {p.kind for p in store.verify().drift} == {"stale", "counts"}
    store.save(job)  # the write sets the column from the file's job, not from a diff
    assert [p.kind for p in store.verify().drift] == ["counts"]
    store.repair()
    assert store.verify().ok
    assert store.count(content_type="audio") == 1


def test_a_leftover_older_copy_cannot_come_back_after_a_delete(data_dir: Path) -> None:
    """A power cut lost the unlink of a move: after the reboot's rebuild the old copy is
    quarantined, so deleting the job deletes it for good."""
    with JobStore(data_dir) as store:
        job = store.add(new_job())
        claimed = store.claim_next("w")
        assert claimed is not None
    (data_dir / "pending" / f"{job.id}.json").write_bytes(job.to_json())  # the lost unlink
    conn = sqlite3.connect(data_dir / SIDECAR_NAME)
    conn.execute("UPDATE meta SET value = 'an-earlier-boot' WHERE key = 'boot_id'")
    conn.commit()
    conn.close()
    with JobStore(data_dir) as store:
        assert store.get(job.id) == claimed
        assert store.delete(job.id)
        assert store.get(job.id) is None
        assert store.count() == 0
        assert store.verify().ok
    assert len(list((data_dir / ".quarantine").glob("*.reason"))) == 1


def test_repair_leaves_temp_files_of_a_job_whose_id_extends_another(
    store: JobStore, data_dir: Path
) -> None:
    store.add(new_job(id="a"))
    other = data_dir / "pending" / ".a.json.b.json.0123456789ab.tmp"  # job "a.json.b"
    mine = data_dir / "pending" / ".a.json.0123456789ab.tmp"  # job "a"
    other.write_bytes(b"{")
    mine.write_bytes(b"{")
    with store.journal.lock("a"):
        store.journal.repair_locked("a")
    assert other.exists() and not mine.exists()


def test_lock_files_are_a_fixed_set_whatever_the_jobs(store: JobStore, data_dir: Path) -> None:
    from hybridstore.locks import LOCK_STRIPES

    jobs = [store.add(new_job()) for _ in range(40)]
    for job in jobs[:30]:
        store.delete(job.id)
    store.delete("never-existed")
    first = sorted(p.name for p in (data_dir / ".locks").iterdir() if not p.name.startswith("."))
    # One file per stripe used, none named after a job, and no new ones for the same ids.
    assert 0 < len(first) <= 41 and not any(job.id in name for job in jobs for name in first)
    for job in jobs[30:]:
        store.cancel(job.id)
    again = sorted(p.name for p in (data_dir / ".locks").iterdir() if not p.name.startswith("."))
    assert again == first and len(again) <= LOCK_STRIPES


def test_a_job_whose_lock_stripe_is_busy_is_claimed_once_it_frees(data_dir: Path) -> None:
    import threading
    import time

    from hybridstore.locks import LOCK_STRIPES, StripeLocks

    claimer, other = JobStore(data_dir), JobStore(data_dir)
    stripe = StripeLocks.stripe("job-0")
    twin = next(
        f"job-{n}" for n in range(1, 50 * LOCK_STRIPES) if StripeLocks.stripe(f"job-{n}") == stripe
    )
    claimer.add(new_job(id="job-0"))
    claimer.add(new_job(id=twin))
    assert claimer.claim_next("w").id == "job-0"  # type: ignore[union-attr]
    held = threading.Event()

    def heartbeat_of_job_0() -> None:  # holds the stripe the waiting twin shares
        with other.journal.lock("job-0"):
            held.set()
            time.sleep(0.3)

    holder = threading.Thread(target=heartbeat_of_job_0)
    holder.start()
    held.wait()
    # The only candidate's lock is busy because of another job: the claim waits for it
    # instead of answering that no job is waiting.
    got = claimer.claim_next("w")
    holder.join()
    assert got is not None and got.id == twin
    claimer.close()
    other.close()


def test_a_failed_unlink_after_the_new_body_is_written_says_so(
    store: JobStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    import errno

    import hybridstore.journal as store_module
    from hybridstore import StorageError

    job = store.add(new_job())

    def failing_remove(path: Path, *, durable: bool) -> bool:
        raise StorageError(path, OSError(errno.EIO, "Input/output error"))

    monkeypatch.setattr(store_module, "remove_file", failing_remove)
    assert store.journal.spares is not None
    # The spare pool cannot take the old copy (full, or gone): it is removed, and that fails.
    monkeypatch.setattr(store.journal.spares, "park", lambda path: False)
    with pytest.raises(StorageError) as caught:
        store.claim_next("w")
    assert caught.value.in_place  # the new body is in place: not "nothing changed"
    monkeypatch.undo()
    assert store.get(job.id).status is JobStatus.PROCESSING  # type: ignore[union-attr]


def test_verify_names_a_corrupted_indexed_file_once_as_unreadable(store: JobStore) -> None:
    job = store.add(new_job())
    (store.data_dir / "pending" / f"{job.id}.json").write_text("{ not json")
    report = store.verify()
    assert [(p.kind, p.job_id) for p in report.drift] == [("unreadable", job.id)]


# -- many processes, with the race window widened ------------------------------------------


def _slow_claim_all(target: str, name: str, order: list[str] | None, start: Any, out: Any) -> None:
    """``claim_all`` in a process whose file store pauses between picking a candidate from
    the sidecar and taking the job, so rival claimers pick the same candidates."""
    import time

    from hybridstore.claims import Claims
    from tests.contract.test_concurrency import claim_all

    original = Claims._claim_round  # the file store's claim of the candidates it found

    def slow_claim_round(self: Claims, *args: Any) -> Any:
        time.sleep(0.002)
        return original(self, *args)

    Claims._claim_round = slow_claim_round  # type: ignore[method-assign]
    claim_all(target, name, order, start, out)


@pytest.mark.slow
def test_claimers_that_pick_the_same_candidate_never_share_a_job(data_dir: Path) -> None:
    from tests.contract.test_concurrency import run_claimers

    with JobStore(data_dir) as store:
        ids = {store.add(new_job(content_type="audio")).id for _ in range(300)}
    claimed = run_claimers(str(data_dir), 4, [None] * 4, claimer=_slow_claim_all)
    assert sorted(job_id for job_id, _ in claimed) == sorted(ids), "a job claimed twice or never"
    assert {attempt for _, attempt in claimed} == {1}
    with JobStore(data_dir) as store:
        assert store.count(status=JobStatus.COMPLETED) == 300
