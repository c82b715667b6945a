#!/usr/bin/env python3
"""Turn a pytest-benchmark JSON of ``benchmarks/`` into the tables and chart of its README.

    pytest benchmarks/ --benchmark-only --benchmark-json=.benchmarks/run.json
    python scripts/bench_report.py .benchmarks/run.json

Rewrites the two generated parts of ``benchmarks/README.md``: the detailed tables (between
the ``bench_report.py: generated`` markers: machine, medians, ratios, claim throughput, the
file store against PostgreSQL) and, at the end of the page, the targets of issues 2, 3 and
6 with met / not met (between the ``bench_report.py: targets`` markers). The page's first
section, *How it compares*, is ``scripts/bench_peers.py``'s. It draws
``benchmarks/bench_chart.png`` (cost per operation against store size, log scales), and
writes ``benchmarks/results.json``: the run's statistics, one result a line, small enough
to keep in the tree. The prose around the markers (how to run, the analysis) is written by
hand and left alone.

The raw JSON stays out of the tree (``.benchmarks/`` is ignored). The summary is itself a
pytest-benchmark JSON: this script regenerates the page from it, and pytest-benchmark's
own ``compare`` puts two runs side by side (see the README).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent

# (op, label, kind): kind is write, claim, point, page, set, whole or ref.
OPS: list[tuple[str, str, str]] = [
    ("add", "durable add", "write"),
    ("transition", "status transition (save, status changed)", "write"),
    ("claim_1p", "claim_next, 1 process (per claim)", "claim"),
    ("claim_4p", "claim_next, 4 processes (per claim, wall clock)", "claim"),
    ("get", "get", "point"),
    ("find_by_ingestion_task", "find_by_ingestion_task", "point"),
    ("count_status", "count(status=pending)", "point"),
    ("count_all", "count()", "point"),
    ("statistics", "statistics()", "point"),
    ("find_status_100", "find(status=pending, limit=100)", "page"),
    ("find_content_type_100", "find(content_type=audio, limit=100)", "page"),
    ("find_worker_100", "find(worker_id=worker-3, limit=100)", "page"),
    ("find_status_all", "find(status=pending)", "set"),
    ("find_content_type_all", "find(content_type=audio)", "set"),
    ("find_worker_all", "find(worker_id=worker-3)", "set"),
    ("expired", "expired()", "set"),
    ("old_jobs", "old_jobs(days_old=7)", "set"),
    ("reindex", "reindex (whole store)", "whole"),
    ("verify", "verify (whole store)", "whole"),
    ("read_one_file", "read + json.loads of one job file", "ref"),
    ("create_file", "create one empty file (in a status directory)", "ref"),
]
OP_LABEL = {op: label for op, label, _ in OPS}
OP_KIND = {op: kind for op, _, kind in OPS}
IMPLS = ["hybridstore", "hybridstore-nondurable", "limit", "legacy"]
IMPL_LABEL = {
    "hybridstore": "hybridstore",
    "hybridstore-nondurable": "hybridstore, durable=False",
    "limit": "machine limit",
    "legacy": "older JSON-index design",
    "limit-derived": "limit: read+parse the returned files",
    "postgres": "PostgreSQL",
}
IMPL_STYLE = {
    "hybridstore": {"color": "#1f77b4", "marker": "o", "linestyle": "-"},
    "hybridstore-nondurable": {"color": "#17becf", "marker": "s", "linestyle": "--"},
    "limit": {"color": "#222222", "marker": "^", "linestyle": ":"},
    "legacy": {"color": "#d62728", "marker": "x", "linestyle": "-"},
    "limit-derived": {"color": "#7f7f7f", "marker": "", "linestyle": ":"},
}
SMALL, MID, BIG = 1_000, 20_000, 100_000

# benchmarks/test_backends.py: the same calls on JobStore (durable) and PostgreSQL.
# (op, label, kind) as in OPS; their impls are "hybridstore" and "postgres".
BACKEND_OPS: list[tuple[str, str, str]] = [
    ("backend_add", "durable add", "write"),
    ("backend_get", "get", "point"),
    ("backend_find_status_100", "find(status=pending, limit=100)", "page"),
    ("backend_find_content_type_all", "find(content_type=audio), no limit", "set"),
    ("backend_claim_4p", "claim_next, 4 processes (per claim, wall clock)", "claim"),
]
# Within this factor of each other, neither backend is called faster.
EVEN = 1.10


@dataclass
class Result:
    op: str
    impl: str
    size: int
    median: float  # seconds per timed call
    ops: int  # operations per timed call
    rounds: int
    returned: int | None
    extra: dict[str, Any]

    @property
    def cost(self) -> float:
        """Seconds per operation."""
        return self.median / self.ops


class Results:
    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data
        self.by_key: dict[tuple[str, str, int], Result] = {}
        for bench in data["benchmarks"]:
            info = bench.get("extra_info") or {}
            if "op" not in info:
                continue
            result = Result(
                op=info["op"], impl=info["impl"], size=int(info["size"]),
                median=float(bench["stats"]["median"]), ops=int(info.get("ops_per_round", 1)),
                rounds=int(bench["stats"]["rounds"]), returned=info.get("returned"),
                extra=info,
            )
            self.by_key[(result.op, result.impl, result.size)] = result
        # Store sizes: those of the per-size operations (not the benchmarks that run on
        # stores of their own, whose ``size`` means something else or nothing).
        sized = set(OP_KIND) | {op for op, _, _ in BACKEND_OPS}
        self.sizes = sorted({k[2] for k in self.by_key if k[0] in sized})

    def get(self, op: str, impl: str, size: int) -> Result | None:
        return self.by_key.get((op, impl, size))

    def cost(self, op: str, impl: str, size: int) -> float | None:
        result = self.get(op, impl, size)
        return result.cost if result else None

    def impls(self, op: str) -> list[str]:
        return [i for i in IMPLS if any(k[0] == op and k[1] == i for k in self.by_key)]

    def per_returned(self, op: str, impl: str, size: int) -> float | None:
        result = self.get(op, impl, size)
        if not result or not result.returned:
            return None
        return result.cost / result.returned

    def growth(self, op: str, impl: str) -> float | None:
        """Cost at the largest size ÷ cost at the smallest (1,000 and 100,000 when run)."""
        sizes = [s for s in self.sizes if self.get(op, impl, s)]
        if len(sizes) < 2:
            return None
        low, high = self.cost(op, impl, sizes[0]), self.cost(op, impl, sizes[-1])
        return high / low if low and high else None

    def vs_limit(self, op: str, size: int) -> float | None:
        """hybridstore ÷ limit (cost), or per returned job ÷ one file read for set queries."""
        if OP_KIND.get(op) == "set":
            per_job = self.per_returned(op, "hybridstore", size)
            one = self.cost("read_one_file", "limit", size)
            return per_job / one if per_job and one else None
        mine, limit = self.cost(op, "hybridstore", size), self.cost(op, "limit", size)
        return mine / limit if mine and limit else None

    def legacy_ratio(self, op: str, size: int) -> float | None:
        """older design ÷ hybridstore (cost)."""
        old, mine = self.cost(op, "legacy", size), self.cost(op, "hybridstore", size)
        return old / mine if old and mine else None


# -- formatting ---------------------------------------------------------------------------


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    if ratio >= 100:
        return f"{ratio:,.0f}×"
    if ratio >= 10:
        return f"{ratio:.1f}×"
    return f"{ratio:.2f}×"


def fmt_size(size: int) -> str:
    return f"{size:,}"


def tick(seconds: float) -> str:
    """A compact axis label: 1 µs, 10 µs, 100 µs, 1 ms, … 10 s."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9)):
        if seconds >= scale * 0.999:
            value = seconds / scale
            return f"{value:.0f} {unit}" if value >= 1 else f"{value:g} {unit}"
    return f"{seconds:g} s"


