# Shared by the MariaDB series scripts (sourced, with $out, $tables and $rows set): a throwaway
# server on a unix socket under $out/.mariadb, stopped when the script exits, sysbench's options
# for it ($sb), and the dump of day N.
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
sql() { mariadb --socket="$db/sock" -uroot sbtest -e "$1"; }
dump() { mariadb-dump --socket="$db/sock" -uroot --single-transaction --skip-dump-date --databases sbtest >"$out/day$1.sql"; }
