#!/usr/bin/env bash
# Installs what the tests need on a fresh Debian machine, then runs every test.
# Usage: scripts/test.sh            (run from anywhere inside the repository)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
for pair in cc:gcc fusermount3:fuse3 sqlite3:sqlite3 rsync:rsync git:git vim:vim python3:python3 getfattr:attr \
            sha256sum:coreutils unshare:util-linux nsenter:util-linux ip:iproute2 prove:perl openssl:openssl \
            chromium:chromium diff:diffutils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need_apt+=("${pair#*:}")
done
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "==> apt-get install ${need_apt[*]}"
  if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v b3sum >/dev/null 2>&1; then
  echo "==> cargo install b3sum"
  cargo install b3sum --locked --quiet
fi

echo "==> rustfmt"
cargo fmt --all -- --check

echo "==> import circles (scripts/import-cycles.py)"
python3 scripts/import-cycles.py

echo "==> clippy"
cargo clippy --release --workspace --all-targets --quiet -- -D warnings

echo "==> build (the end-to-end tests and the Lua scenarios run target/release/indras-fuse)"
cargo build --release --workspace --quiet

echo "==> tests"
cargo test --release --workspace

echo "==> pjdfstest (POSIX conformance on a real mount)"
INDRAS_FUSE_BIN="$PWD/target/release/indras-fuse" scripts/pjdfstest.sh

echo "==> benchmark smoke run (bench/run.sh --quick: every target and workload, small sizes)"
bench/run.sh --quick
