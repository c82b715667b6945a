"""The ``hybridstore`` command: a thin layer that parses, calls the library and prints.

Library errors become one line on stderr and exit code 1; usage errors exit 2 (click).
Anything shown that came from a job or an argument is escaped, so control characters and
escape sequences never reach the terminal raw.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from .config import (
    check_data_dir,
    describe_target,
    is_database_url,
    is_http_url,
    resolve_target,
)
from .errors import HybridStoreError, InvalidTransition, JobNotFound
from .factory import open_repository
from .lifecycle import MAX_DELAY_SECONDS, MAX_LEASE_SECONDS
from .logs import LEVELS, configure_logging
from .model import JobStatus, RemoteJob, utcnow
from .repository import JobRepository
from .store import JobStore

__all__ = ["cli", "main"]


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


def _not_empty(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
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
    callback=_not_empty,
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


# -- the data directory ------------------------------------------------------------------


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Create the data directory layout and its sidecar index."""
    with context.file_store("init", create=True) as store:
        click.echo(
            f"initialized {safe(store.data_dir)} (sidecar schema version"
            f" {store.schema_version}, {store.count()} jobs)"
        )


@cli.command()
@pass_context
def migrate(context: Context) -> None:
    """Apply pending sidecar schema migrations."""
    with context.file_store("migrate") as store:
        for migration in store.migrations_applied:
            click.echo(f"applied {migration.version:04d}_{migration.name}")
        click.echo(f"sidecar schema is at version {store.schema_version}")


@cli.command()
@pass_context
def reindex(context: Context) -> None:
    """Rebuild the sidecar from the job files.

    Other processes keep using the old index until the new one is complete. Unreadable
    files are skipped and listed.
    """
    with context.file_store("reindex") as store:
        show_bar = sys.stderr.isatty()
        with _progress(show_bar, "reindexing") as progress:
            report = store.reindex(progress=progress)
    click.echo(f"indexed {report.indexed} jobs in {report.seconds:.2f}s")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} files:")
        for problem in report.skipped:
            click.echo(f"  {safe(problem.path)}: {problem.kind}: {safe(problem.reason)}")


@contextmanager
def _progress(show: bool, label: str) -> Iterator[Callable[[int, int], None] | None]:
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


