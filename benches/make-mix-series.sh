#!/usr/bin/env bash
# A second MariaDB dump series with another shape than ../shared/bench/make-dump-series.sh:
# other table and row counts, another seed, and another write mix: each day runs
# oltp_update_non_index (rewrites the 120-char `c` column in place) and oltp_insert (new rows,
# so the tables grow), then dumps the database.
#
#   benches/make-mix-series.sh OUT_DIR [DAYS] [TABLES] [ROWS] [UPDATES_PER_DAY] [INSERTS_PER_DAY] [SEED]
#
# Defaults: 7 days, 4 tables x 300,000 rows (about 240 MB a dump), 6,000 updates and 2,000
# inserts a day, seed 7. Needs mariadb-server, mariadb-client and sysbench (installed if missing).
set -euo pipefail
out=$(realpath -m "$1"); days=${2:-7}; tables=${3:-4}; rows=${4:-300000}; updates=${5:-6000}; inserts=${6:-2000}; seed=${7:-7}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need mariadbd && [ ! -x /usr/sbin/mariadbd ] || ! need sysbench; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client sysbench >/dev/null
fi
PATH=$PATH:/usr/sbin
mkdir -p "$out"; db="$out/.mariadb"; rm -rf "$db"; mkdir -p "$db"
mariadb-install-db --no-defaults --datadir="$db/data" --user="$(id -un)" --auth-root-authentication-method=normal --skip-test-db >"$db/install.log" 2>&1
mariadbd --no-defaults --datadir="$db/data" --socket="$db/sock" --skip-networking --user="$(id -un)" \
  --innodb-buffer-pool-size=1G --skip-log-bin --pid-file="$db/pid" --log-error="$db/err.log" &
trap 'kill $(cat "$db/pid" 2>/dev/null) 2>/dev/null || true; wait 2>/dev/null || true' EXIT
mariadb-admin --socket="$db/sock" -uroot --wait=60 ping >/dev/null
mariadb --socket="$db/sock" -uroot -e "CREATE DATABASE sbtest"
sb=(--db-driver=mysql --mysql-socket="$db/sock" --mysql-user=root --mysql-db=sbtest --tables="$tables" --table-size="$rows")
sysbench oltp_insert "${sb[@]}" --rand-seed="$seed" prepare >"$db/prepare.log"
dump() { mariadb-dump --socket="$db/sock" -uroot --single-transaction --skip-dump-date --databases sbtest >"$out/day$1.sql"; }
dump 0
for d in $(seq 1 "$days"); do
  sysbench oltp_update_non_index "${sb[@]}" --rand-seed=$((seed * 1000 + d)) --events="$updates" --time=0 --threads=2 run >"$db/upd$d.log"
  sysbench oltp_insert "${sb[@]}" --rand-seed=$((seed * 2000 + d)) --events="$inserts" --time=0 --threads=2 run >"$db/ins$d.log"
  dump "$d"
done
ls -l "$out"/day*.sql
