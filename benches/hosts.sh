#!/usr/bin/env bash
# A database on another host, backed up over SSH: Cairn's controller and agent against restic run
# on that host into a repository on the controller's host over SFTP (what a restic user does
# with many hosts and one repository), in the same run.
#
#   hosts.sh DUMPS WORK [REPS]
#
# DUMPS holds day0.sql and day1.sql (make-sysbench-series.sh or ../shared/bench/make-dump-series.sh:
# mariadb-dump output of a sysbench database). Two network namespaces on a bridge of their own
# (addresses 10.232.0.1 and .2, assigned only to these namespaces), an OpenSSH server in each:
# "ctl" holds the repositories and runs the Cairn controller, "db1" holds the dumps and runs the
# agent (through its forced-command key) and restic. The agent reads the dump with `cat` (an
# [[exec]] plugin), as it would read mariadb-dump's output. Per scenario and tool, medians of REPS
# (default 3) runs, each on fresh repositories: seconds, bytes through db1's interface (both
# directions: SSH and everything), bytes Cairn counted on its stream, bytes the repository grew
# by, peak RSS of the controller, of the agent and of restic. "local" is Cairn backing the same
# file up on one host (the throughput the agent path is compared with). "whole" is Cairn's agent
# with its cache emptied before every run, into a repository of its own: it proposes no delta
# bases, so it sends every chunk the repository lacks whole and the controller alone
# delta-encodes what it stores (the other place deltas could be computed).
#
# DB=mariadb backs up a live MariaDB on db1 instead of a file: a copy of the server the dump
# series was made with (DUMPS/.mariadb/data, ../shared/bench/make-dump-series.sh), started in db1
# on a socket; Cairn's [mariadb] plugin (mariadb-dump on db1, through the agent), restic reading
# the same mariadb-dump on db1, and "local" Cairn's plugin on db1 itself; the OLTP day is
# sysbench's oltp_write_only, 5000 transactions, as the series' days were made.
#
# PIN=1 runs each "host" on a core of its own, as two machines would: everything in ctl (its sshd,
# the controller and its ssh client) on CPU 0, everything in db1 (its sshd, so the agent, `cat`
# and restic with its ssh client) on CPU 1, and "local" on CPU 1 (a local backup on the database
# host). Without it every process shares both cores.
#
# Needs root, iproute2, openssh-server, restic and /usr/bin/time (installed if missing).
set -euo pipefail
dumps=$(realpath "$1"); work=$(realpath -m "$2"); reps=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
for t in ip:iproute2 sshd:openssh-server ssh:openssh-client restic:restic; do
  command -v "${t%%:*}" >/dev/null || [ -x "/usr/sbin/${t%%:*}" ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${t#*:}" >/dev/null
done
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
db=${DB:-file}
if [ "$db" = mariadb ]; then
  [ -d "$dumps/.mariadb/data" ] || { echo "DB=mariadb needs $dumps/.mariadb/data (make-dump-series.sh)" >&2; exit 1; }
  command -v sysbench >/dev/null && [ -x /usr/sbin/mariadbd ] \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mariadb-server mariadb-client sysbench >/dev/null
fi
cargo build -q --release -p cairn-cli --manifest-path "$here/../Cargo.toml"
cairn=$(realpath "$here/../target/release/cairn")

pin_ctl=(); pin_db=()
if [ "${PIN:-0}" = 1 ]; then pin_ctl=(taskset -c 0); pin_db=(taskset -c 1); fi
rm -rf "$work"; mkdir -p "$work/ssh" "$work/db1" "$work/ctl"
sw=cb-sw; ctl=cb-ctl; db1=cb-db1
cleanup() {
  if [ -f "$work/db1/mysqld.pid" ]; then kill "$(cat "$work/db1/mysqld.pid")" 2>/dev/null || true; sleep 2; fi
  for ns in $ctl $db1; do ip netns pids $ns 2>/dev/null | xargs -r kill -9 2>/dev/null || true; done
  for ns in $sw $ctl $db1; do ip netns del $ns 2>/dev/null || true; done
}
trap cleanup EXIT
cleanup
ip netns add $sw
ip netns exec $sw ip link add br0 type bridge
ip netns exec $sw ip link set br0 up
i=1
for ns in $ctl $db1; do
  ip netns add $ns
  ip link add cbh$i type veth peer name cbp$i
  ip link set cbh$i netns $ns; ip link set cbp$i netns $sw
  ip netns exec $sw ip link set cbp$i master br0; ip netns exec $sw ip link set cbp$i up
  ip netns exec $ns ip addr add 10.232.0.$i/24 dev cbh$i
  ip netns exec $ns ip link set cbh$i up; ip netns exec $ns ip link set lo up
  i=$((i + 1))
done
mkdir -p /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/agent"    # the controller's key for db1's agent
ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/sftp"     # restic's key on db1 for the repository
agent_rss="$work/agent-rss"
for h in ctl:1 db1:2; do
  name=${h%%:*}; n=${h#*:}
  ssh-keygen -q -t ed25519 -N '' -f "$work/ssh/host_$name"
  echo "10.232.0.$n $(cut -d' ' -f1-2 "$work/ssh/host_$name.pub")" >> "$work/ssh/known_hosts"
  cat > "$work/ssh/sshd_$name.conf" <<EOF
ListenAddress 10.232.0.$n
HostKey $work/ssh/host_$name
AuthorizedKeysFile $work/ssh/authorized_$name
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
LogLevel ERROR
PidFile $work/ssh/sshd_$name.pid
SetEnv XDG_CACHE_HOME=$work/db1/cache
Subsystem sftp internal-sftp
EOF
  if [ "$name" = ctl ]; then pin=("${pin_ctl[@]}"); else pin=("${pin_db[@]}"); fi
  ip netns exec cb-$name "${pin[@]}" /usr/sbin/sshd -f "$work/ssh/sshd_$name.conf"
done
echo "command=\"/usr/bin/time -a -o $agent_rss -f %M $cairn agent\",restrict $(cat "$work/ssh/agent.pub")" > "$work/ssh/authorized_db1"
echo "restrict $(cat "$work/ssh/sftp.pub")" > "$work/ssh/authorized_ctl"

peer_env
export CAIRN_PASSWORD=bench RESTIC_PASSWORD=bench
cat > "$work/remote.toml" <<EOF
[hosts.db1]
ssh = "root@10.232.0.2"
identity_file = "$work/ssh/agent"
known_hosts = "$work/ssh/known_hosts"

EOF
sock="$work/db1/mysqld.sock"
if [ "$db" = mariadb ]; then
  # The series' server, copied, on db1's core; the plugin's item is its databases' dump.
  cp -a "$dumps/.mariadb/data" "$work/db1/mysql"
  ip netns exec $db1 "${pin_db[@]}" /usr/sbin/mariadbd --no-defaults --datadir="$work/db1/mysql" --socket="$sock" \
    --skip-networking --user=root --innodb-buffer-pool-size=1G --skip-log-bin \
    --pid-file="$work/db1/mysqld.pid" --log-error="$work/db1/mysqld.err" &
  mariadb-admin --socket="$sock" -uroot --wait=60 ping >/dev/null
  printf '[client]\nuser=root\n' > "$work/db1/mariadb.cnf"
  cat >> "$work/remote.toml" <<EOF
[mariadb]
runs_on = "db1"
socket = "$sock"
credentials_file = "$work/db1/mariadb.cnf"
databases = ["sbtest"]
EOF
  item=mariadb/databases.sql
  source_cmd=(mariadb-dump --socket="$sock" -uroot --single-transaction --skip-dump-date --databases sbtest)
  sb=(--db-driver=mysql --mysql-socket="$sock" --mysql-user=root --mysql-db=sbtest --tables=8 --table-size=200000)
else
  cat >> "$work/remote.toml" <<EOF
[[exec]]
name = "mariadb"
runs_on = "db1"
dump = "cat $work/db1/dump.sql"
restore = "cat > /dev/null"
EOF
  item=mariadb/dump
  source_cmd=(cat "$work/db1/dump.sql")
fi
sed -e '/^\[hosts.db1\]/,/^$/d' -e '/runs_on/d' "$work/remote.toml" > "$work/local.toml"

# wire: bytes through db1's interface so far (received + sent).
wire() { ip netns exec $db1 sh -c 'echo $(( $(cat /sys/class/net/cbh2/statistics/rx_bytes) + $(cat /sys/class/net/cbh2/statistics/tx_bytes) ))'; }

# cairn_run CONFIG NAME [REPO]: a system backup from the controller's namespace; prints
# "seconds controller_rss wire stream_bytes added agent_rss".
cairn_run() {
  local w0 w1 t out
  : > "$agent_rss"
  w0=$(wire)
  t=$(ip netns exec $ctl "${pin_ctl[@]}" /usr/bin/time -f "%e %M" -o "$work/time.out" \
        "$cairn" -q -r "$work/ctl/${3:-cairn}" --config "$1" backup --system --name "$2" --json > "$work/out.json" 2>"$work/err.log" \
      && cat "$work/time.out") || { cat "$work/err.log" >&2; return 1; }
  w1=$(wire)
  out=$(python3 -c '
import json,sys
s=json.load(open(sys.argv[1]))["snapshot"]
i=[i for i in s["items"] if i["name"]==sys.argv[4]][0]
print(i["meta"].get("wire_bytes",0), sum(j["stats"]["bytes_added"] for j in s["items"]))
print(sys.argv[2], json.dumps(i["meta"].get("wire_chunks")), file=open(sys.argv[3],"a"))' "$work/out.json" "$2" "$work/chunks.log" "$item")
  echo "$t $((w1 - w0)) $out $(sort -n "$agent_rss" | tail -1 || echo 0)"
}

# restic_run: restic on db1, repository on ctl over SFTP; prints "seconds rss wire added".
restic_run() {
  local w0 w1 t a0
  a0=$(size "$work/ctl/restic")
  w0=$(wire)
  t=$(ip netns exec $db1 "${pin_db[@]}" /usr/bin/time -f "%e %M" -o "$work/time.out" \
        restic -q -r "sftp:root@10.232.0.1:$work/ctl/restic" \
        -o sftp.command="ssh -i $work/ssh/sftp -o UserKnownHostsFile=$work/ssh/known_hosts -o StrictHostKeyChecking=yes root@10.232.0.1 -s sftp" \
        backup --stdin --stdin-filename dump.sql < <("${pin_db[@]}" "${source_cmd[@]}") > /dev/null 2>"$work/err.log" \
      && cat "$work/time.out") || { cat "$work/err.log" >&2; return 1; }
  w1=$(wire)
  echo "$t $((w1 - w0)) $(( $(size "$work/ctl/restic") - a0 ))"
}

results="$work/results"; : > "$results"; : > "$work/chunks.log"
for rep in $(seq "$reps"); do
  rm -rf "$work/ctl/cairn" "$work/ctl/cairn-local" "$work/ctl/cairn-whole" "$work/ctl/restic" "$work/db1/cache" "$CAIRN_CACHE_DIR" "$RESTIC_CACHE_DIR"
  "$cairn" -q -r "$work/ctl/cairn" init > /dev/null
  "$cairn" -q -r "$work/ctl/cairn-whole" init > /dev/null
  "$cairn" -q -r "$work/ctl/cairn-local" init > /dev/null
  ip netns exec $db1 restic -q -r "sftp:root@10.232.0.1:$work/ctl/restic" \
    -o sftp.command="ssh -i $work/ssh/sftp -o UserKnownHostsFile=$work/ssh/known_hosts -o StrictHostKeyChecking=yes root@10.232.0.1 -s sftp" init > /dev/null
  for sc in first:day0 unchanged:day0 oltp_day:day1; do
    s=${sc%%:*}; d=${sc#*:}
    if [ "$db" = mariadb ]; then
      # A day of OLTP on db1's server before the day's backups (not timed).
      [ "$s" != oltp_day ] || ip netns exec $db1 "${pin_db[@]}" sysbench oltp_write_only "${sb[@]}" \
        --rand-seed=$((9000 + rep)) --events=5000 --time=0 --threads=2 run > "$work/sysbench.log"
    else
      cp "$dumps/$d.sql" "$work/db1/dump.sql"
    fi
    echo "$rep $s cairn $(cairn_run "$work/remote.toml" "$s")" >> "$results"
    echo "$rep $s restic $(restic_run)" >> "$results"
    rm -rf "$work/db1/cache.keep"; mv "$work/db1/cache" "$work/db1/cache.keep"
    echo "$rep $s whole $(cairn_run "$work/remote.toml" "$s" cairn-whole)" >> "$results"
    rm -rf "$work/db1/cache"; mv "$work/db1/cache.keep" "$work/db1/cache"
    t=$(ip netns exec $ctl "${pin_db[@]}" /usr/bin/time -f "%e %M" -o "$work/time.out" \
          "$cairn" -q -r "$work/ctl/cairn-local" --config "$work/local.toml" backup --system --name "$s" > /dev/null 2>"$work/err.log" \
        && cat "$work/time.out") || { cat "$work/err.log" >&2; exit 1; }
    echo "$rep $s local $t" >> "$results"
  done
done

if [ "$db" = mariadb ]; then size0=$("${source_cmd[@]}" | wc -c); else size0=$(stat -c %s "$dumps/day0.sql"); fi
echo "dump: $size0 bytes; $reps runs each, medians; PIN=${PIN:-0} DB=$db"
printf '%-10s %-7s %8s %9s %12s %12s %12s %10s %10s\n' scenario tool seconds MB/s wire stream added rss_kb agent_kb
for s in first unchanged oltp_day; do
  for tool in local cairn whole restic; do
    col() { awk -v s="$s" -v t="$tool" -v c="$1" '$2==s && $3==t {print $c}' "$results" | median; }
    case $tool in
      local) printf '%-10s %-7s %8s %9.1f %12s %12s %12s %10s %10s\n' "$s" local "$(col 4)" "$(awk "BEGIN{print $size0/1e6/$(col 4)}")" - - - "$(col 5)" - ;;
      cairn|whole) printf '%-10s %-7s %8s %9.1f %12s %12s %12s %10s %10s\n' "$s" "$tool" "$(col 4)" "$(awk "BEGIN{print $size0/1e6/$(col 4)}")" "$(col 6)" "$(col 7)" "$(col 8)" "$(col 5)" "$(col 9)" ;;
      restic) printf '%-10s %-7s %8s %9.1f %12s %12s %12s %10s %10s\n' "$s" restic "$(col 4)" "$(awk "BEGIN{print $size0/1e6/$(col 4)}")" "$(col 6)" - "$(col 7)" "$(col 5)" - ;;
    esac
  done
done
echo "how cairn's agent sent the chunks (per run):"
cat "$work/chunks.log"
