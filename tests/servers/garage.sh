#!/usr/bin/env bash
# A throwaway Garage cluster of three nodes on 127.0.0.1, replication factor 3, for end-to-end
# tests of Cairn's S3 storage.
#
# Usage:
#   garage.sh start DIR BASE   start nodes 1-3 (RPC on BASE+10*i, S3 on BASE+10*i+1, admin on
#                              BASE+10*i+3), connect them, assign and apply a layout, create
#                              bucket "cairn" and a key allowed on it; writes DIR/env with
#                              AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION and
#                              S3_ENDPOINTS (the three nodes' S3 addresses) to source
#   garage.sh kill DIR I       SIGKILL node I (a crash)
#   garage.sh restart DIR I    start node I again (same data) and have the others connect to it
#   garage.sh stop DIR         stop every node
# Logs go to DIR/nodeI.log. Needs `garage` on PATH (scripts/test.sh installs it).
set -euo pipefail
die() { echo "garage.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: garage.sh start|kill|restart|stop DIR ..."
cmd=$1; dir=$(realpath -m "$2")

g() { garage -c "$dir/node1.toml" "$@"; }
pid() { [ -s "$dir/node$1.pid" ] && kill -0 "$(cat "$dir/node$1.pid")" 2>/dev/null && cat "$dir/node$1.pid"; }

run_node() {
  local i=$1
  setsid nohup garage -c "$dir/node$i.toml" server </dev/null >>"$dir/node$i.log" 2>&1 &
  echo $! >"$dir/node$i.pid"
}

# node_id I: node I's id@address, once it answers (up to 30 s).
node_id() {
  local id
  for _ in $(seq 300); do
    id=$(garage -c "$dir/node$1.toml" node id -q 2>/dev/null) && [ -n "$id" ] && { echo "$id"; return 0; }
    sleep 0.1
  done
  tail -n 20 "$dir/node$1.log" >&2; die "node $1 does not answer"
}

# connect_to I: every other running node connects to node I now (rather than at its next
# retry); node I may still be starting (its id is on disk before it listens): tried for 30 s.
connect_to() {
  local id j err
  id=$(node_id "$1")
  for j in 1 2 3; do
    [ "$j" = "$1" ] && continue
    pid "$j" >/dev/null || continue
    for _ in $(seq 300); do
      err=$(garage -c "$dir/node$j.toml" node connect "$id" 2>&1 >/dev/null) && continue 2
      sleep 0.1
    done
    echo "$err" >&2; die "node $j cannot reach node $1"
  done
}

case $cmd in
  start)
    [ $# -eq 3 ] || die "usage: garage.sh start DIR BASE"
    base=$3
    mkdir -p "$dir"
    secret=$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')
    for i in 1 2 3; do
      cat >"$dir/node$i.toml" <<EOF
metadata_dir = "$dir/node$i/meta"
data_dir = "$dir/node$i/data"
db_engine = "sqlite"
replication_factor = 3
consistency_mode = "consistent"
rpc_bind_addr = "127.0.0.1:$((base + 10 * i))"
rpc_public_addr = "127.0.0.1:$((base + 10 * i))"
rpc_secret = "$secret"
bootstrap_peers = []

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:$((base + 10 * i + 1))"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:$((base + 10 * i + 3))"
EOF
      run_node "$i"
    done
    peers=()
    for i in 1 2 3; do
      peers+=("\"$(node_id "$i")\"")
    done
    connect_to 2
    connect_to 3
    # A restarted node connects to its peers at once (else it waits for them to retry).
    for i in 1 2 3; do
      sed -i "s|^bootstrap_peers = .*|bootstrap_peers = [$(IFS=,; echo "${peers[*]}")]|" "$dir/node$i.toml"
    done
    for i in 1 2 3; do
      id=$(node_id "$i" | cut -d@ -f1)
      g layout assign -z dc1 -c 1G "$id" >/dev/null
    done
    g layout apply --version 1 >/dev/null
    for _ in $(seq 100); do
      g bucket create cairn >/dev/null 2>&1 && break
      sleep 0.2
    done
    g bucket info cairn >/dev/null || die "no bucket"
    key=$(g key create cairn-key)
    id=$(echo "$key" | awk -F': *' '/Key ID/ {print $2; exit}' | tr -d ' ')
    sk=$(echo "$key" | awk -F': *' '/Secret key/ {print $2; exit}' | tr -d ' ')
    [ -n "$id" ] && [ -n "$sk" ] || die "no key in: $key"
    g bucket allow --read --write --owner cairn --key cairn-key >/dev/null
    {
      echo "export AWS_ACCESS_KEY_ID=$id"
      echo "export AWS_SECRET_ACCESS_KEY=$sk"
      echo "export AWS_DEFAULT_REGION=garage"
      echo "export S3_ENDPOINTS='127.0.0.1:$((base + 11)) 127.0.0.1:$((base + 21)) 127.0.0.1:$((base + 31))'"
    } >"$dir/env" ;;
  kill)
    p=$(pid "$3") || exit 0
    kill -9 "$p" ;;
  restart)
    pid "$3" >/dev/null && exit 0
    run_node "$3"
    connect_to "$3" ;;
  stop)
    for i in 1 2 3; do
      p=$(pid "$i") || continue
      kill "$p" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$p" 2>/dev/null || true
    done ;;
  *) die "unknown command $cmd" ;;
esac
