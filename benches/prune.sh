#!/usr/bin/env bash
# Retention benchmark: backs a daily dump series up with cairn, restic and borg (one repository
# per tool), then keeps the newest 7 and frees the rest, timing each tool in the same run:
#   cairn forget --keep-last 7 && cairn prune --grace-period 0
#   restic forget --keep-last 7 --prune
#   borg prune --keep-last 7 && borg compact
# It prints seconds, peak RSS and repository size before/after for each tool, times a second
# prune with nothing to do, and checks the newest day still restores byte for byte.
# One snapshot per day, taken minutes apart here: --keep-last 7 keeps what --keep-daily 7 would
# keep on a real daily schedule (the tools' daily buckets would see one day only).
# cairn's prune marks packs and deletes them in a later run (default grace period 1h); restic and
# borg delete at once, so to compare the space each frees cairn runs with --grace-period 0 (its
# only non-default setting here). Every other setting, key derivation included, is the default.
#
#   benches/prune.sh [DUMP_DIR] [WORK_DIR]
#
# DUMP_DIR (default bench-work/series30) must hold day0.sql.. (build 30 days with
# ../shared/bench/make-dump-series.sh DIR 29: about 9.6 GB, 30-40 minutes). WORK_DIR (default
# bench-work/prune) is wiped. Keep both out of git.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dumps=$(realpath -m "${1:-$here/bench-work/series30}")
work=$(realpath -m "${2:-$here/bench-work/prune}")
need() { command -v "$1" >/dev/null 2>&1; }
if ! need restic || ! need borg || ! need bc || [ ! -x /usr/bin/time ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup time bc >/dev/null
fi
ls "$dumps"/day*.sql >/dev/null 2>&1 || { echo "no day*.sql in $dumps" >&2; exit 1; }
(cd "$here" && cargo build --release -q -p cairn-cli)
cairn="$here/target/release/cairn"
rm -rf "$work"; mkdir -p "$work"
days=$(ls "$dumps"/day*.sql | sort -V)
ndays=$(echo "$days" | wc -l)
newest=$(echo "$days" | tail -1)

. "$here/benches/lib.sh"   # run, size, median
peer_env

"$cairn" -q -r "$work/cairn" init > /dev/null
restic init -q --repo "$work/restic" > /dev/null
borg init -e repokey "$work/borg" > /dev/null 2>&1
echo "# cairn $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'); $(restic version | cut -d' ' -f1-2); $(borg --version)"
echo "# backing up $ndays days"
for f in $days; do
  n=$(basename "$f" .sql)
  IN=$f run "$cairn" -q -r "$work/cairn" backup --name "$n" --stdin dump.sql > /dev/null
  IN=$f run restic -q --repo "$work/restic" backup --stdin --stdin-filename dump.sql > /dev/null
  IN=$f run borg create --compression zstd,3 "$work/borg::$n" - > /dev/null
done

printf '\n%-7s %12s %12s %9s %12s %16s\n' tool before_bytes after_bytes seconds peak_rss_MB second_run_s
one() { # tool, then the command(s) as a shell string
  local t=$1 cmd=$2 repo="$work/$1" b a s m s2
  b=$(size "$repo")
  read -r s m < <(run bash -c "$cmd")
  a=$(size "$repo")
  read -r s2 _ < <(run bash -c "$cmd")
  printf '%-7s %12d %12d %9.2f %12.1f %16.2f\n' "$t" "$b" "$a" "$s" "$(echo "$m / 1024" | bc -l)" "$s2"
}
one cairn "'$cairn' -q -r '$work/cairn' forget --keep-last 7 >/dev/null && '$cairn' -q -r '$work/cairn' prune --grace-period 0"
one restic "restic -q --repo '$work/restic' forget --keep-last 7 --prune"
one borg "borg prune --keep-last 7 '$work/borg' && borg compact '$work/borg'"
echo "(peak RSS is the larger of the tool's processes; second_run_s is the same command again, nothing to free)"

n=$(basename "$newest" .sql)
"$cairn" -q -r "$work/cairn" dump "$n" dump.sql | cmp - "$newest"
"$cairn" -q -r "$work/cairn" check --read-data | tail -1
echo "cairn restores $n byte for byte after the prune"
