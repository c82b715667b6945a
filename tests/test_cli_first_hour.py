"""What a newcomer meets in the first hour: copy says what it left behind, missing stores
and empty settings are named as given, auth and schema errors say what to do, commands of
the wrong backend are usage errors, and the reports explain themselves. Each through
click's runner and, for exit codes and one-line errors, as a real process."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hybridstore import JobStore
from hybridstore.cli import cli
from tests.conftest import hybridstore_process as hybridstore
from tests.conftest import new_job
from tests.http_support import ADMIN_TOKEN, WORKER_TOKEN, ServerProcess


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr



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
    assert (report["source"], report["target"]) == (str(spoiled), str(target))  # not reprs
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


# -- 3. a missing store is named as the user gave it -----------------------------------


@pytest.mark.parametrize("given", ["./typo", "typo/", "nested/../typo"])
def test_a_missing_store_is_named_as_given(tmp_path: Path, given: str) -> None:
    done = hybridstore("--data-dir", given, "stats", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: no data directory at {given}:"
        f" create it with 'hybridstore --data-dir {given} init'\n"
    )
    code, _, err = invoke("--data-dir", str(tmp_path / "x") + "/", "list")
    assert code == 1 and f"no data directory at {tmp_path / 'x'}/:" in err
    assert list(tmp_path.iterdir()) == []


def test_a_missing_store_says_where_its_path_came_from(tmp_path: Path) -> None:
    done = hybridstore("list", cwd=tmp_path, HYBRIDSTORE_URL="./from-url")
    assert done.returncode == 1 and done.stderr == (
        "error: no data directory at ./from-url (from $HYBRIDSTORE_URL):"
        " create it with 'hybridstore init'\n"
    )
    done = hybridstore("list", cwd=tmp_path, HYBRIDSTORE_DATA_DIR="./from-env")
    assert "at ./from-env (from $HYBRIDSTORE_DATA_DIR)" in done.stderr
    done = hybridstore(
        "copy", "--from", "./old", "--to", "./new", cwd=tmp_path, HYBRIDSTORE_DATA_DIR=""
    )
    assert done.returncode == 1
    assert "at ./old: create it with 'hybridstore --data-dir ./old init'" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_folder_that_is_no_store_is_named_as_given(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    done = hybridstore("--data-dir", "./src", "verify", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.startswith(
        "error: ./src is a directory but not a hybridstore data directory"
    )
    assert "'hybridstore --data-dir ./src init'" in done.stderr
    assert list((tmp_path / "src").iterdir()) == []


def test_the_quoted_init_command_can_be_pasted(tmp_path: Path) -> None:
    code, _, err = invoke("--data-dir", str(tmp_path / "my jobs"), "stats")
    assert code == 1 and f"'hybridstore --data-dir \"{tmp_path / 'my jobs'}\" init'" in err


# -- 5. an empty $HYBRIDSTORE_URL is a usage error, as --data-dir "" is ---------------


@pytest.mark.parametrize("value", ["", " "])
def test_an_empty_hybridstore_url_is_a_usage_error(tmp_path: Path, value: str) -> None:
    for args in (
        ["stats"],
        ["init"],
        ["list", "--json"],
        ["add", "--task", "t", "--source", "/s", "--type", "audio"],
    ):
        done = hybridstore(*args, cwd=tmp_path, HYBRIDSTORE_URL=value)
        assert done.returncode == 2 and done.stdout == "", args
        assert done.stderr == (
            "error: $HYBRIDSTORE_URL is set but empty:"
            " set it to a directory or a URL, or unset it\n"
        )
        code, _, err = invoke(*args, env={"HYBRIDSTORE_URL": value})
        assert code == 2 and "$HYBRIDSTORE_URL is set but empty" in err
    assert list(tmp_path.iterdir()) == []  # no default store made in the current folder


def test_open_repository_refuses_an_empty_hybridstore_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hybridstore import InvalidArgument, open_repository

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HYBRIDSTORE_URL", "")
    with pytest.raises(InvalidArgument, match=r"\$HYBRIDSTORE_URL is set but empty"):
        open_repository()
    assert list(tmp_path.iterdir()) == []


# -- 8. the data-directory commands on another backend are usage errors ----------------


@pytest.mark.parametrize("command", ["verify", "reindex", "init", "migrate"])
@pytest.mark.parametrize(
    "url", ["postgresql://nobody@127.0.0.1:1/none", "http://127.0.0.1:1"], ids=["pg", "http"]
)
def test_data_directory_commands_on_another_backend_exit_2(
    tmp_path: Path, command: str, url: str
) -> None:
    code, out, err = invoke("--data-dir", url, command)
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"'{command}' is for a data directory" in err and "--data-dir DIR" in err
    done = hybridstore(command, cwd=tmp_path, HYBRIDSTORE_URL=url)
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert f"'{command}' is for a data directory" in done.stderr


# -- 4. stats on an empty store says so ------------------------------------------------


def test_stats_on_an_empty_store_says_no_jobs(tmp_path: Path) -> None:
    JobStore(tmp_path / "jobs").close()
    done = hybridstore("--data-dir", "jobs", "stats", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == (
        "store: jobs\nno jobs (add one with 'hybridstore add --task ID --source PATH --type CT')\n"
    )
    code, out, _ = invoke("--data-dir", str(tmp_path / "jobs"), "stats", "--json")
    assert code == 0 and json.loads(out) == {
        "total_jobs": 0,
        "status_counts": {
            "pending": 0,
            "processing": 0,
            "completed": 0,
            "failed": 0,
            "timeout": 0,
            "cancelled": 0,
        },
        "content_type_counts": {},
        "worker_counts": {},
        "storage_size_mb": 0.0,
    }


def test_stats_prints_no_empty_heading(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs") as store:
        store.add(new_job(id="waiting", content_type="audio"))
    code, out, _ = invoke("--data-dir", str(tmp_path / "jobs"), "stats")
    assert code == 0 and "total jobs: 1" in out
    assert "by worker: none\n" in out and out.count("by content type:\n  audio") == 1
    lines = out.splitlines()
    for heading, following in itertools.pairwise(lines):
        assert not (heading.endswith(":") and not following.startswith("  ")), out
    assert not lines[-1].endswith(":")


# -- 6. an auth error says how to pass a token -----------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    root = tmp_path_factory.mktemp("served")
    started = ServerProcess(str(root / "data"), root / "server.log")
    with JobStore(root / "data") as store:
        store.add(new_job(id="served-1"))
    try:
        yield started
    finally:
        started.stop()


def test_auth_errors_say_how_to_pass_a_token(server: ServerProcess, tmp_path: Path) -> None:
    # No token: 401, through --data-dir and through $HYBRIDSTORE_URL.
    done = hybridstore("--data-dir", server.url, "stats", cwd=tmp_path)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr == (
        f"error: {server.url}: a valid bearer token is required (no token was given: set"
        " $HYBRIDSTORE_TOKEN to one of the server's tokens, from its --token-file or"
        " $HYBRIDSTORE_API_TOKENS)\n"
    )
    done = hybridstore("list", cwd=tmp_path, HYBRIDSTORE_URL=server.url)
    assert done.returncode == 1 and "no token was given: set $HYBRIDSTORE_TOKEN" in done.stderr
    # A wrong token: 401, and it says the one given was refused.
    done = hybridstore(
        "show",
        "served-1",
        cwd=tmp_path,
        HYBRIDSTORE_URL=server.url,
        HYBRIDSTORE_TOKEN="wrong-token-0123456789abcdef",
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "the token in $HYBRIDSTORE_TOKEN was refused" in done.stderr
    # A worker's token where an admin's is needed: 403.
    done = hybridstore(
        "stats", cwd=tmp_path, HYBRIDSTORE_URL=server.url, HYBRIDSTORE_TOKEN=WORKER_TOKEN
    )
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "lacks the role this command needs: use an admin token" in done.stderr
    assert "$HYBRIDSTORE_TOKEN" in done.stderr
    # Several ids: one line for all, not one per id.
    code, _, err = invoke(
        "--data-dir", server.url, "cancel", "a", "b", "c", env={"HYBRIDSTORE_TOKEN": ""}
    )
    assert code == 1 and err.count("\n") == 1 and "$HYBRIDSTORE_TOKEN" in err
    # The right token works.
    code, out, _ = invoke(
        "--data-dir", server.url, "stats", "--json", env={"HYBRIDSTORE_TOKEN": ADMIN_TOKEN}
    )
    assert code == 0 and json.loads(out)["total_jobs"] == 1


# -- 7. db test names the schema it looked for, and db init ----------------------------


@pytest.mark.postgres
def test_db_test_names_the_missing_schema(pg_server_dsn: str, tmp_path: Path) -> None:
    from tests.postgres_support import schema_dsn

    missing = schema_dsn(pg_server_dsn, "hs_test_first_hour_missing")
    code, out, err = invoke("db", "test", "--url", missing)
    assert (
        code == 1
        and out == ""
        and err
        == (
            "error: schema hs_test_first_hour_missing (the connection's search_path) does not"
            " exist: create it with 'hybridstore db init'\n"
        )
    )
    done = hybridstore("db", "test", "--url", missing, cwd=tmp_path)
    assert done.returncode == 1 and done.stderr == err
    # A reader names it too.
    code, _, err = invoke("--data-dir", missing, "stats")
    assert code == 1 and err.count("\n") == 1
    assert "schema hs_test_first_hour_missing (the connection's search_path)" in err
    assert "'hybridstore db init'" in err


@pytest.mark.postgres
def test_db_test_on_an_empty_schema_says_db_init(pg_schema_dsn: str) -> None:
    from tests.test_readers_create_nothing import schema_of

    schema = schema_of(pg_schema_dsn)
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn)
    assert code == 1
    assert out.rstrip().endswith(
        f"no hybridstore tables in schema {schema}: run `hybridstore db init`"
    )
    assert "db migrate" not in out
    assert invoke("db", "init", "--url", pg_schema_dsn)[0] == 0
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn)
    assert code == 0 and "up to date" in out


# -- 9. the demo says what it counted ---------------------------------------------------


def _demo_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **counts: int) -> tuple[int, str]:
    from hybridstore import demo

    def pretend(target: str, **options: object) -> demo.DemoReport:
        report = demo.DemoReport(jobs=10, workers=2, claims=13, seconds=1.0, **counts)
        report.work_seconds, report.lease_seconds = 0.002, 1.0
        with JobStore(target) as store:
            report.statistics = store.statistics()
        return report

    monkeypatch.setattr(demo, "run_demo", pretend)
    code, out, _ = invoke("--data-dir", str(tmp_path / "demo"), "demo", "--jobs", "10")
    return code, out


def test_demo_says_what_abandoned_means(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    code, out = _demo_output(tmp_path, monkeypatch, completed=10, failed_attempts=1, abandoned=2)
    assert code == 0
    assert "attempts: 10 completed, 1 failed (a simulated conversion error; retried" in out
    assert (
        "  and 2 abandoned by a simulated worker crash: each job came back to a worker once"
        " its 1s lease ran out\n"
    ) in out
    assert "leases expired" not in out


def test_demo_says_nothing_of_abandoned_when_none_was(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out = _demo_output(tmp_path, monkeypatch, completed=10)
    assert code == 0 and "attempts: 10 completed, none failed\n" in out
    assert "abandoned" not in out and "leases expired" not in out


def test_demo_json_has_no_count_that_is_never_counted(tmp_path: Path) -> None:
    code, out, _ = invoke(
        "--data-dir", str(tmp_path / "demo"), "demo", "--jobs", "2", "--workers", "1", "--json"
    )
    report = json.loads(out)
    assert code == 0 and "expired" not in report  # it was always 0
    assert report["lease_seconds"] > 0 and "abandoned_leases" in report


# -- found by the newcomer pass ---------------------------------------------------------


def test_init_twice_says_the_store_was_already_there(tmp_path: Path) -> None:
    first = hybridstore("--data-dir", "jobs", "init", cwd=tmp_path)
    assert first.returncode == 0 and first.stdout.startswith("initialized jobs ")
    again = hybridstore("--data-dir", "jobs", "init", cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.startswith("already a data directory: jobs (sidecar schema version")


def test_serve_without_tokens_says_the_variable_is_not_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    JobStore(tmp_path / "jobs").close()
    environment = {"HYBRIDSTORE_API_TOKENS": ""}
    done = hybridstore("--data-dir", "jobs", "serve", cwd=tmp_path, **environment)
    assert done.returncode == 1 and "($HYBRIDSTORE_API_TOKENS is empty)" in done.stderr
    monkeypatch.delenv("HYBRIDSTORE_API_TOKENS", raising=False)  # a developer's own setting
    done = hybridstore("--data-dir", "jobs", "serve", cwd=tmp_path)
    assert done.returncode == 1 and done.stderr.count("\n") == 1
    assert "($HYBRIDSTORE_API_TOKENS is not set)" in done.stderr
    assert "'ROLE:TOKEN,ROLE:TOKEN'" in done.stderr


def test_data_dir_help_names_every_kind_of_store() -> None:
    code, out, _ = invoke("--help")
    assert code == 0 and "http(s)://" in out and "$HYBRIDSTORE_TOKEN" in out


def test_python_m_hybridstore_is_the_command(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run(
        [sys.executable, "-m", "hybridstore", "--data-dir", "typo", "stats"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": root},
    )
    assert done.returncode == 1 and done.stderr.startswith("error: no data directory at typo:")


def test_a_file_url_with_a_host_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    """Found by a newcomer: file://tmp/x/s2 initialised /x/s2 (the host part dropped)."""
    done = hybridstore("--data-dir", "file://tmp/nowhere-x/s2", "init", cwd=tmp_path)
    assert done.returncode == 2 and "three slashes" in done.stderr
    assert not Path("/nowhere-x").exists()
    done = hybridstore("--data-dir", f"file://localhost{tmp_path}/s3", "init", cwd=tmp_path)
    assert done.returncode == 0 and (tmp_path / "s3" / "pending").is_dir()


def test_a_relative_path_that_starts_with_file_colon_is_a_path(tmp_path: Path) -> None:
    """Found by a newcomer: SQLite took the sidecar's name for a URI and failed after the
    status directories were made."""
    assert hybridstore("--data-dir", "file:relative/x", "init", cwd=tmp_path).returncode == 0
    done = hybridstore("--data-dir", "file:relative/x", "stats", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "file:relative" / "x" / "hybridstore.sqlite3").is_file()


def test_add_says_when_it_creates_a_data_directory(tmp_path: Path) -> None:
    """Found by a newcomer: a typo in --data-dir with add made a new store silently."""
    first = hybridstore(
        "--data-dir", "stroe", "add", "--task", "t", "--source", "s", "--type", "c", cwd=tmp_path
    )
    assert first.returncode == 0 and first.stderr == "created a new data directory at stroe\n"
    again = hybridstore(
        "--data-dir", "stroe", "add", "--task", "t", "--source", "s", "--type", "c", cwd=tmp_path
    )
    assert again.returncode == 0 and again.stderr == ""
