#!/usr/bin/env bash
# The benchmarks at their CI smoke size: every benchmark of benchmarks/ on a 1,000-job store
# (built fresh in a temporary directory, so the store builders are exercised too), with a few
# rounds each; the file store vs PostgreSQL comparison runs when the server answers
# (HYBRIDSTORE_BENCH_PG_DSN, see benchmarks/test_backends.py) and skips otherwise. Then the
# report script turns that run into a copy of benchmarks/README.md in the temporary
# directory, so it cannot rot either. About 10–15 seconds; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="$(mktemp -d "${TMPDIR:-/tmp}/hybridstore-bench-smoke.XXXXXX")"
trap 'rm -rf "$cache"' EXIT

HYBRIDSTORE_BENCH_CACHE="$cache" HYBRIDSTORE_BENCH_SIZES=1000 HYBRIDSTORE_BENCH_QUICK=1 \
    python -m pytest benchmarks/ --benchmark-only --benchmark-max-time=0.05 \
    --benchmark-min-rounds=3 -p no:cacheprovider -q --benchmark-json="$cache/smoke.json" "$@"

cp benchmarks/README.md "$cache/README.md"
python scripts/bench_report.py "$cache/smoke.json" --out "$cache/README.md" \
    --summary "$cache/results.json" >/dev/null
python -c 'import json, sys; json.load(open(sys.argv[1]))' "$cache/results.json"
