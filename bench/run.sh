#!/usr/bin/env bash
# One command: indras-fuse against tmpfs, the bare disk, bindfs, gocryptfs and rclone, then
# sharing between two indras-fuse mounts on 127.0.0.1 (bench/sharing.py).
# Usage: bench/run.sh [--quick] [--rounds N] [--baseline BINARY] [--only fs|sharing]
#                     [--trace-requests]  (as root)
# Full runs write bench/results/{results.md,results.json,ratios.png} and
# bench/results/sharing-<git short hash>.{md,json}; --quick is a smoke test with small sizes
# and one round, written to a temp dir.
# --baseline BINARY runs an older indras-fuse build (copy it out of target/ first: this script
# rebuilds) as one more target, indras-fuse@base, in the same rounds; the report adds
# indras-fuse relative to it for every workload and flags any below 0.95x. With
# --baseline-args "--keep none" and a copy of the same build as the baseline, the report gives
# what history costs: indras-fuse with history (the default) against the same build without.
# --only fs runs the filesystem section alone, --only sharing the sharing section alone.
# --trace-requests adds the FUSE requests per file of each small-file phase on indras-fuse,
# per opcode, from the kernel's fuse tracepoints (skipped, with a note, without tracefs).
# The sharing section's reference, raw iroh-blobs between two processes (bench/blobs-ref, a
# crate outside the workspace), is built and measured in full runs only, so the smoke run
# (which the test command runs) builds nothing more than the workspace.
set -euo pipefail

# The baseline's path is taken relative to where the script was called from.
args=()
only=all
while [ $# -gt 0 ]; do
  case "$1" in
    --baseline) args+=(--baseline "$(realpath "${2:?--baseline needs a binary}")"); shift 2 ;;
    --baseline=*) args+=(--baseline "$(realpath "${1#--baseline=}")"); shift ;;
    --only) only="${2:?--only needs fs or sharing}"; shift 2 ;;
    --only=*) only="${1#--only=}"; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
set -- ${args[@]+"${args[@]}"}
case "$only" in all|fs|sharing) ;; *) echo "--only: fs or sharing, not $only" >&2; exit 2 ;; esac
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

target="${CARGO_TARGET_DIR:-$PWD/target}"
cargo build --release --quiet
out=bench/results
quick=0
for a in "$@"; do [ "$a" = --quick ] && quick=1; done
if [ $quick = 1 ]; then out=$(mktemp -d); fi
if [ "$only" != sharing ]; then
  /usr/bin/python3 bench/bench.py --binary "$target/release/indras-fuse" --out "$out" "$@"
fi
if [ "$only" != fs ]; then
  sharing=(--binary "$target/release/indras-fuse" --out "$out")
  if [ $quick = 1 ]; then
    sharing+=(--quick)
  else
    # Its own lockfile; the same target dir, so what it shares with the workspace is built once.
    cargo build --release --quiet --locked --manifest-path bench/blobs-ref/Cargo.toml \
      --target-dir "$target"
    sharing+=(--reference "$target/release/blobs-ref")
  fi
  cmd="bench/run.sh"
  [ $quick = 1 ] && cmd+=" --quick"
  [ "$only" = sharing ] && cmd+=" --only sharing"
  /usr/bin/python3 bench/sharing.py "${sharing[@]}" --command "$cmd"
fi
echo "results in $out"
