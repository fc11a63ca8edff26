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
. "$(dirname "$0")/mariadb-lib.sh"
sysbench oltp_insert "${sb[@]}" --rand-seed="$seed" prepare >"$db/prepare.log"
dump 0
for d in $(seq 1 "$days"); do
  sysbench oltp_update_non_index "${sb[@]}" --rand-seed=$((seed * 1000 + d)) --events="$updates" --time=0 --threads=2 run >"$db/upd$d.log"
  sysbench oltp_insert "${sb[@]}" --rand-seed=$((seed * 2000 + d)) --events="$inserts" --time=0 --threads=2 run >"$db/ins$d.log"
  dump "$d"
done
ls -l "$out"/day*.sql
