#!/usr/bin/env bash
# Runs the POSIX filesystem test suite pjdfstest, in both of its forms, against MOUNTPOINT/vault of
# a live `indras-fuse mount`:
# - the Rust suite, pjdfstest 0.2.2 from crates.io (398 tests, each with many assertions), checked
#   against tests/pjdfstest-known-failures.txt;
# - the original C suite (third_party/pjdfstest: pjdfstest.c and 238 TAP scripts, 8,798 cases),
#   run by perl's `prove` from a fresh folder on the same mount. Every case must pass.
#
# Usage: scripts/pjdfstest.sh [PATTERN...]   as root. PATTERNs are the Rust suite's name filters
#                                             (substrings, e.g. `chmod::` or `rename::`); default all.
#
# Everything happens inside one private mount namespace (`unshare --mount --propagation
# private`): copies of /etc/passwd and /etc/group with the users pjdfstest switches to are
# bind-mounted over the originals, a tmpfs serves as the second filesystem of the EXDEV tests,
# the daemon mounts there, and pjdfstest remounts it read-only for the EROFS tests. The host's
# /etc and mount table never change; when the namespace's last process exits, every mount made
# in it is gone. Traps stop the daemon and unmount on failure, timeout and Ctrl-C too.
#
# Two pjdfstest runs on the same mount: first every selected test with allow_remount off, then
# the EROFS tests that run skipped, in a fresh process. Reason: pjdfstest 0.2.2's
# open::einval_invalid_combination leaks descriptors opened O_RDWR, so every later
# `mount -o remount,ro` in the same process fails with EBUSY, on any filesystem (tmpfs too).
# Then the daemon gets SIGTERM (commit everything, unmount), and `indras-fuse fsck` checks the
# store it leaves behind.
#
# Known failures (tests/pjdfstest-known-failures.txt: one test name per line, `#` comments) go
# to pjdfstest as `expected_failures`. Exit status 0 when every test passed, was skipped, or
# failed and is listed; non-zero otherwise, including when a listed test passes (unlist it).
# The last lines printed are the combined `Summary: ...` line in pjdfstest's format and
# `pjdfstest: N passed, N failed`, where failed counts unexpected failures and unexpected passes.
#
# Environment:
#   PJDFSTEST_ROOT       where pjdfstest is installed (default ~/.cache/indras-fuse/pjdfstest)
#   INDRAS_FUSE_BIN      the binary to test (default: target/release/indras-fuse, built first)
#   PJDFSTEST_TIMEOUT    limit for each of the two pjdfstest runs (default 15m; timeout(1) syntax)
#   PJDFSTEST_LOG_LEVEL  the daemon's --log-level (default info; debug when triaging)
#   PJDFSTEST_MOUNT_OPTS extra `-o` options for the mount (e.g. suid,dev)
#   PJDFSTEST_KEEP=1     keep the work dir (daemon.log, *.out, the data dir) afterwards
#   PJDFSTEST_SUITES     which suites run: "rust c" (default), "rust" or "c"
#   PJDFSTEST_C_TESTS    the C suite's test folders to run, e.g. "chmod rename" (default all)
set -euo pipefail

PJDFSTEST_VERSION=0.2.2
SUMMARY_RE='^Summary: [0-9]+ failed, [0-9]+ skipped, [0-9]+ passed, [0-9]+ expected failures, [0-9]+ total$'

