"""The command line's job commands: add, requeue, cancel, delete, work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridstore import JobStatus, open_repository
from hybridstore.cli import cli


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_add_creates_the_store_and_prints_the_id(tmp_path: Path) -> None:
    store = str(tmp_path / "new")
    code, out, err = run(
        "--data-dir",
        store,
        "add",
        "--task",
        "t1",
        "--source",
        "/in/a.pdf",
        "--type",
        "document",
        "--options",
        '{"lang": "de"}',
        "--priority",
        "4",
        "--delay",
        "60",
    )
    assert code == 0, err
    job_id = out.strip()
    with open_repository(store) as repo:
        job = repo.get(job_id)
    assert job is not None and job.priority == 4 and job.task_options == {"lang": "de"}
    assert job.not_before is not None
    code, out, _ = run(
        "--data-dir", store, "add", "--task", "t2", "--source", "s", "--type", "audio", "--json"
    )
    assert code == 0 and json.loads(out)["ingestion_task_id"] == "t2"


@pytest.mark.parametrize(
    "bad",
    [
        ["--options", "[1]"],
        ["--options", "{"],
        ["--priority", "x"],
        ["--delay", "-1"],
        ["--unique-key", ""],
    ],
)
def test_add_refuses_bad_input_as_usage(tmp_path: Path, bad: list[str]) -> None:
    code, _, err = run(
        "--data-dir", str(tmp_path), "add", "--task", "t", "--source", "s", "--type", "c", *bad
    )
    assert code == 2, err


def test_cancel_and_delete_one_line_per_job(tmp_path: Path) -> None:
    store = str(tmp_path)
    ids = [
        run("--data-dir", store, "add", "--task", f"t{n}", "--source", "s", "--type", "c")[
            1
        ].strip()
        for n in range(2)
    ]
    code, out, err = run("--data-dir", store, "cancel", *ids, "missing")
    assert code == 1 and out.splitlines() == [f"{i} -> cancelled" for i in ids]
    assert err.count("\n") == 1 and "missing" in err
    code, out, _ = run("--data-dir", store, "delete", *ids)
    assert code == 0 and out.splitlines() == [f"{i} deleted" for i in ids]
    code, _, err = run("--data-dir", store, "delete", ids[0])
    assert code == 1 and "not found" in err


def test_work_runs_a_handler_in_burst(tmp_path: Path) -> None:
    store = str(tmp_path)
    for n in range(3):
        run(
            "--data-dir",
            store,
            "add",
            "--task",
            f"t{n}",
            "--source",
            "s",
            "--type",
            "c",
            "--options",
            json.dumps({"n": n}),
        )
    code, out, err = run(
        "--data-dir", store, "work", "tests.worker_handlers:echo", "--burst", "--json",
        "--prefetch", "2",
    )
    assert code == 0, err
    assert json.loads(out)["completed"] == 3
    assert run("--data-dir", store, "work", "tests.worker_handlers:echo", "--prefetch", "0")[0] == 2
    with open_repository(store) as repo:
        assert repo.count(status="completed") == 3
    assert run("--data-dir", store, "work", "nocolon")[0] == 2
    code, _, err = run("--data-dir", store, "work", "no_such_module_x:f", "--burst")
    assert code == 1 and "no_such_module_x" in err


def test_work_says_which_module_failed_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_on_import_x.py").write_text("1 / 0\n")
    monkeypatch.chdir(tmp_path)
    code, _, err = run("--data-dir", str(tmp_path / "d"), "work", "broken_on_import_x:f")
    assert code == 1 and err.count("\n") == 1
    assert "importing 'broken_on_import_x' failed: ZeroDivisionError" in err


def test_requeue_by_id_and_by_status(pg_schema_dsn: str) -> None:
    with open_repository(pg_schema_dsn) as repo:
        ids = []
        for n in range(3):
            job_id = run(
                "--data-dir",
                pg_schema_dsn,
                "add",
                "--task",
                f"t{n}",
                "--source",
                "s",
                "--type",
                "audio" if n else "video",
            )[1].strip()
            ids.append(job_id)
            repo.cancel(job_id)
        code, out, _ = run(
            "--data-dir",
            pg_schema_dsn,
            "requeue",
            "--status",
            "cancelled",
            "--content-type",
            "audio",
            "--dry-run",
        )
        assert code == 0 and out.splitlines()[-1] == "would requeue 2 jobs"
        assert repo.count(status="pending") == 0
        code, out, _ = run("--data-dir", pg_schema_dsn, "requeue", ids[0], "--reset-retries")
        assert code == 0 and out.splitlines() == [f"{ids[0]} -> pending"]
        code, out, _ = run(
            "--data-dir", pg_schema_dsn, "requeue", "--status", "cancelled", "--json"
        )
        assert code == 0 and sorted(j["id"] for j in json.loads(out)) == sorted(ids[1:])
        assert repo.count(status=JobStatus.PENDING) == 3
        code, _, err = run("--data-dir", pg_schema_dsn, "requeue", ids[0])
        assert code == 1 and "cannot requeue a job that is pending" in err
        assert run("--data-dir", pg_schema_dsn, "requeue")[0] == 2
        assert run("--data-dir", pg_schema_dsn, "requeue", ids[0], "--status", "failed")[0] == 2
