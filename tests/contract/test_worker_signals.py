"""``hybridstore work`` as a real process under SIGTERM: the first signal lets the job finish
and the worker exit 0; a second gives the job back at once, pending and claimable.

Runs on every backend a separate process can open (the file store and PostgreSQL): the
worker only uses calls every backend already has.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hybridstore import JobRepository, JobStatus
from tests.conftest import new_job

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _start_worker(target: str, marker: Path, sleep: float) -> subprocess.Popen[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "HS_TEST_MARKER": str(marker),
        "HS_TEST_SLEEP": str(sleep),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hybridstore.cli",
            "--data-dir",
            target,
            "work",
            "tests.worker_handlers:slow",
            "--lease",
            "2",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(marker: Path, worker: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if marker.exists() and marker.read_text().strip():
            return marker.read_text().split()[0]
        assert worker.poll() is None, worker.communicate()
        time.sleep(0.05)
    raise AssertionError("the handler never started")


def test_sigterm_lets_the_current_job_finish_then_exits_0(
    repo: JobRepository, repo_target: str, tmp_path: Path
) -> None:
    first = repo.add(new_job())
    second = repo.add(new_job())
    marker = tmp_path / "started"
    worker = _start_worker(repo_target, marker, sleep=3)  # longer than the lease: heartbeats
    assert _wait_for(marker, worker) == first.id
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert "1 completed" in out
    done = repo.get(first.id)
    assert done is not None and done.status is JobStatus.COMPLETED, err
    assert done.result_data == {"done": first.id}
    assert done.attempt == 1, "the lease was renewed in the background, never lost"
    untouched = repo.get(second.id)
    assert untouched is not None and untouched.status is JobStatus.PENDING
    assert marker.read_text().split() == [first.id]


def test_a_second_sigterm_gives_the_job_back_at_once(
    repo: JobRepository, repo_target: str, tmp_path: Path
) -> None:
    job = repo.add(new_job())
    marker = tmp_path / "started"
    worker = _start_worker(repo_target, marker, sleep=120)
    _wait_for(marker, worker)
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)  # at once, not after the 120 s of work
    assert worker.returncode == 0, err
    assert "1 given back" in out
    back = repo.get(job.id)
    assert back is not None and back.status is JobStatus.PENDING, err
    assert (back.worker_id, back.timeout_at, back.retry_count) == (None, None, 0)
    again = repo.claim_next("another-worker")
    assert again is not None and again.id == job.id and again.attempt == 2
