#!/usr/bin/env bash
# Benchmark: (a) `dualwrite reconcile --dry-run` on a generated repository of 10,000 maps and
# 1,000 alert rules, against
#   (b) check-jsonschema validating the same files with our JSON Schemas (goal: dualwrite
#       at least 20x faster), and
#   (c) parsing the same YAML alone into serde_json::Value with serde-saphyr, i.e.
#       examples/parse_only.rs (goal: dualwrite within 3x of it).
# Each command runs RUNS times (default 3); the table gives the median wall time, the median
# CPU time (user + system: less sensitive than wall time to other load on the machine) and the
# peak resident set size (the largest "Maximum resident set size" of GNU time over the runs).
# The ratios are of the median wall times.
#
#   benches/dry_run.sh                      # from the repository root
#   MAPS=1000 ALERTS=100 RUNS=5 benches/dry_run.sh
#   SKIP_BUILD=1 benches/dry_run.sh         # measure the binaries already built
#   SKIP_BUILD=1 DUALWRITE=/path/to/dualwrite PARSE_ONLY=/path/to/parse_only benches/dry_run.sh
#
# Needs: cargo, python3, GNU time (/usr/bin/time; `apt-get install -y time`) and
# check-jsonschema (`pip install check-jsonschema`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MAPS=${MAPS:-10000}
ALERTS=${ALERTS:-1000}
RUNS=${RUNS:-3}

if [ ! -x /usr/bin/time ]; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "installing GNU time" >&2
        apt-get install -y time >/dev/null
    else
        echo "GNU time (/usr/bin/time) is missing: apt-get install -y time" >&2
        exit 1
    fi
fi
if ! command -v check-jsonschema >/dev/null; then
    echo "check-jsonschema is missing: pip install check-jsonschema" >&2
    exit 1
fi

DUALWRITE=${DUALWRITE:-$ROOT/target/release/dualwrite}
PARSE_ONLY=${PARSE_ONLY:-$ROOT/target/release/examples/parse_only}
if [ "${SKIP_BUILD:-0}" = 1 ]; then
    echo "== SKIP_BUILD=1: measuring $DUALWRITE and $PARSE_ONLY as they are" >&2
else
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite --example parse_only)
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-bench.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
REPO="$WORK/repo"
echo "== generating $MAPS maps and $ALERTS alert rules into $REPO" >&2
python3 "$ROOT/benches/gen_repo.py" "$REPO" --maps "$MAPS" --alerts "$ALERTS" >&2
"$DUALWRITE" -C "$REPO" validate >&2

# The check-jsonschema commands take the files as arguments, relative to the repository
# (short paths keep 10,000 of them well under the argument-list limit: one process per schema,
# as a user would run it). Both run in one shell; the wall time is their sum and GNU time's
# maximum RSS is the larger of the two.
CJS="cd '$REPO' \
 && check-jsonschema --schemafile '$ROOT/schemas/tablemap.schema.json' maps/*.yaml >/dev/null \
 && check-jsonschema --schemafile '$ROOT/schemas/alertrule.schema.json' alerts/*.yaml >/dev/null"

# shellcheck source=benches/measure.sh
. "$ROOT/benches/measure.sh"

: >"$WORK/results.txt"
echo "== measuring, $RUNS run(s) each, interleaved (so each command sees the same machine load)" >&2
for i in $(seq 1 "$RUNS"); do
    measure dualwrite "$i" "$DUALWRITE" -C "$REPO" reconcile --dry-run --output json
    measure check-jsonschema "$i" bash -c "$CJS"
    measure parse-only "$i" "$PARSE_ONLY" "$REPO"
done
uptime >&2

python3 - "$WORK/results.txt" "$MAPS" "$ALERTS" "$RUNS" <<'EOF'
import statistics, sys
path, maps, alerts, runs = sys.argv[1:]
rows = {}
for line in open(path):
    name, wall, rss, user, sys_ = line.split()
    rows.setdefault(name, []).append((float(wall), int(rss), float(user) + float(sys_)))
med = {n: statistics.median(w for w, _, _ in r) for n, r in rows.items()}
cpu = {n: statistics.median(c for _, _, c in r) for n, r in rows.items()}
peak = {n: max(m for _, m, _ in r) for n, r in rows.items()}
label = {
    "dualwrite": "dualwrite reconcile --dry-run --output json",
    "check-jsonschema": "check-jsonschema (tablemap + alertrule schemas)",
    "parse-only": "parse only (serde-saphyr -> serde_json::Value)",
}
print(f"\nDry-run on {int(maps):,} maps and {int(alerts):,} alert rules, median of {runs} run(s)\n")
print("| command | wall time (median) | CPU time (median) | peak RSS |")
print("|---|---:|---:|---:|")
for n in ["dualwrite", "check-jsonschema", "parse-only"]:
    print(f"| {label[n]} | {med[n]:.2f} s | {cpu[n]:.2f} s | {peak[n] / 1024:.0f} MiB |")
fast = med["check-jsonschema"] / med["dualwrite"]
slow = med["dualwrite"] / med["parse-only"]
print()
print(f"check-jsonschema / dualwrite: {fast:.1f}x  (goal >= 20x: {'met' if fast >= 20 else 'NOT met'})")
print(f"dualwrite / parse-only:       {slow:.1f}x  (goal <= 3x: {'met' if slow <= 3 else 'NOT met'})")
print(f"(by CPU time: {cpu['check-jsonschema'] / cpu['dualwrite']:.1f}x and {cpu['dualwrite'] / cpu['parse-only']:.1f}x)")
EOF
