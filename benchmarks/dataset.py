"""A deterministic, realistic job population for the benchmarks, and fast store builders.

Every store size is generated from a seeded RNG, so two builds of the same size hold the same
bytes. Times are relative to ``DATASET_NOW`` (a fixed instant), and the benchmarks pass it as
``now=`` to ``expired`` and ``old_jobs``: the answers do not drift with the wall clock, so a
cached store stays valid.

Population (per job, independently drawn):

- status: pending 25 %, processing 10 %, completed 45 %, failed 10 %, timeout 5 %,
  cancelled 5 %;
- content type: document 40 %, audio 20 %, video 15 %, image 15 %, web 10 %;
- worker: one of 8 (``worker-1`` … ``worker-8``) once a job has been claimed;
- a quarter of the pending and processing jobs are past their ``timeout_at``;
- ``created_at`` spread over the 30 days before ``DATASET_NOW``; terminal jobs finished
  minutes to hours after creation, so about three quarters of them are older than 7 days;
- bodies of about 1 KB: task options, a source path, a result for completed jobs, an error
  message for failed ones.
"""

from __future__ import annotations

import json
import os
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from hybridstore import JobStatus, RemoteJob

__all__ = [
    "CONTENT_TYPES",
    "DATASET_NOW",
    "WORKERS",
    "generate_jobs",
    "last_write_time",
    "legacy_body",
    "new_job",
    "write_store_files",
]

DATASET_NOW = datetime(2026, 11, 1, 12, 0, 0, tzinfo=UTC)
SEED = 20261101

STATUSES = [
    (JobStatus.PENDING, 25),
    (JobStatus.PROCESSING, 10),
    (JobStatus.COMPLETED, 45),
    (JobStatus.FAILED, 10),
    (JobStatus.TIMEOUT, 5),
    (JobStatus.CANCELLED, 5),
]
CONTENT_TYPES = [("document", 40), ("audio", 20), ("video", 15), ("image", 15), ("web", 10)]
WORKERS = [f"worker-{n}" for n in range(1, 9)]
EXTENSIONS = {
    "document": ["pdf", "docx", "pptx", "xlsx"],
    "audio": ["mp3", "wav", "m4a"],
    "video": ["mp4", "mkv", "mov"],
    "image": ["png", "jpg", "tiff"],
    "web": ["html"],
}
LANGUAGES = ["en", "de", "fr", "es", "it", "nl", "pt"]
ERRORS = [
    "ConversionError: unsupported codec in stream 1 (hevc main10)",
    "TimeoutError: remote converter did not answer within 600 s",
    "OSError: [Errno 28] No space left on device while writing the transcript",
    "ValueError: document is encrypted and no password was supplied",
]


def _pick(rng: random.Random, weighted: list[tuple[Any, int]]) -> Any:
    return rng.choices([v for v, _ in weighted], weights=[w for _, w in weighted])[0]


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _task_options(rng: random.Random, content_type: str) -> dict[str, Any]:
    options: dict[str, Any] = {
        "language": rng.choice(LANGUAGES),
        "webhook_url": f"https://ingest.example.com/hooks/{rng.getrandbits(64):016x}",
        "priority": rng.randint(0, 9),
        "chunking": {
            "strategy": rng.choice(["page", "paragraph", "sentence", "semantic"]),
            "chunk_size": rng.choice([512, 1000, 2000, 4000]),
            "overlap": rng.choice([0, 50, 100, 200]),
        },
        "extract_metadata": rng.random() < 0.8,
        "tags": rng.sample(["finance", "legal", "hr", "support", "sales", "research",
                            "archive", "q3", "q4", "customer", "internal"], k=3),
        "collection": f"collection-{rng.randint(1, 40):03d}",
    }
    if content_type in ("audio", "video"):
        options["transcription"] = {
            "model": rng.choice(["whisper-large-v3", "whisper-medium", "whisper-small"]),
            "diarization": rng.random() < 0.5,
            "timestamps": "segment",
        }
    elif content_type == "document":
        options["ocr"] = {"enabled": rng.random() < 0.3, "dpi": 300, "engine": "tesseract"}
    return options


def new_job(rng: random.Random, *, now: datetime = DATASET_NOW, **fields: Any) -> RemoteJob:
    """A fresh pending job shaped like the population (for adds and claims)."""
    content_type = _pick(rng, CONTENT_TYPES)
    job_id = _uuid(rng)
    values: dict[str, Any] = {
        "id": job_id,
        "ingestion_task_id": f"ingest-{_uuid(rng)}",
        "source_file_path": _source_path(rng, content_type, now),
        "content_type": content_type,
        "task_options": _task_options(rng, content_type),
        "created_at": now,
    }
    values.update(fields)
    return RemoteJob(**values)


