"""The ``hybridstore`` group: its options, the Context every command gets, the handling of
errors, and the helpers commands print with."""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import click

from ..config import check_data_dir, is_database_url, is_http_url, resolve_target
from ..errors import HybridStoreError
from ..factory import open_repository
from ..logs import LEVELS, configure_logging
from ..repository import JobRepository
from ..store import JobStore


def safe(text: object) -> str:
    """``text`` with every non-printable character escaped (\\n, \\x1b, ...)."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in value)


def plural(count: int, word: str, many: str | None = None) -> str:
    """``1 job``, ``2 jobs``, ``0 jobs`` (``many`` when the plural is not ``word + s``)."""
    return f"{count} {word}" if count == 1 else f"{count} {many or word + 's'}"


def fail(message: str) -> NoReturn:
    click.echo(f"error: {safe(message)}", err=True)
    sys.exit(1)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


class Context:
    """What the group's options decided: where the store is."""

    def __init__(self, target: str | None) -> None:
        self.target = target

    def resolved(self) -> str:
        """The store: a postgresql:// URL or a directory (``config.resolve_target``)."""
        return resolve_target(self.target)

    @contextmanager
    def repository(self, *, create: bool = False) -> Iterator[JobRepository]:
        """The store, which must exist already: commands that read (and the maintenance
        commands) never create one wherever a typo pointed them. ``add`` may create it."""
        repo = open_repository(self.resolved(), create=create)
        try:
            yield repo
        finally:
            repo.close()

    @contextmanager
    def file_store(self, command: str, *, create: bool = False) -> Iterator[JobStore]:
        target = self.resolved()
        if is_http_url(target):
            fail(f"'{command}' works on a data directory, not on a server over HTTP")
        if is_database_url(target):
            fail(
                f"'{command}' works on a data directory, not on a database"
                " (for PostgreSQL: hybridstore db init|migrate|test --url URL)"
            )
        check_data_dir(target, create=create)
        store = JobStore(target, create=create)
        try:
            yield store
        finally:
            store.close()


pass_context = click.make_pass_decorator(Context)


class HybridStoreGroup(click.Group):
    """Turns every error into one line and exit code 1, never a traceback (the traceback
    goes to stderr as well with ``--log-level debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except HybridStoreError as exc:
            fail(str(exc))
        except OSError as exc:
            fail(f"{exc.filename or ''}: {exc.strerror or exc}".lstrip(": "))
        except Exception as exc:
            if str(ctx.params.get("log_level", "")).lower() == "debug":
                traceback.print_exc()
            fail(f"unexpected {type(exc).__name__}: {exc}")


def not_empty(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    # An empty path would quietly mean the current directory.
    if value is not None and not value.strip():
        raise click.BadParameter("must name a directory or a URL, not be empty")
    return value


@click.group(cls=HybridStoreGroup)
@click.option(
    "--data-dir",
    "--store",
    "target",
    metavar="DIR|URL",
    callback=not_empty,
    help="Data directory, file:// or postgresql:// URL. Default: $HYBRIDSTORE_URL, else "
    "$HYBRIDSTORE_DATA_DIR, else $MORAG_REMOTE_JOBS_DATA_DIR, else ./data/remote_jobs.",
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="warning",
    show_default=True,
    help="Least severe log events shown on stderr.",
)
@click.option("--json-logs", is_flag=True, help="Log as JSON lines instead of text.")
@click.version_option(package_name="hybridstore")
@click.pass_context
def cli(ctx: click.Context, target: str | None, log_level: str, json_logs: bool) -> None:
    """Track remote conversion jobs in a directory of JSON files indexed by SQLite."""
    configure_logging(log_level, json_logs)
    ctx.obj = Context(target)


@contextmanager
def progress_bar(show: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if not show:
        yield None
        return
    bar: Any = None

    def update(done: int, total: int) -> None:
        nonlocal bar
        if bar is None:
            bar = click.progressbar(length=max(total, 1), label=label, file=sys.stderr)
            bar.__enter__()
        bar.update(done - bar.pos)

    try:
        yield update
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)
