"""Reading a store never creates one: ``open_repository(create=False)``, the reading and
maintenance commands, on a data directory and on PostgreSQL."""

from __future__ import annotations

import errno
import subprocess
from pathlib import Path
from urllib.parse import quote, urlencode

import pytest
from click.testing import CliRunner

from hybridstore import (
    InvalidArgument,
    JobStore,
    StorageError,
    StoreNotFound,
    open_repository,
)
from hybridstore.cli import cli
from tests.conftest import hybridstore_process as hybridstore
from tests.conftest import new_job
from tests.postgres_support import schema_dsn

READING = [
    ["stats"],
    ["list"],
    ["show", "x"],
    ["verify"],
    ["expire"],
    ["cleanup", "--dry-run"],
    ["cleanup"],
]


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr



# -- data directories ---------------------------------------------------------------------


def test_open_repository_create_false_refuses_a_missing_directory(tmp_path: Path) -> None:
    missing = tmp_path / "typo" / "jobs"
    with pytest.raises(StoreNotFound) as raised:
        open_repository(missing, create=False)
    assert isinstance(raised.value, FileNotFoundError)
    assert str(missing) in str(raised.value)
    assert f"hybridstore --data-dir {missing} init" in str(raised.value)  # ready to paste
    assert not (tmp_path / "typo").exists()
    with pytest.raises(StoreNotFound):
        open_repository(f"file://{missing}", create=False)
    assert not (tmp_path / "typo").exists()
    # The default still creates, and then a reader opens it.
    open_repository(missing).close()
    with open_repository(missing, create=False) as repo:
        assert repo.count() == 0


def test_open_repository_refuses_an_empty_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for target in ("", "  ", "file://"):
        with pytest.raises(InvalidArgument):
            open_repository(target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READING, ids=" ".join)
