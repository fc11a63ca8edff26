#!/usr/bin/env bash
# Throwaway MariaDB server on 127.0.0.1 in a temp dir, for end-to-end tests.
#
# Usage: mariadb.sh init|start|stop|kill DIR
#   init  DIR  write DIR/my.cnf (port: $PORT, else a free one; saved in DIR/port)
#              and create DIR/data with mariadb-install-db
#   start DIR  start mariadbd in the background (runs init first when DIR/data is
#              missing or empty) and wait until it answers a ping (60s)
#   stop  DIR  clean shutdown; waits for the process to exit (60s, then SIGKILL)
#   kill  DIR  SIGKILL the server (simulated crash)
# Clients: mariadb --defaults-file=DIR/my.cnf ...  (root over DIR/mysqld.sock)
# Files: DIR/my.cnf DIR/port DIR/data DIR/mysqld.sock DIR/mysqld.pid DIR/error.log
set -euo pipefail

die() { echo "mariadb.sh: $*" >&2; exit 1; }
[ $# -eq 2 ] || die "usage: mariadb.sh init|start|stop|kill DIR"
cmd=$1
mkdir -p "$2"
dir=$(cd "$2" && pwd)
cnf=$dir/my.cnf

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

write_cnf() {
  local port=${PORT:-}
  [ -n "$port" ] || { [ -s "$dir/port" ] && port=$(cat "$dir/port"); } || true
  [ -n "$port" ] || port=$(free_port)
  echo "$port" >"$dir/port"
  cat >"$cnf" <<EOF
[mysqld]
user=root
datadir=$dir/data
socket=$dir/mysqld.sock
port=$port
bind-address=127.0.0.1
pid-file=$dir/mysqld.pid
# a private tmpdir: servers bootstrapping side by side in a shared /tmp collide
# on internal temp-table names (seen: "Unknown table 'mysql.tmp_user_sys'")
tmpdir=$dir/tmp
log-error=$dir/error.log
skip-name-resolve
innodb_buffer_pool_size=32M
innodb_log_file_size=16M
[client]
socket=$dir/mysqld.sock
port=$port
user=root
EOF
}

init() {
  [ -f "$cnf" ] || write_cnf
  mkdir -p "$dir/data" "$dir/tmp"
  mariadb-install-db --defaults-file="$cnf" --user=root --datadir="$dir/data" \
    --auth-root-authentication-method=socket --skip-test-db >"$dir/install.log" 2>&1 \
    || { cat "$dir/install.log" >&2; tail -n 20 "$dir/error.log" >&2 || true
         die "mariadb-install-db failed"; }
}

pid() { [ -s "$dir/mysqld.pid" ] && kill -0 "$(cat "$dir/mysqld.pid")" 2>/dev/null && cat "$dir/mysqld.pid"; }

case $cmd in
  init) init ;;
  start)
    [ -f "$cnf" ] || write_cnf
    mkdir -p "$dir/tmp"
    [ -n "$(ls -A "$dir/data" 2>/dev/null)" ] || init
    if pid >/dev/null; then echo "mariadb.sh: already running" >&2; exit 0; fi
    setsid nohup mariadbd --defaults-file="$cnf" </dev/null >>"$dir/error.log" 2>&1 &
    for _ in $(seq 600); do
      mariadb-admin --defaults-file="$cnf" ping >/dev/null 2>&1 && exit 0
      kill -0 $! 2>/dev/null || break
      sleep 0.1
    done
    tail -n 30 "$dir/error.log" >&2; die "server did not come up" ;;
  stop)
    p=$(pid) || exit 0
    kill -TERM "$p" 2>/dev/null || true   # SIGTERM = normal shutdown (faster than mariadb-admin's 1s polling)
    for _ in $(seq 600); do kill -0 "$p" 2>/dev/null || exit 0; sleep 0.1; done
    echo "mariadb.sh: shutdown timed out, SIGKILL" >&2; kill -9 "$p" 2>/dev/null || true ;;
  kill)
    p=$(pid) || exit 0
    kill -9 "$p"
    while kill -0 "$p" 2>/dev/null; do sleep 0.05; done ;;
  *) die "unknown command $cmd" ;;
esac
