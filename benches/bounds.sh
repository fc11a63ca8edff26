#!/usr/bin/env bash
# The two lower bounds a later backup is measured against, day by day: the bytes of
# `xdelta3 -e -9` with a source window at least the file (-B 1 GB) and of
# `zstd --patch-from --long=31 -19`, each encoding dayN against day(N-1), with the seconds each took.
#
#   benches/bounds.sh DUMP_DIR [DAY...]
#
# DUMP_DIR holds day0.EXT, day1.EXT, ... as for compare.sh. With DAY numbers only those days are
# encoded (zstd -19 with a 2 GiB window takes minutes per 300 MB dump); else every later day.
# Prints one line per day and the means over the days encoded. Needs xdelta3 and zstd.
set -euo pipefail
dumps=$(realpath "$1"); shift
command -v xdelta3 >/dev/null && command -v zstd >/dev/null || {
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xdelta3 zstd >/dev/null; }
ext=$(ls "$dumps" | sed -n 's/^day0\.//p' | head -1)
[ -n "$ext" ] || { echo "no day0.* in $dumps" >&2; exit 2; }
if [ $# -eq 0 ]; then
  set -- $(ls "$dumps" | sed -n "s/^day\([0-9]*\)\.$ext\$/\1/p" | sort -n | awk '$1 > 0')
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
printf '%-6s %12s %9s %12s %9s %9s\n' day xdelta3 s zstd_patch s zstd/xd3
for d in "$@"; do
  old="$dumps/day$((d - 1)).$ext" new="$dumps/day$d.$ext"
  t0=$(date +%s.%N)
  xdelta3 -e -9 -f -B 1000000000 -s "$old" "$new" "$tmp/x"
  t1=$(date +%s.%N)
  zstd -q -f -19 --long=31 --patch-from="$old" "$new" -o "$tmp/z" 2>"$tmp/err" || {
    cat "$tmp/err" >&2; exit 1; }
  t2=$(date +%s.%N)
  x=$(stat -c %s "$tmp/x") z=$(stat -c %s "$tmp/z")
  printf '%-6s %12d %9.1f %12d %9.1f %9.2f\n' "day$d" "$x" "$(echo "$t1 - $t0" | bc)" "$z" \
    "$(echo "$t2 - $t1" | bc)" "$(echo "$z / $x" | bc -l)"
  echo "$x $z" >> "$tmp/all"
done
awk '{x+=$1; z+=$2} END {printf "mean   %12.0f %9s %12.0f %9s %9.2f\n", x/NR, "", z/NR, "", z/x}' "$tmp/all"
