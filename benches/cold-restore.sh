#!/usr/bin/env bash
# Restore of the newest snapshot from a cold page cache: before every run the dirty pages are
# written back and the kernel's page cache is dropped (`/proc/sys/vm/drop_caches`, as root), so
# every tool reads its repository (and its own cache directory) from the disk. The repositories
# are those `benches/compare.sh DUMP_DIR WORK_DIR` left under WORK_DIR/series (cairn's after its
# prune), read with the same passwords and cache directories. The tools alternate within each of
# REPS rounds; medians are printed and each run's output is compared with the dump.
#
#   benches/cold-restore.sh DUMP_DIR WORK_DIR [REPS]
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dumps=$(realpath "$1") work=$(realpath "$2") reps=${3:-3}
[ -w /proc/sys/vm/drop_caches ] || { echo "needs root: /proc/sys/vm/drop_caches" >&2; exit 2; }
cairn="$here/target/release/cairn"
. "$here/benches/lib.sh"   # run, median
peer_env
newest=$(ls "$dumps"/day[0-9]* | sort -V | tail -1)
n=$(basename "$newest"); n=${n%.*}
tools=""; for t in cairn rustic restic borg; do [ -d "$work/series/$t" ] && tools="$tools $t"; done
echo "# cold-cache restore of $n ($(stat -c %s "$newest") bytes), $reps rounds, cairn $(git -C "$here" rev-parse --short HEAD)"
for t in $tools; do : > "$work/cold.$t"; done
for r in $(seq 1 "$reps"); do
  for t in $tools; do
    rm -f "$work/out.sql"; sync; echo 3 > /proc/sys/vm/drop_caches
    IN= run sh -c "$(restore_cmd "$t" "$n") > '$work/out.sql'" >> "$work/cold.$t"
    cmp "$work/out.sql" "$newest"
  done
done
printf '%-8s %10s %12s %s\n' tool seconds peak_rss_MB runs
for t in $tools; do
  s=$(cut -d' ' -f1 "$work/cold.$t" | median); m=$(cut -d' ' -f2 "$work/cold.$t" | median)
  printf '%-8s %10.2f %12.1f %s\n' "$t" "$s" "$(echo "$m / 1024" | bc -l)" "$(cut -d' ' -f1 "$work/cold.$t" | tr '\n' ' ')"
  eval "cold_$t=$s"
done
for t in $tools; do
  [ "$t" = cairn ] || printf 'cairn restore speed / %s: %.2fx\n' "$t" "$(echo "$(eval echo \$cold_$t) / $cold_cairn" | bc -l)"
done
