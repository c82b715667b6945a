"""Logs never reach stdout: not the library's when nobody configured logging (stdout is the
application's), and not the command line's, whose --json answers stay clean JSON."""

from __future__ import annotations

import json
import subprocess
import textwrap
from pathlib import Path

import pytest

from hybridstore import JobStore
from tests.conftest import new_job, python_process


def python(code: str, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return python_process(*(["-c", textwrap.dedent(code)] if code else []), *args, cwd=cwd)


def spoil_sidecar(data: Path) -> None:
    """A garbage sidecar: the next open rebuilds it and logs two warnings."""
    (data / "hybridstore.sqlite3").write_bytes(b"garbage" * 50)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    with JobStore(tmp_path / "jobs") as store:
        store.add(new_job(id="job-1"))
        store.add(new_job(id="job-2", content_type="video"))
    spoil_sidecar(tmp_path / "jobs")
    return tmp_path / "jobs"


def test_an_unconfigured_library_logs_warnings_to_stderr_never_stdout(data: Path) -> None:
    done = python(
        """
        import sys
        from hybridstore import JobStore
        with JobStore(sys.argv[1]) as store:
            print(store.count())
        """,
        str(data),
        cwd=data.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "2\n"  # the application's output, and nothing else
    assert "sidecar_unusable" in done.stderr and "[hybridstore]" in done.stderr


def test_an_unconfigured_library_drops_quieter_events(tmp_path: Path) -> None:
    # A worker logs every step at info: nothing, on either stream, until configured.
    done = python(
        """
        import sys
        from hybridstore import JobStore, Worker
        from tests.conftest import new_job, python_process
        with JobStore(sys.argv[1]) as store:
            store.add(new_job(id="job-1"))
            print(Worker(store, lambda job: None).run(burst=True).completed)
        """,
        str(tmp_path / "jobs"),
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "1\n" and done.stderr == ""


def test_an_application_that_configures_structlog_gets_the_events(data: Path) -> None:
    # Imported first, configured afterwards: the application's configuration still wins.
    done = python(
        """
        import sys
        from hybridstore import JobStore
        import structlog
        structlog.configure(processors=[structlog.processors.JSONRenderer()])
        with JobStore(sys.argv[1]) as store:
            pass
        """,
        str(data),
        cwd=data.parent,
    )
    assert done.returncode == 0, done.stderr
    events = [json.loads(line)["event"] for line in done.stdout.splitlines()]
    assert "sidecar_unusable" in events and done.stderr == ""


@pytest.mark.parametrize(
    "args",
    [
        ["stats", "--json"],
        ["list", "--json"],
        ["verify", "--json"],
        ["expire", "--json"],
        ["cleanup", "--dry-run", "--json"],
        ["show", "job-1"],
    ],
    ids=" ".join,
)
def test_json_answers_stay_clean_while_warnings_are_logged(data: Path, args: list[str]) -> None:
    for level in ("warning", "debug"):
        spoil_sidecar(data)
        done = python(
            "",
            "-m",
            "hybridstore.cli",
            "--log-level",
            level,
            "--data-dir",
            str(data),
            *args,
            cwd=data.parent,
        )
        assert done.returncode == 0, done.stderr
        json.loads(done.stdout)  # nothing else on stdout
        assert "sidecar_unusable" in done.stderr


def test_copy_json_stays_clean_while_warnings_are_logged(data: Path) -> None:
    done = python(
        "",
        "-m",
        "hybridstore.cli",
        "copy",
        "--from",
        str(data),
        "--to",
        str(data.parent / "copy"),
        "--json",
        cwd=data.parent,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["written"] == 2
    assert "sidecar_unusable" in done.stderr
