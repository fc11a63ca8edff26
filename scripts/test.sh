#!/usr/bin/env bash
# Runs every test Cairn has: formatting, lints, unit tests, doc tests and the end-to-end tests that
# drive the real binaries. Installs what the tests need from Debian when it is missing (as root).
# Usage: bash scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
command -v setpriv >/dev/null || need_pkgs+=(util-linux)
command -v mount >/dev/null || need_pkgs+=(mount)
# Real servers for the system tests (tests/system.rs starts them on loopback in temp dirs).
command -v mariadbd >/dev/null || need_pkgs+=(mariadb-server)
command -v mariadb-backup >/dev/null || need_pkgs+=(mariadb-backup)
command -v etcd >/dev/null || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null || need_pkgs+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || need_pkgs+=(zookeeper)
[ -f /usr/share/java/slf4j-log4j12.jar ] || need_pkgs+=(libslf4j-java)
[ -f /usr/share/java/log4j-1.2.jar ] || need_pkgs+=(liblog4j1.2-java)
command -v python3 >/dev/null || need_pkgs+=(python3)
# Requests signed by hand to damage objects in the S3 tests (tests/s3.rs).
command -v curl >/dev/null || need_pkgs+=(curl)
# A TLS front with a private CA for the S3 test of CAIRN_S3_CA_FILE.
command -v socat >/dev/null || need_pkgs+=(socat)
command -v openssl >/dev/null || need_pkgs+=(openssl)
# Extended attributes and POSIX ACLs for the tree round-trip tests (tests/trees.rs).
command -v setfattr >/dev/null || need_pkgs+=(attr)
command -v setfacl >/dev/null || need_pkgs+=(acl)
# Several hosts on one machine (tests/hosts.rs): network namespaces and an OpenSSH server per host.
command -v ip >/dev/null || need_pkgs+=(iproute2)
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v ssh >/dev/null || need_pkgs+=(openssh-client)
# Fault injection into real system calls (strace -e inject) and its checks of file attributes.
command -v strace >/dev/null || need_pkgs+=(strace)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing packages ${need_pkgs[*]}: run as root or install them" >&2
    exit 1
  fi
  apt-get update -qq
  # Packages must not start their own services: the tests run their own servers.
  own_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  [ $own_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
fi

# One build from a clean clone gains nothing from incremental state; it only takes disk.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"

# A real distributed object store for tests/s3.rs: Garage, built from crates.io (about nine
# minutes on two cores) into /usr/local unless this version is there already; its build
# directory is kept in target/garage so that a second run rebuilds nothing.
GARAGE_VERSION=2.5.0
if ! garage --version 2>/dev/null | grep -q "$GARAGE_VERSION"; then
  echo "== cargo install garage $GARAGE_VERSION"
  CARGO_TARGET_DIR=target/garage cargo install garage --version "$GARAGE_VERSION" --locked --quiet \
    --no-default-features --features bundled-libs,sqlite --root /usr/local
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "== cargo test"
cargo test --workspace 2>&1 | tee target/test.log
# Print one closing line with the totals of every test binary.
awk '/^test result:/ {p += $4; f += $6; i += $8} END {printf "all tests: %d passed, %d failed, %d skipped\n", p, f, i}' target/test.log
