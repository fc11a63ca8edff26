#!/usr/bin/env bash
# The dump series into a three-node Garage cluster (replication factor 3, on loopback, started
# by tests/servers/garage.sh): Cairn, restic's S3 backend and rustic's (opendal) against the same
# cluster in the same run, and Cairn on a local repository beside them.
#
#   s3.sh DUMPS WORK [REPS]
#
# DUMPS holds day0.sql and day1.sql. Per tool, REPS rounds (default 3) on fresh repositories
# (a bucket per tool, a prefix per round): first backup (day0), a later day (day1), restore of
# the newest (day1 to /dev/null). Prints medians: seconds, MB/s of the dump, bytes added (what
# the bucket's objects grew by, from `garage bucket info`; the local repository's size for
# "local"), peak RSS.
#
# Needs root (ports on 127.0.0.1 from 27900), garage (scripts/test.sh installs it), restic,
# rustic (`cargo install --locked rustic-rs`), python3 with boto3 (to list the buckets) and
# /usr/bin/time.
set -euo pipefail
dumps=$(realpath "$1"); work=$(realpath -m "$2"); reps=${3:-3}
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
cargo build -q --release -p cairn-cli --manifest-path "$here/../Cargo.toml"
cairn=$(realpath "$here/../target/release/cairn")
garage_sh="$here/../tests/servers/garage.sh"

rm -rf "$work"; mkdir -p "$work"
trap 'bash "$garage_sh" stop "$work/garage"' EXIT
bash "$garage_sh" start "$work/garage" 27900
source "$work/garage/env"
endpoint="http://${S3_ENDPOINTS%% *}"
g() { garage -c "$work/garage/node1.toml" "$@"; }
for b in restic rustic; do
  g bucket create "$b" >/dev/null
  g bucket allow --read --write --owner "$b" --key cairn-key >/dev/null
done
# Bytes of a bucket's objects, listed through the S3 API (Garage's own counters lag).
bucket_bytes() {
  python3 - "$endpoint" "$1" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="garage")
total = 0
for page in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2]):
    total += sum(o["Size"] for o in page.get("Contents", []))
print(total)
PY
}
peer_env
export AWS_REGION=garage

results="$work/results"; : > "$results"
for rep in $(seq "$reps"); do
  rm -rf "$work/local" "$CAIRN_CACHE_DIR" "$RESTIC_CACHE_DIR" "$work/rustic-cache"
  c_repo="s3:$endpoint/cairn/r$rep"; r_repo="s3:$endpoint/restic/r$rep"
  cat > "$work/rustic-s3.toml" <<EOF
[repository]
repository = "opendal:s3"
password = "bench"
cache-dir = "$work/rustic-cache"

[repository.options]
endpoint = "$endpoint"
bucket = "rustic"
root = "/r$rep"
region = "garage"
access_key_id = "$AWS_ACCESS_KEY_ID"
secret_access_key = "$AWS_SECRET_ACCESS_KEY"
EOF
  "$cairn" -q -r "$c_repo" init > /dev/null
  "$cairn" -q -r "$work/local" init > /dev/null
  restic -q -r "$r_repo" init > /dev/null
  (cd "$work" && rustic -P rustic-s3 init > /dev/null 2>&1)
  for d in day0 day1; do
    s=$([ $d = day0 ] && echo first || echo later)
    b0=$(bucket_bytes cairn); IN="$dumps/$d.sql"
    echo "$rep $s cairn $(IN=$IN run "$cairn" -q -r "$c_repo" backup --name $d --stdin dump.sql) $(( $(bucket_bytes cairn) - b0 ))" >> "$results"
    b0=$(bucket_bytes restic)
    echo "$rep $s restic $(IN=$IN run restic -q -r "$r_repo" backup --stdin --stdin-filename dump.sql) $(( $(bucket_bytes restic) - b0 ))" >> "$results"
    b0=$(bucket_bytes rustic)
    echo "$rep $s rustic $(cd "$work" && IN=$IN run rustic -P rustic-s3 backup --force --stdin-filename dump.sql -) $(( $(bucket_bytes rustic) - b0 ))" >> "$results"
    b0=$(size "$work/local")
    echo "$rep $s local $(IN=$IN run "$cairn" -q -r "$work/local" backup --name $d --stdin dump.sql) $(( $(size "$work/local") - b0 ))" >> "$results"
  done
  echo "$rep restore cairn $(run "$cairn" -q -r "$c_repo" dump day1 dump.sql) 0" >> "$results"
  echo "$rep restore restic $(run restic -q -r "$r_repo" dump latest dump.sql) 0" >> "$results"
  echo "$rep restore rustic $(cd "$work" && run rustic -P rustic-s3 dump latest:dump.sql) 0" >> "$results"
  echo "$rep restore local $(run "$cairn" -q -r "$work/local" dump day1 dump.sql) 0" >> "$results"
done

size0=$(stat -c %s "$dumps/day0.sql")
echo "# cairn $(git -C "$here" rev-parse --short HEAD), $(restic version | cut -d' ' -f1-2), $(rustic --version), $(garage --version | cut -d' ' -f1-2)"
echo "dump: $size0 bytes; $reps rounds, medians"
printf '%-8s %-7s %8s %8s %12s %10s\n' step tool seconds MB/s added rss_kb
for s in first later restore; do
  for t in cairn restic rustic local; do
    col() { awk -v s="$s" -v t="$t" -v c="$1" '$2==s && $3==t {print $c}' "$results" | median; }
    printf '%-8s %-7s %8s %8.1f %12s %10s\n' "$s" "$t" "$(col 4)" "$(awk "BEGIN{print $size0/1e6/$(col 4)}")" "$(col 6)" "$(col 5)"
  done
done
