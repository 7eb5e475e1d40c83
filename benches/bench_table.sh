# Sourced by benches/initial_sync.sh and benches/verify.sh: the benchmark table (ROWS rows x
# 10 columns: bigint key, 2 ints, numeric(12,2), double, varchar, boolean, date, timestamp,
# text with 10% NULLs) per engine, its generators, and the project + map that copy it.
# Needs ROWS, and PSQL (a psql command array) for gen_pg.

SQLITE_COLS="id INTEGER PRIMARY KEY, qty INTEGER NOT NULL, category INTEGER NOT NULL,
  amount NUMERIC(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at TIMESTAMP NOT NULL, note TEXT"
PG_COLS="id bigint PRIMARY KEY, qty integer NOT NULL, category integer NOT NULL,
  amount numeric(12,2) NOT NULL, score double precision NOT NULL, name varchar(40) NOT NULL,
  active boolean NOT NULL, born date NOT NULL, updated_at timestamp NOT NULL, note text"
MY_COLS="id BIGINT PRIMARY KEY, qty INT NOT NULL, category INT NOT NULL,
  amount DECIMAL(12,2) NOT NULL, score DOUBLE NOT NULL, name VARCHAR(40) NOT NULL,
  active BOOLEAN NOT NULL, born DATE NOT NULL, updated_at DATETIME(6) NOT NULL, note TEXT"

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

# initial_size SIZE: the map's initialSync line; "default" leaves the size to dualwrite (what
# a user gets), a number fixes initialSync.batchSize (batchSize, the live size, stays 1000).
initial_size() {
    if [ "$1" != default ]; then
        echo "  initialSync: { batchSize: $1 }"
    fi
}

# bench_config DIR SRC_ENDPOINT_YAML DST_ENDPOINT_YAML SRC_TABLE DST_TABLE SIZE: a project
# in DIR with endpoints src and dst, and the map `bench` copying every column; SIZE is the
# initial sync's transaction size (`default` or a number, see initial_size).
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
    - { source: id, destination: id, key: true }
    - { source: qty, destination: qty }
    - { source: category, destination: category }
    - { source: amount, destination: amount }
    - { source: score, destination: score }
    - { source: name, destination: name }
    - { source: active, destination: active }
    - { source: born, destination: born }
    - { source: updated_at, destination: updated_at }
    - { source: note, destination: note }
$(initial_size "$6")
YAML
}
