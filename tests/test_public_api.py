"""The package's public surface: what ``import hybridstore`` offers, and what it must not do."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import hybridstore

# The contract's names (CONTRACT.md), plus the in-memory fake and copy_jobs.
PUBLIC = {
    "AccessDenied",
    "BackendUnavailable",
    "CorruptJobFile",
    "DuplicateJob",
    "HttpJobRepository",
    "HybridStoreError",
    "InvalidArgument",
    "InvalidJobId",
    "InvalidTransition",
    "JobAlreadyExists",
    "JobNotFound",
    "JobRepository",
    "JobStatus",
    "JobStore",
    "JobTooLarge",
    "LockTimeout",
    "MemoryJobRepository",
    "NotJobOwner",
    "PostgresJobRepository",
    "RemoteJob",
    "RemoteJobsStorage",
    "SchemaError",
    "StorageError",
    "StoreNotFound",
    "StorageManager",
    "UnsupportedFileSystem",
    "VersionConflict",
    "Worker",
    "WorkerSummary",
    "__version__",
    "copy_jobs",
    "open_repository",
    "storage_manager",
}

# The default location then is ./data/remote_jobs, relative to the subprocess's cwd.
NO_STORE_VARIABLES = {
    "HYBRIDSTORE_DATA_DIR": "",
    "MORAG_REMOTE_JOBS_DATA_DIR": "",
    "HYBRIDSTORE_URL": "",
}


def test_all_lists_the_public_names() -> None:
    assert set(hybridstore.__all__) == PUBLIC
    assert set(hybridstore.__all__) <= set(dir(hybridstore))
    assert isinstance(hybridstore.__version__, str) and hybridstore.__version__


def test_the_fake_and_copy_jobs_are_the_submodules_objects() -> None:
    from hybridstore.memory import MemoryJobRepository
    from hybridstore.transfer import copy_jobs

    assert hybridstore.MemoryJobRepository is MemoryJobRepository
    assert hybridstore.copy_jobs is copy_jobs


def test_importing_creates_nothing_and_imports_no_psycopg(tmp_path: Path) -> None:
    # A fresh interpreter in an empty folder: import, then touch every public name except
    # storage_manager (which is documented to create the default store on first use) and
    # HttpJobRepository (whose module imports httpx: touched after the check).
    code = (
        "import sys, hybridstore\n"
        "for name in hybridstore.__all__:\n"
        "    if name not in ('storage_manager', 'HttpJobRepository'):\n"
        "        getattr(hybridstore, name)\n"
        "heavy = ('psycopg', 'psycopg_pool', 'fastapi', 'starlette', 'uvicorn', 'httpx')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
        "hybridstore.HttpJobRepository\n"
        "print(sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in heavy}))\n"
    )
    env = {**os.environ, **NO_STORE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    before, after = done.stdout.strip().splitlines()
    assert before == "[]", done.stdout + done.stderr
    # The HTTP client needs httpx, and not the server's FastAPI, Starlette or uvicorn.
    assert after == "['httpx']", done.stdout
    assert list(tmp_path.iterdir()) == [], "importing hybridstore created files in the cwd"


def test_storage_manager_is_created_on_first_use_only(tmp_path: Path) -> None:
    code = (
        "import os, hybridstore\n"
        "assert not os.path.exists('data')\n"
        "manager = hybridstore.storage_manager\n"
        "assert manager is hybridstore.storage_manager\n"
        "assert not os.path.exists('data')\n"  # the manager, too, opens its store lazily
        "manager.remote_jobs\n"
        "print(os.path.isdir('data/remote_jobs/pending'))\n"
    )
    env = {**os.environ, **NO_STORE_VARIABLES}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert done.stdout.strip() == "True", done.stdout + done.stderr
