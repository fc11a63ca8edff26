#!/usr/bin/env bash
# Runs every test Cairn has: formatting, lints, unit tests, doc tests and the end-to-end tests that
# drive the real binaries. Installs what the tests need from Debian when it is missing (as root).
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v mount >/dev/null || need_pkgs+=(mount)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${need_pkgs[*]}: run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1 | tee target/test.log
# Print one closing line with the totals of every test binary.
awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "all tests: %d passed, %d failed, %d skipped\n", p, f, i}' target/test.log
