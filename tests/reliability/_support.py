"""Shared helpers of the reliability suite: jobs, tree snapshots and the consistency check."""

from __future__ import annotations

import hashlib
import itertools
import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

from hybridstore import JobStatus, JobStore, RemoteJob
from hybridstore.files import Layout, read_job_file
from tests.conftest import T0, new_job

_counter = itertools.count()


def make_job(job_id: str | None = None, **fields: Any) -> RemoteJob:
    """``tests.conftest.new_job`` with ids unique across processes (the pid is in them) and
    created_at a microsecond apart, so crash runs never collide with earlier children."""
    n = next(_counter)
    fields.setdefault("created_at", T0 + timedelta(microseconds=n))
    return new_job(id=job_id or f"rjob-{os.getpid()}-{n:06d}", **fields)


def snapshot(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every entry under ``root`` (not following symlinks): kind, size, mtime, content hash."""
    found: dict[str, tuple[Any, ...]] = {}
    root = Path(root)
    if not os.path.lexists(root):
        return found
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            info = os.lstat(path)
            rel = str(path.relative_to(root))
            if stat.S_ISLNK(info.st_mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                found[rel] = ("file", info.st_size, info.st_mtime_ns, info.st_ino, digest)
            elif stat.S_ISDIR(info.st_mode):
                found[rel] = ("dir",)
            else:
                found[rel] = ("other", stat.S_IFMT(info.st_mode), info.st_mtime_ns)
    return found


def job_files(data_dir: Path) -> dict[str, list[JobStatus]]:
    """job id -> every status directory holding a ``<id>.json`` (from a raw listing)."""
    where: dict[str, list[JobStatus]] = {}
    layout = Layout(Path(data_dir))
    for entry in layout.scan():
        if entry.kind == "job":
            assert entry.job_id is not None
            where.setdefault(entry.job_id, []).append(entry.status)
    return where


def temp_files(data_dir: Path) -> list[Path]:
    return [e.path for e in Layout(Path(data_dir)).scan() if e.kind == "temp"]


def assert_consistent(store: JobStore) -> dict[str, RemoteJob]:
    """The crash-consistency invariants; returns the jobs by id, as their files say.

    Every job file parses strictly and sits in the directory of its status, no job is in
    two directories, no temp file is left, no intent marks an unfinished write, ``verify``
    is clean (the sidecar equals a fresh scan of the files) and ``repair`` finds nothing
    to do.
    """
    data_dir = store.data_dir
    jobs: dict[str, RemoteJob] = {}
    for job_id, statuses in job_files(data_dir).items():
        assert len(statuses) == 1, f"{job_id} is in {statuses}"
        path = store.layout.job_path(statuses[0], job_id)
        job = read_job_file(path, store.max_job_bytes, job_id, statuses[0])[0]
        jobs[job_id] = job
    assert temp_files(data_dir) == [], temp_files(data_dir)
    # Other processes' finished writes may leave intents until their next write: checking
    # them must find nothing to repair, and clears them.
    assert store.journal.recover_intents() == 0
    assert store.journal.unsettled_intents() == []
    report = store.verify()
    assert report.ok, report.to_dict()
    assert report.jobs == len(jobs)
    # The sidecar answers set queries: it must hold exactly the files' jobs and bodies.
    indexed = {j.id: j for j in store.find()}
    assert set(indexed) == set(jobs)
    for job_id, job in jobs.items():
        assert indexed[job_id] == job
        assert store.get(job_id) == job
    assert store.count() == len(jobs)
    return jobs


def fs_state(data_dir: Path) -> dict[str, tuple[str, int]]:
    """job id -> (status, version) read straight from the files (no store involved)."""
    found: dict[str, tuple[str, int]] = {}
    for job_id, statuses in job_files(data_dir).items():
        for status in statuses:
            path = Layout(Path(data_dir)).job_path(status, job_id)
            job = read_job_file(path, 1 << 30, job_id, status)[0]
            if job_id not in found or found[job_id][1] < job.version:
                found[job_id] = (status.value, job.version)
    return found
