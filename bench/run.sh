#!/usr/bin/env bash
# One command: indras-fuse against tmpfs, the bare disk, bindfs, gocryptfs and rclone.
# Usage: bench/run.sh [--quick] [--rounds N] [--baseline BINARY]      (as root)
# Full runs write bench/results/{results.md,results.json,ratios.png}; --quick is a smoke test
# with small sizes and one round, written to a temp dir.
# --baseline BINARY runs an older indras-fuse build (copy it out of target/ first: this script
# rebuilds) as one more target, indras-fuse@base, in the same rounds; the report adds
# indras-fuse relative to it for every workload and flags any below 0.95x.
set -euo pipefail

# The baseline's path is taken relative to where the script was called from.
args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) args+=(--baseline "$(realpath "${2:?--baseline needs a binary}")"); shift 2 ;;
    --baseline=*) args+=(--baseline "$(realpath "${1#--baseline=}")"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- ${args[@]+"${args[@]}"}
cd "$(dirname "$0")/.."

pkgs=()
for pair in bindfs:bindfs gocryptfs:gocryptfs rclone:rclone fusermount3:fuse3 git:git; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || pkgs+=("${pair#*:}")
done
/usr/bin/python3 -c 'import matplotlib' 2>/dev/null || pkgs+=(python3 python3-matplotlib)
if [ ${#pkgs[@]} -gt 0 ]; then
  echo "==> apt-get install ${pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${pkgs[@]}" >/dev/null
fi

cargo build --release --quiet
out=bench/results
quick=0
for a in "$@"; do [ "$a" = --quick ] && quick=1; done
if [ $quick = 1 ]; then out=$(mktemp -d); fi
/usr/bin/python3 bench/bench.py --binary "$PWD/target/release/indras-fuse" --out "$out" "$@"
echo "results in $out"
