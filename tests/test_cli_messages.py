"""Output that explains itself: list's table, cleanup --json, copy's long lists, the db
commands' --url, a failing PostgreSQL migration, the demo's wording."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridstore import JobStatus, JobStore
from hybridstore.cli import cli
from tests.conftest import T0, new_job


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def listed(tmp_path: Path) -> Path:
    data = tmp_path / "jobs"
    with JobStore(data) as store:
        store.add(new_job(id="short", content_type="audio", created_at=T0))
        store.add(
            new_job(
                id="a-much-longer-job-identifier",
                content_type="application-pdf",
                status=JobStatus.PROCESSING,
                worker_id="gpu-worker-12",
                created_at=T0.replace(microsecond=250000),
            )
        )
    return data


def test_list_is_an_aligned_table_with_the_json_timestamps(listed: Path) -> None:
    code, out, _ = invoke("--data-dir", str(listed), "list")
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == [
        "ID", "STATUS", "CONTENT", "TYPE", "WORKER", "CREATED", "PRIORITY", "NOT", "BEFORE",
        "RETRIES",
    ]
    assert len(rows) == 2
    # Every column starts where its header does.
    starts = [m.start() for m in re.finditer(r"(?<!\S)(?!TYPE|BEFORE)\S+", header)]
    for row in rows:
        assert [m.start() for m in re.finditer(r"\S+", row)] == starts, row
    stored = json.loads(invoke("--data-dir", str(listed), "list", "--json")[1])
    assert [job["created_at"] for job in stored] == [
        "2026-01-01T12:00:00Z",
        "2026-01-01T12:00:00.250000Z",
    ]
    for row, job in zip(rows, stored, strict=True):
        assert job["created_at"] in row.split() and "+00:00" not in row


def test_list_shows_priority_and_when_a_delayed_job_becomes_ready(tmp_path: Path) -> None:
    """Found by a newcomer: a delayed or ranked job looked like any other pending job."""
    store = str(tmp_path / "d")
    invoke("--data-dir", store, "init")
    invoke("--data-dir", store, "add", "--task", "t", "--source", "s", "--type", "c",
           "--priority", "7", "--delay", "3600")
    code, out, _ = invoke("--data-dir", store, "list")
    (job,) = json.loads(invoke("--data-dir", store, "list", "--json")[1])
    cells = out.splitlines()[1].split()
    assert code == 0 and "7" in cells and job["not_before"] in cells
    assert invoke("--data-dir", store, "list", "--limit", "0")[1] == "no jobs listed (--limit 0)\n"


def test_list_says_when_no_job_matched(listed: Path) -> None:
    code, out, _ = invoke("--data-dir", str(listed), "list", "--status", "failed")
    assert code == 0 and out == "no jobs matched\n"
    code, out, _ = invoke("--data-dir", str(listed), "list", "--status", "failed", "--json")
    assert code == 0 and json.loads(out) == []


def test_list_as_a_process(listed: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "--data-dir", str(listed), "list"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("ID ") and "2026-01-01T12:00:00Z" in lines[1]


def test_cleanup_json(tmp_path: Path) -> None:
    data = tmp_path / "jobs"
    with JobStore(data) as store:
        store.add(new_job(id="old", status=JobStatus.COMPLETED, completed_at=T0))
        store.add(new_job(id="waiting"))
    code, out, _ = invoke("--data-dir", str(data), "cleanup", "--dry-run", "--json")
    assert code == 0
    assert json.loads(out) == {
        "days": 7, "dry_run": True, "deleted": 0, "would_delete": 1, "job_ids": ["old"]
    }
    code, out, _ = invoke("--data-dir", str(data), "cleanup", "--days", "1", "--json")
    assert code == 0 and json.loads(out) == {"days": 1, "dry_run": False, "deleted": 1}
    code, out, _ = invoke("--data-dir", str(data), "cleanup", "--json")
    assert json.loads(out)["deleted"] == 0


def test_copy_says_how_many_lines_it_did_not_show(tmp_path: Path) -> None:
    source, target = tmp_path / "source", tmp_path / "target"
    with JobStore(source) as store:
        store.add(new_job(id="shared"))
    with JobStore(target) as store:
        for n in range(27):
            store.add(new_job(id=f"extra-{n:02d}"))
    code, out, _ = invoke("copy", "--from", str(source), "--to", str(target), "--verify")
    assert code == 1
    assert len(re.findall(r"^extra: ", out, flags=re.MULTILINE)) == 20
    assert "… and 7 more differences not shown" in out
    code, out, _ = invoke("copy", "--from", str(source), "--to", str(target), "--json")
    assert code == 1


def test_db_url_help_is_truthful_and_a_missing_url_is_a_usage_error() -> None:
    for command in ("init", "migrate", "test", "reset"):
        code, out, _ = invoke("db", command, "--help")
        assert code == 0
        assert "[required]" not in out and "$HYBRIDSTORE_URL" in out
        code, _, err = invoke("db", command, env={"HYBRIDSTORE_URL": ""})
        assert code == 2 and "--url" in err and "HYBRIDSTORE_URL" in err


@pytest.mark.postgres
def test_a_failing_postgres_migration_names_its_file(
    pg_schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hybridstore import pgschema
    from hybridstore.migrations import Migration, load_migrations

    known = load_migrations("postgres")
    broken = Migration(len(known) + 1, "divide_badly", "SELECT 1 / 0")

    def with_a_broken_one(kind: str) -> list[Migration]:
        return [*load_migrations(kind), broken]

    monkeypatch.setattr(pgschema, "load_migrations", with_a_broken_one)
    code, out, err = invoke("db", "migrate", "--url", pg_schema_dsn)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{broken.version:04d}_divide_badly.sql" in err and "DivisionByZero" in err
    # One transaction: the migrations before the broken one were rolled back as well.
    monkeypatch.undo()
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn, "--json")
    assert json.loads(out)["version"] == 0


def test_demo_speaks_in_the_right_plurals_and_says_its_workers_sleep(tmp_path: Path) -> None:
    code, out, err = invoke(
        "--data-dir",
        str(tmp_path / "demo"),
        "demo",
        "--jobs",
        "1",
        "--workers",
        "1",
        "--fail-rate",
        "0",
    )
    assert code == 0, err
    assert out.startswith("demo: 1 job, 1 worker process, store ")
    assert re.search(r"^1 claim in [\d.]+s: [\d.]+ claims/s with 1 worker$", out, re.MULTILINE)
    assert "sleep" in out and "not the store's" in out
    assert re.search(r"time inside store calls: [\d.]+ ms per claim", out)
    assert "store now holds 1 job:" in out
    assert not re.search(r"\b1 (jobs|claims(?!/s)|workers)\b", out)  # "1 claims/s" is a rate
    code, out, _ = invoke(
        "--data-dir", str(tmp_path / "demo"), "demo", "--jobs", "1", "--workers", "1", "--json"
    )
    report = json.loads(out)
    assert report["work_seconds_per_job"] > 0 and report["store_ms_per_claim"] > 0


def test_copy_onto_the_store_it_reads_is_a_usage_error(tmp_path: Path) -> None:
    """Found by a newcomer: ``copy --from st --to st`` was accepted with exit 0."""
    JobStore(tmp_path / "st").close()
    code, _, err = invoke("copy", "--from", str(tmp_path / "st"), "--to", str(tmp_path / "st/."))
    assert code == 2 and "copied from" in err


def test_a_global_option_after_the_command_says_where_it_goes(tmp_path: Path) -> None:
    code, _, err = invoke("list", "--data-dir", str(tmp_path))
    assert code == 2 and "--data-dir is a global option: it goes before the command" in err
