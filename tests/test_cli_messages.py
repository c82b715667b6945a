"""Output that explains itself: a failing PostgreSQL migration."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from hybridstore.cli import cli


def invoke(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.postgres
def test_a_failing_postgres_migration_names_its_file(
    pg_schema_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hybridstore import postgres
    from hybridstore.migrations import Migration, load_migrations

    known = load_migrations("postgres")
    broken = Migration(len(known) + 1, "divide_badly", "SELECT 1 / 0")

    def with_a_broken_one(kind: str) -> list[Migration]:
        return [*load_migrations(kind), broken]

    monkeypatch.setattr(postgres, "load_migrations", with_a_broken_one)
    code, out, err = invoke("db", "migrate", "--url", pg_schema_dsn)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err
    assert f"{broken.version:04d}_divide_badly.sql" in err and "DivisionByZero" in err
    # One transaction: the migrations before the broken one were rolled back as well.
    monkeypatch.undo()
    code, out, _ = invoke("db", "test", "--url", pg_schema_dsn, "--json")
    assert json.loads(out)["version"] == 0
