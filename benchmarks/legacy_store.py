"""The older JSON-index design, re-implemented minimally and faithfully for comparison.

This is the store hybridstore replaces (MoRAG's file-based ``RemoteJobsStorage``), reduced
to what the benchmarks call, with the same algorithms and therefore the same costs:

- one ``<status>/<id>.json`` per job, written in place with ``json.dump(indent=2)``
  (no temp file, no fsync), the old file unlinked when the status changed;
- a per-job ``fcntl.flock`` on ``.locks/<id>.lock`` around a save;
- three JSON index files at the top — ``content_type_index.json`` (content type → ids),
  ``worker_index.json`` (worker → ids), ``ingestion_task_index.json`` (task → id) — each
  loaded, changed and rewritten in full (``indent=2``) on every save;
- locating a job = listing the data directory and probing each status directory;
- by status = glob the directory and load every file; by content type or worker = load
  the index, then locate and load each listed job; expired = load every pending and
  processing file; old jobs = stat every terminal file, load the old ones; statistics =
  glob-count each status directory, load the content-type index, ``rglob`` every file's size.

Dicts in, dicts out, as in the older design. The only addition is the ``now`` parameter of
``get_expired_jobs`` / ``get_old_jobs`` (the original always used ``utcnow()``), so that the
benchmarks ask the same question of every implementation; it changes no cost.
"""

from __future__ import annotations

import fcntl
import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

__all__ = ["INDEX_FILES", "STATUSES", "LegacyJobStore", "build_indexes"]

STATUSES = ("pending", "processing", "completed", "failed", "timeout", "cancelled")
TERMINAL = ("completed", "failed", "timeout", "cancelled")
CONTENT_TYPE_INDEX = "content_type_index.json"
WORKER_INDEX = "worker_index.json"
TASK_INDEX = "ingestion_task_index.json"
INDEX_FILES = (CONTENT_TYPE_INDEX, WORKER_INDEX, TASK_INDEX)


def _naive_utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC).replace(tzinfo=None)
    return now.astimezone(UTC).replace(tzinfo=None) if now.tzinfo else now


def build_indexes(data_dir: Path, jobs: list[dict[str, Any]]) -> None:
    """Write the three index files for ``jobs``, as a sequence of saves would have."""
    by_type: dict[str, list[str]] = {}
    by_worker: dict[str, list[str]] = {}
    by_task: dict[str, str] = {}
    for job in jobs:
        by_type.setdefault(job["content_type"], []).append(job["id"])
        if job.get("worker_id"):
            by_worker.setdefault(job["worker_id"], []).append(job["id"])
        by_task[job["ingestion_task_id"]] = job["id"]
    for name, index in ((CONTENT_TYPE_INDEX, by_type), (WORKER_INDEX, by_worker),
                        (TASK_INDEX, by_task)):
        with open(data_dir / name, "w") as handle:
            json.dump(index, handle, indent=2)


