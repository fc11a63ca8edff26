#!/usr/bin/env bash
# A MariaDB dump series from sysbench OLTP writes, with the access pattern and the size of each
# step as parameters: the shapes issue 12 measures besides the shared default series.
#
#   benches/make-sysbench-series.sh OUT_DIR DAYS TABLES ROWS EVENTS_PER_STEP RAND_TYPE [SEED]
#
#   uniform access, daily:   benches/make-sysbench-series.sh OUT 7 8 200000 5000 uniform
#   hourly, 24 dumps:        benches/make-sysbench-series.sh OUT 23 8 100000 150 special
# (`special` is sysbench's default skewed access, as in ../shared/bench/make-dump-series.sh;
# 8 x 100,000 rows is about 160 MB a dump.) Needs mariadb-server, mariadb-client, sysbench.
set -euo pipefail
out=$(realpath -m "$1"); days=$2; tables=$3; rows=$4; events=$5; rand=$6; seed=${7:-3}
. "$(dirname "$0")/mariadb-lib.sh"
sysbench oltp_read_write "${sb[@]}" --rand-seed="$seed" prepare >"$db/prepare.log"
dump 0
for d in $(seq 1 "$days"); do
  sysbench oltp_write_only "${sb[@]}" --rand-type="$rand" --rand-seed=$((seed * 1000 + d)) --events="$events" \
    --time=0 --threads=2 run >"$db/run$d.log"
  dump "$d"
done
ls -l "$out"/day*.sql
