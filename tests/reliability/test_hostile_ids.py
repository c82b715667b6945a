"""Hostile job ids and arguments: a typed error before any file-system call.

Every id-taking call of ``JobStore`` and ``RemoteJobsStorage`` (and the model itself) is
driven with path tricks, NUL, over-long and look-alike ids, newlines and escape
sequences, and non-strings, under a guard that fails the test on the first file-system or
sidecar access. Invalid statuses and arguments get ``InvalidArgument``. The messages never
carry a control character raw, and the tree around the data directory is unchanged. The
CLI gets the same ids.
"""

from __future__ import annotations

import builtins
import io
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from hybridstore import (
    InvalidArgument,
    InvalidJobId,
    JobStatus,
    JobStore,
    NotJobOwner,
    RemoteJob,
    RemoteJobsStorage,
)
from hybridstore.sidecar import Sidecar

from ._support import make_job, snapshot

BAD_IDS: list[Any] = [
    "../x",
    "..",
    ".",
    "../../../../etc/passwd",
    "a/b",
    "a/../../b",
    "/abs",
    "/etc/passwd",
    "a\\b",
    "a\x00b",
    "\x00",
    "x" * 129,  # one over the limit
    "x" * 100_000,
    "é" * 64,  # 64 characters, 128 bytes, not ASCII
    "jоb",  # Cyrillic о
    "ｊｏｂ",  # fullwidth
    "job\u200b",  # zero-width space
    "job\u2215x",  # division slash
    "a\u0301",  # combining accent
    "abc\n",  # trailing newline
    "a\nb",
    "\n",
    "a\rb",
    "\x1b[31mred\x1b[0m",
    "\x1b]0;title\x07",
    "\x7f",
    "a b",
    "",
    " ",
    "-leading-dash",
    ".hidden",
    "_under",
    "a:b",
    "a*",
    "a?",
    "job.json/",
    None,
    123,
    b"bytes",
    ["list"],
]
VALID_LONGEST = "x" * 128


class _Touched(Exception):
    pass


_FS_NAMES = (
    "open",
    "stat",
    "lstat",
    "mkdir",
    "makedirs",
    "unlink",
    "rename",
    "replace",
    "listdir",
    "scandir",
    "rmdir",
    "utime",
    "chmod",
    "fsync",
    "truncate",
)


@contextmanager
def _no_file_system() -> Iterator[None]:
    """Any file-system call or sidecar access inside raises ``_Touched``."""
    saved: dict[tuple[Any, str], Any] = {}

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _Touched(args[:1])

    targets: list[tuple[Any, str]] = [(os, name) for name in _FS_NAMES]
    targets += [(io, "open"), (builtins, "open")]
    targets += [(Sidecar, "transaction"), (Sidecar, "query"), (Sidecar, "connect")]
    for owner, name in targets:
        saved[(owner, name)] = getattr(owner, name)
        setattr(owner, name, refuse)
    try:
        yield
    finally:
        for (owner, name), value in saved.items():
            setattr(owner, name, value)


def _outcome(call: Callable[[], Any]) -> BaseException | None:
    with _no_file_system():
        try:
            call()
        except BaseException as exc:
            return exc
    return None


def _unvalidated(job_id: Any) -> RemoteJob:
    """A job carrying ``job_id`` without validation (as a careless caller could build)."""
    job = make_job()
    return RemoteJob.model_construct(**{**dict(job), "id": job_id})


def _clean(message: str) -> None:
    assert not any(ord(c) < 32 or ord(c) == 127 for c in message), repr(message)
    assert len(message) < 400


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[JobStore, RemoteJobsStorage, Path]]:
    data_dir = tmp_path / "data"
    (tmp_path / "x").mkdir()  # what "../x" would reach
    (tmp_path / "x" / "decoy.json").write_text("{}")
    store = JobStore(data_dir)
    store.add(make_job("victim"))
    compat = RemoteJobsStorage(data_dir)
    yield store, compat, tmp_path
    store.close()
    compat.store.close()


