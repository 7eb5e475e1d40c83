#!/usr/bin/env bash
# Benchmark: `dualwrite verify` of ROWS equal rows x 10 columns (the table of
# benches/initial_sync.sh) against the initial sync (`dualwrite reconcile`) that copied
# them, in one run so the ratio holds on a noisy machine; then verify of the same table with
# 1,000 scattered differences in the target (500 rows changed, 500 deleted) and
# `--limit 1000`, which must list all of them.
#   sqlite   -> postgres
#   postgres -> mariadb
# Wall time and peak RSS come from GNU time; results go to stdout as a markdown table.
#
#   benches/verify.sh                        # from the repository root
#   ROWS=100000 PAIRS="pg-mariadb" benches/verify.sh
#
# Needs: cargo, GNU time, sqlite3, psql, mariadb (client), jq, and the servers of
# BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test) and MariaDB at
# MY_HOST/MY_USER/MY_DB (default 127.0.0.1/root/test, no password). Its tables are
# verify_bench_src / verify_bench_dst, dropped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
PAIRS=${PAIRS:-"sqlite-pg pg-mariadb"}
REPEAT=${REPEAT:-3}   # verify runs of each kind; the median is reported
# shellcheck source=benches/servers.sh
. "$ROOT/benches/servers.sh"
SRC=verify_bench_src
DST=verify_bench_dst

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite)
fi
DUALWRITE=${DUALWRITE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dualwrite}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-verify.XXXXXX")
cleanup() {
    "${PSQL[@]}" -c "DROP TABLE IF EXISTS $SRC, $DST; DELETE FROM _dualwrite_changelog WHERE table_name = '$SRC'" 2>/dev/null || true
    "${MARIADB[@]}" -e "DROP TABLE IF EXISTS $DST" 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

settle() { sync; sleep 1; }

# shellcheck source=benches/bench_table.sh
. "$ROOT/benches/bench_table.sh"

# timed NAME WANT_CODE COMMAND...: prints "seconds rss_mb"; output kept in $WORK/NAME.out
timed() {
    local name=$1 want=$2 code=0
    shift 2
    settle
    /usr/bin/time -f '%e %M %U %S' -o "$WORK/$name.time" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" || code=$?
    if [ "$code" != "$want" ]; then
        echo "$name: exit $code, expected $want" >&2
        cat "$WORK/$name.out" "$WORK/$name.err" >&2
        exit 1
    fi
    # GNU time puts "Command exited with non-zero status N" first: the figures are last.
    tail -n 1 "$WORK/$name.time" | awk '{ printf "%.2f %d\n", $1, $2 / 1024 }'
}

# median NAME WANT_CODE COMMAND...: runs `timed` REPEAT times; prints "median_seconds
# max_rss_mb all_seconds" (all_seconds comma-separated, in run order).
median() {
    local name=$1 want=$2 secs rss all=() max=0
    shift 2
    for _ in $(seq "$REPEAT"); do
        read -r secs rss < <(timed "$name" "$want" "$@")
        all+=("$secs")
        [ "$rss" -gt "$max" ] && max=$rss
    done
    local mid
    mid=$(printf '%s\n' "${all[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p")
    echo "$mid $max $(IFS=,; echo "${all[*]}")"
}

RESULTS=()
row() { RESULTS+=("$1"); echo "$1" >&2; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.0f%%", (a / b - 1) * 100 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# bench PAIR DIR DIFF_SQL...: reconcile (the copy), verify equal, apply the differences
# (statements for the target), verify them.
bench() {
    local pair=$1 dir=$2 target=$3
    read -r copy copy_rss < <(timed "$pair-copy" 0 "$DUALWRITE" -C "$dir" reconcile)
    row "| $pair | reconcile (initial sync, the copy) | $copy | 1.00 | $copy_rss MB |"
    read -r eq eq_rss eq_all < <(median "$pair-equal" 0 "$DUALWRITE" -C "$dir" verify bench)
    row "| $pair | verify, equal (median of $REPEAT: $eq_all) | $eq | $(ratio "$eq" "$copy") | $eq_rss MB |"
    case $target in
        pg) "${PSQL[@]}" -c "UPDATE $DST SET name = 'changed' WHERE id % 2000 = 7; DELETE FROM $DST WHERE id % 2000 = 1007" ;;
        my) "${MARIADB[@]}" -e "UPDATE $DST SET name = 'changed' WHERE id % 2000 = 7; DELETE FROM $DST WHERE id % 2000 = 1007" ;;
    esac
    read -r diff diff_rss diff_all < <(median "$pair-diff" 2 "$DUALWRITE" -C "$dir" verify bench --limit 1000 --output json)
    local listed counted
    listed=$(jq '.maps[0].differences | length' "$WORK/$pair-diff.out")
    counted=$(jq '.maps[0].counts | .missing + .extra + .different' "$WORK/$pair-diff.out")
    row "| $pair | verify, $counted scattered differences (--limit 1000: $listed listed; median of $REPEAT: $diff_all) | $diff | $(ratio "$diff" "$copy") ($(pct "$diff" "$eq") vs equal) | $diff_rss MB |"
}

for pair in $PAIRS; do
    dir="$WORK/cfg-$pair"
    case $pair in
    sqlite-pg)
        echo "== sqlite -> postgres: generating $ROWS rows" >&2
        mkdir -p "$dir"
        gen_sqlite "$dir/src.db" $SRC
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS $DST; CREATE TABLE $DST ($PG_COLS)"
        bench_config "$dir" "{ sqlite: { path: src.db } }" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" $SRC $DST default
        bench "SQLite → PostgreSQL" "$dir" pg
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS $DST"
        ;;
    pg-mariadb)
        echo "== postgres -> mariadb: generating $ROWS rows" >&2
        gen_pg $SRC
        "${MARIADB[@]}" -e "DROP TABLE IF EXISTS $DST; CREATE TABLE $DST ($MY_COLS) ENGINE=InnoDB"
        bench_config "$dir" "{ postgres: { urlFromEnv: BENCH_PG_URL } }" "{ mysql: { urlFromEnv: BENCH_MY_URL } }" $SRC $DST default
        bench "PostgreSQL → MariaDB" "$dir" my
        ;;
    *) echo "unknown pair $pair" >&2; exit 1 ;;
    esac
done

echo
echo "rows: $ROWS; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo
echo "| pair | what | seconds | ratio to the copy | peak RSS |"
echo "|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
