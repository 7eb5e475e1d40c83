# shellcheck shell=bash
# Sourced by benches/errors.sh and benches/dashboard.sh: the same ERRORS errored records
# (90% Open, 10% Superseded; three maps, four phases, two directions, four types, spread
# over three days) inserted straight into a state store made by one `reconcile`.

# seed_errors_sqlite N: into .dualwrite/state.db of the current directory.
seed_errors_sqlite() {
python3 - "$1" <<'EOF'
import sqlite3, sys, random
n = int(sys.argv[1])
db = sqlite3.connect(".dualwrite/state.db")
random.seed(7)
maps = ["customers", "orders", "invoices"]
types = ["ApplicationError"] * 6 + ["TransformError"] * 2 + ["ConflictError", "SchemaError"]
phases = ["InitialSync", "Live", "Live", "CatchUp"]
dirs = ["SourceToDestination", "DestinationToSource"]
def rows():
    for i in range(n):
        t = "2026-11-%02dT%02d:%02d:%02d.000Z" % (20 + i * 3 // n, (i // 3600) % 24, (i // 60) % 60, i % 60)
        yield (random.choice(maps), random.choice(phases), random.choice(dirs), random.choice(types),
               '{"id":%d}' % i, '{"id":%d,"name":"customer %d"}' % (i, i),
               "new row violates check constraint \"credit_check\"", "23514", t, t, 1,
               "Open" if i % 10 else "Superseded")
db.executemany("INSERT INTO errors (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows())
db.commit()
print("errors in the store:", db.execute("SELECT COUNT(*) FROM errors").fetchone()[0])
EOF
}

# seed_errors_pg URL N: into the dualwrite_state schema of the database at URL.
seed_errors_pg() {
  local ERRORS=$2
  psql -q "$1" -c "
INSERT INTO dualwrite_state.errors (map, phase, direction, type, key, row, message, code, first_at, last_at, attempts, state)
SELECT (ARRAY['customers','orders','invoices'])[1 + (i * 7919) % 3],
       (ARRAY['InitialSync','Live','Live','CatchUp'])[1 + (i * 104729) % 4],
       (ARRAY['SourceToDestination','DestinationToSource'])[1 + (i * 31) % 2],
       (ARRAY['ApplicationError','ApplicationError','ApplicationError','ApplicationError','ApplicationError','ApplicationError','TransformError','TransformError','ConflictError','SchemaError'])[1 + (i * 613) % 10],
       format('{\"id\":%s}', i), format('{\"id\":%s,\"name\":\"customer %s\"}', i, i),
       'new row violates check constraint \"credit_check\"', '23514',
       to_char(timestamp '2026-11-20' + (i * 3 * interval '1 day') / $ERRORS, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
       to_char(timestamp '2026-11-20' + (i * 3 * interval '1 day') / $ERRORS, 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
       1, CASE WHEN i % 10 = 0 THEN 'Superseded' ELSE 'Open' END
FROM generate_series(0::bigint, $ERRORS - 1) AS i;
ANALYZE dualwrite_state.errors;" >/dev/null
}
