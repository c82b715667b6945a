"""Handlers for ``hybridstore work`` in tests (``tests.worker_handlers:NAME``).

``HS_TEST_MARKER``: a file each handler appends the job id to when it starts, so a test
knows the handler is running; ``HS_TEST_SLEEP``: how long ``slow`` works.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from hybridstore import RemoteJob


def _started(job: RemoteJob) -> None:
    marker = os.environ.get("HS_TEST_MARKER")
    if marker:
        with Path(marker).open("a") as out:
            out.write(job.id + "\n")


def slow(job: RemoteJob) -> dict[str, Any]:
    """Works ``HS_TEST_SLEEP`` seconds (default 1.5), then completes with the job's id."""
    _started(job)
    time.sleep(float(os.environ.get("HS_TEST_SLEEP", "1.5")))
    return {"done": job.id}


def echo(job: RemoteJob) -> dict[str, Any]:
    """Completes at once with the job's options."""
    _started(job)
    return {"options": job.task_options}


def broken(job: RemoteJob) -> None:
    """Always fails."""
    _started(job)
    raise ValueError(f"cannot convert {job.source_file_path}")
