#!/usr/bin/env bash
# A PostgreSQL dump series: pgbench's TPC-B-like workload, dumped daily with pg_dump (plain SQL,
# uncompressed). Unlike a MariaDB dump, a PostgreSQL heap keeps updated rows at new places, so
# rows move within the dump from one day to the next.
#
#   benches/make-pg-series.sh OUT_DIR [DAYS] [SCALE] [TRANSACTIONS_PER_DAY] [SEED]
#
# Defaults: 7 days, scale 25 (2.5 million accounts, about 260 MB a dump), 20,000 transactions a
# day, seed 3. Needs postgresql (installed if missing); the server runs as the postgres user on a
# unix socket under OUT_DIR and is stopped at the end.
set -euo pipefail
out=$(realpath -m "$1"); days=${2:-7}; scale=${3:-25}; tx=${4:-20000}; seed=${5:-3}
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql postgresql-contrib >/dev/null
fi
bin=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")
mkdir -p "$out"; pg="$out/.pg"; rm -rf "$pg"; mkdir -p "$pg"; chown postgres "$pg"
as_pg() { runuser -u postgres -- "$@"; }
as_pg "$bin/initdb" -D "$pg/data" -A trust -U postgres >"$pg/initdb.log"
as_pg "$bin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -o "-k $pg -c listen_addresses='' -c shared_buffers=512MB -c fsync=off" -w start >/dev/null
trap 'as_pg "$bin/pg_ctl" -D "$pg/data" -m fast stop >/dev/null 2>&1 || true' EXIT
as_pg "$bin/createdb" -h "$pg" bench
as_pg "$bin/pgbench" -h "$pg" -i -s "$scale" -q bench >"$pg/init.log" 2>&1
dump() { as_pg "$bin/pg_dump" -h "$pg" bench >"$out/day$1.sql"; }
dump 0
for d in $(seq 1 "$days"); do
  as_pg "$bin/pgbench" -h "$pg" -c 2 -j 2 -t $((tx / 2)) --random-seed=$((seed * 1000 + d)) bench >"$pg/run$d.log" 2>&1
  dump "$d"
done
ls -l "$out"/day*.sql
