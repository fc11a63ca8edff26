#!/usr/bin/env bash
# Backs up a daily dump series with cairn, restic, borg and rustic in the same run and prints, per day,
# seconds, bytes the repository grew by and peak RSS for each tool, plus the xdelta3 lower bound;
# then runs `cairn prune` (keyframes) and restores the newest snapshot with each tool (verified with
# cmp), and the oldest with cairn. The first backup and the
# restore are run REPS times on fresh repositories and the median is reported.
#
#   benches/compare.sh [DUMP_DIR] [WORK_DIR] [REPS]
#
# DUMP_DIR holds day0.EXT, day1.EXT, ... (SQL dumps, etcd snapshots: any one extension).
# DUMP_DIR defaults to bench-work/series; if it holds no day* files, the series is built there with
# ../shared/bench/make-dump-series.sh (about 2.6 GB, 5-10 minutes). WORK_DIR (default
# bench-work/run) is wiped. Needs restic, borgbackup, xdelta3, zstd and GNU time (installed if
# missing, as root) and rustic (`cargo install --locked rustic-rs`; left out, and said, if it is not
# on PATH). Keep both directories out of git (bench-work/ is ignored).
# CHUNK_KIB=16 benches/compare.sh ... runs cairn with another average chunk size; CAIRN_INIT="..."
# passes more options to `cairn init` (e.g. "--delta-max-depth 8").
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
tools="cairn restic borg"; if need rustic; then tools="$tools rustic"; else echo "# rustic not installed: left out"; fi
rm -rf "$work"; mkdir -p "$work"
days=$(ls "$dumps"/day[0-9]* | sort -V)
newest=$(echo "$days" | tail -1)

. "$here/benches/lib.sh"   # run, size, median
peer_env

init_all() { # fresh repositories under $1
  rm -rf "$1"; mkdir -p "$1"
  # shellcheck disable=SC2086
  "$cairn" -q -r "$1/cairn" init --chunk-avg-kib "$chunk_kib" ${CAIRN_INIT:-} > /dev/null
  restic init -q --repo "$1/restic" > /dev/null
  borg init -e repokey "$1/borg" > /dev/null 2>&1
  if has rustic; then rustic -r "$1/rustic" init > /dev/null 2>&1; fi
  rm -rf "$CAIRN_CACHE_DIR" "$RESTIC_CACHE_DIR" "$XDG_CACHE_HOME"
}
has() { case " $tools " in *" $1 "*) return 0;; *) return 1;; esac; }
# One backup of $IN with tool $1 into the repositories under $2, named $3: "seconds peak_rss_kb".
backup_one() {
  case $1 in
    cairn) run "$cairn" -q -r "$2/cairn" backup --name "$3" --stdin dump.sql ;;
    restic) run restic -q --repo "$2/restic" backup --stdin --stdin-filename dump.sql ;;
    borg) run borg create --compression zstd,3 "$2/borg::$3" - ;;
    # --force: rustic would otherwise take a stdin backup's parent's bytes as unchanged.
    rustic) run rustic -r "$2/rustic" backup --force --stdin-filename dump.sql - ;;
  esac
}

echo "# cairn $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'), chunk avg ${chunk_kib} KiB ${CAIRN_INIT:-}; $(restic version | cut -d' ' -f1-2); $(borg --version)$(has rustic && echo "; $(rustic --version)")"
echo "# first backup (day0), median of $reps runs on fresh repositories"
first=$(echo "$days" | head -1)
for t in $tools; do : > "$work/first.$t"; done
for r in $(seq 1 "$reps"); do
  init_all "$work/rep"
  for t in $tools; do IN=$first backup_one "$t" "$work/rep" day0 >> "$work/first.$t"; done
done
mb=$(( $(stat -c %s "$first") / 1000000 ))
printf '%-8s %10s %10s %12s\n' tool seconds MB/s peak_rss_MB
for t in $tools; do
  s=$(cut -d' ' -f1 "$work/first.$t" | median); m=$(cut -d' ' -f2 "$work/first.$t" | median)
  printf '%-8s %10.2f %10.0f %12.1f\n' "$t" "$s" "$(echo "$mb / $s" | bc -l)" "$(echo "$m / 1024" | bc -l)"
  eval "first_$t=$s"
done
printf 'cairn first-backup throughput: %.2fx restic, %.2fx borg' \
  "$(echo "$first_restic / $first_cairn" | bc -l)" "$(echo "$first_borg / $first_cairn" | bc -l)"
if has rustic; then printf ', %.2fx rustic' "$(echo "$first_rustic / $first_cairn" | bc -l)"; fi; echo; echo