@cli.command()
@click.option("--repair", is_flag=True, help="Fix the drift found (quarantines bad files).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def verify(context: Context, repair: bool, as_json: bool) -> None:
    """Compare the job files with the sidecar; exit 1 on drift unless repaired."""
    with context.file_store("verify") as store:
        if repair:
            repaired = store.repair()
            after = store.verify()
            if as_json:
                echo_json({**repaired.to_dict(), "after": after.to_dict()})
            else:
                _print_problems(repaired.found.problems)
                for action in repaired.actions:
                    click.echo(f"repair: {safe(action)}")
                click.echo("ok: files and sidecar agree" if after.ok else "drift remains")
            sys.exit(0 if after.ok else 1)
        report = store.verify()
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_problems(report.problems)
        click.echo(
            f"ok: {report.jobs} jobs, files and sidecar agree"
            if report.ok
            else f"drift: {len(report.drift)} problems (run 'hybridstore verify --repair')"
        )
    sys.exit(0 if report.ok else 1)


def _print_problems(problems: list[Any]) -> None:
    for problem in problems:
        click.echo(f"{problem.kind}: {safe(problem.path)}: {safe(problem.reason)}")


# -- reading ----------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@pass_context
def stats(context: Context, as_json: bool) -> None:
    """Show job counts by status, content type and worker."""
    with context.repository() as repo:
        statistics = repo.statistics()
    if as_json:
        echo_json(statistics)
        return
    click.echo(f"store: {safe(describe_target(context.resolved()))}")
    click.echo(f"total jobs: {statistics['total_jobs']}")
    click.echo(f"storage: {statistics['storage_size_mb']} MB")
    for title, key in (
        ("by status", "status_counts"),
        ("by content type", "content_type_counts"),
        ("by worker", "worker_counts"),
    ):
        click.echo(f"{title}:")
        for name, count in statistics[key].items():
            click.echo(f"  {safe(name):<20} {count:>8}")


STATUS_CHOICE = click.Choice([s.value for s in JobStatus])


@cli.command("list")
@click.option("--status", type=STATUS_CHOICE, multiple=True, help="Repeat for any of several.")
@click.option("--content-type", multiple=True, help="Repeat for any of several.")
@click.option("--worker", multiple=True, help="Repeat for any of several.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many jobs (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array of jobs as stored.")
@pass_context
def list_jobs(
    context: Context,
    status: tuple[str, ...],
    content_type: tuple[str, ...],
    worker: tuple[str, ...],
    limit: int | None,
    offset: int,
    as_json: bool,
) -> None:
    """List jobs, oldest first."""
    with context.repository() as repo:
        jobs = repo.find(
            status=list(status) or None,
            content_type=list(content_type) or None,
            worker_id=list(worker) or None,
            limit=limit,
            offset=offset,
        )
    stored = [job.model_dump(mode="json") for job in jobs]
    if as_json:
        echo_json(stored)
        return
    if not stored:
        click.echo("no jobs matched")
        return
    _echo_table(
        ("ID", "STATUS", "CONTENT TYPE", "WORKER", "CREATED", "RETRIES"),
        [
            (
                safe(job["id"]),
                job["status"],
                safe(job["content_type"]),
                safe(job["worker_id"] or "-"),
                job["created_at"],  # the same Z form as --json
                f"{job['retry_count']}/{job['max_retries']}",
            )
            for job in stored
        ],
    )


def _echo_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Columns as wide as their widest cell, two spaces apart; the last one unpadded."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)]
        click.echo("  ".join([*cells, row[-1]]))


@cli.command()
@click.argument("job_id")
@pass_context
def show(context: Context, job_id: str) -> None:
    """Print one job as JSON."""
    with context.repository() as repo:
        job = repo.get(job_id)
    if job is None:
        fail(f"job {job_id!r} not found")
    echo_json(job.model_dump(mode="json"))


# -- maintenance ------------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the expired jobs as JSON.")
@pass_context
def expire(context: Context, as_json: bool) -> None:
    """Return processing jobs whose lease ran out to pending (or timeout)."""
    with context.repository() as repo:
        changed = repo.expire_overdue()
    if as_json:
        echo_json([job.model_dump(mode="json") for job in changed])
        return
    for job in changed:
        click.echo(f"{safe(job.id)} -> {job.status.value}")
    click.echo(f"expired {plural(len(changed), 'job')}")


@cli.command()
@click.option(
    "--days",
    type=click.FloatRange(min=0),
    default=7,
    show_default=True,
    help="Delete terminal jobs finished more than this many days ago.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@pass_context
def cleanup(context: Context, days: float, dry_run: bool, as_json: bool) -> None:
    """Delete old completed, failed, timed-out and cancelled jobs.

    With --json: {"days", "dry_run", "deleted"}, and with --dry-run "job_ids", the jobs
    that would be deleted ("deleted" then counts them; none is deleted).
    """
    job_ids: list[str] = []
    with context.repository() as repo:
        if dry_run:
            job_ids = [job.id for job in repo.old_jobs(days)]  # the clock cleanup uses
            deleted = len(job_ids)
        else:
            deleted = repo.cleanup(days)
    if as_json:
        outcome: dict[str, Any] = {"days": days, "dry_run": dry_run, "deleted": deleted}
        if dry_run:
            outcome["job_ids"] = job_ids
        echo_json(outcome)
        return
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {plural(deleted, 'job')} finished more than {days:g} days ago")


# -- jobs -------------------------------------------------------------------------------


def _json_object(_ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    if value is None:
        return {}
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter("must be a JSON object")
    return parsed


def _echo_jobs(jobs: list[Any], as_json: bool, line: Callable[[Any], str]) -> None:
    if as_json:
        echo_json([job.model_dump(mode="json") for job in jobs])
    else:
        for job in jobs:
            click.echo(line(job))


def _each_job(job_ids: tuple[str, ...], call: Callable[[str], Any]) -> tuple[list[Any], bool]:
    """``call`` on every id; a refusal prints one error line and the others go on. Returns
    the results and whether every call succeeded."""
    done: list[Any] = []
    ok = True
    for job_id in job_ids:
        try:
            done.append(call(job_id))
        except HybridStoreError as exc:
            click.echo(f"error: {safe(exc)}", err=True)
            ok = False
    return done, ok


@cli.command()
@click.option("--task", "task_id", required=True, help="The ingestion task id.")
@click.option("--source", "source_path", required=True, help="The source file's path.")
@click.option("--type", "content_type", required=True, help="The content type.")
@click.option(
    "--options", callback=_json_object, metavar="JSON", help="Task options, a JSON object."
)
@click.option(
    "--priority",
    type=click.IntRange(-(2**31), 2**31 - 1),
    default=0,
    show_default=True,
    help="Higher is claimed first.",
)
@click.option(
    "--delay",
    type=click.FloatRange(min=0, max=MAX_DELAY_SECONDS),
    help="Not ready before this many seconds from now.",
)
@click.option(
    "--unique-key", help="At most one pending or processing job per key (exit 1 if held)."
)
@click.option("--max-retries", type=click.IntRange(min=0, max=2**31 - 1), default=3)
@click.option("--json", "as_json", is_flag=True, help="Print the job as stored.")
@pass_context
def add(
    context: Context,
    task_id: str,
    source_path: str,
    content_type: str,
    options: dict[str, Any],
    priority: int,
    delay: float | None,
    unique_key: str | None,
    max_retries: int,
    as_json: bool,
) -> None:
    """Add one job; print its id (or the job with --json). Creates the store if needed."""
    try:
        job = RemoteJob(
            ingestion_task_id=task_id,
            source_file_path=source_path,
            content_type=content_type,
            task_options=options,
            priority=priority,
            unique_key=unique_key,
            max_retries=max_retries,
            not_before=utcnow() + timedelta(seconds=delay) if delay else None,
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "job"
        raise click.UsageError(f"{where}: {error['msg']}") from None
    with context.repository(create=True) as repo:
        stored = repo.add(job)
    if as_json:
        echo_json(stored.model_dump(mode="json"))
    else:
        click.echo(stored.id)


REQUEUABLE = click.Choice(["failed", "timeout", "cancelled"])


@cli.command()
@click.argument("job_ids", nargs=-1, metavar="[JOB_ID]...")
@click.option("--status", type=REQUEUABLE, help="Requeue every job of this status instead.")
@click.option("--content-type", multiple=True, help="With --status: only these (repeatable).")
@click.option("--reset-retries", is_flag=True, help="Set retry_count back to 0.")
@click.option("--dry-run", is_flag=True, help="Only list what would be requeued.")
@click.option("--json", "as_json", is_flag=True, help="Print the jobs as JSON.")
@pass_context
def requeue(
    context: Context,
    job_ids: tuple[str, ...],
    status: str | None,
    content_type: tuple[str, ...],
    reset_retries: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Make failed, timed-out or cancelled jobs pending and ready again, by id or by status.

    One line per job (ID -> pending); with --dry-run, the jobs that would be requeued.
    """
    if bool(job_ids) == bool(status):
        raise click.UsageError("give job ids or --status, not both and not neither")
    if content_type and not status:
        raise click.UsageError("--content-type filters --status")
    with context.repository() as repo:
        if status:
            found = repo.find(status=status, content_type=list(content_type) or None)
            job_ids = tuple(job.id for job in found)
        if dry_run:
            jobs, ok = _each_job(job_ids, lambda job_id: _requeuable(repo, job_id))
            _echo_jobs(jobs, as_json, lambda j: f"{safe(j.id)} {j.status.value} -> pending")
            if not as_json:
                click.echo(f"would requeue {plural(len(jobs), 'job')}")
        else:
            jobs, ok = _each_job(
                job_ids, lambda job_id: repo.requeue(job_id, reset_retries=reset_retries)
            )
            _echo_jobs(jobs, as_json, lambda j: f"{safe(j.id)} -> {j.status.value}")
    sys.exit(0 if ok else 1)


def _requeuable(repo: JobRepository, job_id: str) -> Any:
    """The job, if ``requeue`` would accept it (the same errors otherwise)."""
    job = repo.get(job_id)
    if job is None:
        raise JobNotFound(job_id)
    if job.status.value not in REQUEUABLE.choices:
        raise InvalidTransition(job.id, "requeue", job.status.value)
    return job


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@click.option("--json", "as_json", is_flag=True, help="Print the cancelled jobs as JSON.")
@pass_context
def cancel(context: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Cancel pending or processing jobs, one line per job."""
    with context.repository() as repo:
        jobs, ok = _each_job(job_ids, repo.cancel)
    _echo_jobs(jobs, as_json, lambda j: f"{safe(j.id)} -> {j.status.value}")
    sys.exit(0 if ok else 1)


@cli.command()
@click.argument("job_ids", nargs=-1, required=True, metavar="JOB_ID...")
@pass_context
def delete(context: Context, job_ids: tuple[str, ...]) -> None:
    """Delete jobs, whatever their status, one line per job."""

    def delete_one(job_id: str) -> str:
        if not repo.delete(job_id):
            raise JobNotFound(job_id)
        return job_id

    with context.repository() as repo:
        deleted, ok = _each_job(job_ids, delete_one)
    for job_id in deleted:
        click.echo(f"{safe(job_id)} deleted")
    sys.exit(0 if ok else 1)


def _handler(_ctx: click.Context, _param: click.Parameter, value: str) -> Any:
    module_name, _, function_name = value.partition(":")
    if not module_name or not function_name:
        raise click.BadParameter("expected MODULE:FUNCTION, e.g. myapp.tasks:convert")
    return value


def _load_handler(spec: str) -> Any:
    import importlib

    module_name, _, function_name = spec.partition(":")
    # Like python -m: the current directory's modules are importable.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        fail(f"cannot import {module_name!r}: {exc}")
    handler = module
    for part in function_name.split("."):
        handler = getattr(handler, part, None)  # type: ignore[assignment]
        if handler is None:
            fail(f"{module_name!r} has no {function_name!r}")
    if not callable(handler):
        fail(f"{spec!r} is not callable")
    return handler


@cli.command()
@click.argument("handler_spec", metavar="MODULE:FUNCTION", callback=_handler)
@click.option("--content-type", multiple=True, help="Claim only these content types (repeatable).")
@click.option("--burst", is_flag=True, help="Return once no job is ready.")
@click.option("--max-jobs", type=click.IntRange(min=1), help="Stop after this many jobs.")
@click.option(
    "--lease",
    type=click.FloatRange(min=0, min_open=True, max=MAX_LEASE_SECONDS),
    default=300,
    show_default=True,
    help="Lease seconds (renewed in the background while the handler works).",
)
@click.option("--worker-id", help="Default: <host>-<pid>.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@pass_context
def work(
    context: Context,
    handler_spec: str,
    content_type: tuple[str, ...],
    burst: bool,
    max_jobs: int | None,
    lease: float,
    worker_id: str | None,
    as_json: bool,
) -> None:
    """Run a worker: claim jobs and call MODULE:FUNCTION(job) on each.

    A returned dict (or None) completes the job, an exception fails it. SIGTERM or SIGINT
    stops after the current job; a second one gives the job back at once. Exit 0.
    """
    from .worker import Worker

    handler = _load_handler(handler_spec)
    with context.repository() as repo:
        worker = Worker(
            repo,
            handler,
            worker_id=worker_id,
            content_types=list(content_type) or None,
            lease_seconds=lease,
        )
        summary = worker.run(burst=burst, max_jobs=max_jobs)
    if as_json:
        echo_json({"worker_id": worker.worker_id, **summary.to_dict()})
        return
    click.echo(
        f"worker {safe(worker.worker_id)}: {summary.completed} completed,"
        f" {summary.failed} failed, {summary.lost} lost, {summary.given_back} given back"
        f" in {summary.seconds:.1f}s (stopped: {summary.stopped_by})"
    )


# -- moving between backends ------------------------------------------------------------


@cli.command()
@click.option(
    "--to",
    "to_url",
    required=True,
    metavar="URL|DIR",
    callback=_not_empty,
    help="Where to copy to.",
)
@click.option(
    "--from",
    "from_url",
    metavar="URL|DIR",
    callback=_not_empty,
    help="Where to copy from (default: the store of --data-dir).",
)
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True)
@click.option("--verify", "verify_all", is_flag=True, help="Compare every job afterwards.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def copy(
    context: Context,
    to_url: str,
    from_url: str | None,
    batch_size: int,
    verify_all: bool,
    as_json: bool,
) -> None:
    """Copy every job into another backend (e.g. postgresql://...), versions kept.

    Idempotent: a second run writes nothing. Ends with a per-status count check; exit 1
    if the counts differ, a newer target copy was kept, or --verify finds a difference.
    """
    from .transfer import copy_jobs

    source_target = resolve_target(from_url) if from_url else context.resolved()
    source = open_repository(source_target, create=False)
    try:
        target = open_repository(to_url)
        try:
            show_bar = sys.stderr.isatty() and not as_json
            with _progress(show_bar, "copying") as progress:
                report = copy_jobs(
                    source, target, batch_size=batch_size, progress=progress, verify=verify_all
                )
        finally:
            target.close()
    finally:
        source.close()
    if as_json:
        echo_json(report.to_dict())
        sys.exit(0 if report.ok else 1)
    click.echo(
        f"read {report.read} jobs: {report.written} written, {report.unchanged} already"
        f" there, {len(report.conflicts)} conflicts ({report.seconds:.2f}s)"
    )
    for status in JobStatus:
        here = report.source_counts.get(status.value, 0)
        there = report.target_counts.get(status.value, 0)
        mark = "" if here == there else "   <- differs"
        click.echo(f"  {status.value:<11} source {here:>8}  target {there:>8}{mark}")
    for job_id in report.conflicts[:SHOWN]:
        click.echo(f"conflict: {safe(job_id)}: the target holds a newer or diverged copy")
    _more(len(report.conflicts), "conflict")
    for difference in report.differences[:SHOWN]:
        click.echo(f"{difference.kind}: {safe(difference.job_id)}: {safe(difference.detail)}")
    _more(len(report.differences), "difference")
    if report.ok:
        verified = ", every job compared" if report.verified else ""
        click.echo(f"ok: counts match{verified}")
    else:
        click.echo("copy check failed", err=True)
    sys.exit(0 if report.ok else 1)


# How many lines of a long list a text report shows (--json shows them all).
SHOWN = 20


def _more(total: int, what: str) -> None:
    if total > SHOWN:
        click.echo(f"… and {total - SHOWN} more {what}s not shown (--json lists every one)")


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
        click.echo(safe(status.describe()))
    sys.exit(0 if status.ok else 1)


def _database_url(url: str | None) -> str:
    if not url:
        raise click.UsageError("give --url postgresql://... or set $HYBRIDSTORE_URL")
    if not is_database_url(url):
        raise click.BadParameter("expected a postgresql:// URL", param_hint="--url")
    return url


@db.command("init")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_init(url: str | None, as_json: bool) -> None:
    """Create the database and schema if missing, and apply every migration."""
    from .pgadmin import init_db

    _db_report(init_db(_database_url(url)), as_json)


@db.command("migrate")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_migrate(url: str | None, as_json: bool) -> None:
    """Apply pending migrations."""
    from .pgadmin import migrate_db

    _db_report(migrate_db(_database_url(url)), as_json)


@db.command("test")
@_db_url_option
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_test(url: str | None, as_json: bool) -> None:
    """Connect and check the schema version; exit 1 unless it is up to date."""
    from .pgadmin import check_db

    _db_report(check_db(_database_url(url)), as_json)


@db.command("reset")
@_db_url_option
@click.option("--force", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def db_reset(url: str | None, force: bool, as_json: bool) -> None:
    """Drop hybridstore's tables (every job!) and recreate them."""
    from .pgadmin import reset_db

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
    from .pgadmin import create_migration

    click.echo(str(create_migration(name)))


# -- the main job -----------------------------------------------------------------------


@cli.command()
@click.option("--jobs", type=click.IntRange(min=1), default=200, show_default=True)
@click.option("--workers", type=click.IntRange(min=1, max=64), default=4, show_default=True)
@click.option(
    "--fail-rate",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="Chance that an attempt fails (failed attempts are retried).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@pass_context
def demo(context: Context, jobs: int, workers: int, fail_rate: float, as_json: bool) -> None:
    """Create jobs and work them off with worker processes; print throughput and stats."""
    from .demo import run_demo

    target = context.resolved()
    open_repository(target).close()  # create the store before the workers start
    if not as_json:
        click.echo(
            f"demo: {plural(jobs, 'job')},"
            f" {plural(workers, 'worker process', 'worker processes')},"
            f" store {safe(describe_target(target))}"
        )
    with _progress(sys.stderr.isatty() and not as_json, "jobs finished") as progress:
        report = run_demo(
            target, jobs=jobs, workers=workers, fail_rate=fail_rate, progress=progress
        )
    if as_json:
        echo_json(report.to_dict())
        return
    rate = report.claims_per_second
    click.echo(
        f"{plural(report.claims, 'claim')} in {report.seconds:.2f}s:"
        f" {rate:.{1 if rate < 10 else 0}f} claims/s with {plural(workers, 'worker')}"
    )
    click.echo(
        f"  (the demo's pace, not the store's: workers sleep {report.work_seconds * 1000:g} ms"
        " per job to imitate work, and the time includes starting them)"
    )
    click.echo(
        f"time inside store calls: {report.store_ms_per_claim:.2f} ms per claim"
        " (claim, heartbeat, complete/fail; lock waits included)"
    )
    click.echo(
        f"attempts: {report.completed} completed, {report.failed_attempts} failed,"
        f" {report.abandoned} abandoned (leases expired: {report.expired})"
    )
    statistics = report.statistics
    counts = ", ".join(f"{k} {v}" for k, v in statistics["status_counts"].items())
    click.echo(f"store now holds {plural(statistics['total_jobs'], 'job')}: {counts}")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8765, show_default=True, help="TCP port."
)
@click.option(
    "--token-file",
    type=click.Path(dir_okay=False),
    help="API tokens, one 'ROLE TOKEN' a line (roles: admin, worker)."
    " Default: $HYBRIDSTORE_API_TOKENS ('ROLE:TOKEN,ROLE:TOKEN').",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="uvicorn worker processes (on PostgreSQL, or a data directory: both are safe).",
)
@pass_context
def serve(context: Context, host: str, port: int, token_file: str | None, workers: int) -> None:
    """Serve the store over HTTP to remote workers (tokens required; TLS: use a proxy)."""
    from .tokens import load_tokens

    tokens = load_tokens(token_file)  # none configured: one line, exit 1
    target = context.resolved()
    if is_http_url(target):
        fail("serve needs a data directory or a postgresql:// URL, not another server")
    try:
        from .httpapi import serve as run_server
    except ImportError as exc:
        fail(f"serve needs the http extra (pip install 'hybridstore[http]'): {exc}")
    open_repository(target).close()  # create or check the store before listening
    level = click.get_current_context().find_root().params.get("log_level") or "warning"
    run_server(
        target,
        tokens,
        host=host,
        port=port,
        token_file=token_file,
        workers=workers,
        # uvicorn's access log is at info: shown unless only errors are asked for.
        log_level=level if level in ("debug", "error", "critical") else "info",
    )


def main() -> None:
    """Entry point of the ``hybridstore`` console script."""
    try:
        cli(prog_name="hybridstore")
    except BrokenPipeError:
        # The reader went away (``hybridstore list | head``): stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)


if __name__ == "__main__":
    main()
