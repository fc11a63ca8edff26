#!/usr/bin/env bash
# Throwaway ZooKeeper (3.8, Debian package) servers on 127.0.0.1, for end-to-end tests.
#
# Usage:
#   zookeeper.sh start DIR ID CLIENT_PORT [SERVERS]
#       write DIR/zoo.cfg, DIR/log4j.properties, DIR/data/myid (=ID) and start the
#       server in the background (returns at once; use `wait`). SERVERS: empty for
#       standalone, else 1=127.0.0.1:QUORUM_PORT:ELECTION_PORT,2=...,3=...
#       Data: DIR/data/version-2/{snapshot.<zxid hex>,log.<zxid hex>}; log:
#       DIR/zookeeper.log (+ JVM stdout/stderr in DIR/zookeeper.out); pid: DIR/zookeeper.pid
#       ZK_HOST (default 127.0.0.1) is the client address it listens on.
#   zookeeper.sh wait HOST:PORT...   wait (90s) until each answers ruok=imok and
#                                    `srvr` shows "Mode: " (standalone|leader|follower)
#   zookeeper.sh 4lw HOST:PORT WORD  print a four-letter-word reply (srvr, mntr, ...)
#   zookeeper.sh stop DIR...         SIGTERM, wait for exit (60s, then SIGKILL)
#   zookeeper.sh kill DIR...         SIGKILL (simulated crash)
#   zookeeper.sh cli HOST:PORT [CMD...]  one zkCli command, e.g. `cli 127.0.0.1:2181 get /a`
#                                        (a JVM start each: ~0.5s); without CMD, runs
#                                        the commands on stdin, one per line
set -euo pipefail

die() { echo "zookeeper.sh: $*" >&2; exit 1; }
[ $# -ge 2 ] || die "usage: zookeeper.sh start|wait|4lw|stop|kill|cli ..."
cmd=$1; shift
J=/usr/share/java
# Debian's classpath (zkEnv.sh) is conf dir + zookeeper.jar (its manifest pulls in the
# rest); we add an slf4j binding because Debian's has none (logging would be a no-op).
JVM=(/usr/bin/java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1)

fourlw() { # HOST:PORT WORD
  timeout 5 bash -c 'exec 3<>"/dev/tcp/${1%:*}/${1##*:}" && printf %s "$2" >&3 && cat <&3' _ "$1" "$2" 2>/dev/null
}
pid() { [ -s "$1/zookeeper.pid" ] && kill -0 "$(cat "$1/zookeeper.pid")" 2>/dev/null && cat "$1/zookeeper.pid"; }

case $cmd in
  start)
    [ $# -ge 3 ] || die "usage: zookeeper.sh start DIR ID CLIENT_PORT [SERVERS]"
    mkdir -p "$1/data"
    dir=$(cd "$1" && pwd) id=$2 port=$3 servers=${4:-}
    if pid "$dir" >/dev/null; then echo "zookeeper.sh: already running" >&2; exit 0; fi
    echo "$id" >"$dir/data/myid"
    {
      echo "tickTime=2000"; echo "initLimit=10"; echo "syncLimit=5"
      echo "dataDir=$dir/data"; echo "clientPort=$port"; echo "clientPortAddress=${ZK_HOST:-127.0.0.1}"
      echo "4lw.commands.whitelist=*"; echo "admin.enableServer=false"
      echo "standaloneEnabled=true"; echo "autopurge.purgeInterval=0"
      echo "snapCount=1000"        # snapshot + new log file every ~500-1000 txns
      echo "preAllocSize=1024"     # KB; log.* files are preallocated (default 64MB)
      IFS=, read -ra srv <<<"$servers"
      for s in "${srv[@]}"; do echo "server.${s%%=*}=${s#*=}"; done
    } >"$dir/zoo.cfg"
    cat >"$dir/log4j.properties" <<EOF
log4j.rootLogger=INFO, FILE
log4j.appender.FILE=org.apache.log4j.FileAppender
log4j.appender.FILE.File=$dir/zookeeper.log
log4j.appender.FILE.layout=org.apache.log4j.PatternLayout
log4j.appender.FILE.layout.ConversionPattern=%d{ISO8601} - %-5p [%t:%C{1}@%L] - %m%n
EOF
    setsid nohup "${JVM[@]}" -Dlog4j.configuration="file:$dir/log4j.properties" \
      -cp "$dir:$J/zookeeper.jar:$J/slf4j-log4j12.jar:$J/log4j-1.2.jar" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$dir/zoo.cfg" \
      </dev/null >>"$dir/zookeeper.out" 2>&1 &
    echo $! >"$dir/zookeeper.pid" ;;
  wait)
    for hp in "$@"; do
      for _ in $(seq 180); do
        [ "$(fourlw "$hp" ruok)" = imok ] && fourlw "$hp" srvr | grep -q '^Mode: ' && continue 2
        sleep 0.5
      done
      die "$hp not serving after 90s"
    done ;;
  4lw) fourlw "$1" "$2" ;;
  stop|kill)
    p=$(for d in "$@"; do pid "$d" || true; done); [ -n "$p" ] || exit 0
    sig=TERM; [ "$cmd" = kill ] && sig=KILL
    kill -s "$sig" $p 2>/dev/null || true
    for _ in $(seq 600); do kill -0 $p 2>/dev/null || exit 0; sleep 0.1; done
    echo "zookeeper.sh: stop timed out, SIGKILL" >&2; kill -9 $p 2>/dev/null || true ;;
  cli)
    hp=$1; shift
    # stdout starts with connection chatter; drop it. Messages such as "Created /a"
    # or "Node does not exist: /x" go to stderr; the exit status is kept (1 on error).
    # No CMD: read one command per line from stdin (fast bulk load; exit status 0).
    [ $# -gt 0 ] && exec </dev/null
    "${JVM[@]}" -cp "$J/zookeeper.jar:$J/slf4j-nop.jar" org.apache.zookeeper.ZooKeeperMain \
      -server "$hp" -waitforconnection "$@" \
      | awk 'NR <= 7 && (/^Connecting to / || /^$/ || /^WATCHER::$/ || /^WatchedEvent / ||
             /^Welcome to ZooKeeper!$/ || /^JLine support is disabled$/) { next } { print }' ;;
  *) die "unknown command $cmd" ;;
esac
