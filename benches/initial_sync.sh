#!/usr/bin/env bash
# Benchmark: initial sync of ROWS rows x 10 columns (bigint key, 2 ints, numeric(12,2),
# double, varchar, boolean, date, timestamp, text with 10% NULLs) with
# `dualwrite -C DIR reconcile`, against the same copy written by hand with each engine's own
# tools, in one run so the ratios hold on a noisy machine. The pairs (PAIRS, default all),
# their hand-written baseline, and issue 17's goal for the ratio:
#   pg-pg                 psql COPY TO STDOUT | psql COPY FROM STDIN                   >= 0.8
#   pg-mariadb            LOAD DATA LOCAL INFILE of the rows psql COPY exported, the    >= 0.7
#                         load only (export + load also shown, for reference)
#   mariadb-pg            mariadb --batch --quick SELECT | psql COPY FROM STDIN         >= 0.7
#   sqlite-pg             sqlite3 -csv SELECT | psql COPY FROM STDIN (FORMAT csv)       >= 0.7
#   sqlite-sqlite         sqlite3: ATTACH + INSERT INTO dst SELECT * FROM src.t, into   >= 0.9
#                         a rollback-journal database like dualwrite's target (the same
#                         into a WAL database also shown, for reference)
#   sqlite-sqlite-mapped  the same with the mapping written in SQL (below)              >= 0.6
#   pg-pg-mapped          psql COPY (SELECT <the mapping>) TO STDOUT | psql COPY FROM   >= 0.6
# The two "-mapped" pairs copy through the field's everyday map (benches/bench_table.sh,
# bench_config ... mapped): one valueMap of 50 values (category 0..49 -> 'CAT-00'..'CAT-49'
# in a text column), renamed columns (qty -> quantity, name -> customer_name), the target's
# columns in another order than the source's, and a constant column (origin: 'crm'); their
# baseline does the same in SQL (a CASE of 50 arms, the column list, the constant). After
# each mapped dualwrite run the mapped columns are compared with the baseline's table, row
# by row (EXCEPT both ways), so a wrong mapping fails the run instead of looking fast.
#
# Every dualwrite run gets a fresh config dir (fresh state store), the map validated with
# `dualwrite validate`, and a fresh, empty target table; its wall time and peak RSS come
# from GNU time; the run checks the target holds ROWS rows afterwards. Every timed step
# starts after `sync; sleep 1` (settle). Results go to stdout as one markdown table:
# ratio = baseline seconds / dualwrite seconds; met when ratio >= goal.
#
#   benches/initial_sync.sh                        # from the repository root, every pair
#   ROWS=100000 BATCHES="default 1000" PAIRS="pg-pg pg-pg-mapped" benches/initial_sync.sh
# BATCHES: the initial sync's transaction sizes to run: "default" (the default: automatic,
# no initialSync.batchSize in the map, what a user gets; the goals are for it) and/or
# numbers (initialSync.batchSize). NO_BUILD=1 skips `cargo build --release`; DUALWRITE
# names another binary; KEEP=1 keeps the work dir.
#
# Needs: cargo, GNU time, sqlite3, psql, mariadb (client), and the servers of
# BENCH_PG_URL (default postgres://postgres@127.0.0.1:5432/test, psql-compatible) and
# MariaDB at MY_HOST/MY_USER/MY_DB (default 127.0.0.1/root/test, no password; its SEQUENCE
# engine generates the MariaDB source). Tables: bench_src, bench_dst, bench_mapped,
# bench_mapped_base in PostgreSQL, bench_src and bench_dst in MariaDB; dropped at the end.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROWS=${ROWS:-1000000}
BATCHES=${BATCHES:-default}
ALL_PAIRS="pg-pg pg-mariadb mariadb-pg sqlite-pg sqlite-sqlite sqlite-sqlite-mapped pg-pg-mapped"
PAIRS=${PAIRS:-$ALL_PAIRS}
# shellcheck source=benches/servers.sh
. "$ROOT/benches/servers.sh"
# shellcheck source=benches/bench_table.sh
. "$ROOT/benches/bench_table.sh"

if [ ! -x /usr/bin/time ]; then
    echo "GNU time (/usr/bin/time) is missing: apt-get install -y time" >&2
    exit 1
fi

# --- the pairs --------------------------------------------------------------------------

