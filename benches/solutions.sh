#!/usr/bin/env bash
# Benchmark: solutions (ALM) at scale. On a generated repository of 1,000 maps and 200 alert
# rules (benches/gen_repo.py), packaged by one Solution:
#   - `dualwrite solution export NAME --managed -o FILE.zip` (validates the repository first),
#   - `dualwrite solution import FILE.zip` into an empty production repository (checks every
#     checksum, validates the repository as it would be after, writes 1,201 files),
#   - `dualwrite validate` of the production repository holding them managed (checksums
#     verified) against `dualwrite validate` of the same maps unpackaged in maps/ and alerts/
#     (goal: managed within 1.2x).
# Export and import run RUNS times (default 5; each import into a fresh copy of the empty
# repository); the two validates RUNS times interleaved, so each sees the same machine load.
# The table gives the median wall time, the median CPU time (user + system) and the largest
# "Maximum resident set size" of GNU time over the runs.
#
#   benches/solutions.sh                    # from the repository root: builds release, measures
#   MAPS=100 ALERTS=20 RUNS=3 benches/solutions.sh
#   SKIP_BUILD=1 DUALWRITE=/path/to/dualwrite benches/solutions.sh
#
# Needs: cargo, python3, GNU time (/usr/bin/time; `apt-get install -y time`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAPS=${MAPS:-1000}
ALERTS=${ALERTS:-200}
RUNS=${RUNS:-5}
DUALWRITE=${DUALWRITE:-$ROOT/target/release/dualwrite}

if [ ! -x /usr/bin/time ]; then
    echo "GNU time (/usr/bin/time) is missing: apt-get install -y time" >&2
    exit 1
fi
if [ "${SKIP_BUILD:-0}" = 1 ]; then
    echo "== SKIP_BUILD=1: measuring $DUALWRITE as it is" >&2
else
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-solutions.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TEST="$WORK/test"
echo "== generating $MAPS maps and $ALERTS alert rules into $TEST" >&2
python3 "$ROOT/benches/gen_repo.py" "$TEST" --maps "$MAPS" --alerts "$ALERTS" >&2
# The same maps and rules unpackaged: the baseline of the validate comparison.
cp -r "$TEST" "$WORK/unpackaged"
python3 - "$TEST" <<'PY'
import pathlib, sys
repo = pathlib.Path(sys.argv[1])
maps = sorted(p.stem for p in (repo / "maps").glob("*.yaml"))
alerts = sorted(p.stem for p in (repo / "alerts").glob("*.yaml"))
(repo / "solutions").mkdir()
(repo / "solutions" / "bench-core.yaml").write_text(
    "apiVersion: dualwrite/v1\nkind: Solution\nmetadata: { name: bench-core }\nspec:\n"
    "  publisher: { name: contoso }\n  version: 1.0.0\n"
    f"  components:\n    maps: [{', '.join(maps)}]\n    alerts: [{', '.join(alerts)}]\n"
    "  requires: { endpoints: [erp, crm] }\n")
PY
"$DUALWRITE" -C "$TEST" validate >&2
mkdir "$WORK/empty"
cp "$TEST/dualwrite.yaml" "$WORK/empty/"

# shellcheck source=benches/measure.sh
. "$ROOT/benches/measure.sh"

: >"$WORK/results.txt"
echo "== measuring, $RUNS run(s) each" >&2
for i in $(seq 1 "$RUNS"); do
    measure export "$i" "$DUALWRITE" -C "$TEST" solution export bench-core --managed -o "$WORK/bench-core.zip"
    rm -rf "$WORK/prod" && cp -r "$WORK/empty" "$WORK/prod"
    measure import "$i" "$DUALWRITE" -C "$WORK/prod" solution import "$WORK/bench-core.zip"
done
"$DUALWRITE" -C "$WORK/prod" validate >&2
for i in $(seq 1 "$RUNS"); do
    measure validate-managed "$i" "$DUALWRITE" -C "$WORK/prod" validate
    measure validate-unpackaged "$i" "$DUALWRITE" -C "$WORK/unpackaged" validate
done
ZIP_BYTES=$(stat -c %s "$WORK/bench-core.zip")
uptime >&2

python3 - "$WORK/results.txt" "$MAPS" "$ALERTS" "$RUNS" "$ZIP_BYTES" <<'PY'
import statistics, sys
path, maps, alerts, runs, zip_bytes = sys.argv[1:]
rows = {}
for line in open(path):
    name, wall, rss, user, sys_ = line.split()
    rows.setdefault(name, []).append((float(wall), int(rss), float(user) + float(sys_)))
med = {n: statistics.median(w for w, _, _ in r) for n, r in rows.items()}
cpu = {n: statistics.median(c for _, _, c in r) for n, r in rows.items()}
peak = {n: max(m for _, m, _ in r) for n, r in rows.items()}
label = {
    "export": "solution export --managed (validate + zip)",
    "import": "solution import (checks + validate after + write)",
    "validate-managed": "validate, maps managed under solutions/",
    "validate-unpackaged": "validate, the same maps in maps/ and alerts/",
}
print(f"\nSolution of {int(maps):,} maps and {int(alerts):,} alert rules "
      f"(package: {int(zip_bytes) / 1024:.0f} KiB), median of {runs} run(s)\n")
print("| command | wall time (median) | CPU time (median) | peak RSS |")
print("|---|---:|---:|---:|")
for n in label:
    print(f"| {label[n]} | {med[n]:.3f} s | {cpu[n]:.3f} s | {peak[n] / 1024:.0f} MiB |")
# GNU time counts in 10 ms steps: a tiny repository can measure 0.00 s.
ratio = med["validate-managed"] / max(med["validate-unpackaged"], 0.01)
ratio_cpu = cpu["validate-managed"] / max(cpu["validate-unpackaged"], 0.01)
print(f"\nvalidate managed / unpackaged: {ratio:.2f}x by wall time, {ratio_cpu:.2f}x by CPU time "
      f"(goal <= 1.2x: {'met' if ratio <= 1.2 else 'NOT met'})")
PY
