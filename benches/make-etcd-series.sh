#!/usr/bin/env bash
# A daily series of etcd snapshots (bbolt files, as `etcdctl snapshot save` writes them): a
# member on a loopback port is loaded with KEYS keys of about 200 bytes, then each day 2% of the
# keys are rewritten, 1% added and 0.5% deleted before the day's snapshot.
#
#   benches/make-etcd-series.sh OUT_DIR [DAYS] [KEYS] [PORT]
#
# Defaults: 7 days, 50,000 keys (a snapshot of about 20 MB), client port 23790. Needs etcd and
# etcdctl (Debian etcd-server, etcd-client; installed if missing).
set -euo pipefail
out=$(realpath -m "$1"); days=${2:-7}; keys=${3:-50000}; port=${4:-23790}
command -v etcd >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server etcd-client >/dev/null
mkdir -p "$out"; data="$out/.etcd"; rm -rf "$data"
url="http://127.0.0.1:$port"
etcd --data-dir "$data" --listen-client-urls "$url" --advertise-client-urls "$url" \
  --listen-peer-urls "http://127.0.0.1:$((port + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((port + 1))" \
  --initial-cluster "default=http://127.0.0.1:$((port + 1))" --quota-backend-bytes=$((4 << 30)) >"$out/.etcd.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait 2>/dev/null || true' EXIT
ctl() { ETCDCTL_API=3 etcdctl --endpoints "$url" "$@"; }
for _ in $(seq 50); do ctl endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
value() { head -c 150 /dev/urandom | base64 -w0; }
# Reads `put KEY VALUE` / `del KEY` lines; applies them in transactions of 100 (etcd allows 128).
apply() {
  local batch=()
  while IFS= read -r op; do
    batch+=("$op")
    if [ "${#batch[@]}" -eq 100 ]; then
      { echo; printf '%s\n' "${batch[@]}"; echo; echo; } | ctl txn >/dev/null
      batch=()
    fi
  done
  if [ "${#batch[@]}" -gt 0 ]; then { echo; printf '%s\n' "${batch[@]}"; echo; echo; } | ctl txn >/dev/null; fi
}
key() { printf 'key/%08d' "$1"; }
for i in $(seq 0 $(( keys - 1 ))); do echo "put $(key "$i") $(value)"; done | apply
ctl snapshot save "$out/day0.db" >/dev/null
next=$keys
for d in $(seq 1 "$days"); do
  # Distinct keys (a transaction may name a key once): the first ones rewritten, the rest deleted.
  mapfile -t pick < <(shuf -i 0-$(( next - 1 )) -n $(( keys / 50 + keys / 200 )) --random-source=<(yes "$d"))
  {
    for i in "${pick[@]:0:$(( keys / 50 ))}"; do echo "put $(key "$i") $(value)"; done
    for i in $(seq "$next" $(( next + keys / 100 - 1 ))); do echo "put $(key "$i") $(value)"; done
    for i in "${pick[@]:$(( keys / 50 ))}"; do echo "del $(key "$i")"; done
  } | apply
  next=$(( next + keys / 100 ))
  ctl snapshot save "$out/day$d.db" >/dev/null
done
ls -l "$out"/day*.db
