# shellcheck shell=bash disable=SC2034  # sourced: its variables are used by the scripts that source it
# Sourced by benches/initial_sync.sh and benches/verify.sh: the benchmark table (ROWS rows x
# 10 columns: bigint key, 2 ints, numeric(12,2), double, varchar, boolean, date, timestamp,
# text with 10% NULLs) per engine, its generators, and the project + map that copy it; and
# the "mapped" target (the field's everyday map: a 50-value valueMap, renamed and reordered
# columns, one constant column) with the SQL that does the same mapping by hand.
# Needs ROWS, PSQL (a psql command array) for gen_pg, MARIADB (a mariadb command array) for
# gen_mariadb.

SQLITE_COLS="id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, category INTEGER NOT NULL,
  amount NUMERIC(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at TIMESTAMP NOT NULL, note TEXT"
PG_COLS="id bigint PRIMARY KEY, qty integer NOT NULL, category integer NOT NULL,
  amount numeric(12,2) NOT NULL, score double precision NOT NULL, name varchar(40) NOT NULL,
  active boolean NOT NULL, born date NOT NULL, updated_at timestamp NOT NULL, note text"
MY_COLS="id BIGINT PRIMARY KEY, qty INT NOT NULL, category INT NOT NULL,
  amount DECIMAL(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at DATETIME(6) NOT NULL, note TEXT"

# The mapped target: category (0..49) through a valueMap to category_code ('CAT-00' ..
# 'CAT-49'), qty -> quantity, name -> customer_name, the constant origin = 'crm', and the
# columns in another order than the source's.
SQLITE_MAPPED_COLS="id INTEGER PRIMARY KEY, customer_name VARCHAR(40) NOT NULL,
  category_code TEXT NOT NULL, origin TEXT NOT NULL, note TEXT, updated_at TIMESTAMP NOT NULL,
  born DATE NOT NULL, active BOOLEAN NOT NULL, score DOUBLE NOT NULL,
  amount NUMERIC(12,2) NOT NULL, quantity INTEGER NOT NULL"
PG_MAPPED_COLS="id bigint PRIMARY KEY, customer_name varchar(40) NOT NULL,
  category_code text NOT NULL, origin text NOT NULL, note text, updated_at timestamp NOT NULL,
  born date NOT NULL, active boolean NOT NULL, score double precision NOT NULL,
  amount numeric(12,2) NOT NULL, quantity integer NOT NULL"
# The mapped target's columns, in its order, and the source expressions that fill them by
# hand (the same mapping as the map of bench_config ... mapped); MAPPED_CHECKED are the
# columns the mapping changes, which the benchmark compares between the two results.
MAPPED_TARGET="id, customer_name, category_code, origin, note, updated_at, born, active, score, amount, quantity"
MAPPED_CHECKED="id, customer_name, category_code, origin, quantity"
CATEGORIES=50

# category_code N: the text code of category N (0 -> CAT-00).
category_code() { printf 'CAT-%02d' "$1"; }

# mapped_select: the SELECT list (source columns) that produces MAPPED_TARGET by hand, with
# the valueMap written as a CASE of CATEGORIES arms.
mapped_select() {
    local i arms=""
    for ((i = 0; i < CATEGORIES; i++)); do
        arms+=" WHEN $i THEN '$(category_code "$i")'"
    done
    echo "id, name, CASE category$arms END, 'crm', note, updated_at, born, active, score, amount, qty"
}

# gen_sqlite FILE TABLE: the table with ROWS rows in a new SQLite database (WAL mode).
gen_sqlite() {
    sqlite3 "$1" >/dev/null <<SQL
PRAGMA journal_mode = WAL;
CREATE TABLE $2 ($SQLITE_COLS);
WITH RECURSIVE c(g) AS (SELECT 1 UNION ALL SELECT g + 1 FROM c WHERE g < $ROWS)
INSERT INTO $2 SELECT g, (g * 7) % 1000, g % 50, printf('%.2f', ((g * 37) % 100000) / 100.0),
  g * 0.001, 'customer-' || g, g % 3 = 0, date('1950-01-01', '+' || (g % 20000) || ' days'),
  strftime('%Y-%m-%d %H:%M:%S', '2020-01-01', '+' || g || ' seconds'),
  CASE WHEN g % 10 = 0 THEN NULL ELSE 'xxxxxxxxxxxxxxxxxxxx' || g END
FROM c;
SQL
}

# gen_pg TABLE: the table (dropped first) with ROWS rows in PostgreSQL, analyzed.
gen_pg() {
    "${PSQL[@]}" <<SQL
DROP TABLE IF EXISTS $1;
CREATE TABLE $1 ($PG_COLS);
INSERT INTO $1 SELECT g, (g * 7) % 1000, g % 50, ((g * 37) % 100000) / 100.0,
  g * 0.001, 'customer-' || g, g % 3 = 0, date '1950-01-01' + (g % 20000),
  timestamp '2020-01-01' + g * interval '1 second',
  CASE WHEN g % 10 = 0 THEN NULL ELSE 'xxxxxxxxxxxxxxxxxxxx' || g END
FROM generate_series(1, $ROWS) g;
VACUUM ANALYZE $1;
SQL
}

# gen_mariadb TABLE: the table (dropped first) with ROWS rows in MariaDB (InnoDB), the same
# values as gen_pg, analyzed.
gen_mariadb() {
    "${MARIADB[@]}" <<SQL
DROP TABLE IF EXISTS $1;
CREATE TABLE $1 ($MY_COLS) ENGINE=InnoDB;
INSERT INTO $1 SELECT seq, (seq * 7) % 1000, seq % 50, ((seq * 37) % 100000) / 100.0,
  seq * 0.001, CONCAT('customer-', seq), seq % 3 = 0, DATE '1950-01-01' + INTERVAL (seq % 20000) DAY,
  TIMESTAMP '2020-01-01 00:00:00' + INTERVAL seq SECOND,
  CASE WHEN seq % 10 = 0 THEN NULL ELSE CONCAT('xxxxxxxxxxxxxxxxxxxx', seq) END
FROM seq_1_to_$ROWS;
ANALYZE TABLE $1;
SQL
}

# initial_size SIZE: the map's initialSync line; "default" leaves the size to dualwrite (what
# a user gets), a number fixes initialSync.batchSize (batchSize, the live size, stays 1000).
initial_size() {
    if [ "$1" != default ]; then
        echo "  initialSync: { batchSize: $1 }"
    fi
}

# plain_columns: the map's columns copying every column as it is.
plain_columns() {
    local c
    echo "    - { source: id, destination: id, key: true }"
    for c in qty category amount score name active born updated_at note; do
        echo "    - { source: $c, destination: $c }"
    done
}

# mapped_columns: the map's columns for the mapped target (see MAPPED_TARGET), listed in the
# source's column order.
mapped_columns() {
    local i entries=""
    for ((i = 0; i < CATEGORIES; i++)); do
        entries+="${entries:+, }\"$i\": $(category_code "$i")"
    done
    cat <<YAML
    - { source: id, destination: id, key: true }
    - { source: qty, destination: quantity }
    - { source: category, destination: category_code, valueMap: { $entries } }
    - { source: amount, destination: amount }
    - { source: score, destination: score }
    - { source: name, destination: customer_name }
    - { source: active, destination: active }
    - { source: born, destination: born }
    - { source: updated_at, destination: updated_at }
    - { source: note, destination: note }
    - { destination: origin, default: crm }
YAML
}

# bench_config DIR SRC_ENDPOINT_YAML DST_ENDPOINT_YAML SRC_TABLE DST_TABLE SIZE [KIND]: a
# project in DIR with endpoints src and dst, and the map `bench`: KIND `plain` (the default)
# copies every column as it is, `mapped` maps to the mapped target (see MAPPED_TARGET); SIZE
# is the initial sync's transaction size (`default` or a number, see initial_size).
bench_config() {
    mkdir -p "$1/maps"
    cat >"$1/dualwrite.yaml" <<YAML
apiVersion: dualwrite/v1
kind: Project
metadata: { name: bench }
spec:
  endpoints:
    src: $2
    dst: $3
YAML
    cat >"$1/maps/bench.yaml" <<YAML
apiVersion: dualwrite/v1
kind: TableMap
metadata: { name: bench }
spec:
  state: Running
  source: { endpoint: src, table: $4 }
  destination: { endpoint: dst, table: $5 }
  direction: SourceToDestination
  columns:
$(if [ "${7:-plain}" = mapped ]; then mapped_columns; else plain_columns; fi)
$(initial_size "$6")
YAML
}
