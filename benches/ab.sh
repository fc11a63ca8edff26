#!/usr/bin/env bash
# A/B of two cairn binaries on a daily dump series, for changes that must not change what is
# stored or how fast: both back up the series into copies of one repository (same keys, so the
# same chunk boundaries), and the pack bytes each day adds must be equal byte for byte; then the
# first backup, the last day's backup and a restore of the newest day are timed, the two binaries
# alternating run by run, and the medians and the median of the per-pair ratios are printed.
#
#   benches/ab.sh OLD_CAIRN NEW_CAIRN [DUMP_DIR] [WORK_DIR] [REPS]
#
# For a change meant to store less, the bytes differ: the per-day table and the mean of the later
# days are what to read, and REPS=0 stops there (no timing). SEPARATE=1 has each binary create
# its own repository (for a change of repository format the older binary cannot open; the keys,
# and so the chunk boundaries, then differ too).
#
# Build OLD_CAIRN from the commit before the change, e.g.
#   git worktree add /tmp/old HEAD~1 && (cd /tmp/old && cargo build --release -p cairn-cli)
# DUMP_DIR holds dayN.EXT files (benches/compare.sh says how to build them); WORK_DIR is wiped.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
old=$(realpath "$1"); new=$(realpath "$2")
dumps=$(realpath -m "${3:-$here/bench-work/series}")
work=$(realpath -m "${4:-$here/bench-work/ab}")
reps=${5:-7}
[ -x /usr/bin/time ] || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time >/dev/null
. "$here/benches/lib.sh"
rm -rf "$work"; mkdir -p "$work"
export CAIRN_PASSWORD=bench
days=$(ls "$dumps"/day* | sort -V)
first=$(echo "$days" | head -1); last=$(echo "$days" | tail -1)
packs() { find "$1/packs" -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}'; }

CAIRN_CACHE_DIR="$work/c0" "$old" -q -r "$work/empty" init > /dev/null
echo "== pack bytes added per day (old, new)"
for t in old new; do
  if [ "${SEPARATE:-0}" = 1 ]; then CAIRN_CACHE_DIR="$work/cache-$t" "${!t}" -q -r "$work/$t" init > /dev/null
  else cp -a "$work/empty" "$work/$t"; fi
done
same=yes
for d in $days; do
  n=$(basename "${d%.*}"); line="$n"
  for t in old new; do
    bin=${!t}; before=$(packs "$work/$t")
    CAIRN_CACHE_DIR="$work/cache-$t" "$bin" -q -r "$work/$t" backup --name "$n" --stdin dump.sql < "$d" > /dev/null
    line="$line $(( $(packs "$work/$t") - before ))"
  done
  echo "$line"; echo "$line" >> "$work/added"; set -- $line; [ "$2" = "$3" ] || same=no
done
echo "byte for byte the same: $same"
awk 'NR > 1 { o += $2; n += $3; k++ } END { if (k) printf "later days, mean bytes added: old %.0f, new %.0f (new/old %.3f)\n", o/k, n/k, n/o }' "$work/added"
[ "$reps" = 0 ] && exit 0

# The repository before the last day, for timing that day's backup.
cp -a "$work/empty" "$work/before-last"
for d in $days; do
  [ "$d" = "$last" ] && break
  CAIRN_CACHE_DIR="$work/cache-bl" "$old" -q -r "$work/before-last" backup --name "$(basename "${d%.*}")" --stdin dump.sql < "$d" > /dev/null
done

time_one() { # KIND BIN -> seconds
  local kind=$1 bin=$2
  rm -rf "$work/t" "$work/tc"
  case $kind in
    first) cp -a "$work/empty" "$work/t"
           CAIRN_CACHE_DIR="$work/tc" IN=$first run "$bin" -q -r "$work/t" backup --name x --stdin dump.sql ;;
    last)  cp -a "$work/before-last" "$work/t"; cp -a "$work/cache-bl" "$work/tc"
           CAIRN_CACHE_DIR="$work/tc" IN=$last run "$bin" -q -r "$work/t" backup --name x --stdin dump.sql ;;
    restore) CAIRN_CACHE_DIR="$work/cache-old" run "$bin" -q -r "$work/old" dump "$(basename "${last%.*}")" dump.sql ;;
  esac
}
echo "== medians of $reps alternating runs: old s, new s, new/old (median of pairs), old/new peak RSS KB"
for kind in first last restore; do
  : > "$work/o"; : > "$work/n"; : > "$work/r"; : > "$work/om"; : > "$work/nm"
  for _ in $(seq "$reps"); do
    read -r os om < <(time_one "$kind" "$old"); read -r ns nm < <(time_one "$kind" "$new")
    echo "$os" >> "$work/o"; echo "$ns" >> "$work/n"; echo "$om" >> "$work/om"; echo "$nm" >> "$work/nm"
    echo "$ns $os" | awk '{printf "%.4f\n", $1/$2}' >> "$work/r"
  done
  echo "$kind $(median < "$work/o") $(median < "$work/n") $(median < "$work/r") $(median < "$work/om")/$(median < "$work/nm")"
done
