"""Odd files dropped into the status directories never crash the store or leak out.

Job files that are empty, truncated, not an object, of another id, with duplicate keys,
NaN, 100,000-deep nesting, invalid UTF-8, values out of range, over the
size any read accepts; a symlink
pointing outside the data directory; a FIFO; a directory named like a job; foreign files
and sub-directories; temp files young and old. Queries, claims and reindex keep working for
every other job; ``verify`` reports each; ``repair`` quarantines (never deletes) them; and
nothing outside the data directory is read, followed or written.
"""

from __future__ import annotations

import builtins
import io
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import hybridstore
from hybridstore import CorruptJobFile, JobStatus, JobStore
from hybridstore.files import MAX_READ_BYTES

from ._support import make_job, snapshot

MAX_BYTES = 100_000


def _body(job_id: str, **changes: Any) -> dict[str, Any]:
    body = json.loads(make_job(job_id).to_json())
    body.update(changes)
    return body


def _dump(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def _hostile_job_files(outside_target: Path) -> dict[str, bytes | str]:
    """name (a valid job id) -> bytes of the file, or a marker for special entries."""
    good = _dump(_body("truncated"))
    deep_opts = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    deep = _dump(_body("deep", task_options={})).replace(
        b'"task_options": {}', b'"task_options": ' + deep_opts
    )
    return {
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "not-object": b"[1, 2, 3]",
        "a-string": b'"just a string"',
        "wrong-id": _dump(_body("someone-else")),
        "dup-keys": _dump(_body("dup-keys"))[:-1] + b', "id": "dup-keys"}',
        "nan": _dump(_body("nan", task_options={"x": float("nan")})),
        "infinity": _dump(_body("infinity")).replace(
            b'"retry_count": 0', b'"retry_count": Infinity'
        ),
        "deep": deep,
        "bad-utf8": _dump(_body("bad-utf8", source_file_path="X")).replace(
            b'"X"', b'"\xff\xfe\xc0"'
        ),
        "bad-field": _dump(_body("bad-field", retry_count=-5)),
        # Values that overflow on the way to UTC, a 64-bit column or a 32-bit one.
        **{name: _dump(_body(name, **fields)) for name, fields in OUT_OF_RANGE.items()},
        "too-big": "sparse",
        "link": "symlink",
        "fifo": "fifo",
        "a-directory": "directory",
    }


OUT_OF_RANGE: dict[str, dict[str, Any]] = {
    "year-1-east": {"created_at": "0001-01-01T00:00:00+05:00"},
    "year-10000": {"created_at": "9999-12-31T23:00:00-05:00"},
    "timeout-year-10000": {"timeout_at": "9999-12-31T23:00:00-05:00"},
    "version-2-63": {"version": 2**63},
    "attempt-2-63": {"attempt": 2**63},
    "retries-2-31": {"max_retries": 2**31},
}

FOREIGN = ["notes.txt", "README", ".DS_Store", "bad name.json", "x.json.bak", "..json"]


@contextmanager
def _open_tracer() -> Iterator[list[tuple[str, int | str]]]:
    """Record every path the process opens (os.open, io.open, builtins.open)."""
    opened: list[tuple[str, int | str]] = []
    real_os_open, real_io_open, real_open = os.open, io.open, builtins.open

    def os_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append((os.fspath(path), flags))
        return real_os_open(path, flags, *args, **kwargs)

    def any_open(real: Any) -> Any:
        def patched(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
            if not isinstance(file, int):
                opened.append((os.fspath(file), mode))
            return real(file, mode, *args, **kwargs)

        return patched

    os.open = os_open  # type: ignore[assignment]
    io.open = any_open(real_io_open)  # type: ignore[assignment]
    builtins.open = any_open(real_open)  # type: ignore[assignment]
    try:
        yield opened
    finally:
        os.open, io.open, builtins.open = real_os_open, real_io_open, real_open  # type: ignore[assignment]


@pytest.fixture
def hostile(tmp_path: Path) -> dict[str, Any]:
    data_dir = tmp_path / "data"
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "target.json"
    # If the store ever followed the link, this valid body would be read as job "link".
    target.write_bytes(_dump(_body("link")))
    secret = outside / "secret"
    secret.mkdir()
    (secret / "keep.txt").write_text("do not touch")

    with JobStore(data_dir, max_job_bytes=MAX_BYTES) as store:
        good = [store.add(make_job(f"good-{i}")) for i in range(6)]
        store.claim_next("w0")
    pending = data_dir / "pending"
    bad = _hostile_job_files(target)
    for name, content in bad.items():
        path = pending / f"{name}.json"
        if content == "symlink":
            path.symlink_to(target)
        elif content == "fifo":
            os.mkfifo(path)
        elif content == "sparse":  # past the bound of any read; costs no disk
            with open(path, "wb") as handle:
                handle.truncate(MAX_READ_BYTES + 1)
        elif content == "directory":
            path.mkdir()
            (path / "inside.json").write_bytes(_dump(_body("inside")))
        else:
            assert isinstance(content, bytes)
            path.write_bytes(content)
    # A second directory gets a symlink to a directory outside, and a link to /etc/passwd.
    (data_dir / "completed" / "dirlink.json").symlink_to(secret, target_is_directory=True)
    (data_dir / "failed" / "passwd.json").symlink_to("/etc/passwd")
    for name in FOREIGN:
        (data_dir / "processing" / name).write_text("foreign")
    (data_dir / "cancelled" / "subdir").mkdir()
    (data_dir / "cancelled" / "subdir" / "nested.json").write_bytes(_dump(_body("nested")))
    young = data_dir / "pending" / ".good-0.json.abcdef.tmp"
    young.write_bytes(b'{"half": ')
    old = data_dir / "timeout" / ".gone.json.123456.tmp"
    old.write_bytes(b"{")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    return {
        "data_dir": data_dir,
        "outside": outside,
        "target": target,
        "good": {j.id for j in good},
        "bad": {f"{name}": pending / f"{name}.json" for name in bad}
        | {
            "dirlink": data_dir / "completed" / "dirlink.json",
            "passwd": data_dir / "failed" / "passwd.json",
        },
        "young_temp": young,
        "old_temp": old,
    }


def _inside(path: str, root: Path) -> bool:
    return os.path.abspath(path).startswith(str(root) + os.sep)


def test_hostile_files_are_isolated_reported_and_quarantined(hostile: dict[str, Any]) -> None:
    data_dir: Path = hostile["data_dir"]
    outside_before = snapshot(hostile["outside"])
    passwd_before = os.lstat("/etc/passwd")
    bad: dict[str, Path] = hostile["bad"]
    bad_bytes = {
        name: path.read_bytes()
        for name, path in bad.items()
        if stat.S_ISREG(os.lstat(path).st_mode)
    }

    with _open_tracer() as opened:
        # Open with a missing sidecar: the rebuild meets every hostile file.
        (data_dir / "hybridstore.sqlite3").unlink()
        with JobStore(data_dir, max_job_bytes=MAX_BYTES) as store:
            report = store.reindex()
            skipped = {Path(p.path).name: p.kind for p in report.skipped}
            for name, path in bad.items():
                assert skipped.get(path.name) == "unreadable", (name, report.skipped)
            for name in FOREIGN:
                assert skipped.get(name) == "foreign", name
            assert skipped.get("subdir") == "foreign"
            assert hostile["old_temp"].name in skipped  # an old temp file is named
            assert hostile["young_temp"].name not in skipped  # a write may own a young one
            assert report.indexed == len(hostile["good"])

            # Every other job keeps working: reads, queries, claims, lifecycle, stats.
            assert {j.id for j in store.find()} == hostile["good"]
            assert store.count() == len(hostile["good"])
            assert store.statistics()["total_jobs"] == len(hostile["good"])
            for job_id in hostile["good"]:
                assert store.get(job_id) is not None
            claimed = []
            while (job := store.claim_next("w1")) is not None:
                claimed.append(store.complete(job.id, "w1").id)
            assert len(claimed) == len(hostile["good"]) - 1
            assert store.claim_next("w1") is None

            # Reading a hostile job by id is a typed error, never a hang or a follow.
            for name in bad:
                if name in ("dirlink", "passwd"):
                    continue
                with pytest.raises(CorruptJobFile) as caught:
                    store.get(name)
                assert name in str(caught.value)

            # verify reports each, and counts them as drift.
            found = store.verify()
            assert not found.ok
            unreadable = {Path(p.path).name for p in found.problems if p.kind == "unreadable"}
            assert unreadable == {p.name for p in bad.values()}
            foreign = {Path(p.path).name for p in found.problems if p.kind == "foreign"}
            assert foreign == {*FOREIGN, "subdir"}
            temps = {Path(p.path).name for p in found.problems if p.kind == "temp"}
            assert temps == {hostile["old_temp"].name}

            # repair quarantines (moves, never deletes) and removes only the old temp file.
            repaired = store.repair()
            assert len(repaired.quarantined) == len(bad)
            quarantine = data_dir / ".quarantine"
            moved = {q for q in os.listdir(quarantine) if not q.endswith(".reason")}
            assert len(moved) == len(bad)
            for name, path in bad.items():
                assert not os.path.lexists(path)
                (entry,) = [m for m in moved if m.endswith(f"-{path.parent.name}-{path.name}")]
                where = quarantine / entry
                if name in bad_bytes:
                    assert where.read_bytes() == bad_bytes[name]  # byte for byte
                assert (quarantine / f"{entry}.reason").read_text().startswith("original: ")
            assert os.readlink(quarantine / next(m for m in moved if "-link.json" in m)) == str(
                hostile["target"]
            )
            assert not hostile["old_temp"].exists()
            assert hostile["young_temp"].exists()
            after = store.verify()
            assert after.ok, after.to_dict()
            assert {Path(p.path).name for p in after.problems} == {*FOREIGN, "subdir"}

    # Nothing outside the data directory was opened, read, followed or written.
    # (The library's own migration files and /proc facts about this machine excepted.)
    package = os.path.dirname(hybridstore.__file__)
    outside_opens = [
        (p, f)
        for p, f in opened
        if not _inside(p, data_dir) and not _inside(p, Path(package)) and not p.startswith("/proc/")
    ]
    assert outside_opens == [], outside_opens
    assert all(f in ("r", "rb") for p, f in opened if not _inside(p, data_dir))
    # Every job-file open refuses to follow a symlink.
    for path, flags in opened:
        if isinstance(flags, int) and not flags & os.O_DIRECTORY and path.endswith(".json"):
            assert flags & os.O_NOFOLLOW, path
    assert snapshot(hostile["outside"]) == outside_before
    assert os.lstat("/etc/passwd").st_mtime_ns == passwd_before.st_mtime_ns
    for status in JobStatus:  # foreign entries are left where they are
        for name in os.listdir(data_dir / status.value):
            assert not name.endswith(".json") or name in FOREIGN or name.startswith("good-")


def test_hostile_file_names_are_never_echoed_raw(tmp_path: Path) -> None:
    """A file whose name carries escape sequences and newlines is reported, escaped, by
    every command that names files; nothing raw reaches the terminal or the logs."""
    from click.testing import CliRunner

    from hybridstore.cli import cli

    data_dir = tmp_path / "data"
    with JobStore(data_dir) as store:
        store.add(make_job("fine"))
    (data_dir / "pending" / "\x1b[31mevil\n\x07.json").write_text("x")
    (data_dir / "failed" / "\x1b]0;title\x07").mkdir()
    (data_dir / "pending" / "unreadable.json").write_bytes(b"\x1b[2J\n")
    runner = CliRunner()
    for args in (
        ["verify"],
        ["verify", "--json"],
        ["reindex"],
        ["--log-level", "debug", "verify", "--repair"],
        ["--json-logs", "reindex"],
        ["stats"],
        ["list"],
    ):
        result = runner.invoke(cli, ["--data-dir", str(data_dir), *args])
        out = result.stdout + result.stderr
        assert result.exit_code in (0, 1), (args, out)
        assert "\x1b" not in out and "\x07" not in out, (args, out)
        assert "Traceback" not in out
    with JobStore(data_dir) as store:
        assert [j.id for j in store.find()] == ["fine"] and store.verify().ok


def test_a_file_corrupted_after_indexing_blocks_no_batch_call(data_dir: Path) -> None:
    """An indexed job whose file turns unreadable (a bad disk block, a hand edit) is
    skipped by claim_next, expire_overdue and cleanup, which go on with the other jobs;
    get() of it is CorruptJobFile; verify reports it and repair quarantines it."""
    from datetime import timedelta

    from hybridstore.model import utcnow

    later = utcnow() + timedelta(days=30)
    with JobStore(data_dir) as store:
        for i in range(4):
            store.add(make_job(f"p{i}"))
        for i in range(2):
            job = store.claim_next("w")
            assert job is not None and job.id == f"p{i}"
        store.complete("p1", "w")
        store.add(make_job("done"))
        assert store.claim_next("w").id == "p2"  # type: ignore[union-attr]
        store.complete("p2", "w")
        # Now: p0 processing, p1 and p2 completed, p3 and done pending. Corrupt p0 (the
        # only overdue one), p1 (the oldest terminal one) and p3 (the oldest pending one).
        for status, job_id in (("processing", "p0"), ("completed", "p1"), ("pending", "p3")):
            (data_dir / status / f"{job_id}.json").write_bytes(b'{"torn": ')
        claimed = store.claim_next("w2", lease_seconds=90 * 86400)
        assert claimed is not None and claimed.id == "done"
        assert store.expire_overdue(now=later) == []
        assert store.cleanup(days_old=1, now=later) == 1  # p2, not p1
        for job_id in ("p0", "p1", "p3"):
            with pytest.raises(CorruptJobFile):
                store.get(job_id)
        found = store.verify()
        assert {p.job_id for p in found.drift} == {"p0", "p1", "p3"}
        assert len(store.repair().quarantined) == 3
        assert store.verify().ok


def test_an_indexed_file_edited_into_a_duplicate_key_is_still_refused(data_dir: Path) -> None:
    """A write reads its job the fast way only when the file holds exactly the body its
    row keeps: a file that gained a duplicate key by hand since is parsed strictly, and
    refused, by every path that writes (here: a complete, a batch complete, a claim)."""
    with JobStore(data_dir) as store:
        for job_id in ("a", "b", "c"):
            store.add(make_job(job_id))
        for job_id in ("a", "b"):
            claimed = store.claim_next("w")
            assert claimed is not None and claimed.id == job_id
        for status, job_id in (("processing", "a"), ("processing", "b"), ("pending", "c")):
            path = data_dir / status / f"{job_id}.json"
            # Still valid to a lenient parser: the last "status" repeats the first.
            path.write_bytes(path.read_bytes()[:-1] + f', "status": "{status}"}}'.encode())
        with pytest.raises(CorruptJobFile, match="duplicate key"):
            store.complete("a", "w")
        with pytest.raises(CorruptJobFile, match="duplicate key"):
            store.complete_many("w", {"b": None})
        assert store.claim_next("w") is None  # c is skipped as unreadable
        assert {p.job_id for p in store.verify().drift} == {"a", "b", "c"}


def test_values_changed_in_place_into_what_json_cannot_carry_are_refused(
    data_dir: Path,
) -> None:
    """Found by a cold review: reads trust a file that holds exactly its row's body, so a
    write must never store a body the strict parse refuses. A dict changed in place after
    validation (an int key beside the same string key, which would serialise as a
    duplicate key; NaN) is refused by save, add and complete alike, and changes nothing."""
    from hybridstore import InvalidArgument

    with JobStore(data_dir) as store:
        job = store.add(make_job("kept"))
        keys = job.model_copy(deep=True)
        keys.task_options[1] = "int"
        keys.task_options["1"] = "str"
        nan = job.model_copy(deep=True)
        nan.task_options["x"] = float("nan")
        for bad in (keys, nan):
            with pytest.raises(InvalidArgument, match="task_options"):
                store.save(bad)
        fresh = make_job("fresh")
        fresh.task_options[2] = "int"
        with pytest.raises(InvalidArgument, match="task_options"):
            store.add(fresh)
        claimed = store.claim_next("w")
        assert claimed is not None
        with pytest.raises(InvalidArgument, match="result_data"):
            store.complete(claimed.id, "w", {"score": float("inf")})
        assert store.get("kept") == claimed and store.get("fresh") is None
        assert store.verify().ok


@pytest.mark.parametrize("fields", list(OUT_OF_RANGE.values()), ids=list(OUT_OF_RANGE))
def test_an_out_of_range_value_blocks_no_path(data_dir: Path, fields: dict[str, Any]) -> None:
    """Found by an outside attack: a timestamp that overflows in UTC or a counter past 64
    bits raised a raw ``OverflowError`` from every claim (the bad job was the oldest
    candidate), expire, verify, repair, reindex and the rebuild on open, so the documented
    remedy could not quarantine it. Now the one file is refused and every path goes on."""
    from datetime import timedelta

    from hybridstore.model import utcnow
    from hybridstore.transfer import copy_jobs

    with JobStore(data_dir) as store:
        for name in ("victim", "held", "ok-1", "ok-2"):
            store.add(make_job(name))
        victim = store.claim_next("w", lease_seconds=1)
        assert victim is not None and victim.id == "victim"
        # "victim" (processing, overdue soon) and "held" (the oldest pending) turn hostile
        # under their rows, as a hand edit or another tool would leave them.
        for status, job_id in (("processing", "victim"), ("pending", "held")):
            body = _body(job_id, status=status, **fields)
            (data_dir / status / f"{job_id}.json").write_bytes(_dump(body))
        later = utcnow() + timedelta(days=1)
        assert store.expire_overdue(now=later) == []
        claimed = store.claim_next("w2")
        assert claimed is not None and claimed.id == "ok-1"
        report = store.verify()
        assert {p.job_id for p in report.drift} == {"victim", "held"}
        assert {p.kind for p in report.drift} == {"unreadable"}
        with JobStore(data_dir.parent / "copy") as target:
            copied = copy_jobs(store, target)
        assert copied.read == 2  # ok-1 and ok-2: the rows of the hostile two are gone
        assert store.reindex().indexed == 2
    (data_dir / "hybridstore.sqlite3").unlink()
    with JobStore(data_dir) as store:  # the rebuild on open skips them too
        assert {j.id for j in store.find()} == {"ok-1", "ok-2"}
        assert len(store.repair().quarantined) == 2
        assert store.verify().ok


def test_a_counter_at_its_limit_is_passed_over_by_claims(data_dir: Path) -> None:
    """A job stored at the largest version a backend can hold is readable, but no write of
    it fits: a claim passes it over (``InvalidArgument`` for a direct write) and takes the
    next job, instead of failing for every job behind it."""
    from hybridstore import InvalidArgument
    from hybridstore.model import MAX_COUNTER

    with JobStore(data_dir) as store:
        store.add(make_job("at-limit"))
        store.add(make_job("next"))
        path = data_dir / "pending" / "at-limit.json"
        path.write_bytes(_dump(_body("at-limit", version=MAX_COUNTER)))
        store.reindex()
        assert store.get("at-limit").version == MAX_COUNTER  # type: ignore[union-attr]
        claimed = store.claim_next("w")
        assert claimed is not None and claimed.id == "next"
        assert store.claim_next("w") is None
        with pytest.raises(InvalidArgument, match="at-limit"):
            store.cancel("at-limit")
        assert store.verify().ok


def test_a_job_stored_under_a_larger_limit_is_never_quarantined_by_a_smaller_reader(
    data_dir: Path,
) -> None:
    """Found by an outside attack: an application stored a 9 MB job with a 32 MiB limit;
    ``hybridstore verify --repair`` (8 MiB) quarantined it, and a process with a smaller
    limit meeting it in ``claim_next`` dropped its row for everyone. A limit is for writes."""
    from click.testing import CliRunner

    from hybridstore.cli import cli

    with JobStore(data_dir, max_job_bytes=32 * 1024 * 1024) as writer:
        big = writer.add(make_job("big", task_options={"pad": "x" * (9 * 1024 * 1024)}))
        writer.add(make_job("small"))
    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), "verify", "--repair"])
    assert result.exit_code == 0, result.output
    assert (data_dir / "pending" / "big.json").exists()
    with JobStore(data_dir, max_job_bytes=1000) as reader:
        claimed = reader.claim_next("w")
        assert claimed is not None and claimed.id == "big" and claimed.version == 2
        assert reader.get("big") == claimed
        assert reader.verify().ok
        with pytest.raises(hybridstore.JobTooLarge):  # its own writes keep its limit
            reader.add(make_job("too-big-here", task_options={"pad": "y" * 2000}))
    assert big.version == 1
