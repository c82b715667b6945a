"""The ``hybridstore demo`` command: jobs worked off by worker processes."""

from __future__ import annotations

import sys

import click

from ..config import (
    describe_target,
)
from ..factory import open_repository
from .group import (
    Context,
    cli,
    echo_json,
    pass_context,
    plural,
    progress_bar,
    safe,
)

# -- the main job -----------------------------------------------------------------------


@cli.command()
@click.option(
    "--jobs",
    type=click.IntRange(min=1),
    default=200,
    show_default=True,
    help="How many demo jobs to add.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=64),
    default=4,
    show_default=True,
    help="How many worker processes to run.",
)
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
    from ..demo import run_demo

    target = context.resolved()
    open_repository(target).close()  # create the store before the workers start
    if not as_json:
        click.echo(
            f"demo: {plural(jobs, 'job')},"
            f" {plural(workers, 'worker process', 'worker processes')},"
            f" store {safe(describe_target(target))}"
        )
    with progress_bar(sys.stderr.isatty() and not as_json, "jobs finished") as progress:
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
    failed = (
        f"{report.failed_attempts} failed (a simulated conversion error; retried while the"
        " job had retries left)"
        if report.failed_attempts
        else "none failed"
    )
    click.echo(f"attempts: {report.completed} completed, {failed}")
    if report.abandoned:
        click.echo(
            f"  and {report.abandoned} abandoned by a simulated worker crash: each job came"
            f" back to a worker once its {report.lease_seconds:g}s lease ran out"
        )
    statistics = report.statistics
    counts = ", ".join(f"{k} {v}" for k, v in statistics["status_counts"].items())
    click.echo(f"store now holds {plural(statistics['total_jobs'], 'job')}: {counts}")
