#!/usr/bin/env bash
# A MariaDB dump series where the changes move rows through the dump, not only rewrite them in
# place: between OLTP bursts, each day makes one structural change in rotation:
#   1: a column added to a table (every row of that table's INSERTs changes),
#   2: 10% of a table's rows deleted,
#   3: a table rebuilt sorted by another column (same rows, new ids: every row moves),
#   4: 50,000 rows bulk-inserted,
# and days 5.. repeat the rotation on the next table. The bound to compare against is xdelta3
# (what compare.sh reports); position-based delta bases do badly here, content-based ones should
# not.
#
#   benches/make-churn-series.sh OUT_DIR [DAYS] [TABLES] [ROWS] [EVENTS_PER_DAY] [SEED]
#
# Defaults: 7 days, 6 tables x 150,000 rows (about 180 MB a dump), 2,000 OLTP transactions a
# day, seed 11. Needs mariadb-server, mariadb-client and sysbench (installed if missing).
set -euo pipefail
out=$(realpath -m "$1"); days=${2:-7}; tables=${3:-6}; rows=${4:-150000}; events=${5:-2000}; seed=${6:-11}
. "$(dirname "$0")/mariadb-lib.sh"
sysbench oltp_read_write "${sb[@]}" --rand-seed="$seed" prepare >"$db/prepare.log"
dump 0
for d in $(seq 1 "$days"); do
  sysbench oltp_write_only "${sb[@]}" --rand-seed=$((seed * 1000 + d)) --events="$events" --time=0 --threads=2 run >"$db/run$d.log"
  t="sbtest$(( (d - 1) / 4 % tables + 1 ))"
  case $(( (d - 1) % 4 + 1 )) in
    1) sql "ALTER TABLE $t ADD COLUMN extra$d INT NOT NULL DEFAULT $d" ;;
    2) sql "DELETE FROM $t WHERE id % 10 = $((d % 10))" ;;
    3) cols=$(mariadb --socket="$db/sock" -uroot -N -e "SELECT GROUP_CONCAT(column_name ORDER BY ordinal_position)
              FROM information_schema.columns WHERE table_schema = 'sbtest' AND table_name = '$t' AND column_name <> 'id'")
       sql "CREATE TABLE rebuilt LIKE $t; INSERT INTO rebuilt ($cols) SELECT $cols FROM $t ORDER BY k, id;
            DROP TABLE $t; RENAME TABLE rebuilt TO $t" ;;
    4) sysbench oltp_insert "${sb[@]}" --rand-seed=$((seed * 2000 + d)) --events=50000 --time=0 --threads=2 run >"$db/ins$d.log" ;;
  esac
  dump "$d"
done
ls -l "$out"/day*.sql