# pair_info PAIR: sets LABEL, GOAL (the ratio issue 17 asks for), SRC and DST (engines:
# sqlite, pg, my) and KIND (plain or mapped).
pair_info() {
    case $1 in
        pg-pg) LABEL="PostgreSQL → PostgreSQL"; GOAL=0.8; SRC=pg; DST=pg; KIND=plain ;;
        pg-mariadb) LABEL="PostgreSQL → MariaDB"; GOAL=0.7; SRC=pg; DST=my; KIND=plain ;;
        mariadb-pg) LABEL="MariaDB → PostgreSQL"; GOAL=0.7; SRC=my; DST=pg; KIND=plain ;;
        sqlite-pg) LABEL="SQLite → PostgreSQL"; GOAL=0.7; SRC=sqlite; DST=pg; KIND=plain ;;
        sqlite-sqlite) LABEL="SQLite → SQLite, plain"; GOAL=0.9; SRC=sqlite; DST=sqlite; KIND=plain ;;
        sqlite-sqlite-mapped) LABEL="SQLite → SQLite, mapped"; GOAL=0.6; SRC=sqlite; DST=sqlite; KIND=mapped ;;
        pg-pg-mapped) LABEL="PostgreSQL → PostgreSQL, mapped"; GOAL=0.6; SRC=pg; DST=pg; KIND=mapped ;;
        *) echo "unknown pair $1 (known: $ALL_PAIRS)" >&2; exit 1 ;;
    esac
}

need_sqlite=0; need_pg=0; need_my=0; need_my_src=0
for p in $PAIRS; do
    pair_info "$p"
    for e in $SRC $DST; do
        case $e in sqlite) need_sqlite=1 ;; pg) need_pg=1 ;; my) need_my=1 ;; esac
    done
    if [ "$SRC" = my ]; then need_my_src=1; fi
done

# --- engines ----------------------------------------------------------------------------
# The source table: SQLite `bench` in $WORK/src.db, `bench_src` on the servers. The target
# table: bench_dst (plain) or bench_mapped (mapped), in DIR/dst.db for SQLite.

src_table() { if [ "$1" = sqlite ]; then echo bench; else echo bench_src; fi; }
dst_table() { if [ "$1" = mapped ]; then echo bench_mapped; else echo bench_dst; fi; }

# endpoint ENGINE FILE: the project's endpoint for ENGINE (FILE: the SQLite database, relative
# to the config dir).
endpoint() {
    case $1 in
        sqlite) echo "{ sqlite: { path: $2 } }" ;;
        pg) echo "{ postgres: { urlFromEnv: BENCH_PG_URL } }" ;;
        my) echo "{ mysql: { urlFromEnv: BENCH_MY_URL } }" ;;
    esac
}

# sql ENGINE FILE SQL: runs SQL (FILE: the SQLite database; ignored for the servers); prints
# the result unaligned, without headers.
sql() {
    case $1 in
        sqlite) sqlite3 "$2" "$3" ;;
        pg) "${PSQL[@]}" -Atc "$3" ;;
        my) "${MARIADB[@]}" -N -e "$3" ;;
    esac
}

# create_table ENGINE FILE TABLE KIND: TABLE (dropped first), empty, with the columns of the
# plain or the mapped target.
create_table() {
    local cols
    case $1-$4 in
        sqlite-plain) cols=$SQLITE_COLS ;;
        sqlite-mapped) cols=$SQLITE_MAPPED_COLS ;;
        pg-plain) cols=$PG_COLS ;;
        pg-mapped) cols=$PG_MAPPED_COLS ;;
        my-plain) cols=$MY_COLS ;;
        *) echo "no $4 target table for $1" >&2; exit 1 ;;
    esac
    sql "$1" "$2" "DROP TABLE IF EXISTS $3; CREATE TABLE $3 ($cols)" >/dev/null
}

# check_count WHAT ENGINE FILE TABLE: exits unless TABLE holds ROWS rows.
check_count() {
    local got
    got=$(sql "$2" "$3" "SELECT count(*) FROM $4")
    if [ "$got" != "$ROWS" ]; then
        echo "$1: expected $ROWS rows in $4, found $got" >&2
        exit 1
    fi
}

