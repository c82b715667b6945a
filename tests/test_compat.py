"""The older design's API: dicts in and out, older names and return conventions."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import hybridstore
from hybridstore import InvalidJobId, JobStore, LockTimeout, RemoteJobsStorage, StorageManager
from hybridstore.model import utcnow


def job_dict(job_id: str, **extra: object) -> dict[str, object]:
    return {
        "id": job_id,
        "ingestion_task_id": f"task-{job_id}",
        "source_file_path": f"/in/{job_id}.pdf",
        "content_type": "document",
        "status": "pending",
        **extra,
    }


def test_dict_round_trip_and_queries(tmp_path: Path) -> None:
    storage = RemoteJobsStorage(str(tmp_path / "data"))
    assert storage.save_job(job_dict("a", created_at="2026-01-01T12:00:00")) is True
    assert (
        storage.save_job(job_dict("b", content_type="audio", worker_id="w1", status="processing"))
        is True
    )
    loaded = storage.load_job("a")
    assert loaded is not None and loaded["id"] == "a"
    assert loaded["created_at"].startswith("2026-01-01T12:00:00")
    assert loaded["version"] == 1
    assert [j["id"] for j in storage.find_jobs_by_status("pending")] == ["a"]
    assert [j["id"] for j in storage.find_jobs_by_content_type("audio")] == ["b"]
    assert [j["id"] for j in storage.find_jobs_by_worker("w1")] == ["b"]
    assert storage.find_job_by_ingestion_task("task-a")["id"] == "a"  # type: ignore[index]
    assert storage.find_job_by_ingestion_task("nope") is None
    assert storage.load_job("nope") is None
    assert storage.delete_job("a") is True
    assert storage.delete_job("a") is False
    stats = storage.get_statistics()
    assert set(stats) == {"total_jobs", "status_counts", "content_type_counts", "storage_size_mb"}
    assert stats["total_jobs"] == 1


def test_expired_and_old_jobs(tmp_path: Path) -> None:
    storage = RemoteJobsStorage(tmp_path / "data")
    past = (utcnow() - timedelta(hours=1)).isoformat()
    storage.save_job(job_dict("late", timeout_at=past))
    storage.save_job(
        job_dict(
            "done", status="completed", completed_at=(utcnow() - timedelta(days=9)).isoformat()
        )
    )
    assert [j["id"] for j in storage.get_expired_jobs()] == ["late"]
    assert [j["id"] for j in storage.get_old_jobs(7)] == ["done"]
    assert storage.get_old_jobs(10) == []


def test_failures_are_false_and_bad_ids_raise(tmp_path: Path) -> None:
    storage = RemoteJobsStorage(tmp_path / "data")
    assert storage.save_job({"id": "x", "status": "pending"}) is False  # fields missing
    assert storage.save_job(job_dict("x", status="bogus")) is False
    with pytest.raises(InvalidJobId):
        storage.save_job(job_dict("../x"))
    with pytest.raises(InvalidJobId):
        storage.load_job("../../etc/passwd")
    assert storage.get_statistics()["total_jobs"] == 0


def test_storage_manager(tmp_path: Path) -> None:
    manager = StorageManager(tmp_path / "data")
    assert manager.initialize_storage() is True
    assert (tmp_path / "data" / "pending").is_dir()
    storage = manager.remote_jobs
    assert manager.remote_jobs is storage
    storage.save_job(
        job_dict("old", status="failed", completed_at=(utcnow() - timedelta(days=30)).isoformat())
    )
    storage.save_job(job_dict("new", status="failed", completed_at=utcnow().isoformat()))
    stats = manager.get_storage_statistics()
    assert stats["remote_jobs"]["total_jobs"] == 2 and "timestamp" in stats
    assert manager.cleanup_storage(days_old=7) == {"remote_jobs_cleaned": 1}
    assert storage.load_job("old") is None and storage.load_job("new") is not None


def test_module_level_storage_manager_uses_the_default_location(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MORAG_REMOTE_JOBS_DATA_DIR", str(tmp_path / "morag"))
    monkeypatch.delenv("HYBRIDSTORE_DATA_DIR", raising=False)
    monkeypatch.setattr(hybridstore, "_storage_manager", None)
    manager = hybridstore.storage_manager
    assert isinstance(manager, StorageManager)
    assert hybridstore.storage_manager is manager
    assert manager.remote_jobs.data_dir == tmp_path / "morag"
    monkeypatch.setenv("HYBRIDSTORE_DATA_DIR", str(tmp_path / "hs"))
    assert StorageManager().remote_jobs.data_dir == tmp_path / "hs"


def test_unknown_status_is_an_empty_list_as_before(tmp_path: Path) -> None:
    storage = RemoteJobsStorage(tmp_path / "data")
    storage.save_job(job_dict("a"))
    with capture_logs() as logs:
        assert storage.find_jobs_by_status("bogus") == []
    assert [e["event"] for e in logs] == ["find_jobs_failed"]
    assert "bogus" in logs[0]["error"]
    assert [j["id"] for j in storage.find_jobs_by_status("pending")] == ["a"]


def test_cleanup_storage_logs_a_lock_timeout_and_returns_an_empty_dict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = StorageManager(tmp_path / "data")
    assert manager.initialize_storage() is True

    def timed_out(self: JobStore, days_old: float = 7, now: object = None) -> int:
        raise LockTimeout("old-job", 5.0)

    monkeypatch.setattr(JobStore, "cleanup", timed_out)
    with capture_logs() as logs:
        assert manager.cleanup_storage(days_old=7) == {}
    assert logs[0]["event"] == "cleanup_storage_failed" and "old-job" in logs[0]["error"]


def test_initialize_storage_recreates_a_deleted_status_directory(tmp_path: Path) -> None:
    data = tmp_path / "data"
    manager = StorageManager(data)
    assert manager.initialize_storage() is True
    (data / "failed").rmdir()
    assert manager.initialize_storage() is True
    assert (data / "failed").is_dir()
    # A status directory that cannot be there (a file took its name): False, logged.
    (data / "failed").rmdir()
    (data / "failed").write_text("not a directory")
    with capture_logs() as logs:
        assert manager.initialize_storage() is False
    assert logs and logs[0]["event"] == "initialize_storage_failed"