def _source_path(rng: random.Random, content_type: str, created: datetime) -> str:
    ext = rng.choice(EXTENSIONS[content_type])
    return (
        f"/srv/morag/uploads/{created:%Y/%m/%d}/{rng.getrandbits(48):012x}/"
        f"upload-{rng.randint(1, 99999):05d}-{content_type}-source.{ext}"
    )


def _job(rng: random.Random) -> RemoteJob:
    status = _pick(rng, STATUSES)
    content_type = _pick(rng, CONTENT_TYPES)
    created = DATASET_NOW - timedelta(seconds=rng.uniform(60, 30 * 86400))
    fields: dict[str, Any] = {
        "id": _uuid(rng),
        "ingestion_task_id": f"ingest-{_uuid(rng)}",
        "source_file_path": _source_path(rng, content_type, created),
        "content_type": content_type,
        "task_options": _task_options(rng, content_type),
        "status": status,
        "created_at": created,
        "max_retries": 3,
    }
    overdue = rng.random() < 0.25
    if status is JobStatus.PENDING:
        # An optional deadline set by the creator; a quarter of them have passed.
        fields["timeout_at"] = (
            DATASET_NOW - timedelta(seconds=rng.uniform(60, 3 * 86400))
            if overdue
            else DATASET_NOW + timedelta(days=rng.uniform(1, 30))
        )
        fields["retry_count"] = rng.choice([0, 0, 0, 1])
    else:
        started = created + timedelta(seconds=rng.uniform(1, 600))
        fields["worker_id"] = rng.choice(WORKERS)
        fields["started_at"] = started
        fields["attempt"] = rng.choice([1, 1, 1, 2])
        if status is JobStatus.PROCESSING:
            fields["timeout_at"] = (
                DATASET_NOW - timedelta(seconds=rng.uniform(1, 3600))
                if overdue
                else DATASET_NOW + timedelta(seconds=rng.uniform(60, 300))
            )
        else:
            finished = started + timedelta(seconds=rng.uniform(5, 4 * 3600))
            fields["completed_at"] = min(finished, DATASET_NOW - timedelta(seconds=1))
            fields["timeout_at"] = started + timedelta(seconds=300)
            if status is JobStatus.COMPLETED:
                fields["result_data"] = {
                    "markdown_path": f"/srv/morag/converted/{fields['id']}.md",
                    "pages": rng.randint(1, 400),
                    "word_count": rng.randint(100, 200000),
                    "sha256": f"{rng.getrandbits(256):064x}",
                    "duration_s": round(rng.uniform(1, 4000), 2),
                }
            elif status is JobStatus.FAILED:
                fields["error_message"] = rng.choice(ERRORS)
                fields["retry_count"] = 3
            elif status is JobStatus.TIMEOUT:
                fields["error_message"] = "lease expired (attempt 3)"
                fields["retry_count"] = 3
    fields["version"] = rng.randint(1, 6)
    return RemoteJob(**fields)


def generate_jobs(count: int, seed: int = SEED) -> Iterator[RemoteJob]:
    """The first ``count`` jobs of the population (the same ones for every size)."""
    rng = random.Random(seed)
    for _ in range(count):
        yield _job(rng)


def last_write_time(job: RemoteJob) -> float:
    """When the job's file was last written, as a POSIX timestamp (used as its mtime)."""
    moment = job.completed_at or job.started_at or job.created_at
    return moment.timestamp()


def legacy_body(job: RemoteJob) -> dict[str, Any]:
    """The job as the older design stored it: its dict shape, naive ISO timestamps (UTC)."""
    data: dict[str, Any] = json.loads(job.to_json())
    for key in ("created_at", "started_at", "completed_at", "timeout_at"):
        value = getattr(job, key)
        data[key] = value.replace(tzinfo=None).isoformat() if value is not None else None
    data.pop("version", None)
    data.pop("attempt", None)
    return data


def write_store_files(root: Path, jobs: list[RemoteJob], *, legacy: bool = False) -> None:
    """Write one ``<status>/<id>.json`` per job straight to disk (no fsync), with the
    job's last write time as mtime. ``legacy`` writes the older design's body format."""
    for status in JobStatus:
        (root / status.value).mkdir(parents=True, exist_ok=True)
    for job in jobs:
        path = root / job.status.value / f"{job.id}.json"
        data = json.dumps(legacy_body(job), indent=2).encode() if legacy else job.to_json()
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        stamp = last_write_time(job)
        os.utime(path, (stamp, stamp))
