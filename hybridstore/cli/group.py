"""The ``hybridstore`` group: its options, the Context every command gets, the handling of
errors, and the helpers commands print with."""

from __future__ import annotations

import json
import os
import shlex
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from ..config import (
    DEFAULT_DATA_DIR,
    check_data_dir,
    describe_target,
    is_database_url,
    is_http_url,
    resolve_target,
)
from ..errors import AccessDenied, HybridStoreError, InvalidArgument, StoreNotFound
from ..factory import open_repository
from ..files import Layout
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


def usage_fail(message: str) -> NoReturn:
    """A usage error in one line (exit 2), for what click's own checks cannot see."""
    click.echo(f"error: {safe(message)}", err=True)
    sys.exit(2)


def echo_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=False, default=str))


# Where the store comes from when --data-dir is not given, in order (config's rule).
STORE_VARIABLES = ("HYBRIDSTORE_URL", "HYBRIDSTORE_DATA_DIR", "MORAG_REMOTE_JOBS_DATA_DIR")


class Context:
    """What the group's options decided: where the store is."""

    def __init__(self, target: str | None) -> None:
        self.target = target

    def given(self) -> tuple[str, str | None]:
        """The store as the user named it, and where: None for --data-dir, else the
        environment variable (``$HYBRIDSTORE_URL``...) or ``"default"``."""
        if self.target is not None:
            return self.target, None
        for variable in STORE_VARIABLES:
            value = os.environ.get(variable)
            if value:
                return value, f"${variable}"
        return str(DEFAULT_DATA_DIR), "default"

    def resolved(self) -> str:
        """The store: a postgresql:// URL or a directory (``config.resolve_target``). A
        value that names nothing (an empty $HYBRIDSTORE_URL, ``file://``) is a usage error."""
        try:
            return resolve_target(self.target)
        except InvalidArgument as exc:
            usage_fail(str(exc))

    @contextmanager
    def repository(self, *, create: bool = False) -> Iterator[JobRepository]:
        """The store, which must exist already: commands that read (and the maintenance
        commands) never create one wherever a typo pointed them. ``add`` may create it."""
        target = self.resolved()
        new = (
            create
            and not (is_http_url(target) or is_database_url(target))
            and not Layout(Path(target)).looks_like_store()
        )
        with opened(target, *self.given(), create=create) as repo:
            if new:  # a typo in a path would otherwise go unnoticed
                click.echo(f"created a new data directory at {target}", err=True)
            yield repo

    @contextmanager
    def file_store(self, command: str, *, create: bool = False) -> Iterator[JobStore]:
        target = self.resolved()
        if is_http_url(target) or is_database_url(target):
            where = "a server over HTTP" if is_http_url(target) else "PostgreSQL"
            extra = (
                " (for PostgreSQL's schema: hybridstore db init|migrate|test --url URL)"
                if is_database_url(target)
                else ""
            )
            usage_fail(
                f"'{command}' is for a data directory, not for {where}: give --data-dir DIR{extra}"
            )
        try:
            check_data_dir(target, create=create)
            store = JobStore(target, create=create)
        except StoreNotFound as exc:
            fail(missing_store(exc, *self.given()))
        try:
            yield store
        finally:
            store.close()


@contextmanager
def opened(
    target: str, given: str, origin: str | None, *, create: bool = False
) -> Iterator[JobRepository]:
    """``open_repository(target)``, closed afterwards; a missing store is one line that
    names it as the user gave it (``given``, from ``origin``: see ``missing_store``)."""
    try:
        repo = open_repository(target, create=create)
    except StoreNotFound as exc:
        fail(missing_store(exc, given, origin))
    try:
        yield repo
    finally:
        repo.close()


def _shell_word(text: str) -> str:
    """``text`` as one shell word, in double quotes if it needs any (the message quotes the
    whole command in single quotes)."""
    if shlex.quote(text) == text:
        return text
    for special in ("\\", '"', "$", "`"):
        text = text.replace(special, "\\" + special)
    return f'"{text}"'


def missing_store(exc: StoreNotFound, given: str, origin: str | None) -> str:
    """The line for a store that is not there: the path as the user wrote it (``given``),
    where it came from (``origin``: None for --data-dir, an option such as ``--from``, an
    environment variable, or ``"default"``), and the command that creates it there."""
    if not isinstance(exc.store, Path):  # a database: its own message names the schema
        return str(exc)
    path = exc.store
    if origin == "default":
        source = " (the default; choose one with --data-dir or $HYBRIDSTORE_URL)"
    elif origin is not None and origin.startswith("$"):
        source = f" (from {origin})"
    else:
        source = ""
    if origin is None or origin.startswith("--"):
        init = f"hybridstore --data-dir {_shell_word(given)} init"
    else:
        init = "hybridstore init"
    if not os.path.lexists(path):
        return f"no data directory at {given}{source}: create it with '{init}'"
    if not path.is_dir():
        what = "a file, not a directory" if path.is_file() else "not a directory"
        return f"{given}{source} is {what}, so not a data directory"
    return (
        f"{given}{source} is a directory but not a hybridstore data directory (no status"
        f" folders or sidecar): check the path, or make it one with '{init}'"
    )


pass_context = click.make_pass_decorator(Context)


TOKEN_VARIABLE = "HYBRIDSTORE_TOKEN"  # httpclient's, named here without importing httpx


def access_denied(exc: AccessDenied, context: Context | None) -> str:
    """The server's refusal, which server, and how to pass a token that it accepts."""
    server = ""
    if context is not None:
        target = context.given()[0]
        if is_http_url(target):
            server = f"{describe_target(target)}: "
    if exc.status == 403:
        return (
            f"{server}{exc} (the token in ${TOKEN_VARIABLE} lacks the role this command"
            " needs: use an admin token)"
        )
    if os.environ.get(TOKEN_VARIABLE):
        advice = f"the token in ${TOKEN_VARIABLE} was refused: set it"
    else:
        advice = f"no token was given: set ${TOKEN_VARIABLE}"
    return (
        f"{server}{exc} ({advice} to one of the server's tokens, from its --token-file or"
        " $HYBRIDSTORE_API_TOKENS)"
    )


# Options of the group itself, which a newcomer may put after the command.
_GLOBAL_OPTIONS = frozenset({"--data-dir", "--store", "--log-level", "--json-logs"})


class HybridStoreGroup(click.Group):
    """Turns every error into one line and exit code 1, never a traceback (the traceback
    goes to stderr as well with ``--log-level debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.NoSuchOption as exc:
            if exc.option_name in _GLOBAL_OPTIONS:  # given after the command, not before
                command = ctx.invoked_subcommand or "list"
                raise click.UsageError(
                    f"{exc.format_message()} ({exc.option_name} is a global option: it goes"
                    f" before the command, as in 'hybridstore {exc.option_name} ... {command}')",
                    ctx=exc.ctx,
                ) from None
            raise
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise
        except AccessDenied as exc:
            fail(access_denied(exc, ctx.obj))
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
    help="Data directory, or a file://, postgresql:// or http(s):// (a hybridstore serve;"
    " token in $HYBRIDSTORE_TOKEN) URL. Default: $HYBRIDSTORE_URL, else "
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
