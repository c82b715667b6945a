"""The ``hybridstore db`` commands: the PostgreSQL schema."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click
from click.core import ParameterSource

from ..config import (
    describe_target,
    is_database_url,
)
from .group import (
    cli,
    echo_json,
    safe,
)


@cli.group()
def db() -> None:
    """Manage the PostgreSQL schema (numbered migrations in schema_migrations)."""


def _db_url_option(function: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--url",
        envvar="HYBRIDSTORE_URL",
        metavar="URL",
        help="postgresql://user@host:port/database; required unless $HYBRIDSTORE_URL is set.",
    )(function)


def _db_report(status: Any, as_json: bool) -> None:
    if as_json:
        echo_json(status.to_dict())
    else:
        for name in status.created:
            click.echo(f"created {safe(name)}")
        for name in status.adopted:
            click.echo(f"adopted {safe(name)}")
        for name in status.applied:
            click.echo(f"applied {safe(name)}")
        if status.version == 0 and status.jobs is None:
            # Nothing of hybridstore's there yet: db init (which also creates a missing
            # database or schema) is the command a newcomer needs, not db migrate.
            click.echo(
                f"{safe(status.target)} (PostgreSQL {safe(status.server_version)}): no"
                f" hybridstore tables in schema {safe(status.schema)}: run `hybridstore db init`"
            )
        else:
            click.echo(safe(status.describe()))
    sys.exit(0 if status.ok else 1)


def _database_url(url: str | None) -> str:
    # ``hybridstore --data-dir postgresql://... db test`` names the database as every other
    # command takes it; an explicit --url still wins.
    ctx = click.get_current_context()
    chosen = getattr(ctx.find_root().obj, "target", None)
    explicit = ctx.get_parameter_source("url") is ParameterSource.COMMANDLINE
    if chosen and is_database_url(chosen) and not explicit:
        url = chosen
    if not url:
        raise click.UsageError(
            "give --url postgresql://... (or hybridstore --data-dir postgresql://... db ...),"
            " or set $HYBRIDSTORE_URL"
        )
    if not is_database_url(url):
        raise click.BadParameter("expected a postgresql:// URL", param_hint="--url")
    return url


@db.command("init")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_init(url: str | None, as_json: bool) -> None:
    """Create the database and schema if missing, and apply every migration."""
    from ..pgadmin import init_db

    _db_report(init_db(_database_url(url)), as_json)


@db.command("migrate")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_migrate(url: str | None, as_json: bool) -> None:
    """Apply pending migrations."""
    from ..pgadmin import migrate_db

    _db_report(migrate_db(_database_url(url)), as_json)


@db.command("test")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_test(url: str | None, as_json: bool) -> None:
    """Connect and check the schema version; exit 1 unless it is up to date."""
    from ..pgadmin import check_db

    _db_report(check_db(_database_url(url)), as_json)


@db.command("reset")
@_db_url_option
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_reset(url: str | None, force: bool, as_json: bool) -> None:
    """Drop hybridstore's tables (every job!) and recreate them."""
    from ..pgadmin import reset_db

    dsn = _database_url(url)
    if not force:
        click.confirm(
            f"This deletes every job in {safe(describe_target(dsn))}. Continue?", abort=True
        )
    _db_report(reset_db(dsn), as_json)


@db.command("create-migration")
@click.argument("name")
def db_create_migration(name: str) -> None:
    """Write the next numbered PostgreSQL migration template (for developers)."""
    from ..pgadmin import create_migration

    click.echo(str(create_migration(name)))