def test_reading_commands_name_init_and_create_nothing(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "typo"
    code, out, err = invoke("--data-dir", str(missing), *args)
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and f"no data directory at {missing}:" in err
    assert f"'hybridstore --data-dir {missing} init'" in err
    assert list(tmp_path.iterdir()) == []


def test_copy_from_a_missing_store_creates_neither_side(tmp_path: Path) -> None:
    code, _, err = invoke(
        "copy", "--from", str(tmp_path / "typo"), "--to", str(tmp_path / "target")
    )
    assert code == 1 and f"'hybridstore --data-dir {tmp_path / 'typo'} init'" in err
    assert list(tmp_path.iterdir()) == []


def test_reading_commands_as_a_process(tmp_path: Path) -> None:
    for args in (["stats"], ["list", "--json"], ["cleanup", "--dry-run"]):
        done = hybridstore("--data-dir", "typo", *args, cwd=tmp_path)
        assert done.returncode == 1, args
        assert done.stdout == "" and done.stderr.count("\n") == 1
        assert "'hybridstore --data-dir typo init'" in done.stderr
    # The default directory too (no --data-dir, no environment).
    done = hybridstore(
        "stats", cwd=tmp_path, HYBRIDSTORE_DATA_DIR="", MORAG_REMOTE_JOBS_DATA_DIR=""
    )
    assert done.returncode == 1 and "data/remote_jobs (the default;" in done.stderr
    assert "'hybridstore init'" in done.stderr
    assert list(tmp_path.iterdir()) == []
    # init still creates, and then the readers read.
    assert hybridstore("--data-dir", "typo", "init", cwd=tmp_path).returncode == 0
    done = hybridstore("--data-dir", "typo", "stats", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr


def test_an_empty_data_dir_is_a_usage_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for args in (["--data-dir", "", "stats"], ["--data-dir", " ", "init"]):
        code, _, err = invoke(*args)
        assert code == 2 and "--data-dir" in err and "empty" in err, args
    code, _, err = invoke("copy", "--from", str(tmp_path), "--to", "")
    assert code == 2 and "--to" in err
    done = hybridstore("--data-dir", "", "init", cwd=tmp_path)
    assert done.returncode == 2 and "empty" in done.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_file_is_not_a_data_directory(tmp_path: Path) -> None:
    afile = tmp_path / "afile"
    afile.write_text("hello")
    code, _, err = invoke("--data-dir", str(afile), "init")
    assert code == 1 and err.count("\n") == 1
    assert f"{afile} is a file, not a directory" in err and "File exists" not in err
    code, _, err = invoke("--data-dir", str(afile), "stats")
    assert code == 1 and f"{afile} is a file, not a directory" in err
    done = hybridstore("--data-dir", "afile", "init", cwd=tmp_path)
    assert done.returncode == 1 and "afile is a file, not a directory" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert afile.read_text() == "hello"


# -- PostgreSQL ---------------------------------------------------------------------------


def tables_in(server_dsn: str, schema: str) -> list[str]:
    import psycopg

    with psycopg.connect(server_dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
            (schema,),
        ).fetchall()
    return sorted(row[0] for row in rows)


def schema_of(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    options = str(conninfo_to_dict(dsn)["options"])
    return options.rsplit("search_path=", 1)[1].split()[0]


@pytest.mark.postgres
def test_postgres_create_false_refuses_a_schema_without_tables(
    pg_server_dsn: str, pg_schema_dsn: str
) -> None:
    from hybridstore import PostgresJobRepository

    schema = schema_of(pg_schema_dsn)
    with pytest.raises(StoreNotFound) as raised:
        PostgresJobRepository(pg_schema_dsn, create=False)
    assert "'hybridstore db init'" in str(raised.value) and schema in str(raised.value)
    with pytest.raises(StoreNotFound):
        open_repository(pg_schema_dsn, create=False)
    assert tables_in(pg_server_dsn, schema) == []
    with open_repository(pg_schema_dsn) as repo:  # the default creates
        repo.add(new_job(id="kept"))
    assert tables_in(pg_server_dsn, schema) == ["remote_jobs", "schema_migrations"]
    with PostgresJobRepository(pg_schema_dsn, create=False) as repo:
        assert repo.get("kept") is not None


@pytest.mark.postgres
def test_postgres_missing_schema_or_database_names_db_init(pg_server_dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict

    from hybridstore import PostgresJobRepository, SchemaError

    no_schema = schema_dsn(pg_server_dsn, "hs_test_never_created")
    with pytest.raises(StoreNotFound, match="'hybridstore db init'"):
        PostgresJobRepository(no_schema, create=False)
    with pytest.raises(SchemaError, match="'hybridstore db init'"):
        PostgresJobRepository(no_schema)
    assert tables_in(pg_server_dsn, "hs_test_never_created") == []

    params = {**conninfo_to_dict(pg_server_dsn), "dbname": "hs_test_no_such_database"}
    no_database = "postgresql://?" + urlencode(
        {k: str(v) for k, v in params.items()}, quote_via=quote
    )
    with pytest.raises(StoreNotFound, match="'hybridstore db init'"):
        open_repository(no_database, create=False)
    code, out, err = invoke("db", "test", "--url", no_database)
    assert code == 1 and out == "" and err.count("\n") == 1
    assert "does not exist" in err and "'hybridstore db init'" in err


@pytest.mark.postgres
def test_reading_commands_on_an_empty_database_create_nothing(
    pg_server_dsn: str, pg_schema_dsn: str, tmp_path: Path
) -> None:
    schema = schema_of(pg_schema_dsn)
    for args in [*READING, ["copy", "--to", str(tmp_path / "target")]]:
        code, out, err = invoke(*args, env={"HYBRIDSTORE_URL": pg_schema_dsn})
        # verify works on data directories only, and says so (a usage error)
        assert code == (2 if args == ["verify"] else 1), args
        assert out == "" and err.count("\n") == 1, args
        assert "'hybridstore db init'" in err or args == ["verify"], args
    done = hybridstore("stats", cwd=tmp_path, HYBRIDSTORE_URL=pg_schema_dsn)
    assert done.returncode == 1 and "'hybridstore db init'" in done.stderr
    assert tables_in(pg_server_dsn, schema) == []
    assert list(tmp_path.iterdir()) == []
    code, _, _ = invoke("db", "init", "--url", pg_schema_dsn)
    assert code == 0
    code, out, _ = invoke("--data-dir", pg_schema_dsn, "stats", "--json")
    assert code == 0 and '"total_jobs": 0' in out


def test_a_store_that_exists_is_read_by_every_reading_command(tmp_path: Path) -> None:
    with JobStore(tmp_path / "jobs") as store:
        store.add(new_job(id="x"))
    for args in READING:
        code, _, err = invoke("--data-dir", str(tmp_path / "jobs"), *args)
        assert code == 0, (args, err)


def test_reading_commands_on_a_folder_that_is_no_store_create_nothing(tmp_path: Path) -> None:
    """Found by a newcomer: ``--data-dir <the package's own source folder> stats`` made a
    store there (.locks/, a sidecar, six status folders)."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "module.py").write_text("x = 1\n")
    for args in READING:
        done = hybridstore("--data-dir", str(folder), *args, cwd=tmp_path)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        assert "not a hybridstore data directory" in done.stderr
        assert f"'hybridstore --data-dir {folder} init'" in done.stderr
        assert "Traceback" not in done.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["module.py"]
    with pytest.raises(StoreNotFound):
        JobStore(folder, create=False)


def _read_only_bind(source: Path, target: Path) -> bool:
    target.mkdir()
    bind = ["mount", "--bind", str(source), str(target)]
    if subprocess.run(bind, capture_output=True).returncode:
        return False
    remount = ["mount", "-o", "remount,bind,ro", str(target)]
    if subprocess.run(remount, capture_output=True).returncode:
        subprocess.run(["umount", str(target)], capture_output=True)
        return False
    return True


def test_a_store_on_a_read_only_mount_can_be_read(tmp_path: Path) -> None:
    """Found by a newcomer: every command failed on ``.locks/.sidecar.lock: Read-only file
    system``. Now the reading commands answer, and create or change nothing."""
    source = tmp_path / "store"
    with JobStore(source) as store:
        job = store.add(new_job(id="kept"))
        store.add(new_job(id="other"))
        store.claim_next("w")
    mount = tmp_path / "ro"
    if not _read_only_bind(source, mount):
        pytest.skip("cannot make a read-only bind mount here")
    try:
        before = sorted(str(p.relative_to(mount)) for p in mount.rglob("*"))
        for args, expected in (
            (["stats", "--json"], '"total_jobs": 2'),
            (["list"], "kept"),
            (["show", "kept"], job.source_file_path),
            (["verify"], ""),
        ):
            done = hybridstore("--data-dir", str(mount), *args, cwd=tmp_path)
            assert done.returncode == 0, (args, done.stderr)
            assert expected in done.stdout, (args, done.stdout)
        with JobStore(mount) as reader, pytest.raises(StorageError) as caught:
            reader.cancel("other")
        assert caught.value.errno == errno.EROFS
        assert sorted(str(p.relative_to(mount)) for p in mount.rglob("*")) == before
    finally:
        subprocess.run(["umount", "--lazy", str(mount)], capture_output=True)


def test_serve_on_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    """Found by a newcomer: ``--data-dir typo serve`` made a store there and served it."""
    tokens = "admin:" + "a" * 32
    done = hybridstore(
        "--data-dir", str(tmp_path / "typo"), "serve", cwd=tmp_path, HYBRIDSTORE_API_TOKENS=tokens
    )
    assert done.returncode == 1
    assert f"'hybridstore --data-dir {tmp_path / 'typo'} init'" in done.stderr
    assert done.stderr.count("\n") == 1 and not (tmp_path / "typo").exists()


def test_serve_on_a_busy_port_says_so_in_one_line(tmp_path: Path) -> None:
    """Found by a newcomer: it printed that it was serving, then uvicorn's error, exit 3."""
    import socket

    JobStore(tmp_path / "store").close()
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = hybridstore(
            "--data-dir",
            str(tmp_path / "store"),
            "serve",
            "--port",
            str(port),
            cwd=tmp_path,
            HYBRIDSTORE_API_TOKENS="admin:" + "a" * 32,
        )
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and f"127.0.0.1:{port}" in done.stderr
