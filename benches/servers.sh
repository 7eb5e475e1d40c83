# shellcheck shell=bash disable=SC2034  # sourced: its variables are used by the scripts that source it
# Sourced by the benchmarks that use the database servers: where they are (override with
# BENCH_PG_URL, MY_HOST, MY_USER, MY_DB), the URLs dualwrite reads (BENCH_PG_URL,
# BENCH_MY_URL), and the psql / mariadb client commands as arrays.
export BENCH_PG_URL=${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/test}
MY_HOST=${MY_HOST:-127.0.0.1}
MY_USER=${MY_USER:-root}
MY_DB=${MY_DB:-test}
export BENCH_MY_URL=${BENCH_MY_URL:-mysql://$MY_USER@$MY_HOST:3306/$MY_DB}
PSQL=(psql "$BENCH_PG_URL" -X -q -v ON_ERROR_STOP=1)
MARIADB=(mariadb -h "$MY_HOST" -u "$MY_USER" "$MY_DB")