def test_every_id_call_refuses_every_hostile_id_before_touching_files(
    world: tuple[JobStore, RemoteJobsStorage, Path],
) -> None:
    store, compat, root = world
    before = snapshot(root)
    calls: dict[str, Callable[[Any], Any]] = {
        "RemoteJob()": lambda i: RemoteJob(
            id=i, ingestion_task_id="t", source_file_path="/x", content_type="c"
        ),
        "add": lambda i: store.add(_unvalidated(i)),
        "save": lambda i: store.save(_unvalidated(i)),
        "save(expected_version=0)": lambda i: store.save(_unvalidated(i), expected_version=0),
        "get": lambda i: store.get(i),
        "delete": lambda i: store.delete(i),
        "heartbeat": lambda i: store.heartbeat(i, "w"),
        "complete": lambda i: store.complete(i, "w", {"r": 1}),
        "fail": lambda i: store.fail(i, "w", "boom"),
        "cancel": lambda i: store.cancel(i),
        "compat.save_job": lambda i: compat.save_job(
            {"id": i, "ingestion_task_id": "t", "source_file_path": "/x", "content_type": "c"}
        ),
        "compat.load_job": lambda i: compat.load_job(i),
        "compat.delete_job": lambda i: compat.delete_job(i),
    }
    tried = 0
    for bad in BAD_IDS:
        for name, call in calls.items():
            exc = _outcome(lambda call=call, bad=bad: call(bad))  # type: ignore[misc]
            assert isinstance(exc, InvalidJobId), (name, bad, exc)
            assert isinstance(exc, ValueError)
            _clean(str(exc))
            tried += 1
        # Parsing a body with such an id is refused too (typed, as pydantic reports it).
        # (pydantic's lax mode reads b"bytes" as the valid id "bytes": no harm done.)
        body = {"id": bad, "ingestion_task_id": "t", "source_file_path": "/x", "content_type": "c"}
        if isinstance(bad, bytes):
            assert RemoteJob.model_validate(body).id == bad.decode()
            continue
        with _no_file_system(), pytest.raises((InvalidJobId, ValidationError)):
            RemoteJob.model_validate(body)
    assert tried == len(BAD_IDS) * len(calls)
    assert snapshot(root) == before
    for leaked in ("/abs.json", "/etc/passwd.json", "/x.json"):
        assert not os.path.lexists(leaked)
    assert store.get("victim") is not None and store.verify().ok


def test_the_longest_valid_id_works(world: tuple[JobStore, RemoteJobsStorage, Path]) -> None:
    store, _, _ = world
    stored = store.add(make_job(VALID_LONGEST))
    assert store.get(VALID_LONGEST) == stored
    assert len(f"{VALID_LONGEST}.json".encode()) < 255  # a legal file name everywhere


BAD_STATUSES: list[Any] = [
    "bogus",
    "../pending",
    "PENDING",
    "",
    "pending\n",
    "pending/..",
    "\x1b[2J",
    5,
    ["pending", "nope"],
]


def test_invalid_statuses_and_arguments_are_typed_errors_before_any_access(
    world: tuple[JobStore, RemoteJobsStorage, Path],
) -> None:
    store, compat, root = world
    before = snapshot(root)
    calls: list[tuple[str, Callable[[], Any]]] = []
    for status in BAD_STATUSES:
        calls += [
            (f"find(status={status!r})", lambda s=status: store.find(status=s)),
            (f"count(status={status!r})", lambda s=status: store.count(status=s)),
        ]
    calls += [
        ("find(limit=-1)", lambda: store.find(limit=-1)),
        ("find(limit='5')", lambda: store.find(limit="5")),  # type: ignore[arg-type]
        ("find(offset=-1)", lambda: store.find(offset=-1)),
        ("find(content_type=5)", lambda: store.find(content_type=[5])),  # type: ignore[list-item]
        ("find(worker_id=None in list)", lambda: store.find(worker_id=[None])),  # type: ignore[list-item]
        ("claim_next('')", lambda: store.claim_next("")),
        ("claim_next(None)", lambda: store.claim_next(None)),  # type: ignore[arg-type]
        ("claim_next(lease=0)", lambda: store.claim_next("w", lease_seconds=0)),
        ("claim_next(lease=-1)", lambda: store.claim_next("w", lease_seconds=-1)),
        ("claim_next(lease=nan)", lambda: store.claim_next("w", lease_seconds=float("nan"))),
        ("find_by_ingestion_task(5)", lambda: store.find_by_ingestion_task(5)),  # type: ignore[arg-type]
    ]
    for status in BAD_STATUSES:
        if isinstance(status, str):
            # The older design's adapter logs and answers "nothing", as that design did.
            assert compat.find_jobs_by_status(status) == [], status
    for name, call in calls:
        exc = _outcome(call)
        if name.startswith(("find(status=5)", "count(status=5)")):
            # Not a string nor a list: Python's own TypeError, still before any access.
            assert isinstance(exc, (InvalidArgument, TypeError)), (name, exc)
        else:
            assert isinstance(exc, InvalidArgument), (name, exc)
        _clean(str(exc))
    with pytest.raises(ValidationError):
        RemoteJob(ingestion_task_id="t", source_file_path="/x", content_type="c", status="../x")
    job = make_job()
    with pytest.raises(ValidationError):
        job.status = "bogus"  # type: ignore[assignment]
    assert snapshot(root) == before


