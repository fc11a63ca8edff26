#!/usr/bin/env bash
# Many small files: backs up and restores a tree of N small files (default 300,000, 100 B to
# 8 KiB, 1,000 per directory) with cairn and restic (and borg) in the same run, every tool at its
# default settings (key derivation included), and prints median seconds and peak RSS of REPS
# restores into fresh directories, plus the first backup. Each restore is compared with the
# source (file count and a digest of every file's path and content).
#
#   benches/small-files.sh [WORK_DIR] [REPS]        N=100000 benches/small-files.sh ...
#
# Needs restic, borgbackup and GNU time (installed if missing, as root). WORK_DIR (default
# bench-work/small) is wiped; keep it out of git (bench-work/ is ignored).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${1:-$here/bench-work/small}")
reps=${2:-3}
n=${N:-300000}
need() { command -v "$1" >/dev/null 2>&1; }
if ! need restic || ! need borg || [ ! -x /usr/bin/time ] || ! need bc; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup time bc >/dev/null
fi
(cd "$here" && cargo build --release -q -p cairn-cli)
cairn="$here/target/release/cairn"
rm -rf "$work"; mkdir -p "$work"
. "$here/benches/lib.sh"   # run, size, median
peer_env

src="$work/src"
python3 - "$src" "$n" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(42)
for i in range(n):
    d = os.path.join(root, f"d{i // 1000:04d}")
    if i % 1000 == 0:
        os.makedirs(d)
    size = rnd.randint(100, 8192)
    with open(os.path.join(d, f"f{i:07d}.txt"), "wb") as f:
        f.write(rnd.randbytes(size // 2) + b"\n" * (size - size // 2))
PY
digest() { (cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha1sum | sha1sum | cut -c1-16); }
want=$(digest "$src")
echo "# cairn $(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo '?'); $(restic version | cut -d' ' -f1-2); $(borg --version)"
echo "# $n files, $(du -sh "$src" | cut -f1) on disk; restores: median of $reps into fresh directories"

"$cairn" -q -r "$work/cairn" init > /dev/null
restic init -q --repo "$work/restic" > /dev/null
borg init -e repokey "$work/borg" > /dev/null 2>&1
cd "$work"
read -r cb cbm < <(run "$cairn" -q -r "$work/cairn" backup --name small src)
read -r rb rbm < <(run restic -q --repo "$work/restic" backup src)
read -r bb bbm < <(run borg create "$work/borg::small" src)
snap=$(restic --repo "$work/restic" snapshots --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["short_id"])')

for t in cairn restic borg; do : > "$work/restore.$t"; done
for r in $(seq 1 "$reps"); do
  for t in cairn restic borg; do
    out="$work/out-$t"; rm -rf "$out"; mkdir -p "$out"
    case $t in
      cairn) run "$cairn" -q -r "$work/cairn" restore small --target "$out" >> "$work/restore.cairn" ;;
      restic) run restic -q --repo "$work/restic" restore "$snap" --target "$out" >> "$work/restore.restic" ;;
      borg) (cd "$out" && run borg extract "$work/borg::small") >> "$work/restore.borg" ;;
    esac
    got=$(digest "$out/src")
    [ "$got" = "$want" ] || { echo "$t restored something else ($got != $want)" >&2; exit 1; }
  done
done
rm -rf "$work"/out-*
printf '%-8s %12s %12s %14s %14s\n' tool backup_s backup_MB restore_s restore_MB
for t in cairn restic borg; do
  case $t in cairn) b=$cb; bm=$cbm ;; restic) b=$rb; bm=$rbm ;; borg) b=$bb; bm=$bbm ;; esac
  s=$(cut -d' ' -f1 "$work/restore.$t" | median); m=$(cut -d' ' -f2 "$work/restore.$t" | median)
  printf '%-8s %12.2f %12.1f %14.2f %14.1f\n' "$t" "$b" "$(echo "$bm/1024" | bc -l)" "$s" "$(echo "$m/1024" | bc -l)"
  eval "restore_$t=$s"
done
printf 'cairn restore: %.2fx the speed of restic, %.2fx borg\n' \
  "$(echo "$restore_restic / $restore_cairn" | bc -l)" "$(echo "$restore_borg / $restore_cairn" | bc -l)"
