#!/usr/bin/env bash
# Keyframes in steady state: backs up a dump series with cairn, running `cairn prune` after every
# backup as a scheduled job does, and prints per day the backup's seconds, peak RSS and the bytes
# it added, the prune's
# seconds, peak RSS and bytes written (keyframes, reverse deltas and blobs copied out of the packs
# it rewrote), and the repository's size after it; then the restore
# time of every version (medians of REPS, verified with cmp), newest first, so the cost of
# reading N versions back shows. A second repository without keyframes (`--no-keyframes`) gives
# the restore times of the forward chains beside them.
#
#   benches/keyframes.sh DUMP_DIR [WORK_DIR] [REPS]
#
# DUMP_DIR holds day0.EXT, day1.EXT, ... (any series benches/ builds). WORK_DIR (default
# bench-work/keyframes) is wiped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dumps=$(realpath -m "$1")
work=$(realpath -m "${2:-$here/bench-work/keyframes}")
reps=${3:-3}
(cd "$here" && cargo build --release -q -p cairn-cli)
cairn="$here/target/release/cairn"
rm -rf "$work"; mkdir -p "$work"
export CAIRN_PASSWORD=bench
. "$here/benches/lib.sh"   # run, size, median
days=$(ls "$dumps"/day[0-9]* | sort -V)

echo "# cairn $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'): backup, then prune --grace-period 0, each day"
printf '%-6s %9s %9s %12s %9s %8s %14s %12s %9s %14s\n' day backup_s bk_rss_MB backup_added prune_s rss_MB written_B repo_after no_kf_s no_kf_repo
for mode in kf plain; do
  CAIRN_CACHE_DIR="$work/cache-$mode" "$cairn" -q -r "$work/$mode" init > /dev/null
done
for f in $days; do
  n=$(basename "$f"); n=${n%.*}
  b=$(size "$work/kf")
  read -r bs bm < <(CAIRN_CACHE_DIR="$work/cache-kf" IN=$f run "$cairn" -q -r "$work/kf" backup --name "$n" --stdin dump.sql)
  added=$(( $(size "$work/kf") - b ))
  CAIRN_CACHE_DIR="$work/cache-kf" /usr/bin/time -o "$work/time.out" -f "%e %M" \
    "$cairn" -r "$work/kf" prune --grace-period 0 --json > "$work/prune.json"
  read -r ps pm < "$work/time.out"
  rw=$(python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["bytes_rewritten"] + r["bytes_copied"])' < "$work/prune.json")
  read -r ns _ < <(CAIRN_CACHE_DIR="$work/cache-plain" IN=$f run "$cairn" -q -r "$work/plain" backup --name "$n" --stdin dump.sql)
  CAIRN_CACHE_DIR="$work/cache-plain" "$cairn" -q -r "$work/plain" prune --grace-period 0 --no-keyframes > /dev/null
  printf '%-6s %9s %9.1f %12d %9s %8.1f %14d %12d %9s %14d\n' "$n" "$bs" "$(echo "$bm/1024" | bc -l)" "$added" "$ps" "$(echo "$pm/1024" | bc -l)" "$rw" \
    "$(size "$work/kf")" "$ns" "$(size "$work/plain")"
done

echo
echo "# restore (dump to a file), median of $reps, verified with cmp: keyframes vs forward chains"
printf '%-6s %8s %14s %10s\n' day back kf_seconds plain_seconds
total=$(echo "$days" | wc -l); i=0
for f in $(echo "$days" | sort -rV); do
  n=$(basename "$f"); n=${n%.*}
  for mode in kf plain; do
    : > "$work/t.$mode"
    for r in $(seq 1 "$reps"); do
      CAIRN_CACHE_DIR="$work/cache-$mode" IN= run sh -c "'$cairn' -q -r '$work/$mode' dump '$n' dump.sql > '$work/out'" >> "$work/t.$mode"
      cmp "$work/out" "$f"
    done
  done
  printf '%-6s %8d %14.2f %10.2f\n' "$n" "$i" "$(cut -d' ' -f1 "$work/t.kf" | median)" "$(cut -d' ' -f1 "$work/t.plain" | median)"
  i=$((i + 1))
done
[ "$i" -eq "$total" ]
