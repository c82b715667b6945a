"""What a newcomer meets in the first hour: copy says what it left behind, missing stores
and empty settings are named as given, auth and schema errors say what to do, commands of
the wrong backend are usage errors, and the reports explain themselves. Each through
click's runner and, for exit codes and one-line errors, as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridstore import JobStore
from hybridstore.cli import cli
from tests.conftest import new_job


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def hybridstore(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """The command as a real process (PYTHONPATH and the rest of the environment kept)."""
    environment = dict(os.environ)
    for variable in ("HYBRIDSTORE_URL", "HYBRIDSTORE_TOKEN"):
        environment.pop(variable, None)
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=environment,
        timeout=60,
        check=False,
    )


# -- 1. copy from a data directory copies what the files say ---------------------------


@pytest.fixture
def spoiled(tmp_path: Path) -> Path:
    """A store of four jobs: one file deleted by hand, one corrupted, two intact."""
    data = tmp_path / "source"
    with JobStore(data) as store:
        for n in range(4):
            store.add(new_job(id=f"job-{n}"))
    (data / "pending" / "job-0.json").unlink()
    (data / "pending" / "job-1.json").write_text("{not json")
    return data


def test_copy_skips_what_the_files_lost_and_says_so(spoiled: Path, tmp_path: Path) -> None:
    target = tmp_path / "target"
    code, out, err = invoke("copy", "--from", str(spoiled), "--to", str(target))
    assert code == 1 and err == "copy incomplete: unreadable job files were not copied\n"
    assert out.startswith("read 2 jobs: 2 written")
    assert "skipped 1 job whose file is gone" in out and "gone: job-0:" in out
    assert "skipped 1 unreadable job file" in out
    assert f"unreadable: {spoiled / 'pending' / 'job-1.json'}: invalid JSON" in out
    with JobStore(target, create=False) as copied:
        assert [job.id for job in copied.find()] == ["job-2", "job-3"]
    code, out, _ = invoke("copy", "--from", str(spoiled), "--to", str(target), "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False
    assert [(s["job_id"], s["kind"]) for s in report["skipped"]] == [
        ("job-0", "gone"),
        ("job-1", "unreadable"),
    ]
    # Once the unreadable file is dealt with, a gone job alone does not fail the copy.
    (spoiled / "pending" / "job-1.json").unlink()
    code, out, err = invoke("copy", "--from", str(spoiled), "--to", str(target))
    assert code == 0 and "ok: counts match" in out and "gone: job-1:" in out, err


def test_copy_skips_as_a_process(spoiled: Path, tmp_path: Path) -> None:
    done = hybridstore("copy", "--from", "source", "--to", "target", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "gone: job-0" in done.stdout and "unreadable: source/pending/job-1.json" in done.stdout
