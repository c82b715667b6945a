#!/usr/bin/env python3
"""Run the peers comparison and put it at the top of ``benchmarks/README.md``.

    python scripts/bench_peers.py                     # run (2,000 jobs, 4 processes,
                                                      # 3 repetitions), then report
    python scripts/bench_peers.py --from benchmarks/peers.json   # report only

Running writes ``benchmarks/peers.json`` (every repetition's figures, the machine, each
library's settings). Reporting draws ``benchmarks/peers_chart.png`` and rewrites two
marked parts of the page: *How it compares* (table, chart, machine, the figures in plain
words) between the ``bench_peers.py`` markers near the top, and issue 14's peer targets
between the ``bench_peers.py: targets`` markers at the end. Everything else on the page
(``bench_report.py``'s part, the hand-written prose) is left alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

BEGIN = "<!-- bench_peers.py: generated from here -->"
END = "<!-- bench_peers.py: generated up to here -->"
TARGETS_BEGIN = "<!-- bench_peers.py: targets from here -->"
TARGETS_END = "<!-- bench_peers.py: targets up to here -->"

# (row label, family, enqueue one at a time, enqueue batched, take one at a time,
#  take batched, keeps: lease, result, retry, status queries)
ROWS: list[tuple[str, str, str | None, str | None, str | None, str | None,
                 str, str, str, str]] = [
    ("hybridstore, file store (durable, the default)", "hybridstore",
     "hs_add", "hs_add_many", "hs_claim", "hs_claim_many",
     "yes", "yes", "yes", "yes"),
    ("hybridstore, file store, `durable=False`", "hybridstore-nondurable",
     "hs_nd_add", "hs_nd_add_many", "hs_nd_claim", None,
     "yes", "yes", "yes", "yes"),
    ("hybridstore on PostgreSQL", "postgres",
     "pg_add", "pg_add_many", "pg_claim", "pg_claim_many",
     "yes", "yes", "yes", "yes"),
    ("huey 3.5 `SqliteStorage`", "huey",
     "huey_enqueue", None, "huey_dequeue", None,
     "no (dequeue deletes)", "yes (`put_data`)", "in huey's task layer", "no (queue length)"),
    ("persist-queue 1.1 `SQLiteAckQueue`", "persist-queue",
     "pq_put", None, "pq_get_ack", None,
     "no expiry (unacked until reopened)", "no", "by hand (`nack`)",
     "no (counts per ack state)"),
    ("older JSON-index design", "legacy",
     "legacy_save", None, None, None,
     "no claim at all", "yes (a field)", "a field", "yes, slow"),
]
FAMILY_COLOR = {
    "hybridstore": "#1f77b4",
    "hybridstore-nondurable": "#17becf",
    "postgres": "#2ca02c",
    "huey": "#ff7f0e",
    "persist-queue": "#9467bd",
    "legacy": "#d62728",
}


def rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def median(data: dict[str, Any], section: str, key: str | None) -> float | None:
    entry = data[section].get(key) if key else None
    return float(entry["median"]) if entry else None


def duplicates(data: dict[str, Any], *keys: str | None) -> str:
    counts = [n for key in keys if key and key in data["take_finish"]
              for n in data["take_finish"][key]["duplicates"]]
    if not counts:
        return "—"
    low, high = min(counts), max(counts)
    jobs = data["params"]["jobs"]
    return (f"{low:,}" if low == high else f"{low:,}–{high:,}") + f" of {jobs:,}"


def table(data: dict[str, Any]) -> str:
    p = data["params"]
    header = ["", "enqueue /s, one at a time", f"enqueue /s, batches of {p['batch']}",
              f"take + finish /s, {p['procs']} processes, one at a time",
              f"take + finish /s, batches of {p['claim_batch']}",
              "duplicate deliveries", "lease", "result", "retry", "status queries"]
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([":---", *["---:"] * 5, *[":---"] * 4]) + "|"]
    for label, _family, e1, eb, t1, tb, lease, result, retry, queries in ROWS:
        if not any(k in data["enqueue"] or k in data["take_finish"]
                   for k in (e1, eb, t1, tb) if k):
            continue
        take_one = rate(median(data, "take_finish", t1))
        if t1 is None and e1 == "legacy_save":
            take_one = "not measured (no claim)"
        cells = [label, rate(median(data, "enqueue", e1)), rate(median(data, "enqueue", eb)),
                 take_one, rate(median(data, "take_finish", tb)), duplicates(data, t1, tb),
                 lease, result, retry, queries]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> str:
    if not a or not b:
        return "?"
    return f"{a / b:.2f}×" if a / b < 10 else f"{a / b:.0f}×"


def plain_words(data: dict[str, Any]) -> str:
    m = {k: v["median"] for k, v in {**data["enqueue"], **data["take_finish"]}.items()}
    tf = data["take_finish"]
    p = data["params"]
    words = []
    if "hs_add_many" in m and "huey_enqueue" in m:
        words.append(
            f"- **Putting jobs in.** hybridstore's durable `add` takes {rate(m.get('hs_add'))}"
            f" jobs/s and `add_many` {rate(m['hs_add_many'])}; huey's `enqueue`"
            f" {rate(m['huey_enqueue'])} and persist-queue's `put` {rate(m.get('pq_put'))}."
            f" Durable `add_many` is {_ratio(m['hs_add_many'], m['huey_enqueue'])} huey's rate."
            " Each hybridstore job is its own JSON file, written, fsynced and renamed into"
            " place; the two queues append a row to one SQLite file.")
    if "hs_claim" in m and "pq_get_ack" in m:
        best = max((k for k in ("hs_claim", "hs_claim_many") if k in m), key=lambda k: m[k])
        words.append(
            f"- **Taking and finishing jobs with {p['procs']} processes.** hybridstore (durable)"
            f" does {rate(m['hs_claim'])} jobs/s one at a time"
            + (f" and {rate(m['hs_claim_many'])} in batches" if "hs_claim_many" in m else "")
            + f", with {duplicates(data, 'hs_claim', 'hs_claim_many')} duplicates."
            f" persist-queue's ack queue does {rate(m['pq_get_ack'])} jobs/s but hands out"
            f" {duplicates(data, 'pq_get_ack')} jobs a second time: its `get` reads the next"
            " row and marks it taken in two separate transactions, so two processes can get"
            f" the same job. hybridstore's best is {_ratio(m[best], m['pq_get_ack'])}"
            " persist-queue's rate.")
    if "huey_dequeue" in m:
        words.append(
            f"- **huey** takes and finishes {rate(m['huey_dequeue'])} jobs/s, with"
            f" {duplicates(data, 'huey_dequeue')} duplicates. It keeps the least: a dequeue"
            " deletes the row, so once handed out, a job exists only in the worker's memory."
            " If the worker"
            " dies, the job is gone; nothing can list what is running, for how long, or"
            " retry it (huey's task layer retries by enqueueing a copy, from the worker).")
    if "pg_claim" in m:
        words.append(
            f"- **hybridstore on PostgreSQL** (the same API, one environment variable away):"
            f" `add` {rate(m.get('pg_add'))} jobs/s, `add_many` {rate(m.get('pg_add_many'))},"
            f" take + finish {rate(m['pg_claim'])} jobs/s one at a time"
            + (f" and {rate(m['pg_claim_many'])} in batches" if "pg_claim_many" in m else "")
            + ", no duplicates; the server runs on the same machine and shares its cores.")
    elif "postgres" in data.get("skipped", {}):
        words.append(f"- PostgreSQL was not measured in this run: {data['skipped']['postgres']}.")
    if "legacy_save" in m:
        words.append(
            f"- **The older JSON-index design** stores {rate(m['legacy_save'])} jobs/s into an"
            f" empty store (slower as it fills: it rewrites three whole index files per job)"
            ", without fsync, and has no claim: a take + finish of it would need workers"
            " that list the pending directory and can take the same job, so it is not"
            " measured.")
    for key in ("hs_claim_many", "pg_claim_many"):
        if key in tf and not tf[key]["notes"].get("complete_many", True):
            words.append(f"- `{key}`: this run's hybridstore had no `complete_many`, so the"
                         " batched figure completes each job of a claimed batch on its own.")
            break
    return "\n".join(words)


def machine(data: dict[str, Any]) -> str:
    mc = data["machine"]
    p = data["params"]
    pg = data.get("postgres")
    commit = (data.get("git_commit") or "?")[:12]
    dirty = data.get("hybridstore_uncommitted_changes")
    text = (
        f"One run on {data['date']}: {mc['cpu_count']} cores (`nproc` {mc['nproc']}),"
        f" {mc.get('cpu_model') or 'unknown CPU'}, {mc['memory_gb']} GB of memory, the stores"
        f" on {mc.get('file_system') or '?'} (`{mc['data_dir']}`), {mc['system']},"
        f" {mc['python']}, SQLite {mc['sqlite']}. Load average {mc['loadavg_at_start']} at"
        f" the start, {mc['loadavg_at_end']} at the end. hybridstore at commit `{commit}`"
        + (f" with uncommitted changes in {', '.join(dirty)}" if dirty else "")
        + f". {p['jobs']:,} jobs of {p['payload_bytes']:,} bytes of JSON each, the same jobs"
        f" for every implementation; {p['procs']} worker processes; every figure is the"
        f" median of {p['reps']} repetitions within this one run (the implementations"
        f" interleaved; every enqueue before the first take + finish, and no store removed"
        f" before the end: `PeersRun.run` says why), and the duplicates column gives every"
        f" repetition's count."
        f" The whole run took {data['run_seconds']:,.0f} s."
    )
    spreads = [max(runs) / min(runs) for section in ("enqueue", "take_finish")
               for entry in data[section].values()
               if (runs := [r["rate"] if isinstance(r, dict) else r for r in entry["runs"]])
               and min(runs) > 0]
    busiest = max(mc["loadavg_at_start"][0], mc["loadavg_at_end"][0])
    if spreads and (busiest > mc["nproc"] or max(spreads) > 1.5):
        text += (f" **The machine was busy with other work during this run** (load average up"
                 f" to {busiest:g} on {mc['nproc']} cores): the repetitions of one"
                 f" implementation differ by up to {max(spreads):.1f}× (the ticks in the"
                 " chart), so read the rates as rough and compare within the run.")
    if pg:
        shown = ", ".join(f"`{k}={v}`" for k, v in pg["settings"].items())
        text += (f" PostgreSQL {pg['version']} on the same machine, over loopback TCP"
                 f" ({shown}).")
    return text


def settings(data: dict[str, Any]) -> str:
    s = data["settings"]
    huey, pq, hs = s.get("huey", {}), s.get("persist-queue", {}), s.get("hybridstore", {})
    return "\n".join([
        "Each library as its defaults leave it (read from live handles in this run):",
        "",
        f"- hybridstore durable: {hs.get('durable', '?')}; the SQLite sidecar in"
        f" `journal_mode={hs.get('journal_mode')}`, `synchronous={hs.get('synchronous')}`"
        " (the files are the truth; the index is rebuilt from them after a machine crash).",
        f"- huey `SqliteStorage(filename=…)`: `journal_mode={huey.get('journal_mode')}`,"
        f" `synchronous={huey.get('synchronous')}` (its `fsync` argument left at"
        f" `{huey.get('fsync_argument')}`, so SQLite's default); {huey.get('commit')}.",
        f"- persist-queue `SQLiteAckQueue(path)`: `journal_mode={pq.get('journal_mode')}`,"
        f" `synchronous={pq.get('synchronous')}`, `auto_commit={pq.get('auto_commit')}`"
        f" (the ack queue forces it), `multithreading={pq.get('multithreading')}`,"
        f" `auto_resume=True`; {pq.get('commit')}; the default pickle serialiser.",
        "- The older JSON-index design: `json.dump` into the job's file in place and three"
        " index files rewritten per save; no fsync.",
        "- PostgreSQL: the server's settings above; hybridstore's backend commits each call.",
    ])


def how_it_compares(data: dict[str, Any], chart_name: str) -> str:
    return "\n\n".join([
        table(data),
        f"![enqueue and take + finish rates, hybridstore beside its peers]({chart_name})",
        plain_words(data),
        "**The machine and the method.** " + machine(data),
        settings(data),
    ])


def targets(data: dict[str, Any]) -> str:
    m = {k: v["median"] for k, v in {**data["enqueue"], **data["take_finish"]}.items()}
    tf = data["take_finish"]
    rows = []
    hs = [k for k in ("hs_claim", "hs_claim_many") if k in m]
    if hs and "pq_get_ack" in m:
        best = max(hs, key=lambda k: m[k])
        dups = sum(n for k in hs for n in tf[k]["duplicates"])
        met = m[best] >= m["pq_get_ack"] and dups == 0
        rows.append(["14", "durable take + finish with "
                     f"{data['params']['procs']} processes ≥ persist-queue's ack queue, with"
                     " zero duplicates",
                     f"{rate(m[best])} ({tf[best]['label']}) against {rate(m['pq_get_ack'])}"
                     f" jobs/s, {_ratio(m[best], m['pq_get_ack'])}; {dups} duplicates",
                     "**met**" if met else "**not met**"])
    if "hs_add_many" in m and "huey_enqueue" in m:
        met = m["hs_add_many"] >= m["huey_enqueue"]
        rows.append(["14", "durable `add_many` ≥ huey's enqueue rate",
                     f"{rate(m['hs_add_many'])} against {rate(m['huey_enqueue'])} jobs/s,"
                     f" {_ratio(m['hs_add_many'], m['huey_enqueue'])}",
                     "**met**" if met else "**not met**"])
    if not rows:
        return "Not measured in this run."
    lines = ["| issue | target | measured | verdict |", "| :--- | :--- | :--- | :--- |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return (f"From `benchmarks/peers.json` ({data['date']}, medians of"
            f" {data['params']['reps']}):\n\n" + "\n".join(lines))


def chart(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("enqueue", "enqueue: jobs/s, one process", ["hs_add", "hs_add_many", "hs_nd_add",
                                                     "hs_nd_add_many", "pg_add", "pg_add_many",
                                                     "huey_enqueue", "pq_put", "legacy_save"]),
        ("take_finish", f"take + finish: jobs/s, {data['params']['procs']} processes",
         ["hs_claim", "hs_claim_many", "hs_nd_claim", "pg_claim", "pg_claim_many",
          "huey_dequeue", "pq_get_ack"]),
    ]
    fig, axes = plt.subplots(2, 1, figsize=(12, 9.5), height_ratios=(9, 7))
    for ax, (section, title, keys) in zip(axes, panels, strict=True):
        keys = [k for k in keys if k in data[section]][::-1]
        entries = [data[section][k] for k in keys]
        ys = range(len(keys))
        medians = [e["median"] for e in entries]
        ax.barh(list(ys), medians, color=[FAMILY_COLOR[e["impl"]] for e in entries],
                alpha=0.85)
        for y, entry in zip(ys, entries, strict=True):
            runs = [r["rate"] if isinstance(r, dict) else r for r in entry["runs"]]
            ax.plot(runs, [y] * len(runs), "k|", markersize=9)
            note = f" {entry['median']:,.0f}"
            if section == "take_finish" and max(entry["duplicates"]) > 0:
                note += f"  ({statistics.median(entry['duplicates']):,.0f} duplicates)"
            ax.text(max([entry["median"], *runs]), y, note, va="center", fontsize=8)
        ax.set_yticks(list(ys))
        ax.set_yticklabels([e["label"] for e in entries], fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlim(0, max(max(r["rate"] if isinstance(r, dict) else r for r in e["runs"])
                           for e in entries) * 1.45)
        ax.grid(True, axis="x", alpha=0.3)
        ax.set_xlabel("jobs per second (bar: median; ticks: each repetition)", fontsize=8)
    mc = data["machine"]
    fig.suptitle(f"hybridstore beside huey and persist-queue: {data['params']['jobs']:,} jobs of"
                 f" ~{data['params']['payload_bytes']:,} B, medians of {data['params']['reps']}"
                 f" ({mc['cpu_count']} cores, {mc.get('file_system')}, {data['date']};"
                 " higher is better)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def splice(page: str, begin: str, end: str, generated: str) -> str:
    if begin not in page or end not in page:
        raise SystemExit(f"the page lacks the markers {begin!r} and {end!r}")
    head, rest = page.split(begin, 1)
    return f"{head}{begin}\n\n{generated}\n\n{end}{rest.split(end, 1)[1]}"


def report(data: dict[str, Any], out: Path, chart_path: Path) -> None:
    chart(data, chart_path)
    page = out.read_text()
    page = splice(page, BEGIN, END, how_it_compares(data, chart_path.name))
    page = splice(page, TARGETS_BEGIN, TARGETS_END, targets(data))
    out.write_text(page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--from", dest="source", type=Path, default=None,
                        help="report from this JSON instead of running")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "peers.json",
                        help="where a run's results go (default benchmarks/peers.json)")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "README.md")
    parser.add_argument("--chart", type=Path, default=None,
                        help="PNG path (default: peers_chart.png next to --out)")
    args = parser.parse_args(argv)
    if args.source is not None:
        data = json.loads(args.source.read_text())
    else:
        from benchmarks.peers import main as run_main

        run_main(["--jobs", str(args.jobs), "--procs", str(args.procs), "--reps",
                  str(args.reps), "--json", str(args.json)])
        data = json.loads(args.json.read_text())
    chart_path = args.chart or args.out.with_name("peers_chart.png")
    report(data, args.out, chart_path)
    print(targets(data))
    print(f"wrote {args.out} and {chart_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
