"""The command line, through click's runner and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hybridstore import JobStatus, JobStore
from hybridstore.cli import cli
from tests.conftest import T0, downgrade_sidecar, new_job


def run(data_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def filled(data_dir: Path) -> Path:
    with JobStore(data_dir) as store:
        store.add(new_job(id="p1", content_type="audio"))
        store.add(new_job(id="p2", content_type="video", timeout_at=T0))
        store.add(new_job(id="c1", status=JobStatus.COMPLETED, worker_id="w1", completed_at=T0))
    return data_dir


def test_every_command_has_help() -> None:
    def walk(group: click.Group, prefix: str) -> None:
        for name, command in group.commands.items():
            assert command.help, f"{prefix}{name} has no help text"
            for param in command.params:
                if isinstance(param, click.Option) and param.name != "help":
                    assert param.help, f"{prefix}{name} {param.opts[0]} has no help text"
            if isinstance(command, click.Group):
                walk(command, f"{prefix}{name} ")

    walk(cli, "")


def test_init_creates_the_layout(data_dir: Path) -> None:
    code, out, _ = run(data_dir, "init")
    assert code == 0 and "initialized" in out
    assert (data_dir / "pending").is_dir()


def test_list_json_prints_jobs_as_stored(filled: Path) -> None:
    code, out, _ = run(filled, "list", "--json")
    assert code == 0
    jobs = json.loads(out)
    assert [j["id"] for j in jobs] == ["p1", "p2", "c1"]
    assert jobs[0]["version"] == 1
    code, out, _ = run(filled, "list", "--json", "--status", "pending", "--content-type", "video")
    assert [j["id"] for j in json.loads(out)] == ["p2"]
    code, out, _ = run(filled, "list", "--status", "completed", "--worker", "w1")
    assert code == 0 and "c1" in out and "p1" not in out


def test_show(filled: Path) -> None:
    code, out, _ = run(filled, "show", "p1")
    assert code == 0 and json.loads(out)["content_type"] == "audio"
    code, out, err = run(filled, "show", "nope")
    assert code == 1 and "not found" in err and "Traceback" not in err


def test_stats_json(filled: Path) -> None:
    code, out, _ = run(filled, "stats", "--json")
    stats = json.loads(out)
    assert code == 0 and stats["total_jobs"] == 3
    assert stats["status_counts"]["pending"] == 2
    code, out, _ = run(filled, "stats")
    assert code == 0 and "total jobs: 3" in out


def test_verify_reports_drift_and_repairs(filled: Path) -> None:
    assert run(filled, "verify")[0] == 0
    (filled / "pending" / "p1.json").unlink()
    code, out, _ = run(filled, "verify", "--json")
    report = json.loads(out)
    assert code == 1 and report["ok"] is False and report["counts"]["orphaned"] == 1
    code, out, _ = run(filled, "verify", "--repair")
    assert code == 0 and "agree" in out
    assert run(filled, "verify")[0] == 0


def test_reindex_prints_a_summary_and_names_skipped_files(filled: Path) -> None:
    (filled / "pending" / "junk.json").write_text("[1, 2]")
    code, out, _ = run(filled, "reindex")
    assert code == 0
    assert "indexed 3 jobs" in out and "junk.json" in out and "not an object" in out


def test_expire_and_cleanup(filled: Path) -> None:
    with JobStore(filled) as store:
        job = store.claim_next("w9", lease_seconds=0.001)
        assert job is not None
    code, out, _ = run(filled, "expire")
    assert code == 0 and "expired 1 job\n" in out
    with JobStore(filled) as store:
        (old,) = store.old_jobs(7)
    code, out, _ = run(filled, "cleanup", "--days", "7", "--dry-run")
    assert code == 0 and out.splitlines()[0] == old.id  # which jobs, then how many
    assert "would delete 1 job finished" in out
    assert run(filled, "cleanup", "--days", "7")[1].startswith("deleted 1 job finished")
    assert json.loads(run(filled, "stats", "--json")[1])["total_jobs"] == 2


def test_migrate_applies_what_is_pending(data_dir: Path) -> None:
    from hybridstore.migrations import load_migrations

    known = load_migrations("sidecar")
    assert run(data_dir, "init")[0] == 0
    code, out, _ = run(data_dir, "migrate")
    assert code == 0 and out == f"sidecar schema is at version {len(known)}\n"
    downgrade_sidecar(data_dir / "hybridstore.sqlite3", 2)
    code, out, _ = run(data_dir, "migrate")
    assert code == 0
    applied = "".join(f"applied {m.version:04d}_{m.name}\n" for m in known[2:])
    assert out == applied + f"sidecar schema is at version {len(known)}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["show", "../etc/passwd"],
        ["show", "a/b"],
        ["show", "x\x1b[31mred"],
        ["show", "line\nbreak"],
    ],
)
def test_hostile_arguments_get_one_escaped_line_and_exit_1(data_dir: Path, args: list[str]) -> None:
    JobStore(data_dir).close()
    code, _out, err = run(data_dir, *args)
    assert code == 1
    assert err.count("\n") == 1 and err.startswith("error: invalid job id")
    assert "\x1b" not in err and "Traceback" not in err


def test_usage_errors_exit_2(data_dir: Path) -> None:
    assert run(data_dir, "list", "--status", "bogus")[0] == 2
    assert run(data_dir, "cleanup", "--days", "-1")[0] == 2
    assert run(data_dir, "no-such-command")[0] == 2


def test_unknown_url_scheme_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--data-dir", "redis://localhost", "stats"])
    assert result.exit_code == 1 and "no backend" in result.stderr


def test_a_real_subprocess_with_json_logs(tmp_path: Path) -> None:
    env = {**os.environ, "HYBRIDSTORE_DATA_DIR": str(tmp_path / "env-dir")}
    env.pop("HYBRIDSTORE_URL", None)
    # A garbage sidecar is rebuilt on open, and the event is logged as JSON on stderr.
    (tmp_path / "env-dir").mkdir()
    (tmp_path / "env-dir" / "hybridstore.sqlite3").write_bytes(b"garbage" * 50)
    done = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "--json-logs", "stats", "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["total_jobs"] == 0
    events = [json.loads(line) for line in done.stderr.splitlines()]
    assert any(e["event"] == "sidecar_unusable" for e in events)

    bad = subprocess.run(
        [sys.executable, "-m", "hybridstore.cli", "show", "../x"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 1 and bad.stderr.startswith("error:") and "Traceback" not in bad.stderr


@pytest.mark.slow
def test_demo_runs_every_job_to_a_terminal_status(tmp_path: Path) -> None:
    # The module, not the console script: that one may belong to another checkout.
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hybridstore.cli",
            "--data-dir",
            str(tmp_path / "demo"),
            "demo",
            "--jobs",
            "120",
            "--workers",
            "3",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    counts = report["statistics"]["status_counts"]
    assert counts["pending"] == 0 and counts["processing"] == 0
    assert report["statistics"]["total_jobs"] == 120
    assert report["claims"] >= 120 and report["claims_per_second"] > 0
    with JobStore(tmp_path / "demo") as store:
        assert store.verify().ok


def test_reading_commands_do_not_create_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "typo"
    for args in (["verify"], ["stats"], ["list"], ["show", "x"], ["reindex"], ["expire"]):
        code, _, err = run(missing, *args)
        assert code == 1 and "no data directory" in err, args
    assert not missing.exists()


def test_list_prints_every_job_unless_limited(data_dir: Path) -> None:
    with JobStore(data_dir) as store:
        for _ in range(130):
            store.add(new_job())
    assert len(json.loads(run(data_dir, "list", "--json")[1])) == 130
    assert len(json.loads(run(data_dir, "list", "--json", "--limit", "7")[1])) == 7


def test_an_unexpected_error_is_one_line(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    JobStore(data_dir).close()

    def broken(self: JobStore) -> dict[str, object]:
        raise RuntimeError("something nobody planned for")

    monkeypatch.setattr(JobStore, "statistics", broken)
    code, _, err = run(data_dir, "stats")
    assert code == 1
    assert err == "error: unexpected RuntimeError: something nobody planned for\n"


def test_demo_accepts_a_file_url_and_leaves_real_work_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "via-url"
    with JobStore(target) as store:
        real = store.add(new_job(content_type="audio"))
    result = CliRunner().invoke(
        cli, ["--data-dir", f"file://{target}", "demo", "--jobs", "6", "--workers", "1", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["statistics"]["total_jobs"] == 7
    assert sorted(p.name for p in tmp_path.iterdir()) == ["via-url"]  # no stray "file:" dir
    with JobStore(target) as store:
        assert store.get(real.id) == real  # the demo's workers claim only demo jobs


def test_passwords_are_never_shown() -> None:
    from hybridstore.config import describe_target

    shown = describe_target("postgresql://app:s3cret@db:5432/jobs")
    assert shown == "postgresql://app:***@db:5432/jobs"
    # Every form a DSN carries a password in: "@" or "/" inside it, a query parameter,
    # a libpq key=value string (quoted or not).
    for dsn, expected in (
        ("postgresql://app:s3@c/r@et@db/jobs?sslmode=require",
         "postgresql://app:***@db/jobs?sslmode=require"),
        ("postgresql://app@db/jobs?password=s3cret&sslmode=require",
         "postgresql://app@db/jobs?password=***&sslmode=require"),
        ("host=db password=s3cret dbname=jobs", "host=db password=*** dbname=jobs"),
        ("host=db password='s3 \\'cret' dbname=jobs", "host=db password=*** dbname=jobs"),
        ("postgresql://db/jobs", "postgresql://db/jobs"),
        ("data/remote_jobs", "data/remote_jobs"),
    ):
        assert describe_target(dsn) == expected, dsn
    result = CliRunner().invoke(
        cli, ["--data-dir", "postgresql://app:s3cret@127.0.0.1:1/x", "stats"]
    )
    assert result.exit_code == 1 and "s3cret" not in result.stderr + result.stdout


def test_add_names_the_option_of_a_refused_value(data_dir: Path) -> None:
    """Found by a newcomer: ``add --type ''`` answered in pydantic's words
    (``content_type: Value error, …``)."""
    result = CliRunner().invoke(
        cli, ["--data-dir", str(data_dir), "add", "--task", "t", "--source", "s", "--type", ""]
    )
    assert result.exit_code == 2
    assert "Invalid value for '--type'" in result.stderr and "Value error" not in result.stderr
    assert not data_dir.exists()


def test_delete_json_and_a_requeue_summary(filled: Path) -> None:
    runner = CliRunner()
    deleted = runner.invoke(cli, ["--data-dir", str(filled), "delete", "p1", "--json"])
    assert deleted.exit_code == 0 and json.loads(deleted.stdout) == [{"id": "p1", "deleted": True}]
    with JobStore(filled) as store:
        store.cancel("p2")
    requeued = runner.invoke(cli, ["--data-dir", str(filled), "requeue", "--status", "cancelled"])
    assert requeued.exit_code == 0
    assert requeued.stdout.splitlines() == ["p2 -> pending", "requeued 1 job"]
