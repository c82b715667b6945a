"""Store sizes, fast store builders with an on-disk cache, and the fixtures every
benchmark uses.

Sizes: ``HYBRIDSTORE_BENCH_SIZES`` (or ``--bench-sizes``), comma-separated, default
``1000,10000,20000,100000``; the older design runs at ``HYBRIDSTORE_BENCH_LEGACY_SIZES``
(``--bench-legacy-sizes``, default ``1000,10000,20000``) intersected with those.
``HYBRIDSTORE_BENCH_QUICK=1`` (``--bench-quick``) cuts the fixed round counts for a smoke run.

Stores are built fast: the JSON files are written straight into ``<status>/<id>.json``
(no fsync, each file's mtime set to the job's last write), then a ``JobStore`` is opened on
the directory and rebuilds its sidecar from the files. Built stores are cached under
``HYBRIDSTORE_BENCH_CACHE`` (default ``/var/tmp/hybridstore-bench``; see ``DEFAULT_CACHE``),
keyed by size and dataset version, so reruns skip the build.

Read benchmarks use the cached store as is. Benchmarks that write use a per-session work
copy (job files hard-linked — hybridstore never writes a job file in place, it writes a
temp file and renames it — and the sidecar copied), removed at the end of the session.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest

from benchmarks.dataset import generate_jobs, legacy_body, write_store_files
from benchmarks.legacy_store import LegacyJobStore, build_indexes
from benchmarks.limits import LimitReader, LimitWriter
from benchmarks.provenance import source_digest
from hybridstore import JobStatus, JobStore
from hybridstore.sidecar import SIDECAR_NAME

REPO = Path(__file__).resolve().parent.parent
# Bump when the generated population changes: cached stores of another version are rebuilt.
DATASET_VERSION = 1
DEFAULT_SIZES = "1000,10000,20000,100000"
# Outside the repository: the 100,000-job store alone is about 570 MB in 100,000 files,
# which git, editors and file watchers should not crawl. Set HYBRIDSTORE_BENCH_CACHE to put
# the stores elsewhere (inside the repository, use .benchmarks-data/, which is gitignored).
DEFAULT_CACHE = Path("/var/tmp/hybridstore-bench")
DEFAULT_LEGACY_SIZES = "1000,10000,20000"
IMPLS = ("hybridstore", "hybridstore-nondurable", "limit", "legacy")
T = TypeVar("T")
_STARTED = pytest.StashKey[tuple[float, tuple[float, float, float]]]()
_COMMIT_AT_START = pytest.StashKey[str | None]()
_DIGEST_AT_START = pytest.StashKey[str]()


# -- options ------------------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("hybridstore benchmarks")
    group.addoption("--bench-sizes", default=None,
                    help="store sizes, e.g. 1000,10000 (env HYBRIDSTORE_BENCH_SIZES;"
                         f" default {DEFAULT_SIZES})")
    group.addoption("--bench-legacy-sizes", default=None,
                    help="sizes at which the older design runs (env"
                         f" HYBRIDSTORE_BENCH_LEGACY_SIZES; default {DEFAULT_LEGACY_SIZES})")
    group.addoption("--bench-quick", action="store_true", default=None,
                    help="few fixed rounds, for a smoke run (env HYBRIDSTORE_BENCH_QUICK=1)")


def _parse_sizes(text: str) -> list[int]:
    return sorted({int(part.replace("_", "")) for part in text.split(",") if part.strip()})


def _sizes(config: pytest.Config) -> list[int]:
    return _parse_sizes(config.getoption("--bench-sizes")
                        or os.environ.get("HYBRIDSTORE_BENCH_SIZES") or DEFAULT_SIZES)


def _legacy_sizes(config: pytest.Config) -> list[int]:
    text = (config.getoption("--bench-legacy-sizes")
            or os.environ.get("HYBRIDSTORE_BENCH_LEGACY_SIZES") or DEFAULT_LEGACY_SIZES)
    return [s for s in _parse_sizes(text) if s in _sizes(config)]


def _quick(config: pytest.Config) -> bool:
    return bool(config.getoption("--bench-quick")
                or os.environ.get("HYBRIDSTORE_BENCH_QUICK", "") not in ("", "0"))


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_STARTED] = (time.time(), os.getloadavg())
    config.stash[_COMMIT_AT_START] = _git_commit()
    config.stash[_DIGEST_AT_START] = source_digest()
    config.addinivalue_line(
        "markers", "impls(*names): implementations a benchmark runs for (hybridstore,"
        " hybridstore-nondurable, limit, legacy)"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "impl" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("impls")
    impls = marker.args if marker else ("hybridstore",)
    sizes = _sizes(metafunc.config)
    legacy_sizes = _legacy_sizes(metafunc.config)
    combos = [
        pytest.param(impl, size, id=f"{impl}-{size}")
        for size in sizes
        for impl in impls
        if impl != "legacy" or size in legacy_sizes
    ]
    metafunc.parametrize(("impl", "size"), combos)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # pytest's own order is kept on purpose: each operation runs at every size, and for
    # every implementation, back to back (``for size: for impl``), so the ratios compare
    # measurements taken seconds apart rather than minutes apart on a shared machine.
    for item in items:
        item.add_marker(pytest.mark.timeout(3600))


def _git_dirty() -> list[str] | None:
    """Files of hybridstore/ that differ from the commit (the run measures the tree)."""
    import subprocess

    try:
        out = subprocess.run(["git", "status", "--porcelain", "--", "hybridstore"], cwd=REPO,
                             capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line[3:] for line in out.splitlines()]


def _git_commit() -> str | None:
    try:
        head = (REPO / ".git" / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            return (REPO / ".git" / head[5:]).read_text().strip()
        return head
    except OSError:
        return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    from hybridstore.files import file_system_type

    started, load_before = config.stash.get(_STARTED, (time.time(), os.getloadavg()))
    machine_info.update(
        cpu_count=os.cpu_count(),
        cpu_model=_cpu_model(),
        memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        file_system=file_system_type(_cache_root()),
        sqlite_version=sqlite3.sqlite_version,
        loadavg_at_start=[round(x, 2) for x in load_before],
        loadavg_at_end=[round(x, 2) for x in os.getloadavg()],
        run_seconds=round(time.time() - started, 1),
    )


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any,
                                 output_json: dict[str, Any]) -> None:
    # The per-round timings would make the file tens of MB; the statistics stay.
    for entry in output_json.get("benchmarks", []):
        entry.get("stats", {}).pop("data", None)
    output_json["hybridstore_bench"] = {
        "sizes": _sizes(config),
        "legacy_sizes": _legacy_sizes(config),
        "quick": _quick(config),
        "dataset_version": DATASET_VERSION,
        "git_commit": config.stash.get(_COMMIT_AT_START, None),
        "git_commit_at_end": _git_commit(),
        "hybridstore_uncommitted_changes": _git_dirty(),
        "hybridstore_source_digest": config.stash.get(_DIGEST_AT_START, None),
        "hybridstore_source_digest_at_end": source_digest(),
    }


# -- building and caching stores ----------------------------------------------------------


def _log(message: str) -> None:
    sys.stderr.write(f"\n[bench] {message}\n")
    sys.stderr.flush()


def _cache_root() -> Path:
    return Path(os.environ.get("HYBRIDSTORE_BENCH_CACHE") or DEFAULT_CACHE)


def _build_cached(name: str, build: Callable[[Path], dict[str, Any]]) -> Path:
    """The cached directory ``name``, built by ``build(tmp)`` first if absent."""
    root = _cache_root()
    target = root / name
    if (target / "manifest.json").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    if target.exists():
        shutil.rmtree(target)  # an interrupted build
    building = root / f"{name}.building-{os.getpid()}"
    shutil.rmtree(building, ignore_errors=True)
    started = time.perf_counter()
    manifest = build(building)
    manifest["build_seconds"] = round(time.perf_counter() - started, 2)
    (building / "manifest.json").write_text(json.dumps(manifest, indent=2))
    os.rename(building, target)
    _log(f"built {target} in {manifest['build_seconds']} s")
    return target


def _build_hybridstore(size: int) -> Callable[[Path], dict[str, Any]]:
    def build(path: Path) -> dict[str, Any]:
        jobs = list(generate_jobs(size))
        write_store_files(path, jobs)
        started = time.perf_counter()
        with JobStore(path) as store:  # finds no sidecar: rebuilds it from the files
            stats = store.statistics()
        if stats["total_jobs"] != size:
            raise RuntimeError(f"built store holds {stats['total_jobs']} jobs, not {size}")
        return {"kind": "hybridstore", "size": size, "dataset": DATASET_VERSION,
                "open_and_rebuild_seconds": round(time.perf_counter() - started, 2),
                "status_counts": stats["status_counts"],
                "storage_size_mb": stats["storage_size_mb"]}

    return build


def _build_legacy(size: int) -> Callable[[Path], dict[str, Any]]:
    def build(path: Path) -> dict[str, Any]:
        jobs = list(generate_jobs(size))
        write_store_files(path, jobs, legacy=True)
        build_indexes(path, [legacy_body(job) for job in jobs])
        LegacyJobStore(path)  # creates .locks
        counts = {s.value: 0 for s in JobStatus}
        for job in jobs:
            counts[job.status.value] += 1
        return {"kind": "legacy", "size": size, "dataset": DATASET_VERSION,
                "status_counts": counts}

    return build


def _link_tree(source: Path, target: Path) -> None:
    """A copy of a hybridstore directory: job files hard-linked, the sidecar copied."""
    target.mkdir(parents=True)
    for status in JobStatus:
        src = source / status.value
        dst = target / status.value
        dst.mkdir()
        with os.scandir(src) as entries:
            for entry in entries:
                try:
                    os.link(entry.path, dst / entry.name)
                except OSError:
                    shutil.copy2(entry.path, dst / entry.name)
    for suffix in ("", "-wal"):
        sidecar = source / f"{SIDECAR_NAME}{suffix}"
        if sidecar.exists():
            shutil.copy2(sidecar, target / sidecar.name)


class Sample:
    """Ids, ingestion task ids and file paths of 1,000 jobs picked at random (seeded)."""

    def __init__(self, ids: list[str], task_ids: list[str], paths: list[str]) -> None:
        self.ids = ids
        self.task_ids = task_ids
        self.paths = paths

    def cycle_ids(self) -> Iterator[str]:
        return itertools.cycle(self.ids)

    def cycle_task_ids(self) -> Iterator[str]:
        return itertools.cycle(self.task_ids)

    def cycle_paths(self) -> Iterator[str]:
        return itertools.cycle(self.paths)


class BenchData:
    """Lazily built stores, work copies and open handles, per size; closed at session end."""

    def __init__(self, quick: bool) -> None:
        self.quick = quick
        self.session_dir = _cache_root() / f"work-{os.getpid()}"
        self._opened: dict[tuple[str, int], Any] = {}
        self._closers: list[Callable[[], None]] = []

    def rounds(self, full: int, quick: int = 3) -> int:
        """A fixed round count: ``full`` normally, ``quick`` for a smoke run."""
        return quick if self.quick else full

    def _once(self, key: tuple[str, int], make: Callable[[], T]) -> T:
        if key not in self._opened:
            self._opened[key] = make()
        return cast(T, self._opened[key])

    # cached, read-only
    def store_dir(self, size: int) -> Path:
        def make() -> Path:
            path = _build_cached(f"hybridstore-{size}-d{DATASET_VERSION}",
                                 _build_hybridstore(size))
            # Open it once with the hybridstore under test, so that a sidecar of an older
            # schema is migrated or rebuilt before anything copies or times it.
            started = time.perf_counter()
            JobStore(path).close()
            if time.perf_counter() - started > 1:
                _log(f"opening {path} took {time.perf_counter() - started:.1f} s"
                     " (sidecar migrated or rebuilt)")
            return path

        return self._once(("store_dir", size), make)

    def manifest(self, size: int) -> dict[str, Any]:
        manifest: dict[str, Any] = json.loads((self.store_dir(size) / "manifest.json").read_text())
        return manifest

    def store(self, size: int) -> JobStore:
        def make() -> JobStore:
            store = JobStore(self.store_dir(size))
            self._closers.append(store.close)
            return store

        return self._once(("store", size), make)

    def sample(self, size: int) -> Sample:
        def make() -> Sample:
            root = self.store_dir(size)
            conn = sqlite3.connect(root / SIDECAR_NAME)
            rows = conn.execute(
                "SELECT id, ingestion_task_id, status FROM jobs ORDER BY id"
            ).fetchall()
            conn.close()
            picked = random.Random(size).sample(rows, min(1000, len(rows)))
            return Sample([r[0] for r in picked], [r[1] for r in picked],
                          [str(root / r[2] / f"{r[0]}.json") for r in picked])

        return self._once(("sample", size), make)

    def limit_reader(self, size: int) -> LimitReader:
        def make() -> LimitReader:
            root = self.store_dir(size)
            reader = LimitReader(root, root / SIDECAR_NAME)
            self._closers.append(reader.close)
            return reader

        return self._once(("limit_reader", size), make)

    def legacy_dir(self, size: int) -> Path:
        return self._once(("legacy_dir", size), lambda: _build_cached(
            f"legacy-{size}-d{DATASET_VERSION}", _build_legacy(size)))

    def legacy(self, size: int) -> LegacyJobStore:
        return self._once(("legacy", size), lambda: LegacyJobStore(self.legacy_dir(size)))

    # per-session copies, for benchmarks that write
    def work_dir(self, size: int) -> Path:
        def make() -> Path:
            target = self.session_dir / f"hybridstore-{size}"
            started = time.perf_counter()
            _link_tree(self.store_dir(size), target)
            _log(f"work copy of the {size:,}-job store in {time.perf_counter() - started:.1f} s")
            return target

        return self._once(("work_dir", size), make)

    def work_store(self, size: int, *, durable: bool = True) -> JobStore:
        def make() -> JobStore:
            store = JobStore(self.work_dir(size), durable=durable)
            self._closers.append(store.close)
            return store

        return self._once((f"work_store-{durable}", size), make)

    def limit_sidecar(self, size: int) -> Path:
        """A copy of the sidecar (same schema, indexes and rows) for the limit's commits."""
        def make() -> Path:
            target = self.session_dir / f"limit-{size}" / "sidecar-copy.sqlite3"
            target.parent.mkdir(parents=True, exist_ok=True)
            source = sqlite3.connect(self.store_dir(size) / SIDECAR_NAME)
            copy = sqlite3.connect(target)
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = WAL")
            copy.close()
            source.close()
            return target

        return self._once(("limit_sidecar", size), make)

    def limit_writer(self, size: int) -> LimitWriter:
        def make() -> LimitWriter:
            writer = LimitWriter(self.work_dir(size), self.limit_sidecar(size))
            self._closers.append(writer.close)
            return writer

        return self._once(("limit_writer", size), make)

    def scratch(self, size: int, name: str) -> Path:
        path = self.session_dir / f"limit-{size}" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def legacy_work(self, size: int) -> LegacyJobStore:
        def make() -> LegacyJobStore:
            target = self.session_dir / f"legacy-{size}"
            # A real copy: the older design rewrites files in place.
            shutil.copytree(self.legacy_dir(size), target, symlinks=True)
            return LegacyJobStore(target)

        return self._once(("legacy_work", size), make)

    def close(self) -> None:
        for close in reversed(self._closers):
            with contextlib.suppress(Exception):
                close()
        shutil.rmtree(self.session_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bench(request: pytest.FixtureRequest) -> Iterator[BenchData]:
    data = BenchData(_quick(request.config))
    yield data
    data.close()


@pytest.fixture
def record(benchmark: Any, impl: str, size: int) -> Callable[..., None]:
    """Label a benchmark for the report: ``record(op, ops=…, returned=…, **extra)``.

    ``ops`` is how many operations one timed call performs (the report divides by it);
    ``returned`` how many jobs one call returns (for the per-returned-job ratios).
    """

    def label(op: str, *, ops: int = 1, returned: int | None = None, **extra: Any) -> None:
        benchmark.group = f"{op} @ {size:,} jobs"
        benchmark.extra_info.update(op=op, impl=impl, size=size, ops_per_round=ops, **extra)
        if returned is not None:
            benchmark.extra_info["returned"] = returned

    return label