# check_mapped ENGINE FILE TABLE BASE_FILE BASE_TABLE: exits unless TABLE and the baseline's
# BASE_TABLE hold the same MAPPED_CHECKED columns, row for row (SQLite: BASE_FILE attached).
check_mapped() {
    local base=$5 prefix="" diff
    if [ "$1" = sqlite ]; then
        prefix="ATTACH '$4' AS b;"
        base="b.$5"
    fi
    diff=$(sql "$1" "$2" "$prefix SELECT (SELECT count(*) FROM (SELECT $MAPPED_CHECKED FROM $3 EXCEPT SELECT $MAPPED_CHECKED FROM $base) x)
        + (SELECT count(*) FROM (SELECT $MAPPED_CHECKED FROM $base EXCEPT SELECT $MAPPED_CHECKED FROM $3) y)")
    if [ "$diff" != 0 ]; then
        echo "mapped: $diff rows of $3 differ from the hand-written mapping's in ($MAPPED_CHECKED)" >&2
        exit 1
    fi
}

# --- timing -----------------------------------------------------------------------------

now() { date +%s.%N; }
elapsed() { awk -v s="$1" -v e="$2" 'BEGIN { printf "%.2f", e - s }'; }
# Every timed step starts with the page cache flushed (`settle`), so that the writeback of
# one run (1M-row databases) does not land in the fsyncs of the next one.
settle() { sync; sleep 1; }
rate() { awk -v r="$ROWS" -v s="$1" 'BEGIN { printf "%.0f", r / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }  # baseline s, dualwrite s
verdict() { awk -v r="$1" -v g="$2" 'BEGIN { print (r >= g ? "met" : "**missed**") }'; }

# timed COMMAND...: runs COMMAND (a function or a program) after settle; sets SECS; returns
# COMMAND's status.
timed() {
    settle
    local start rc=0
    start=$(now)
    "$@" || rc=$?
    SECS=$(elapsed "$start" "$(now)")
    return $rc
}

RESULTS=()
row() { RESULTS+=("$1"); echo "$1" >&2; }
# base_row HOW SECONDS: a baseline's row.
base_row() { row "| $LABEL | $1 | – | $2 | $(rate "$2") | – | – | – | – |"; }

# --- baselines --------------------------------------------------------------------------
# baseline PAIR: times the hand-written copy into a fresh target (settled first) and checks
# it; sets BASE (seconds) and BASE_HOW; ALT_NAME / ALT (seconds) name a second baseline
# shown for reference next to the ratio. The mapped ones leave their result for
# check_mapped: $WORK/base_mapped.db (SQLite) or bench_mapped_base (PostgreSQL).

sqlite_insert_select() { # FILE TABLE COLUMNS SELECT_LIST
    sqlite3 "$1" "ATTACH '$WORK/src.db' AS s; INSERT INTO main.$2 ($3) SELECT $4 FROM s.bench;"
}
pg_copy_pipe() { # SOURCE (table or "(SELECT …)") TARGET_TABLE TARGET_COLUMNS
    "${PSQL[@]}" -c "COPY $1 TO STDOUT" | "${PSQL[@]}" -c "COPY $2 ($3) FROM STDIN"
}
PLAIN_COLUMNS="id, qty, category, amount, score, name, active, born, updated_at, note"

baseline() {
    ALT_NAME=""; ALT=""
    case $1 in
    pg-pg)
        create_table pg - bench_dst plain
        timed pg_copy_pipe bench_src bench_dst "$PLAIN_COLUMNS"
        BASE=$SECS; BASE_HOW="psql COPY TO STDOUT \\| psql COPY FROM STDIN"
        check_count baseline pg - bench_dst
        ;;
    pg-mariadb)
        create_table my - bench_dst plain
        local export_s
        timed pg_export "$WORK/rows.tsv"
        export_s=$SECS
        timed "${MARIADB[@]}" --local-infile=1 -e "LOAD DATA LOCAL INFILE '$WORK/rows.tsv' INTO TABLE bench_dst"
        BASE=$SECS; BASE_HOW="LOAD DATA LOCAL INFILE of the COPY export (load only; the export took $export_s s)"
        ALT_NAME="vs export + load"; ALT=$(awk -v a="$export_s" -v b="$BASE" 'BEGIN { printf "%.2f", a + b }')
        check_count baseline my - bench_dst
        rm -f "$WORK/rows.tsv"
        ;;
    mariadb-pg)
        create_table pg - bench_dst plain
        # --batch: tab-separated, escaped like COPY's text format, NULL written as NULL;
        # --quick: rows streamed, not buffered whole in the client.
        timed my_to_pg
        BASE=$SECS; BASE_HOW="mariadb --batch --quick SELECT \\| psql COPY FROM STDIN"
        check_count baseline pg - bench_dst
        ;;
    sqlite-pg)
        create_table pg - bench_dst plain
        timed sqlite_to_pg
        BASE=$SECS; BASE_HOW="sqlite3 -csv SELECT \\| psql COPY FROM STDIN (FORMAT csv)"
        check_count baseline pg - bench_dst
        ;;
    sqlite-sqlite)
        rm -f "$WORK/base.db" "$WORK/base_wal.db"
        create_table sqlite "$WORK/base.db" bench_dst plain
        timed sqlite_insert_select "$WORK/base.db" bench_dst "$PLAIN_COLUMNS" "*"
        BASE=$SECS; BASE_HOW="sqlite3 ATTACH + INSERT … SELECT (rollback journal)"
        check_count baseline sqlite "$WORK/base.db" bench_dst
        # The same into a WAL database, for reference (dualwrite keeps the journal mode it
        # finds: its target here is in the rollback journal, like the baseline's).
        sqlite3 "$WORK/base_wal.db" "PRAGMA journal_mode = WAL" >/dev/null
        create_table sqlite "$WORK/base_wal.db" bench_dst plain
        timed sqlite_insert_select "$WORK/base_wal.db" bench_dst "$PLAIN_COLUMNS" "*"
        ALT_NAME="vs WAL"; ALT=$SECS
        check_count baseline sqlite "$WORK/base_wal.db" bench_dst
        rm -f "$WORK/base.db" "$WORK/base_wal.db"*
        ;;
    sqlite-sqlite-mapped)
        rm -f "$WORK/base_mapped.db"
        create_table sqlite "$WORK/base_mapped.db" bench_mapped mapped
        timed sqlite_insert_select "$WORK/base_mapped.db" bench_mapped "$MAPPED_TARGET" "$(mapped_select)"
        BASE=$SECS; BASE_HOW="sqlite3 ATTACH + INSERT … SELECT with the CASE, renames and constant in SQL"
        check_count baseline sqlite "$WORK/base_mapped.db" bench_mapped
        ;;
    pg-pg-mapped)
        create_table pg - bench_mapped_base mapped
        timed pg_copy_pipe "(SELECT $(mapped_select) FROM bench_src)" bench_mapped_base "$MAPPED_TARGET"
        BASE=$SECS; BASE_HOW="psql COPY (SELECT … CASE …) TO STDOUT \\| psql COPY FROM STDIN"
        check_count baseline pg - bench_mapped_base
        ;;
    esac
    base_row "$BASE_HOW" "$BASE"
    if [ -n "$ALT_NAME" ]; then
        case $1 in
            pg-mariadb) base_row "psql COPY export + LOAD DATA LOCAL INFILE (for reference)" "$ALT" ;;
            sqlite-sqlite) base_row "the same into a WAL database (for reference)" "$ALT" ;;
        esac
    fi
}

