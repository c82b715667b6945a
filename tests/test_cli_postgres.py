"""The PostgreSQL side of the command line: db init/test/migrate/reset, copy, and the
commands that follow --data-dir or $HYBRIDSTORE_URL to a database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridstore import JobStatus, JobStore, open_repository
from hybridstore.cli import cli
from tests.conftest import new_job

pytestmark = pytest.mark.postgres


def invoke(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_db_init_test_and_reset(pg_schema_dsn: str) -> None:
    code, out, _ = invoke("db", "init", "--url", pg_schema_dsn)
    assert code == 0 and "applied 0001_remote_jobs" in out and "up to date" in out
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn, "--json")
    status = json.loads(out)
    assert code == 0 and status["ok"] is True and status["jobs"] == 0
    with open_repository(pg_schema_dsn) as repo:
        repo.add(new_job())
    # Refused at the prompt: nothing is dropped.
    code, _, _ = invoke("db", "reset", "--url", pg_schema_dsn, stdin="n\n")
    assert code == 1
    with open_repository(pg_schema_dsn) as repo:
        assert repo.count() == 1
    code, out, _ = invoke("db", "reset", "--url", pg_schema_dsn, "--force")
    assert code == 0
    with open_repository(pg_schema_dsn) as repo:
        assert repo.count() == 0


def test_db_commands_refuse_a_directory(tmp_path: Path) -> None:
    code, _, err = invoke("db", "test", "--url", str(tmp_path))
    assert code == 2 and "postgresql://" in err


def test_copy_a_directory_into_postgres_twice_then_back(pg_schema_dsn: str, tmp_path: Path) -> None:
    source = tmp_path / "jobs"
    with JobStore(source) as store:
        for n in range(30):
            job = store.add(new_job(content_type=["audio", "video"][n % 2]))
            if n % 3 == 0:
                store.save(job.model_copy(update={"status": JobStatus.COMPLETED}))
    code, out, _ = invoke("--data-dir", str(source), "copy", "--to", pg_schema_dsn, "--verify")
    assert code == 0, out
    assert "30 written" in out and "every job compared" in out
    code, out, _ = invoke("--data-dir", str(source), "copy", "--to", pg_schema_dsn, "--json")
    report = json.loads(out)
    assert code == 0 and report["written"] == 0 and report["unchanged"] == 30
    # The CLI's store follows --data-dir to the database...
    code, out, _ = invoke("--data-dir", pg_schema_dsn, "stats", "--json")
    assert json.loads(out)["status_counts"]["completed"] == 10
    code, out, _ = invoke("--data-dir", pg_schema_dsn, "list", "--json", "--status", "pending")
    assert len(json.loads(out)) == 20
    # ... and back into a new directory, identical.
    back = tmp_path / "back"
    code, out, _ = invoke("copy", "--from", pg_schema_dsn, "--to", str(back), "--verify")
    assert code == 0, out
    with JobStore(source) as a, JobStore(back) as b:
        assert a.find() == b.find()
        assert b.verify().ok


def test_hybridstore_url_switches_every_command(
    pg_schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HYBRIDSTORE_URL", pg_schema_dsn)
    with open_repository() as repo:
        job = repo.add(new_job())
    code, out, _ = invoke("show", job.id)
    assert code == 0 and json.loads(out)["id"] == job.id
    code, _, err = invoke("verify")
    assert code == 2 and "is for a data directory" in err  # a usage error


def test_an_unencoded_equals_sign_in_options_gets_a_hint() -> None:
    """Found by a newcomer: libpq's message ended in a literal newline, with no word on %3D."""
    code, _, err = invoke(
        "db", "test", "--url", "postgresql://postgres@127.0.0.1:5432/test?options=-csearch_path=x"
    )
    assert code == 1 and err.count("\n") == 1
    assert "write = as %3D" in err and "\\n" not in err


def test_db_commands_take_the_database_from_the_global_data_dir(pg_schema_dsn: str) -> None:
    """Found by a newcomer: every other command took --data-dir postgresql://..., db did not."""
    code, out, err = invoke("--data-dir", pg_schema_dsn, "db", "init", "--json")
    assert code == 0, err
    code, out, err = invoke("--data-dir", pg_schema_dsn, "db", "test", "--json")
    assert code == 0 and json.loads(out)["version"] > 0, err