echo "# the series, one backup a day into one repository per tool"
init_all "$work/series"
printf '%-6s' day; for t in $tools; do printf ' | %7s %11s %7s' "${t}_s" "${t}_added" rss_MB; done; printf ' | %11s\n' xdelta3
prev=""; declare -A before; for t in $tools; do before[$t]=0; done
for f in $days; do
  n=$(basename "$f"); n=${n%.*}
  line=$(printf '%-6s' "$n"); added=""
  for t in $tools; do
    read -r s m < <(IN=$f backup_one "$t" "$work/series" "$n")
    now=$(size "$work/series/$t"); a=$((now - before[$t])); before[$t]=$now
    line="$line$(printf ' | %7s %11d %7.1f' "$s" "$a" "$(echo "$m/1024" | bc -l)")"; added="$added $a"
  done
  if [ -n "$prev" ]; then xdelta3 -e -9 -f -B 1000000000 -s "$prev" "$f" "$work/delta"; xd=$(stat -c %s "$work/delta"); else xd=$(zstd -3 -c "$f" | wc -c); fi
  printf '%s | %11d\n' "$line" "$xd"
  if [ -n "$prev" ]; then echo "$xd$added" >> "$work/later"; fi
  prev=$f
done
if [ -s "$work/later" ]; then
  mean() { awk -v c="$1" '{s+=$c} END {printf "%.0f", s/NR}' "$work/later"; }
  declare -A avg
  xa=$(mean 1); printf 'later days, median / mean bytes added: xdelta3 %d / %d' "$(cut -d' ' -f1 "$work/later" | median)" "$xa"
  i=2; for t in $tools; do
    avg[$t]=$(mean $i); printf ', %s %d / %d' "$t" "$(cut -d' ' -f$i "$work/later" | median)" "${avg[$t]}"; i=$((i+1))
  done; echo
  printf 'cairn adds %.2fx the xdelta3 bound' "$(echo "${avg[cairn]}/$xa" | bc -l)"
  for t in $tools; do [ "$t" = cairn ] || printf ', %.3fx %s' "$(echo "${avg[cairn]}/${avg[$t]}" | bc -l)" "$t"; done; echo; echo
fi
printf 'repository size after the series:'; for t in $tools; do printf ' %s %d' "$t" "${before[$t]}"; done; echo; echo

echo "# cairn prune after the series: the newest version stored whole (keyframes), older ones as reverse deltas"
b=$(size "$work/series/cairn")
read -r ps pm < <(IN= run "$cairn" -q -r "$work/series/cairn" prune --grace-period 0)
printf 'cairn prune: %s s, peak RSS %.1f MB, repository %d -> %d bytes\n\n' "$ps" "$(echo "$pm/1024" | bc -l)" "$b" "$(size "$work/series/cairn")"

echo "# restore of the newest snapshot ($(basename "$newest")), median of $reps runs, verified with cmp"
n=$(basename "$newest"); n=${n%.*}
for t in $tools; do : > "$work/restore.$t"; done
for r in $(seq 1 "$reps"); do
  for t in $tools; do
    IN= run sh -c "$(restore_cmd "$t" "$n") > '$work/out.sql'" >> "$work/restore.$t"; cmp "$work/out.sql" "$newest"
  done
done
printf '%-8s %10s %10s %12s\n' tool seconds MB/s peak_rss_MB
for t in $tools; do
  s=$(cut -d' ' -f1 "$work/restore.$t" | median); m=$(cut -d' ' -f2 "$work/restore.$t" | median)
  printf '%-8s %10.2f %10.0f %12.1f\n' "$t" "$s" "$(echo "$mb / $s" | bc -l)" "$(echo "$m / 1024" | bc -l)"
  eval "rest_$t=$s"
done
printf 'cairn restore throughput: %.2fx restic, %.2fx borg' "$(echo "$rest_restic / $rest_cairn" | bc -l)" "$(echo "$rest_borg / $rest_cairn" | bc -l)"
if has rustic; then printf ', %.2fx rustic' "$(echo "$rest_rustic / $rest_cairn" | bc -l)"; fi; echo
echo "(restore peak RSS is of the shell wrapper's child with the largest RSS)"
oldest=$(echo "$days" | head -1); o=$(basename "$oldest"); o=${o%.*}
: > "$work/restore.oldest"
for r in $(seq 1 "$reps"); do
  IN= run sh -c "'$cairn' -q -r '$work/series/cairn' dump '$o' dump.sql > '$work/out.sql'" >> "$work/restore.oldest"; cmp "$work/out.sql" "$oldest"
done
printf 'cairn restore of the oldest (%s, %d versions back): %.2f s\n' "$o" "$(( $(echo "$days" | wc -l) - 1 ))" "$(cut -d' ' -f1 "$work/restore.oldest" | median)"