pg_export() {
    "${PSQL[@]}" -c "COPY (SELECT $PLAIN_COLUMNS FROM bench_src ORDER BY id) TO STDOUT" >"$1"
}
my_to_pg() {
    "${MARIADB[@]}" --batch --quick --skip-column-names -e "SELECT $PLAIN_COLUMNS FROM bench_src" |
        "${PSQL[@]}" -c "COPY bench_dst ($PLAIN_COLUMNS) FROM STDIN (NULL 'NULL')"
}
sqlite_to_pg() {
    sqlite3 -csv "$WORK/src.db" "SELECT $PLAIN_COLUMNS FROM bench" |
        "${PSQL[@]}" -c "COPY bench_dst ($PLAIN_COLUMNS) FROM STDIN (FORMAT csv)"
}

# --- dualwrite --------------------------------------------------------------------------

# run_dualwrite PAIR SIZE: a fresh config dir and empty target, the map validated, then
# `dualwrite reconcile` timed; checks the target; sets DW_SECS and DW_RSS (KB).
run_dualwrite() {
    local dir="$WORK/cfg-$1-$2" target
    target=$(dst_table "$KIND")
    rm -rf "$dir"
    mkdir -p "$dir"
    if [ "$SRC" = sqlite ]; then ln -s "$WORK/src.db" "$dir/src.db"; fi
    create_table "$DST" "$dir/dst.db" "$target" "$KIND"
    bench_config "$dir" "$(endpoint "$SRC" src.db)" "$(endpoint "$DST" dst.db)" "$(src_table "$SRC")" "$target" "$2" "$KIND"
    "$DUALWRITE" -C "$dir" validate >"$dir/validate.txt" 2>&1 || { cat "$dir/validate.txt" >&2; exit 1; }
    local code=0
    timed /usr/bin/time -v -o "$dir/time.txt" "$DUALWRITE" -C "$dir" reconcile >"$dir/out.txt" 2>&1 || code=$?
    if [ "$code" != 0 ] || grep -q "error" "$dir/out.txt"; then
        echo "dualwrite reconcile ($1, $2): exit $code" >&2
        cat "$dir/out.txt" >&2
        exit 1
    fi
    DW_SECS=$SECS
    DW_RSS=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$dir/time.txt")
    check_count dualwrite "$DST" "$dir/dst.db" "$target"
    if [ "$KIND" = mapped ]; then
        case $DST in
            sqlite) check_mapped sqlite "$dir/dst.db" bench_mapped "$WORK/base_mapped.db" bench_mapped ;;
            pg) check_mapped pg - bench_mapped - bench_mapped_base ;;
        esac
    fi
    # The target's data is not needed any more; the next run gets a fresh one.
    if [ "$DST" = sqlite ]; then rm -f "$dir/dst.db"*; else sql "$DST" - "DROP TABLE IF EXISTS $target"; fi
}

