#!/usr/bin/env bash
# Backs up a daily dump series with cairn, restic and borg in the same run and prints, per day,
# seconds, bytes the repository grew by and peak RSS for each tool, plus the xdelta3 lower bound;
# then restores the newest snapshot with each tool (verified with cmp). The first backup and the
# restore are run REPS times on fresh repositories and the median is reported.
#
#   benches/compare.sh [DUMP_DIR] [WORK_DIR] [REPS]
#
# DUMP_DIR holds day0.EXT, day1.EXT, ... (SQL dumps, etcd snapshots: any one extension).
# DUMP_DIR defaults to bench-work/series; if it holds no day* files, the series is built there with
# ../shared/bench/make-dump-series.sh (about 2.6 GB, 5-10 minutes). WORK_DIR (default
# bench-work/run) is wiped. Needs restic, borgbackup, xdelta3, zstd and GNU time (installed if
# missing, as root). Keep both directories out of git (bench-work/ is ignored).
# CHUNK_KIB=16 benches/compare.sh ... runs cairn with another average chunk size.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dumps=$(realpath -m "${1:-$here/bench-work/series}")
work=$(realpath -m "${2:-$here/bench-work/run}")
reps=${3:-3}
chunk_kib=${CHUNK_KIB:-64}   # cairn's average chunk size for this run
need() { command -v "$1" >/dev/null 2>&1; }
if ! need restic || ! need borg || ! need xdelta3 || ! need zstd || ! need bc || [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup xdelta3 zstd time bc >/dev/null
fi
if ! ls "$dumps"/day[0-9]* >/dev/null 2>&1; then
  bash "$here/../shared/bench/make-dump-series.sh" "$dumps"
fi
(cd "$here" && cargo build --release -q -p cairn-cli)
cairn="$here/target/release/cairn"
rm -rf "$work"; mkdir -p "$work"
export RESTIC_PASSWORD=bench BORG_PASSPHRASE=bench CAIRN_PASSWORD=bench RESTIC_CACHE_DIR="$work/restic-cache" \
  BORG_BASE_DIR="$work/borgbase" CAIRN_CACHE_DIR="$work/cairn-cache"
days=$(ls "$dumps"/day[0-9]* | sort -V)
newest=$(echo "$days" | tail -1)

. "$here/benches/lib.sh"   # run, size, median

init_all() { # fresh repositories under $1
  rm -rf "$1"; mkdir -p "$1"
  "$cairn" -q -r "$1/cairn" init --chunk-avg-kib "$chunk_kib" > /dev/null
  restic init -q --repo "$1/restic" > /dev/null
  borg init -e repokey "$1/borg" > /dev/null 2>&1
  rm -rf "$CAIRN_CACHE_DIR" "$RESTIC_CACHE_DIR"
}

echo "# cairn $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), chunk avg ${chunk_kib} KiB; $(restic version | cut -d' ' -f1-2); $(borg --version)"
echo "# first backup (day0), median of $reps runs on fresh repositories"
first=$(echo "$days" | head -1)
for t in cairn restic borg; do : > "$work/first.$t"; done
for r in $(seq 1 "$reps"); do
  init_all "$work/rep"
  IN=$first run "$cairn" -q -r "$work/rep/cairn" backup --name day0 --stdin dump.sql >> "$work/first.cairn"
  IN=$first run restic -q --repo "$work/rep/restic" backup --stdin --stdin-filename dump.sql >> "$work/first.restic"
  IN=$first run borg create --compression zstd,3 "$work/rep/borg::day0" - >> "$work/first.borg"
done
mb=$(( $(stat -c %s "$first") / 1000000 ))
printf '%-8s %10s %10s %12s\n' tool seconds MB/s peak_rss_MB
for t in cairn restic borg; do
  s=$(cut -d' ' -f1 "$work/first.$t" | median); m=$(cut -d' ' -f2 "$work/first.$t" | median)
  printf '%-8s %10.2f %10.0f %12.1f\n' "$t" "$s" "$(echo "$mb / $s" | bc -l)" "$(echo "$m / 1024" | bc -l)"
  eval "first_$t=$s"
done
printf 'cairn first-backup throughput: %.2fx restic, %.2fx borg\n\n' \
  "$(echo "$first_restic / $first_cairn" | bc -l)" "$(echo "$first_borg / $first_cairn" | bc -l)"

echo "# the series, one backup a day into one repository per tool"
init_all "$work/series"
printf '%-6s | %7s %11s %7s | %7s %11s %7s | %7s %11s %7s | %11s\n' day cairn_s cairn_added rss_MB restic_s restic_added rss_MB borg_s borg_added rss_MB xdelta3
prev=""; c0=0; r0=0; b0=0
for f in $days; do
  n=$(basename "$f"); n=${n%.*}
  read -r cs cm < <(IN=$f run "$cairn" -q -r "$work/series/cairn" backup --name "$n" --stdin dump.sql)
  read -r rs rm_ < <(IN=$f run restic -q --repo "$work/series/restic" backup --stdin --stdin-filename dump.sql)
  read -r bs bm < <(IN=$f run borg create --compression zstd,3 "$work/series/borg::$n" -)
  c1=$(size "$work/series/cairn"); r1=$(size "$work/series/restic"); b1=$(size "$work/series/borg")
  if [ -n "$prev" ]; then xdelta3 -e -9 -f -B 1000000000 -s "$prev" "$f" "$work/delta"; xd=$(stat -c %s "$work/delta"); else xd=$(zstd -3 -c "$f" | wc -c); fi
  printf '%-6s | %7s %11d %7.1f | %7s %11d %7.1f | %7s %11d %7.1f | %11d\n' "$n" "$cs" $((c1-c0)) "$(echo "$cm/1024" | bc -l)" \
    "$rs" $((r1-r0)) "$(echo "$rm_/1024" | bc -l)" "$bs" $((b1-b0)) "$(echo "$bm/1024" | bc -l)" "$xd"
  if [ -n "$prev" ]; then echo "$((c1-c0)) $((r1-r0)) $((b1-b0)) $xd $cs $rs $bs" >> "$work/later"; fi
  c0=$c1; r0=$r1; b0=$b1; prev=$f
done
if [ -s "$work/later" ]; then
  cm=$(cut -d' ' -f1 "$work/later" | median); rm_=$(cut -d' ' -f2 "$work/later" | median)
  bm=$(cut -d' ' -f3 "$work/later" | median); xm=$(cut -d' ' -f4 "$work/later" | median)
  mean() { awk -v c="$1" '{s+=$c} END {printf "%.0f", s/NR}' "$work/later"; }
  ca=$(mean 1); ra=$(mean 2); ba=$(mean 3); xa=$(mean 4)
  printf 'later days, median bytes added: cairn %d, restic %d, borg %d, xdelta3 %d\n' "$cm" "$rm_" "$bm" "$xm"
  printf 'later days, mean bytes added:   cairn %.0f, restic %.0f, borg %.0f, xdelta3 %.0f\n' "$ca" "$ra" "$ba" "$xa"
  printf 'cairn adds %.2fx restic, %.2fx borg, %.1fx the xdelta3 bound\n\n' "$(echo "$ca/$ra" | bc -l)" "$(echo "$ca/$ba" | bc -l)" "$(echo "$ca/$xa" | bc -l)"
fi
printf 'repository size after the series: cairn %d, restic %d, borg %d\n\n' "$c0" "$r0" "$b0"

echo "# restore of the newest snapshot ($(basename "$newest")), median of $reps runs, verified with cmp"
n=$(basename "$newest"); n=${n%.*}
for t in cairn restic borg; do : > "$work/restore.$t"; done
for r in $(seq 1 "$reps"); do
  IN= run sh -c "'$cairn' -q -r '$work/series/cairn' dump '$n' dump.sql > '$work/out.sql'" >> "$work/restore.cairn"; cmp "$work/out.sql" "$newest"
  IN= run sh -c "restic -q --repo '$work/series/restic' dump latest dump.sql > '$work/out.sql'" >> "$work/restore.restic"; cmp "$work/out.sql" "$newest"
  IN= run sh -c "borg extract --stdout '$work/series/borg::$n' > '$work/out.sql'" >> "$work/restore.borg"; cmp "$work/out.sql" "$newest"
done
printf '%-8s %10s %10s %12s\n' tool seconds MB/s peak_rss_MB
for t in cairn restic borg; do
  s=$(cut -d' ' -f1 "$work/restore.$t" | median); m=$(cut -d' ' -f2 "$work/restore.$t" | median)
  printf '%-8s %10.2f %10.0f %12.1f\n' "$t" "$s" "$(echo "$mb / $s" | bc -l)" "$(echo "$m / 1024" | bc -l)"
  eval "rest_$t=$s"
done
printf 'cairn restore throughput: %.2fx restic, %.2fx borg\n' "$(echo "$rest_restic / $rest_cairn" | bc -l)" "$(echo "$rest_borg / $rest_cairn" | bc -l)"
echo "(restore peak RSS is of the shell wrapper's child with the largest RSS)"
