#!/usr/bin/env bash
# Throwaway etcd (3.4) members on 127.0.0.1, for end-to-end tests.
#
# Usage:
#   etcd.sh start DIR NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [STATE]
#       start one member in the background and return at once (a member of a
#       cluster cannot get healthy before a quorum runs; use `wait`).
#       DIR is the etcd --data-dir itself (created by etcd, or by
#       `etcdctl snapshot restore --data-dir DIR`); log goes to DIR.log and the
#       pid to DIR.pid, NEXT TO DIR. INITIAL_CLUSTER: a=http://127.0.0.1:P1,b=...
#       STATE: new (default) | existing. The --initial-* flags are ignored by
#       etcd when DIR already holds a member, so the same command restarts it.
#   etcd.sh wait ENDPOINTS      wait (60s) until `etcdctl endpoint health` passes
#                               for all of ENDPOINTS (127.0.0.1:C1,127.0.0.1:C2)
#   etcd.sh stop DIR...         SIGTERM, wait for exit (60s, then SIGKILL); several
#                               DIRs are stopped in parallel (each takes ~2s)
#   etcd.sh kill DIR...         SIGKILL (simulated crash)
# ETCD_HOST (default 127.0.0.1) is the address the member listens on and advertises.
# Note: etcdctl 3.4 needs ETCDCTL_API=3 (exported here; set it yourself too).
set -euo pipefail
export ETCDCTL_API=3

die() { echo "etcd.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: etcd.sh start|wait|stop|kill ..."
cmd=$1
dir=${2%/}

pid() { [ -s "$1.pid" ] && kill -0 "$(cat "$1.pid")" 2>/dev/null && cat "$1.pid"; }
pids() { local d; for d in "$@"; do pid "${d%/}" || true; done; }

case $cmd in
  start)
    [ $# -ge 6 ] || die "usage: etcd.sh start DIR NAME CLIENT_PORT PEER_PORT INITIAL_CLUSTER [STATE]"
    name=$3 cport=$4 pport=$5 cluster=$6 state=${7:-new} host=${ETCD_HOST:-127.0.0.1}
    if pid "$dir" >/dev/null; then echo "etcd.sh: already running" >&2; exit 0; fi
    mkdir -p "$(dirname "$dir")"
    setsid nohup etcd --name "$name" --data-dir "$dir" \
      --listen-client-urls "http://$host:$cport" --advertise-client-urls "http://$host:$cport" \
      --listen-peer-urls "http://$host:$pport" --initial-advertise-peer-urls "http://$host:$pport" \
      --initial-cluster "$cluster" --initial-cluster-state "$state" --initial-cluster-token cairn-test \
      </dev/null >>"$dir.log" 2>&1 &
    echo $! >"$dir.pid"
    sleep 0.2
    kill -0 $! 2>/dev/null || { tail -n 20 "$dir.log" >&2; die "etcd exited at once"; } ;;
  wait)
    for _ in $(seq 120); do
      etcdctl --endpoints="$2" --dial-timeout=1s --command-timeout=2s endpoint health >/dev/null 2>&1 && exit 0
      sleep 0.5
    done
    etcdctl --endpoints="$2" --dial-timeout=1s endpoint health >&2 || true
    die "cluster $2 not healthy after 60s" ;;
  stop|kill)
    shift; p=$(pids "$@"); [ -n "$p" ] || exit 0
    sig=TERM; [ "$cmd" = kill ] && sig=KILL
    kill -s "$sig" $p 2>/dev/null || true
    for _ in $(seq 600); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done
    echo "etcd.sh: stop timed out, SIGKILL" >&2; kill -9 $p 2>/dev/null || true ;;
  *) die "unknown command $cmd" ;;
esac