# --- setup, run, cleanup ----------------------------------------------------------------

if [ -z "${NO_BUILD:-}" ]; then
    echo "== building (release)" >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dualwrite)
fi
DUALWRITE=${DUALWRITE:-${CARGO_TARGET_DIR:-$ROOT/target}/release/dualwrite}
if [ ! -x "$DUALWRITE" ]; then
    echo "no dualwrite binary at $DUALWRITE (build it, or set CARGO_TARGET_DIR or DUALWRITE)" >&2
    exit 1
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/dualwrite-initial.XXXXXX")
cleanup() {
    # Capture was installed on bench_src by the runs; dropping the table drops it.
    if [ $need_pg = 1 ]; then
        "${PSQL[@]}" -c "DROP TABLE IF EXISTS bench_src, bench_dst, bench_mapped, bench_mapped_base" 2>/dev/null || true
        "${PSQL[@]}" -c "DELETE FROM _dualwrite_changelog WHERE table_name = 'bench_src'" 2>/dev/null || true
    fi
    if [ $need_my = 1 ]; then
        "${MARIADB[@]}" -e "DROP TABLE IF EXISTS bench_src, bench_dst" 2>/dev/null || true
        "${MARIADB[@]}" -e "DELETE FROM _dualwrite_changelog WHERE table_name = 'bench_src'" 2>/dev/null || true
    fi
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

if [ $need_sqlite = 1 ]; then
    echo "== generating $ROWS rows in SQLite" >&2
    gen_sqlite "$WORK/src.db" bench
fi
if [ $need_pg = 1 ]; then
    echo "== generating $ROWS rows in PostgreSQL (bench_src)" >&2
    gen_pg bench_src
fi
if [ $need_my_src = 1 ]; then
    echo "== generating $ROWS rows in MariaDB (bench_src)" >&2
    gen_mariadb bench_src >/dev/null
fi
if [ $need_my = 1 ]; then
    "${MARIADB[@]}" -e "SET GLOBAL local_infile = 1"
fi

for pair in $PAIRS; do
    pair_info "$pair"
    echo "== $pair" >&2
    baseline "$pair"
    for b in $BATCHES; do
        run_dualwrite "$pair" "$b"
        r=$(ratio "$BASE" "$DW_SECS")
        how="dualwrite reconcile"
        if [ -n "$ALT_NAME" ]; then how+=" ($ALT_NAME: $(ratio "$ALT" "$DW_SECS"))"; fi
        v=$(verdict "$r" "$GOAL")
        if [ "$b" != default ]; then v+=" (fixed size; the goal is for the default)"; fi
        row "| $LABEL | $how | $b | $DW_SECS | $(rate "$DW_SECS") | $r | ≥ $GOAL | $v | $((DW_RSS / 1024)) MB |"
    done
    case $pair in
        pg-pg-mapped) sql pg - "DROP TABLE IF EXISTS bench_mapped_base" ;;
        sqlite-sqlite-mapped) rm -f "$WORK/base_mapped.db" ;;
    esac
done

echo
echo "rows: $ROWS; machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); dualwrite: $DUALWRITE"
echo
echo "| pair | how | initialSync.batchSize | seconds | rows/s | ratio (baseline s / dualwrite s) | goal | verdict | peak RSS |"
echo "|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${RESULTS[@]}"
