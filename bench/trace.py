#!/usr/bin/env python3
"""FUSE requests made while a command runs: count and latency per opcode.

Usage (as root): bench/trace.py [--top N] -- COMMAND [ARG...]

It uses the kernel's fuse_request_send and fuse_request_end tracepoints (Linux 6.6 and later),
so it sees every request to every FUSE mount, whatever the daemon. A request's latency is the
time from the kernel queuing it to the daemon's reply arriving: the daemon's wake-up, its
work and its reply. The caller's own wake-up after the reply is not included. Compare a
request that does real work (CREATE, FLUSH, UNLINK) with one the daemon answers at once
(IOCTL, GETXATTR): the difference is the daemon's work.

From Python (bench.py --trace-requests): t = start(), run the workload, then
stop(t, connection(MOUNTPOINT)) gives that mount's requests as parse() does.
"""

import argparse
import collections
import os
import re
import subprocess
import sys
from pathlib import Path

TRACING = Path("/sys/kernel/tracing")
LINE = re.compile(r"\s(\d+\.\d+): fuse_request_(send|end): connection (\d+) req (\d+)"
                  r"(?: opcode \d+ \((\w+)\))?")


def fail(msg):
    print(f"trace.py: {msg}", file=sys.stderr)
    sys.exit(2)


class Unavailable(Exception):
    """The kernel's fuse tracepoints cannot be used here."""


def tracing_dir():
    if not (TRACING / "events").is_dir():
        subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACING)],
                       stderr=subprocess.DEVNULL)
    if not (TRACING / "events").is_dir():
        raise Unavailable(f"no tracefs at {TRACING} (run as root)")
    if not (TRACING / "events/fuse/fuse_request_send").is_dir():
        raise Unavailable("this kernel has no fuse tracepoints (they arrived in Linux 6.6)")
    return TRACING


def start():
    """Clears the trace buffer and turns the fuse tracepoints on; returns the tracing
    directory, for stop(). Raises Unavailable."""
    t = tracing_dir()
    (t / "buffer_size_kb").write_text("200000")
    (t / "trace").write_text("")
    (t / "events/fuse/enable").write_text("1")
    return t


def stop(t, conn=None):
    """Turns the fuse tracepoints off and returns parse() of what they recorded (only
    connection `conn`'s requests, if given), leaving the buffer empty."""
    (t / "events/fuse/enable").write_text("0")
    with open(t / "trace") as f:
        out = parse(f, conn)
    (t / "trace").write_text("")
    return out


def connection(mountpoint):
    """The number the tracepoints give a FUSE mount's requests: its device number as the
    kernel encodes it (major << 20 | minor)."""
    dev = os.stat(mountpoint).st_dev
    return os.major(dev) << 20 | os.minor(dev)


def parse(lines, conn=None):
    """Per opcode: a list of latencies in seconds. With `conn`, only that connection's
    requests."""
    sent = {}
    out = collections.defaultdict(list)
    for line in lines:
        m = LINE.search(line)
        if not m:
            continue
        if conn is not None and int(m.group(3)) != conn:
            continue
        # request numbers are per connection
        ts, kind, req, op = float(m.group(1)), m.group(2), m.group(3, 4), m.group(5)
        if kind == "send":
            sent[req] = (ts, op)
        elif req in sent:
            t0, op = sent.pop(req)
            out[op].append(ts - t0)
    return out


def report(latencies, top):
    rows = sorted(latencies.items(), key=lambda kv: -sum(kv[1]))[:top]
    total = sum(sum(v) for v in latencies.values())
    print(f"{'opcode':<22}{'count':>8}{'total ms':>11}{'mean us':>10}{'p50 us':>9}{'p90 us':>9}")
    for op, lat in rows:
        lat.sort()
        print(f"{op.removeprefix('FUSE_'):<22}{len(lat):>8}{sum(lat) * 1e3:>11.1f}"
              f"{sum(lat) / len(lat) * 1e6:>10.1f}{lat[len(lat) // 2] * 1e6:>9.1f}"
              f"{lat[int(len(lat) * 0.9)] * 1e6:>9.1f}")
    print(f"{'all':<22}{sum(len(v) for v in latencies.values()):>8}{total * 1e3:>11.1f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top", type=int, default=20, help="opcodes to show (default 20)")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    args = ap.parse_args()
    cmd = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not cmd:
        fail("no command given (usage: trace.py -- COMMAND [ARG...])")
    try:
        t = start()
    except Unavailable as e:
        fail(str(e))
    try:
        rc = subprocess.run(cmd).returncode
    finally:
        latencies = stop(t)
    report(latencies, args.top)
    sys.exit(rc)


if __name__ == "__main__":
    main()