def test_an_unvalidated_job_with_a_bogus_status_writes_nothing(
    world: tuple[JobStore, RemoteJobsStorage, Path],
) -> None:
    store, _, root = world
    before = {k: v for k, v in snapshot(root).items() if "sqlite3" not in k}
    for status in ("../../escape", "bogus", "pending/../../x"):
        job = RemoteJob.model_construct(**{**dict(make_job("constructed")), "status": status})
        with pytest.raises(InvalidArgument):
            store.save(job)
        with pytest.raises(InvalidArgument):
            store.add(job)
    after = {k: v for k, v in snapshot(root).items() if "sqlite3" not in k}
    assert {k for k in after if not k.startswith("data/.locks")} == {
        k for k in before if not k.startswith("data/.locks")
    }
    assert store.verify().ok and store.journal.unsettled_intents() == []
    assert not (root / "escape.json").exists()
    # A plain-string status that is valid is accepted as the enum.
    job = RemoteJob.model_construct(**{**dict(make_job("constructed")), "status": "pending"})
    assert store.save(job).status is JobStatus.PENDING


def test_hostile_worker_ids_are_data_and_never_echoed_raw(
    world: tuple[JobStore, RemoteJobsStorage, Path],
) -> None:
    """A worker id is stored, not used as a path; errors naming it escape it."""
    store, _, root = world
    evil = "../..\x1b[31m\nworker"
    claimed = store.claim_next(evil)
    assert claimed is not None and claimed.worker_id == evil
    assert store.get(claimed.id).worker_id == evil  # type: ignore[union-attr]
    with pytest.raises(NotJobOwner) as caught:
        store.complete(claimed.id, "\x1b[2Jother\n")
    _clean(str(caught.value))
    assert store.complete(claimed.id, evil).status is JobStatus.COMPLETED
    assert not (root / "worker").exists()
    assert store.verify().ok


# -- the command line ---------------------------------------------------------------------


def _cli(data_dir: Path, *args: str) -> tuple[int, str, str]:
    from hybridstore.cli import cli

    result = CliRunner().invoke(cli, ["--data-dir", str(data_dir), *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    "bad", [b for b in BAD_IDS if isinstance(b, str) and b], ids=lambda b: repr(b)[:30]
)
def test_cli_show_refuses_hostile_ids_in_one_escaped_line(
    world: tuple[JobStore, RemoteJobsStorage, Path], bad: str
) -> None:
    store, _, root = world
    before = snapshot(root)
    code, out, err = _cli(store.data_dir, "show", "--", bad)
    assert code == 1, (code, out, err)
    assert out == ""
    assert err.startswith("error: invalid job id") and err.endswith("\n")
    _clean(err[:-1])
    assert "Traceback" not in err
    after = snapshot(root)
    # Nothing changed but lock files and the sidecar's own -wal/-shm.
    assert {k: v for k, v in after.items() if "sqlite3" not in k and ".locks" not in k} == {
        k: v for k, v in before.items() if "sqlite3" not in k and ".locks" not in k
    }


def test_cli_hostile_filters_and_stored_values(
    world: tuple[JobStore, RemoteJobsStorage, Path],
) -> None:
    store, _, _ = world
    store.add(make_job("shown", content_type="\x1b[2Jclear\nscreen", worker_id="\x1b]0;t\x07"))
    for status in ("bogus", "../pending", "\x1b[31m"):
        code, _, err = _cli(store.data_dir, "list", "--status", status)
        assert code == 2 and "\x1b" not in err
    code, out, err = _cli(store.data_dir, "list", "--worker", "../x\x1b[31m")
    assert code == 0 and out == "no jobs matched\n"
    for args in (
        ("list",),
        ("list", "--json"),
        ("show", "shown"),
        ("stats",),
        ("stats", "--json"),
        ("verify",),
    ):
        code, out, err = _cli(store.data_dir, *args)
        assert code == 0, (args, err)
        assert "\x1b" not in out + err and "\x07" not in out + err, args
