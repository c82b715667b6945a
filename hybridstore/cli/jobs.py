"""The commands on single jobs: add, requeue, cancel, delete, and work them off."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click
from pydantic import ValidationError

from ..errors import AccessDenied, HybridStoreError, InvalidTransition, JobNotFound
from ..lifecycle import MAX_DELAY_SECONDS, MAX_LEASE_SECONDS
from ..model import RemoteJob, utcnow
from ..repository import JobRepository
from .group import (
    Context,
    cli,
    echo_json,
    fail,
    pass_context,
    plural,
    safe,
)

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
        except AccessDenied:
            raise  # the same for every id: one line for all (the group's)
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
@click.option(
    "--max-retries",
    type=click.IntRange(min=0, max=2**31 - 1),
    default=3,
    show_default=True,
    help="How many times a failed attempt is retried.",
)
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
        field = str(error["loc"][0]) if error["loc"] else ""
        message = str(error["msg"]).removeprefix("Value error, ")
        raise click.BadParameter(message, param_hint=f"'{_OPTION_OF.get(field, field)}'") from None
    with context.repository(create=True) as repo:
        stored = repo.add(job)
    if as_json:
        echo_json(stored.model_dump(mode="json"))
    else:
        click.echo(stored.id)


# The option that sets each field of a job, for error messages.
_OPTION_OF = {
    "ingestion_task_id": "--task",
    "source_file_path": "--source",
    "content_type": "--type",
    "task_options": "--options",
    "priority": "--priority",
    "unique_key": "--unique-key",
    "max_retries": "--max-retries",
    "not_before": "--delay",
}

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
            if status and not as_json:  # by status: say how many, none included
                click.echo(f"requeued {plural(len(jobs), 'job')}")
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
@click.option("--json", "as_json", is_flag=True, help="Print the deleted ids as JSON.")
@pass_context
def delete(context: Context, job_ids: tuple[str, ...], as_json: bool) -> None:
    """Delete jobs, whatever their status, one line per job."""

    def delete_one(job_id: str) -> str:
        if not repo.delete(job_id):
            raise JobNotFound(job_id)
        return job_id

    with context.repository() as repo:
        deleted, ok = _each_job(job_ids, delete_one)
    if as_json:
        echo_json([{"id": job_id, "deleted": True} for job_id in deleted])
    else:
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
    except Exception as exc:  # the module itself raised (or does not parse) on import
        fail(f"importing {module_name!r} failed: {type(exc).__name__}: {exc}")
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
@click.option(
    "--prefetch",
    type=click.IntRange(min=1, max=1000),
    default=1,
    show_default=True,
    help="Jobs claimed at once (their leases are all renewed; a stop gives back the unstarted).",
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
    prefetch: int,
    worker_id: str | None,
    as_json: bool,
) -> None:
    """Run a worker: claim jobs and call MODULE:FUNCTION(job) on each.

    A returned dict (or None) completes the job, an exception fails it. SIGTERM or SIGINT
    stops after the current job; a second one gives the job back at once. Exit 0.
    """
    from ..worker import Worker

    handler = _load_handler(handler_spec)
    with context.repository() as repo:
        worker = Worker(
            repo,
            handler,
            worker_id=worker_id,
            content_types=list(content_type) or None,
            lease_seconds=lease,
            prefetch=prefetch,
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