class LegacyJobStore:
    """Jobs as JSON files in status directories plus three whole-file JSON indexes."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir)
        self.lock_dir = self.data_dir / ".locks"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.lock_dir.mkdir(exist_ok=True)
        for status in STATUSES:
            (self.data_dir / status).mkdir(exist_ok=True)
        for name in INDEX_FILES:
            path = self.data_dir / name
            if not path.exists():
                path.write_text("{}")

    # -- locking --------------------------------------------------------------------------

    def _acquire_lock(self, job_id: str, timeout: float = 5.0) -> IO[str] | None:
        lock_file = self.lock_dir / f"{job_id}.lock"
        lock_file.touch()
        handle = open(lock_file, "w")  # noqa: SIM115 - released in _release_lock
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                return handle
            except BlockingIOError:
                time.sleep(0.1)
        handle.close()
        return None

    @staticmethod
    def _release_lock(handle: IO[str]) -> None:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        handle.close()

    # -- files ----------------------------------------------------------------------------

    def _job_path(self, job_id: str, status: str) -> Path:
        return self.data_dir / status / f"{job_id}.json"

    def _find_job_file(self, job_id: str) -> Path | None:
        for status_dir in self.data_dir.iterdir():
            if status_dir.is_dir() and not status_dir.name.startswith("."):
                candidate = status_dir / f"{job_id}.json"
                if candidate.exists():
                    return candidate
        return None

    def _update_indexes(self, job: dict[str, Any], operation: str = "add") -> None:
        job_id = job["id"]
        content_type = job["content_type"]
        worker_id = job.get("worker_id")
        task_id = job["ingestion_task_id"]

        def rewrite(name: str, change: Any) -> None:
            with open(self.data_dir / name, "r+") as handle:
                index = json.load(handle)
                change(index)
                handle.seek(0)
                json.dump(index, handle, indent=2)
                handle.truncate()

        def listed(key: str) -> Any:
            def change(index: dict[str, list[str]]) -> None:
                if operation == "add":
                    ids = index.setdefault(key, [])
                    if job_id not in ids:
                        ids.append(job_id)
                elif key in index and job_id in index[key]:
                    index[key].remove(job_id)

            return change

        def task(index: dict[str, str]) -> None:
            if operation == "add":
                index[task_id] = job_id
            else:
                index.pop(task_id, None)

        rewrite(CONTENT_TYPE_INDEX, listed(content_type))
        if worker_id:
            rewrite(WORKER_INDEX, listed(worker_id))
        rewrite(TASK_INDEX, task)

    # -- writes ---------------------------------------------------------------------------

    def save_job(self, job: dict[str, Any]) -> bool:
        job_id = job["id"]
        lock = self._acquire_lock(job_id)
        if lock is None:
            return False
        try:
            old_file = self._find_job_file(job_id)
            new_file = self._job_path(job_id, job["status"])
            with open(new_file, "w") as handle:
                json.dump(job, handle, indent=2)
            if old_file and old_file != new_file:
                old_file.unlink()
            self._update_indexes(job, "add")
            return True
        finally:
            self._release_lock(lock)

    def delete_job(self, job_id: str) -> bool:
        lock = self._acquire_lock(job_id)
        if lock is None:
            return False
        try:
            job_file = self._find_job_file(job_id)
            if not job_file:
                return False
            with open(job_file) as handle:
                job = json.load(handle)
            job_file.unlink()
            self._update_indexes(job, "remove")
            return True
        finally:
            self._release_lock(lock)

    # -- reads ----------------------------------------------------------------------------

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        job_file = self._find_job_file(job_id)
        if not job_file:
            return None
        with open(job_file) as handle:
            return json.load(handle)  # type: ignore[no-any-return]

    def find_jobs_by_status(self, status: str) -> list[dict[str, Any]]:
        jobs = []
        for job_file in (self.data_dir / status).glob("*.json"):
            with open(job_file) as handle:
                jobs.append(json.load(handle))
        jobs.sort(key=lambda job: job.get("created_at", ""))
        return jobs

    def _load_listed(self, index_name: str, key: str) -> list[dict[str, Any]]:
        with open(self.data_dir / index_name) as handle:
            index = json.load(handle)
        jobs = []
        for job_id in index.get(key, []):
            job = self.load_job(job_id)
            if job:
                jobs.append(job)
        return jobs

    def find_jobs_by_content_type(self, content_type: str) -> list[dict[str, Any]]:
        return self._load_listed(CONTENT_TYPE_INDEX, content_type)

    def find_jobs_by_worker(self, worker_id: str) -> list[dict[str, Any]]:
        return self._load_listed(WORKER_INDEX, worker_id)

    def find_job_by_ingestion_task(self, task_id: str) -> dict[str, Any] | None:
        with open(self.data_dir / TASK_INDEX) as handle:
            index = json.load(handle)
        job_id = index.get(task_id)
        return self.load_job(job_id) if job_id else None

    def get_expired_jobs(self, now: datetime | None = None) -> list[dict[str, Any]]:
        cutoff = _naive_utc(now).isoformat()
        expired = []
        for status in ("pending", "processing"):
            for job_file in (self.data_dir / status).glob("*.json"):
                with open(job_file) as handle:
                    job = json.load(handle)
                timeout_at = job.get("timeout_at")
                if timeout_at and timeout_at < cutoff:
                    expired.append(job)
        return expired

    def get_old_jobs(self, days_old: int = 7, now: datetime | None = None) -> list[dict[str, Any]]:
        # The original compared naive local mtimes with utcnow(); on a UTC machine, as here,
        # that is the same as comparing UTC instants.
        cutoff = (_naive_utc(now) - timedelta(days=days_old)).replace(tzinfo=UTC)
        old = []
        for status in TERMINAL:
            for job_file in (self.data_dir / status).glob("*.json"):
                mtime = datetime.fromtimestamp(job_file.stat().st_mtime, UTC)
                if mtime < cutoff:
                    with open(job_file) as handle:
                        old.append(json.load(handle))
        return old

    def get_statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "total_jobs": 0,
            "status_counts": {},
            "content_type_counts": {},
            "storage_size_mb": 0,
        }
        for status_dir in self.data_dir.iterdir():
            if status_dir.is_dir() and not status_dir.name.startswith("."):
                count = len(list(status_dir.glob("*.json")))
                stats["status_counts"][status_dir.name] = count
                stats["total_jobs"] += count
        with open(self.data_dir / CONTENT_TYPE_INDEX) as handle:
            stats["content_type_counts"] = {k: len(v) for k, v in json.load(handle).items()}
        total = sum(path.stat().st_size for path in self.data_dir.rglob("*.json"))
        stats["storage_size_mb"] = round(total / (1024 * 1024), 2)
        return stats
