"""The commands on the store as a whole: set up, check, read, clean up and copy it."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from ..config import (
    describe_target,
    resolve_target,
)
from ..factory import open_repository
from ..model import JobStatus
from .group import (
    Context,
    cli,
    echo_json,
    fail,
    not_empty,
    opened,
    pass_context,
    plural,
    progress_bar,
    safe,
)

# -- the data directory ------------------------------------------------------------------


@cli.command()
@pass_context
def init(context: Context) -> None:
    """Create the data directory layout and its sidecar index (nothing to do if present)."""
    existed = _looks_like_store(context.resolved())
    with context.file_store("init", create=True) as store:
        if store.read_only:
            fail(f"{safe(store.data_dir)} is on a read-only file system: nothing to initialise")
        verb = "already a data directory:" if existed else "initialized"
        click.echo(
            f"{verb} {safe(store.data_dir)} (sidecar schema version"
            f" {store.schema_version}, {plural(store.count(), 'job')})"
        )


def _looks_like_store(path: str) -> bool:
    """Whether ``path`` already holds a data directory's layout (every status folder)."""
    if "://" in path:
        return False
    return all(os.path.isdir(os.path.join(path, status.value)) for status in JobStatus)


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
        with progress_bar(show_bar, "reindexing") as progress:
            report = store.reindex(progress=progress)
    click.echo(f"indexed {plural(report.indexed, 'job')} in {report.seconds:.2f}s")
    if report.skipped:
        click.echo(f"skipped {len(report.skipped)} files:")
        for problem in report.skipped:
            click.echo(f"  {safe(problem.path)}: {problem.kind}: {safe(problem.reason)}")


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
        read_only = store.read_only
    if as_json:
        echo_json(report.to_dict())
    else:
        _print_problems(report.problems)
        click.echo(
            f"ok: {plural(report.jobs, 'job')}, files and sidecar agree"
            if report.ok
            else f"drift: {plural(len(report.drift), 'problem')}"
            + (
                " (the store is on a read-only file system: repair a writable copy)"
                if read_only
                else " (run 'hybridstore verify --repair')"
            )
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
    if not statistics["total_jobs"]:
        click.echo("no jobs (add one with 'hybridstore add --task ID --source PATH --type CT')")
        return
    click.echo(f"total jobs: {statistics['total_jobs']}")
    click.echo(f"storage: {statistics['storage_size_mb']} MB")
    for title, key in (
        ("by status", "status_counts"),
        ("by content type", "content_type_counts"),
        ("by worker", "worker_counts"),
    ):
        counts = statistics[key]
        if not counts:  # e.g. no job has been claimed yet
            click.echo(f"{title}: none")
            continue
        click.echo(f"{title}:")
        for name, count in counts.items():
            click.echo(f"  {safe(name):<20} {count:>8}")


STATUS_CHOICE = click.Choice([s.value for s in JobStatus])


@cli.command("list")
@click.option("--status", type=STATUS_CHOICE, multiple=True, help="Repeat for any of several.")
@click.option("--content-type", multiple=True, help="Repeat for any of several.")
@click.option("--worker", multiple=True, help="Repeat for any of several.")
@click.option("--limit", type=click.IntRange(min=0), help="At most this many jobs (default: all).")
@click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many jobs first.")
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
        click.echo("no jobs matched" if limit != 0 else "no jobs listed (--limit 0)")
        return
    _echo_table(
        ("ID", "STATUS", "CONTENT TYPE", "WORKER", "CREATED", "PRIORITY", "NOT BEFORE", "RETRIES"),
        [
            (
                safe(job["id"]),
                job["status"],
                safe(job["content_type"]),
                safe(job["worker_id"] or "-"),
                job["created_at"],  # the same Z form as --json
                str(job["priority"]),
                job["not_before"] or "-",  # a delayed or backed-off job: not claimed before
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

    With --json: {"days", "dry_run", "deleted"}, and with --dry-run "would_delete" and
    "job_ids", the jobs that would be deleted ("deleted" is then 0).
    """
    job_ids: list[str] = []
    with context.repository() as repo:
        if dry_run:
            job_ids = [job.id for job in repo.old_jobs(days)]  # the clock cleanup uses
            deleted = len(job_ids)
        else:
            deleted = repo.cleanup(days)
    if as_json:
        outcome: dict[str, Any] = {
            "days": days,
            "dry_run": dry_run,
            "deleted": 0 if dry_run else deleted,
        }
        if dry_run:
            outcome["would_delete"] = deleted
            outcome["job_ids"] = job_ids
        echo_json(outcome)
        return
    for job_id in job_ids:  # --dry-run: which, as requeue --dry-run says
        click.echo(safe(job_id))
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {plural(deleted, 'job')} finished more than {days:g} days ago")


# -- moving between backends ------------------------------------------------------------


@cli.command()
@click.option(
    "--to",
    "to_url",
    required=True,
    metavar="URL|DIR",
    callback=not_empty,
    help="Where to copy to.",
)
@click.option(
    "--from",
    "from_url",
    metavar="URL|DIR",
    callback=not_empty,
    help="Where to copy from (default: the store of --data-dir).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Jobs written per batch.",
)
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
    from ..transfer import copy_jobs

    source_target = resolve_target(from_url) if from_url else context.resolved()
    if _same_store(source_target, resolve_target(to_url)):
        raise click.UsageError("--to names the store copied from: nothing to copy")
    given = (from_url, "--from") if from_url else context.given()
    with opened(source_target, *given) as source:
        target = open_repository(to_url)
        try:
            show_bar = sys.stderr.isatty() and not as_json
            with progress_bar(show_bar, "copying") as progress:
                report = copy_jobs(
                    source, target, batch_size=batch_size, progress=progress, verify=verify_all
                )
        finally:
            target.close()
    # Where, as the user named them (passwords masked), not the repositories' reprs.
    report.source, report.target = describe_target(source_target), describe_target(to_url)
    if as_json:
        echo_json(report.to_dict())
        sys.exit(0 if report.ok else 1)
    click.echo(
        f"read {plural(report.read, 'job')}: {report.written} written, {report.unchanged} already"
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
    _echo_skipped(report.skipped)
    if report.ok:
        verified = ", every job compared" if report.verified else ""
        click.echo(f"ok: counts match{verified}")
    elif report.unreadable and report.counts_match and not report.conflicts:
        click.echo("copy incomplete: unreadable job files were not copied", err=True)
    else:
        click.echo("copy check failed", err=True)
    sys.exit(0 if report.ok else 1)


# How many lines of a long list a text report shows (--json shows them all).
SHOWN = 20


def _echo_skipped(skipped: list[Any]) -> None:
    """The jobs of a data directory that copy left behind, and what to do about them."""
    gone = [s for s in skipped if s.kind == "gone"]
    unreadable = [s for s in skipped if s.kind == "unreadable"]
    if gone:
        click.echo(
            f"skipped {plural(len(gone), 'job')} whose file is gone (the source's index still"
            " lists it; 'hybridstore verify --repair' there drops the row):"
        )
        for item in gone[:SHOWN]:
            click.echo(f"  gone: {safe(item.job_id)}: {safe(item.path)}")
        _more(len(gone), "skipped job")
    if unreadable:
        click.echo(
            f"skipped {plural(len(unreadable), 'unreadable job file')} (not copied: fix or"
            " restore them, or quarantine them with 'hybridstore verify --repair'):"
        )
        for item in unreadable[:SHOWN]:
            click.echo(f"  unreadable: {safe(item.path)}: {safe(item.detail)}")
        _more(len(unreadable), "unreadable file")


def _more(total: int, what: str) -> None:
    if total > SHOWN:
        click.echo(f"… and {total - SHOWN} more {what}s not shown (--json lists every one)")


def _same_store(a: str, b: str) -> bool:
    """Whether two resolved targets name one store (a directory by its real path)."""
    if "://" in a or "://" in b:
        return a == b
    return os.path.realpath(a) == os.path.realpath(b)