# ---------------------------------------------------------------------------------------------
# Inside the namespace: started by the outer part below as `pjdfstest.sh --in-namespace ...`.
# ---------------------------------------------------------------------------------------------
if [[ ${1-} == --in-namespace ]]; then
  shift
  : "${WORK:?}" "${PJDFSTEST:?}" "${FUSE_BIN:?}" "${TIMEOUT:?}" "${LOG_LEVEL:?}"
  MNT=$WORK/mnt
  DATA=$WORK/data
  SECONDARY=$WORK/secondary
  DAEMON_LOG=$WORK/daemon.log
  daemon_pid=
  run_pid=
  tail_pid=

  is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/self/mounts; }

  stop_daemon() {
    [[ -n $daemon_pid ]] || return 0
    local rc=0 i
    if kill -0 "$daemon_pid" 2>/dev/null; then
      kill -TERM "$daemon_pid" 2>/dev/null || true
      for ((i = 0; i < 600; i++)); do # 60 s to commit and unmount
        kill -0 "$daemon_pid" 2>/dev/null || break
        sleep 0.1
      done
      if kill -0 "$daemon_pid" 2>/dev/null; then
        echo "pjdfstest.sh: the daemon did not stop within 60 s of SIGTERM; killing it" >&2
        kill -KILL "$daemon_pid" 2>/dev/null || true
      fi
    fi
    wait "$daemon_pid" 2>/dev/null || rc=$?
    daemon_pid=
    echo "$rc" >"$WORK/daemon.rc"
  }

  # shellcheck disable=SC2317 # called by the traps
  cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -n $run_pid ]] && kill -0 "$run_pid" 2>/dev/null; then
      kill -TERM "$run_pid" 2>/dev/null || true # timeout(1) passes it on to pjdfstest
      wait "$run_pid" 2>/dev/null || true
    fi
    if [[ -n $tail_pid ]]; then
      kill "$tail_pid" 2>/dev/null || true
      wait "$tail_pid" 2>/dev/null || true
    fi
    stop_daemon
    if is_mounted "$MNT"; then
      echo "pjdfstest.sh: $MNT still mounted after the daemon stopped; detaching it" >&2
      umount -l "$MNT" || true
    fi
    if is_mounted "$SECONDARY"; then umount -l "$SECONDARY" || true; fi
    exit "$rc"
  }
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  # Users and groups for pjdfstest, in private copies of /etc/passwd and /etc/group.
  free_id() { # free_id FILE START: the first id >= START not used in field 3 of FILE
    awk -F: -v id="$2" '{ used[$3] = 1 } END { while (id in used) id++; print id }' "$1"
  }
  has() { grep -q "^$2:" "$1"; }
  cp /etc/passwd "$WORK/passwd"
  cp /etc/group "$WORK/group"
  has "$WORK/group" nogroup || echo "nogroup:x:$(free_id "$WORK/group" 65534):" >>"$WORK/group"
  nogroup_gid=$(awk -F: '$1 == "nogroup" { print $3; exit }' "$WORK/group")
  if has "$WORK/passwd" nobody; then
    # pjdfstest needs nobody's primary group to be nogroup (Debian's layout).
    awk -F: -v OFS=: -v g="$nogroup_gid" '$1 == "nobody" { $4 = g } { print }' \
      "$WORK/passwd" >"$WORK/passwd.new"
    mv "$WORK/passwd.new" "$WORK/passwd"
  else
    echo "nobody:x:$(free_id "$WORK/passwd" 65534):$nogroup_gid:nobody:/nonexistent:/usr/sbin/nologin" \
      >>"$WORK/passwd"
  fi
  for name in tests pjdfstest; do
    has "$WORK/group" "$name" || echo "$name:x:$(free_id "$WORK/group" 60001):" >>"$WORK/group"
    gid=$(awk -F: -v n="$name" '$1 == n { print $3; exit }' "$WORK/group")
    if ! has "$WORK/passwd" "$name"; then
      echo "$name:x:$(free_id "$WORK/passwd" 60001):$gid:pjdfstest dummy:/nonexistent:/usr/sbin/nologin" \
        >>"$WORK/passwd"
    fi
  done
  chmod 644 "$WORK/passwd" "$WORK/group"
  mount --bind "$WORK/passwd" /etc/passwd
  mount --bind "$WORK/group" /etc/group
  id tests >/dev/null
  id nobody >/dev/null
  getent group nogroup >/dev/null

  # The EROFS tests run `mount -o remount,ro|rw MOUNTPOINT`. For a mount of type fuse, mount(8)
  # would hand that to the /sbin/mount.fuse helper, which cannot remount (it starts the mount's
  # source, "indras-fuse", as a new filesystem program); -i makes mount(8) call mount(2) itself.
  mkdir -p "$WORK/bin"
  printf '#!/bin/sh\nexec %s -i "$@"\n' "$(command -v mount)" >"$WORK/bin/mount"
  chmod 755 "$WORK/bin/mount"

  # The second filesystem, for rename/link across filesystems (EXDEV).
  mkdir -p "$SECONDARY"
  mount -t tmpfs -o size=16m pjdfstest-secondary "$SECONDARY"

  # The mount.
  mkdir -p "$MNT" "$DATA"
  mount_args=(mount "$MNT" --player pjdfstest --data-dir "$DATA" --foreground --allow-other
    --log-level "$LOG_LEVEL" --no-network)
  [[ -z ${MOUNT_OPTS-} ]] || mount_args+=(-o "$MOUNT_OPTS")
  echo "==> $FUSE_BIN ${mount_args[*]}"
  # In its own session, so a Ctrl-C reaches only the scripts, whose traps stop things in order.
  setsid "$FUSE_BIN" "${mount_args[@]}" >"$DAEMON_LOG" 2>&1 </dev/null &
  daemon_pid=$!
  ready=
  for ((i = 0; i < 300; i++)); do # 30 s
    if ! kill -0 "$daemon_pid" 2>/dev/null; then
      echo "pjdfstest.sh: the daemon exited before the mount was ready; its log:" >&2
      cat "$DAEMON_LOG" >&2
      exit 1
    fi
    if is_mounted "$MNT" && [[ -d $MNT/vault ]] &&
      probe=$(mktemp -d "$MNT/vault/.probe.XXXXXX" 2>/dev/null); then
      rmdir "$probe"
      ready=1
      break
    fi
    sleep 0.1
  done
  if [[ -z $ready ]]; then
    echo "pjdfstest.sh: $MNT/vault was not mounted and writable within 30 s; daemon log:" >&2
    cat "$DAEMON_LOG" >&2
    exit 1
  fi
  echo "==> mounted $MNT (daemon pid $daemon_pid, log $DAEMON_LOG)"

  # run NAME CONFIG [ARGS...]: one bounded pjdfstest run, streamed, into $WORK/NAME.{out,rc}.
  # timeout(1) puts pjdfstest in its own process group; the trap passes signals on.
  run() {
    local name=$1 config=$2 rc=0
    shift 2
    echo "==> pjdfstest -c $config -s $SECONDARY -p $MNT/vault $* (limit $TIMEOUT)"
    : >"$WORK/$name.out"
    PATH="$WORK/bin:$PATH" RUST_BACKTRACE=0 timeout -k 30 "$TIMEOUT" "$PJDFSTEST" -c "$config" \
      -s "$SECONDARY" -p "$MNT/vault" "$@" >"$WORK/$name.out" 2>&1 </dev/null &
    run_pid=$!
    tail -n +1 -f --pid="$run_pid" "$WORK/$name.out" &
    tail_pid=$!
    wait "$run_pid" || rc=$?
    run_pid=
    wait "$tail_pid" || true
    tail_pid=
    echo "$rc" >"$WORK/$name.rc"
  }

  if [[ " $SUITES " == *" rust "* ]]; then
    run main "$WORK/main.toml" "$@"
    # The tests the first run skipped only because remounts were off.
    mapfile -t erofs < <(awk '
      /^[^ \t]+ +skipped$/ { name = $1; next }
      /^\t/ && /allow_remount/ && name != "" { print "pjdfstest::tests::" name; name = "" }
      !/^\t/ { name = "" }
    ' "$WORK/main.out" | sort -u)
    if [[ -f $WORK/erofs.toml && ${#erofs[@]} -gt 0 ]]; then
      echo "==> the ${#erofs[@]} EROFS tests skipped above, in a fresh pjdfstest process"
      run erofs "$WORK/erofs.toml" -e "${erofs[@]}"
    fi
  fi

  if [[ " $SUITES " == *" c "* ]]; then
    # prove runs each script with sh from the test folder, four at a time (the scripts sleep a
    # lot, and their names never collide); the scripts find the pjdfstest binary beside their
    # tests/ folder. Each script gets 5 minutes, the whole run $TIMEOUT. The console shows each
    # script's name and result and any failing case; $WORK/c.out keeps every line.
    posix=$MNT/vault/pjdfstest-c
    mkdir -p "$posix"
    c_dirs=()
    for t in $C_TESTS; do c_dirs+=("$WORK/c/tests/$t"); done
    echo "==> prove -j4 -r ${C_TESTS:-(all)} in $posix (limit $TIMEOUT)"
    : >"$WORK/c.out"
    (cd "$posix" && exec timeout -k 30 "$TIMEOUT" prove -j4 -v -r --exec 'timeout -k 10 300 sh' \
      "${c_dirs[@]:-$WORK/c/tests}") >"$WORK/c.out" 2>&1 </dev/null &
    run_pid=$!
    tail -n +1 -f --pid="$run_pid" "$WORK/c.out" |
      grep --line-buffered -vE '^(ok [0-9]+|[0-9]+\.\.[0-9]+$)' &
    tail_pid=$!
    rc=0
    wait "$run_pid" || rc=$?
    run_pid=
    wait "$tail_pid" || true
    tail_pid=
    echo "$rc" >"$WORK/c.rc"
  fi

  echo "==> stopping the daemon (SIGTERM)"
  stop_daemon
  if is_mounted "$MNT"; then
    echo "pjdfstest.sh: the daemon exited but $MNT is still mounted" >&2
    echo "still mounted" >"$WORK/daemon.rc"
    exit 0
  fi
  # What the run left in the store must be consistent.
  echo "==> $FUSE_BIN fsck --data-dir $DATA"
  fsck_rc=0
  "$FUSE_BIN" fsck --data-dir "$DATA" || fsck_rc=$?
  echo "$fsck_rc" >"$WORK/fsck.rc"
  exit 0
fi

# ---------------------------------------------------------------------------------------------
# Outside: install, build, configure, run the namespace, report.
# ---------------------------------------------------------------------------------------------
cd "$(dirname "$0")/.."
REPO=$PWD
export PATH="$HOME/.cargo/bin:$PATH"
# Until the report: any failure still ends with the line CI reads.
reported=
trap '[[ -n $reported || $? -eq 0 ]] || echo "pjdfstest: 0 passed, 1 failed"' EXIT

if [[ $(id -u) -ne 0 ]]; then
  echo "pjdfstest.sh: must run as root (pjdfstest switches users; the script uses unshare and mount)" >&2
  exit 2
fi
for tool in unshare setsid mount umount timeout awk tail; do
  command -v "$tool" >/dev/null || { echo "pjdfstest.sh: $tool is missing" >&2; exit 2; }
done
[[ -e /dev/fuse ]] || { echo "pjdfstest.sh: /dev/fuse is missing" >&2; exit 2; }

SUITES=${PJDFSTEST_SUITES:-rust c}
for suite in $SUITES; do
  [[ $suite == rust || $suite == c ]] || { echo "pjdfstest.sh: unknown suite: $suite" >&2; exit 2; }
done
C_TESTS=${PJDFSTEST_C_TESTS-}
for t in $C_TESTS; do
  [[ -d $REPO/third_party/pjdfstest/tests/$t ]] || { echo "pjdfstest.sh: no C suite folder: $t" >&2; exit 2; }
done

root=${PJDFSTEST_ROOT:-$HOME/.cache/indras-fuse/pjdfstest}
PJDFSTEST=$root/bin/pjdfstest
if [[ " $SUITES " == *" rust "* ]] && { [[ ! -x $PJDFSTEST ]] ||
  [[ $("$PJDFSTEST" --version 2>/dev/null) != "pjdfstest $PJDFSTEST_VERSION" ]]; }; then
  echo "==> cargo install pjdfstest --version $PJDFSTEST_VERSION --locked --root $root"
  cargo install pjdfstest --version "$PJDFSTEST_VERSION" --locked --root "$root"
fi
if [[ " $SUITES " == *" c "* ]]; then
  # openssl: the scripts name their files by `openssl md5` of random bytes.
  for tool in cc prove openssl; do
    command -v "$tool" >/dev/null || { echo "pjdfstest.sh: $tool is missing (C suite)" >&2; exit 2; }
  done
fi

if [[ -n ${INDRAS_FUSE_BIN-} ]]; then
  FUSE_BIN=$INDRAS_FUSE_BIN
else
  echo "==> cargo build --release"
  cargo build --release --bin indras-fuse
  FUSE_BIN=$REPO/target/release/indras-fuse
fi
[[ -x $FUSE_BIN ]] || { echo "pjdfstest.sh: $FUSE_BIN is not an executable" >&2; exit 2; }

KNOWN=$REPO/tests/pjdfstest-known-failures.txt
BASE_CONFIG=$REPO/tests/pjdfstest.toml

WORK=$(mktemp -d /tmp/indras-pjdfstest.XXXXXX)
chmod 755 "$WORK" # the mount point lies inside; pjdfstest's other users must traverse it
ns_pid=
# shellcheck disable=SC2317 # called by the traps
outer_cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP
  if [[ -n $ns_pid ]] && kill -0 "$ns_pid" 2>/dev/null; then
    kill -TERM "$ns_pid" 2>/dev/null || true
    wait "$ns_pid" 2>/dev/null || true
  fi
  # Nothing was ever mounted there outside the namespace, and the namespace is gone.
  [[ ${PJDFSTEST_KEEP-} == 1 ]] || rm -rf --one-file-system "$WORK"
  [[ -n $reported || $rc -eq 0 ]] || echo "pjdfstest: 0 passed, 1 failed"
  exit "$rc"
}
trap outer_cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The configurations: tests/pjdfstest.toml with the known failures as expected_failures, and
# allow_remount off (main run) or as configured (EROFS run).
known=()
if [[ -f $KNOWN ]]; then
  while IFS= read -r line || [[ -n $line ]]; do
    line=${line%%#*}
    line=${line//[[:space:]]/}
    [[ -n $line ]] || continue
    if [[ ! $line =~ ^[A-Za-z0-9_]+(::[A-Za-z0-9_]+)+$ ]]; then
      echo "pjdfstest.sh: ${KNOWN#"$REPO"/}: not a test name: $line" >&2
      exit 2
    fi
    known+=("$line")
  done <"$KNOWN"
fi
list=""
for name in "${known[@]}"; do list+="${list:+, }\"$name\""; done
make_config() { # make_config OUT REMOUNT: REMOUNT is "keep" or "false"
  awk -v list="$list" -v remount="$2" '
    /^[[:space:]]*\[/ { section = $1 }
    section == "[settings]" && /^[[:space:]]*expected_failures[[:space:]]*=/ {
      print "expected_failures = [" list "]"; xf = 1; next
    }
    section == "[settings]" && /^[[:space:]]*allow_remount[[:space:]]*=/ {
      allowed = ($0 ~ /=[[:space:]]*true/)
      if (remount == "false") { print "allow_remount = false"; next }
    }
    { print }
    END { if (!xf) exit 3; if (remount == "keep" && !allowed) exit 4 }
  ' "$BASE_CONFIG" >"$1"
}
rc=0
make_config "$WORK/main.toml" false || rc=$?
if [[ $rc -ne 0 ]]; then
  echo "pjdfstest.sh: ${BASE_CONFIG#"$REPO"/} needs a one-line \`expected_failures = []\` in [settings]" >&2
  exit 2
fi
rc=0
make_config "$WORK/erofs.toml" keep || rc=$?
[[ $rc -eq 0 ]] || rm -f "$WORK/erofs.toml" # allow_remount is off: no EROFS run
echo "==> ${#known[@]} known failures from ${KNOWN#"$REPO"/}"

if [[ " $SUITES " == *" c "* ]]; then
  # The C suite's scripts find the binary beside their tests/ folder.
  mkdir -p "$WORK/c"
  cp -r "$REPO/third_party/pjdfstest/tests" "$WORK/c/tests"
  echo "==> cc third_party/pjdfstest/pjdfstest.c"
  cc -O2 -Wall -Werror -I "$REPO/third_party/pjdfstest" -o "$WORK/c/pjdfstest" \
    "$REPO/third_party/pjdfstest/pjdfstest.c"
fi

export WORK PJDFSTEST FUSE_BIN SUITES C_TESTS
export TIMEOUT=${PJDFSTEST_TIMEOUT:-15m}
export LOG_LEVEL=${PJDFSTEST_LOG_LEVEL:-info}
export MOUNT_OPTS=${PJDFSTEST_MOUNT_OPTS-}
ns_rc=0
unshare --mount --propagation private -- bash "$REPO/scripts/pjdfstest.sh" --in-namespace "$@" &
ns_pid=$!
wait "$ns_pid" || ns_rc=$?
ns_pid=

# The report: both runs' Summary lines added up (the EROFS run's tests were skipped in the main
# run, so they count once).
status=0
failed=0 skipped=0 passed=0 xfailed=0 total=0 erofs_total=0
echo
for name in main erofs; do
  out=$WORK/$name.out
  [[ -f $out ]] || continue
  rc=$(cat "$WORK/$name.rc" 2>/dev/null || echo none)
  summary=$(grep -E "$SUMMARY_RE" "$out" | tail -n 1 || true)
  if [[ -n $summary ]]; then
    read -r f s p x t <<<"$(tr -cs '0-9' ' ' <<<"$summary")"
  else
    # Cut short (timeout, crash): count what finished, and one failure for the run itself.
    p=$(grep -cE ' ok$' "$out" || true)
    f=$(($(grep -cE ' (FAILED|PASSED UNEXPECTEDLY)$' "$out" || true) + 1))
    s=$(grep -cE ' skipped$' "$out" || true)
    x=$(grep -cE ' failed as expected$' "$out" || true)
    t=$((p + f - 1 + s + x))
    echo "pjdfstest.sh: the $name run did not finish (exit status $rc; 124 or 137: timed out after $TIMEOUT)"
    status=1
  fi
  if [[ $rc != 0 && $f == 0 ]]; then
    echo "pjdfstest.sh: the $name run exited with status $rc"
    status=1
  fi
  failed=$((failed + f)) skipped=$((skipped + s)) passed=$((passed + p)) xfailed=$((xfailed + x))
  if [[ $name == main ]]; then total=$t; else erofs_total=$t; fi
done
skipped=$((skipped - erofs_total))
unexpected=$(cat "$WORK"/main.out "$WORK"/erofs.out 2>/dev/null |
  grep -E ' (FAILED|PASSED UNEXPECTEDLY)$' || true)
if [[ -n $unexpected ]]; then
  echo "Unexpected results (fix them, or list/unlist them in ${KNOWN#"$REPO"/}):"
  sed -E 's/[[:space:]]+(FAILED|PASSED UNEXPECTEDLY)$/  \1/; s/^/  /' <<<"$unexpected"
  status=1
fi
if [[ " $SUITES " == *" rust "* && ! -f $WORK/main.out ]]; then
  echo "pjdfstest.sh: pjdfstest did not run"
  failed=$((failed + 1))
  status=1
fi
# The C suite: TAP lines from prove -v. A `not ok` marked TODO is an expected failure there.
c_passed=0 c_failed=0
if [[ " $SUITES " == *" c "* ]]; then
  c_out=$WORK/c.out
  c_rc=$(cat "$WORK/c.rc" 2>/dev/null || echo none)
  c_passed=$(grep -cE '^ok [0-9]+' "$c_out" 2>/dev/null || true)
  c_skipped=$(grep -ciE '^ok [0-9]+ # skip' "$c_out" 2>/dev/null || true)
  c_failed=$(grep -E '^not ok [0-9]+' "$c_out" 2>/dev/null | grep -vc '# TODO' || true)
  c_todo=$(grep -cE '^not ok [0-9]+ # TODO' "$c_out" 2>/dev/null || true)
  c_files=$(grep -oE '^Files=[0-9]+, Tests=[0-9]+' "$c_out" 2>/dev/null | tail -n 1 || true)
  if [[ $c_rc != 0 || -z $c_files ]]; then
    # A script that died, timed out or miscounted its plan fails without a `not ok` line.
    echo "pjdfstest.sh: the C suite's prove run failed (exit status $c_rc; 124 or 137: timed out after $TIMEOUT)"
    sed -n '/^Test Summary Report/,$p' "$c_out" 2>/dev/null || true
    [[ $c_failed -gt 0 ]] || c_failed=1
    status=1
  elif [[ $c_failed -gt 0 ]]; then
    status=1
  fi
  # TODO cases are the suite's own record of where Linux departs from POSIX's text; ext4 and
  # tmpfs fail them too.
  echo "pjdfstest C suite: ${c_files:-no summary}: $((c_passed - c_skipped)) passed," \
    "$c_todo failed as expected on Linux (TODO), $c_skipped skipped, $c_failed failed"
  c_passed=$((c_passed - c_skipped))
fi
if [[ $ns_rc != 0 ]]; then
  echo "pjdfstest.sh: the namespace part failed (exit status $ns_rc)"
  status=1
fi
daemon_rc=$(cat "$WORK/daemon.rc" 2>/dev/null || echo none)
if [[ $daemon_rc != 0 && $daemon_rc != none ]]; then
  echo "pjdfstest.sh: the daemon did not shut down cleanly ($daemon_rc); its last warnings:"
  grep -E ' (WARN|ERROR) ' "$WORK/daemon.log" | tail -n 20 || true
  status=1
fi
fsck_rc=$(cat "$WORK/fsck.rc" 2>/dev/null || echo none)
if [[ $fsck_rc != 0 && $fsck_rc != none ]]; then
  echo "pjdfstest.sh: \`indras-fuse fsck\` found problems in the store after the run (exit status $fsck_rc)"
  status=1
fi
[[ $status -eq 0 || $((failed + c_failed)) -gt 0 ]] || failed=1
[[ ${PJDFSTEST_KEEP-} != 1 ]] || echo "pjdfstest.sh: kept $WORK (daemon.log, main.out, erofs.out, data/)"
if [[ " $SUITES " == *" rust "* ]]; then
  echo "Summary: $failed failed, $skipped skipped, $passed passed, $xfailed expected failures, $total total"
fi
echo "pjdfstest: $((passed + c_passed)) passed, $((failed + c_failed)) failed"
reported=1
exit "$status"