def table(header: list[str], rows: Iterable[list[str]], align: str | None = None) -> str:
    rows = list(rows)
    align = align or "l" + "r" * (len(header) - 1)
    marks = [":---" if a == "l" else "---:" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(marks) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# -- targets ------------------------------------------------------------------------------


@dataclass
class Target:
    issue: str
    text: str
    measured: str
    met: bool | None  # None: not measured in this run


def _check(values: Sequence[tuple[str, float | None]], ok: Callable[[float], bool],
           show: Callable[[float], str] = fmt_ratio) -> tuple[str, bool | None]:
    known = [(name, v) for name, v in values if v is not None]
    if not known:
        return "not measured in this run", None
    measured = ", ".join(f"{name} {show(v)}" if name else show(v) for name, v in known)
    return measured, all(ok(v) for _, v in known)


def _at_least(factor: int) -> Callable[[float], bool]:
    """``≥ factor``, or strictly faster (``> 1``) when the factor is 1."""
    if factor == 1:
        return lambda v: v > 1.0
    return lambda v: v >= factor


def targets(r: Results) -> list[Target]:
    out: list[Target] = []
    have_growth = SMALL in r.sizes and BIG in r.sizes

    def growth_at_big(op: str) -> float | None:
        if not have_growth:
            return None
        low, high = r.cost(op, "hybridstore", SMALL), r.cost(op, "hybridstore", BIG)
        return high / low if low and high else None

    for op in ["get", "find_by_ingestion_task", "count_status", "count_all", "statistics",
               "find_status_100", "find_content_type_100", "find_worker_100"]:
        issue = "6" + (", 2" if op in ("get", "find_by_ingestion_task", "count_status",
                                       "count_all", "find_status_100") else "")
        measured, met = _check([("", growth_at_big(op))], lambda v: v <= 1.5)
        out.append(Target(issue, f"`{OP_LABEL[op]}`: cost at 100,000 ≤ 1.5 × cost at 1,000",
                          measured, met))
    for op in ["add", "transition"]:
        ratios = [(fmt_size(s), r.vs_limit(op, s)) for s in r.sizes]
        measured, met = _check(ratios, lambda v: v <= 2.0)
        out.append(Target("6" + (", 2" if op == "add" else ""),
                          f"durable `{op}` within 2 × its limit line (at every size)",
                          measured, met))
        measured, met = _check([("", growth_at_big(op))], lambda v: v <= 1.5)
        out.append(Target("6", f"durable `{op}` not growing with store size"
                               " (100,000 ÷ 1,000 ≤ 1.5)", measured, met))
    for op in ["find_status_all", "find_content_type_all", "find_worker_all", "expired",
               "old_jobs"]:
        ratios = [(fmt_size(s), r.vs_limit(op, s)) for s in r.sizes]
        measured, met = _check(ratios, lambda v: v <= 3.0)
        out.append(Target("6", f"`{OP_LABEL[op]}` per returned job ≤ 3 × reading and parsing"
                               " one job file", measured, met))
    reindex = r.vs_limit("reindex", BIG) if BIG in r.sizes else None
    measured, met = _check([("", reindex)], lambda v: v <= 2.0)
    out.append(Target("6", "reindex of 100,000 jobs within 2 × its limit line", measured, met))
    ratios = [(fmt_size(s), r.vs_limit("get", s)) for s in r.sizes]
    measured, met = _check(ratios, lambda v: v <= 2.0)
    out.append(Target("6", "`get` within 2 × its limit line (indexed lookup + read and parse"
                           " one file)", measured, met))
    legacy_size = MID if MID in r.sizes else None
    for op, at_least, text in [
        ("add", 25, "add ≥ 25 × faster"),
        ("transition", 25, "transition ≥ 25 × faster"),
        ("find_by_ingestion_task", 30, "ingestion-task lookup ≥ 30 × faster"),
        ("expired", 8, "expired ≥ 8 × faster"),
        ("statistics", 50, "statistics ≥ 50 × faster"),
        ("find_worker_all", 1, "find by worker faster (> 1 ×)"),
        ("find_content_type_all", 1, "find by content type faster (> 1 ×)"),
        ("find_status_all", 1, "find by status faster (> 1 ×)"),
    ]:
        value = r.legacy_ratio(op, legacy_size) if legacy_size else None
        measured, met = _check([("", value)], _at_least(at_least))
        out.append(Target("6", f"against the older design at 20,000 jobs: {text}",
                          measured, met))
    ratios = []
    for s in r.sizes:
        mine = r.cost("claim_4p", "hybridstore", s)
        limit = r.cost("claim_4p", "limit", s)
        ratios.append((fmt_size(s), limit / mine if mine and limit else None))
    measured, met = _check(ratios, lambda v: v >= 0.5,
                           show=lambda v: f"{v * 100:.0f} % of the limit")
    out.append(Target("6, 3", "`claim_next` with 4 processes: throughput ≥ half of its limit"
                              " line", measured, met))
    out.append(delayed_claims_target(r))
    return out


def delayed_claims_target(r: Results) -> Target:
    """``benchmarks/test_claims.py``: the claim behind the delayed jobs ÷ the same claim
    without them (its ``size`` is the number of delayed jobs), on each backend."""
    ratios = []
    ahead = 0
    for impl, label in (("hybridstore", "file store"), ("postgres", "PostgreSQL")):
        behind = [res for (op, i, _), res in r.by_key.items()
                  if op == "claim_delayed" and i == impl and res.size > 0]
        alone = r.cost("claim_delayed", impl, 0)
        if behind and alone:
            ahead = max(ahead, behind[0].size)
            ratios.append((label, behind[0].cost / alone))
    measured, met = _check(ratios, lambda v: v <= 1.5)
    jobs = fmt_size(ahead) if ahead else "10,000"
    return Target("12", f"`claim_next` with {jobs} delayed jobs ahead of one ready job ≤ 1.5 ×"
                        " without them, on both backends", measured,
                  met if len(ratios) == 2 or met is False else None)


# -- report -------------------------------------------------------------------------------


def source_note(bench: dict[str, Any]) -> str:
    start = bench.get("hybridstore_source_digest")
    end = bench.get("hybridstore_source_digest_at_end")
    if not start:
        return "?"
    if end and end != start:
        return (f"digest `{start}`: the code imported at the start and measured throughout"
                f" (the files on disk changed during the run, to `{end}`)")
    return f"digest `{start}`, unchanged during the run"


def machine_section(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    bench = data.get("hybridstore_bench", {})
    when = data.get("datetime", "")
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M UTC")
    cpu = info.get("cpu_model") or info.get("cpu", {}).get("brand_raw", "?")
    commit = str(bench.get("git_commit") or (data.get("commit_info") or {}).get("id") or "?")
    shown = f"`{commit[:12]}`"
    moved = bench.get("git_commit_at_end")
    if moved and moved != commit:
        shown += (f", the commit at the start (measured); `{str(moved)[:12]}` landed during"
                  " the run")
    rows = [
        ["date of the run", when],
        ["CPU", f"{info.get('cpu_count', '?')} cores, {cpu}"],
        ["memory", f"{info.get('memory_gb', '?')} GB"],
        ["file system of the data", str(info.get("file_system", "?"))],
        ["Python / SQLite", f"{info.get('python_implementation', '')}"
                            f" {info.get('python_version', '?')}"
                            f" / {info.get('sqlite_version', '?')}"],
        ["system", f"{info.get('system', '?')} {info.get('release', '')}"],
        ["repository commit", shown + (
            " plus uncommitted changes to " + ", ".join(f"`{f}`" for f in dirty)
            if (dirty := bench.get("hybridstore_uncommitted_changes")) else "")],
        ["hybridstore sources", source_note(bench)],
        ["store sizes", ", ".join(fmt_size(s) for s in bench.get("sizes", []))],
        ["older design at", ", ".join(fmt_size(s) for s in bench.get("legacy_sizes", []))],
        ["load average at start / end",
         f"{info.get('loadavg_at_start', '?')} / {info.get('loadavg_at_end', '?')}"],
        ["duration of the run", f"{info.get('run_seconds', '?')} s"
                                + (" (smoke mode)" if bench.get("quick") else "")],
    ]
    return table(["", ""], rows, "ll")


def medians_section(r: Results) -> str:
    header = ["operation", "implementation", *(fmt_size(s) for s in r.sizes)]
    if len(r.sizes) > 1:
        header.append(f"{fmt_size(r.sizes[-1])} ÷ {fmt_size(r.sizes[0])}")
    rows = []
    for op, label, _ in OPS:
        for impl in r.impls(op):
            row = [label, IMPL_LABEL[impl]]
            row += [fmt_time(r.cost(op, impl, s)) for s in r.sizes]
            if len(r.sizes) > 1:
                row.append(fmt_ratio(r.growth(op, impl)))
            rows.append(row)
    return table(header, rows, "ll" + "r" * (len(header) - 2))


def ratios_section(r: Results) -> str:
    legacy_sizes = [s for s in r.sizes if any(k[1] == "legacy" and k[2] == s
                                              for k in r.by_key)]
    header = ["operation", *(f"÷ limit @ {fmt_size(s)}" for s in r.sizes),
              *(f"older ÷ hybridstore @ {fmt_size(s)}" for s in legacy_sizes),
              "durable ÷ durable=False @ " + fmt_size(r.sizes[-1]) if r.sizes else ""]
    rows = []
    for op, label, kind in OPS:
        if kind == "ref":
            continue
        row = [label]
        row += [fmt_ratio(r.vs_limit(op, s)) for s in r.sizes]
        row += [fmt_ratio(r.legacy_ratio(op, s)) for s in legacy_sizes]
        durable = r.cost(op, "hybridstore", r.sizes[-1]) if r.sizes else None
        loose = r.cost(op, "hybridstore-nondurable", r.sizes[-1]) if r.sizes else None
        row.append(fmt_ratio(durable / loose) if durable and loose else "—")
        if any(cell != "—" for cell in row[1:]):
            rows.append(row)
    return table(header, rows)


def sets_section(r: Results) -> str:
    header = ["query", "implementation", *(f"@ {fmt_size(s)}" for s in r.sizes)]
    rows = []
    for op, label, kind in OPS:
        if kind != "set":
            continue
        for impl in r.impls(op):
            cells = []
            for s in r.sizes:
                result = r.get(op, impl, s)
                per = r.per_returned(op, impl, s)
                cells.append(f"{fmt_time(per)} ({result.returned:,} jobs)"
                             if result and per else "—")
            rows.append([label, IMPL_LABEL[impl], *cells])
    rows.append(["read + json.loads of one job file", "machine limit",
                 *(fmt_time(r.cost("read_one_file", "limit", s)) for s in r.sizes)])
    return table(header, rows, "ll" + "r" * len(r.sizes))


def claims_section(r: Results) -> str:
    header = ["claim_next", "implementation", *(f"claims/s @ {fmt_size(s)}" for s in r.sizes)]
    rows = []
    for op in ("claim_1p", "claim_4p"):
        for impl in r.impls(op):
            cells = []
            for s in r.sizes:
                cost = r.cost(op, impl, s)
                cells.append(f"{1 / cost:,.0f}" if cost else "—")
            procs = "1 process" if op == "claim_1p" else "4 processes"
            rows.append([procs, IMPL_LABEL[impl], *cells])
    for op in ("claim_1p", "claim_4p"):
        cells = []
        for s in r.sizes:
            mine, limit = r.cost(op, "hybridstore", s), r.cost(op, "limit", s)
            cells.append(f"{limit / mine * 100:.0f} %" if mine and limit else "—")
        procs = "1 process" if op == "claim_1p" else "4 processes"
        rows.append([procs, "**hybridstore as a share of the limit**", *cells])
    return table(header, rows, "ll" + "r" * len(r.sizes))


def _faster(ratio: float | None) -> str:
    """Which backend is faster, from PostgreSQL ÷ file store."""
    if ratio is None:
        return "—"
    if ratio > EVEN:
        return f"file store, {fmt_ratio(ratio)}"
    if ratio < 1 / EVEN:
        return f"PostgreSQL, {fmt_ratio(1 / ratio)}"
    return "about even"


def _server_note(extra: dict[str, Any]) -> str:
    settings = extra.get("pg_settings") or {}
    shown = ", ".join(f"`{name}={value}`" for name, value in settings.items())
    server = str(extra.get("pg_server", "?"))
    local = any(f"@{host}" in server for host in ("127.", "localhost", "[::1]", "::1"))
    where = (" on this machine (TCP over loopback): both backends share its CPU cores and"
             " its disk" if local else "")
    return (f"PostgreSQL {extra.get('pg_version', '?')} at `{server}`{where}"
            + (f"; {shown}" if shown else "") + ".")


def backends_section(r: Results, analysis_has_reading: bool = False) -> str:
    labels = {op: label for op, label, _ in BACKEND_OPS}
    pg_results = [res for (op, impl, _), res in r.by_key.items()
                  if op in labels and impl == "postgres"]
    if not pg_results:
        return ("Not measured in this run: `benchmarks/test_backends.py` skips its PostgreSQL"
                " side when the server cannot be reached (`HYBRIDSTORE_BENCH_REQUIRE_PG=1`"
                " turns that into a failure).")
    sizes = sorted({res.size for res in pg_results})
    intro = (
        "The same repository calls on `JobStore` (the file store, durable) and"
        " `PostgresJobRepository`, on the same population, each operation at each size on both"
        " backends back to back (`benchmarks/test_backends.py`). "
        + _server_note(pg_results[0].extra)
        + " Costs are medians per operation; the ratio is PostgreSQL's cost ÷ the file"
        " store's, so above 1 the file store is faster."
    )
    header = ["operation", "jobs", "file store", "PostgreSQL", "PostgreSQL ÷ file store",
              "faster"]
    rows = []
    spans: dict[str, list[float]] = {}
    for op, label, kind in BACKEND_OPS:
        for size in sizes:
            mine, theirs = r.get(op, "hybridstore", size), r.get(op, "postgres", size)
            if mine is None and theirs is None:
                continue
            ratio = theirs.cost / mine.cost if mine and theirs else None
            if ratio is not None:
                spans.setdefault(op, []).append(ratio)
            jobs = fmt_size(size)
            returned = next((res.returned for res in (mine, theirs) if res), None)
            if kind == "set" and returned:
                jobs += f" ({returned:,} returned)"
            rows.append([label, jobs, _backend_cell(mine, kind), _backend_cell(theirs, kind),
                         fmt_ratio(ratio), _faster(ratio)])
    verdicts: dict[str, list[str]] = {"file store": [], "PostgreSQL": [], "even": []}
    for op, ratios in spans.items():
        low, high = min(ratios), max(ratios)
        if low > EVEN:
            verdicts["file store"].append(f"{labels[op]} ({_span(low, high)})")
        elif high < 1 / EVEN:
            verdicts["PostgreSQL"].append(f"{labels[op]} ({_span(1 / high, 1 / low)})")
        else:
            verdicts["even"].append(f"{labels[op]} ({_span(low, high)} PostgreSQL ÷ file"
                                    " store)")
    summary = []
    if verdicts["file store"]:
        summary.append("- **The file store is faster** at every size measured for: "
                       + "; ".join(verdicts["file store"]) + ".")
    if verdicts["PostgreSQL"]:
        summary.append("- **PostgreSQL is faster** at every size measured for: "
                       + "; ".join(verdicts["PostgreSQL"]) + ".")
    if verdicts["even"]:
        summary.append("- **Neither consistently** (within 10 %, or the lead changes with"
                       " size): " + "; ".join(verdicts["even"]) + ".")
    if analysis_has_reading:
        summary.append("- What this means for choosing a backend: see *File store vs"
                       " PostgreSQL* in the analysis below.")
    return "\n\n".join([intro, table(header, rows, "llrrrl"), "\n".join(summary)])


def _backend_cell(res: Result | None, kind: str) -> str:
    if res is None:
        return "—"
    if kind == "claim":
        return f"{fmt_time(res.cost)} ({1 / res.cost:,.0f} claims/s)"
    return fmt_time(res.cost)


def _span(low: float, high: float) -> str:
    return fmt_ratio(low) if fmt_ratio(low) == fmt_ratio(high) else (
        f"{fmt_ratio(low).rstrip('×')}–{fmt_ratio(high)}")


def targets_section(found: list[Target]) -> str:
    def verdict(t: Target) -> str:
        return {True: "**met**", False: "**not met**", None: "not measured"}[t.met]

    rows = [[t.issue, t.text, t.measured, verdict(t)] for t in found]
    summary = (f"{sum(t.met is True for t in found)} met, "
               f"{sum(t.met is False for t in found)} not met, "
               f"{sum(t.met is None for t in found)} not measured in this run.")
    return summary + "\n\n" + table(["issue", "target", "measured", "verdict"], rows, "llll")


def chart(r: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = [op for op, _, kind in OPS if kind != "ref" and r.impls(op)]
    if not ops:
        return
    cols = 4
    rows = math.ceil(len(ops) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 4.2, rows * 3.3), squeeze=False)
    handles: dict[str, Any] = {}
    for ax, op in zip(axes.flat, ops, strict=False):
        for impl in r.impls(op):
            points = [(s, r.cost(op, impl, s)) for s in r.sizes if r.cost(op, impl, s)]
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            (line,) = ax.plot(xs, ys, label=IMPL_LABEL[impl], **IMPL_STYLE[impl])
            handles.setdefault(impl, line)
        if OP_KIND[op] == "set":
            points = []
            for s in r.sizes:
                result, one = r.get(op, "hybridstore", s), r.cost("read_one_file", "limit", s)
                if result and result.returned and one:
                    points.append((s, one * result.returned))
            if points:
                xs, ys = zip(*points, strict=True)
                (line,) = ax.plot(xs, ys, label=IMPL_LABEL["limit-derived"],
                                  **IMPL_STYLE["limit-derived"])
                handles.setdefault("limit-derived", line)
        ax.set_xscale("log")
        ax.set_yscale("log")
        # At least two decades on every panel, so that a flat line looks flat.
        low, high = ax.get_ylim()
        if high / low < 100:
            centre = math.sqrt(low * high)
            low, high = centre / 10, centre * 10
            ax.set_ylim(low, high)
        ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10))
        ax.yaxis.set_minor_locator(matplotlib.ticker.LogLocator(base=10, subs=(2, 5)))
        ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: tick(v)))
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_title(OP_LABEL[op], fontsize=9)
        ax.set_xticks(r.sizes)
        ax.set_xticklabels([f"{s // 1000}k" if s >= 1000 else str(s) for s in r.sizes],
                           fontsize=8)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.tick_params(axis="y", labelsize=8)
        ax.grid(True, which="major", alpha=0.35)
        ax.grid(True, which="minor", alpha=0.12)
    for ax in list(axes.flat)[len(ops):]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel("time per operation", fontsize=8)
    for ax in axes[-1, :]:
        ax.set_xlabel("jobs in the store", fontsize=8)
    fig.suptitle("hybridstore: time per operation against the number of jobs in the store"
                 " (log–log; lower is better)", y=0.995, fontsize=12)
    fig.legend([handles[k] for k in handles], [IMPL_LABEL[k] for k in handles],
               loc="upper center", bbox_to_anchor=(0.5, 0.975), ncol=len(handles),
               fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(data: dict[str, Any], chart_name: str, analysis_has_reading: bool) -> str:
    """The generated part of ``benchmarks/README.md``: machine, chart and tables."""
    r = Results(data)
    sections = [
        ("Machine", machine_section(data)),
        ("Medians per operation",
         f"![cost per operation against store size]({chart_name})\n\n" + medians_section(r)),
        ("Ratios", "`÷ limit`: hybridstore's cost ÷ the machine's limit for the same work (for"
         " unlimited queries: cost per returned job ÷ reading and parsing one job file)."
         " `older ÷ hybridstore`: how many times faster hybridstore is than the older design."
         "\n\n" + ratios_section(r)),
        ("Unlimited queries, per returned job", sets_section(r)),
        ("Claim throughput", claims_section(r)),
        ("File store vs PostgreSQL", backends_section(r, analysis_has_reading)),
    ]
    return "\n\n".join(f"## {title}\n\n{body}" for title, body in sections)


def targets_report(data: dict[str, Any]) -> str:
    """The targets and verdicts, for the end of the page."""
    return ("### Issues 2, 3 and 6, from the suite's run\n\n"
            + machine_line(data) + "\n\n" + targets_section(targets(Results(data))))


def machine_line(data: dict[str, Any]) -> str:
    info = data.get("machine_info", {})
    when = data.get("datetime", "")
    with contextlib.suppress(ValueError):
        when = datetime.fromisoformat(when).strftime("%Y-%m-%d %H:%M UTC")
    commit = str(data.get("hybridstore_bench", {}).get("git_commit") or "?")[:12]
    return (f"From the run of the suite of {when} (commit `{commit}`,"
            f" {info.get('cpu_count', '?')} cores; the machine is described under *Machine*"
            " in the detailed tables).")


BEGIN = "<!-- bench_report.py: generated from here -->"
END = "<!-- bench_report.py: generated up to here -->"
# The targets and verdicts: a second generated part, at the end of the page.
TARGETS_BEGIN = "<!-- bench_report.py: targets from here -->"
TARGETS_END = "<!-- bench_report.py: targets up to here -->"


def splice(page: str, generated: str, begin: str = BEGIN, end: str = END) -> str:
    """``page`` with the text between its ``begin`` and ``end`` markers replaced by
    ``generated``; everything else in it (the prose, the analysis, the parts other
    scripts write) is hand-written and kept."""
    if begin not in page or end not in page:
        raise SystemExit(f"the page lacks the markers {begin!r} and {end!r}")
    head, rest = page.split(begin, 1)
    return f"{head}{begin}\n\n{generated}\n\n{end}{rest.split(end, 1)[1]}"


def summary(data: dict[str, Any]) -> str:
    """``data`` as a small pytest-benchmark JSON: every result's statistics and extra info,
    one result a line, without the CPU flags and options that make the raw file long. The
    report and ``pytest-benchmark compare`` both read it."""
    info = {k: v for k, v in data.get("machine_info", {}).items() if k != "cpu"}
    info["cpu"] = {k: v for k, v in data.get("machine_info", {}).get("cpu", {}).items()
                   if k in ("brand_raw", "count", "arch")}
    keep = ("group", "name", "fullname", "params", "param", "extra_info", "stats")
    head = {k: v for k, v in data.items() if k != "benchmarks"}
    head["machine_info"] = info
    lines = ",\n".join(
        "  " + json.dumps({k: b[k] for k in keep if k in b}, ensure_ascii=False)
        for b in sorted(data["benchmarks"], key=lambda b: b.get("fullname", b["name"]))
    )
    opening = json.dumps(head, ensure_ascii=False, indent=1)[:-2]
    return f'{opening},\n "benchmarks": [\n{lines}\n ]\n}}\n'


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path,
                        help="a pytest-benchmark JSON (--benchmark-json), raw or a summary")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "README.md",
                        help="the page whose generated part is rewritten")
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG path (default: bench_chart.png next to --out)")
    parser.add_argument("--summary", type=Path, default=REPO / "benchmarks" / "results.json",
                        help="where the small summary of the run goes (kept in the tree)")
    args = parser.parse_args(argv)
    data = json.loads(args.json.read_text())
    chart_path = args.chart or args.out.with_name("bench_chart.png")
    page = args.out.read_text()
    hand_written = page.split(BEGIN, 1)[0] + page.split(END, 1)[-1]
    generated = report(data, chart_path.name, "### File store vs PostgreSQL" in hand_written)
    chart(Results(data), chart_path)
    page = splice(page, generated)
    page = splice(page, targets_report(data), TARGETS_BEGIN, TARGETS_END)
    args.out.write_text(page)
    if args.summary.resolve() != args.json.resolve():
        args.summary.write_text(summary(data))
    for t in targets(Results(data)):
        verdict = {True: "met", False: "NOT MET", None: "n/a"}[t.met]
        print(f"[{verdict:>7}] {t.text}: {t.measured}")
    print(f"wrote {args.out}, {chart_path} and {args.summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
