#!/usr/bin/env python3
"""What one FUSE request costs the caller when the daemon does nothing for it.

Usage: bench/roundtrip.py FILE [N]

Reads an extended attribute FILE does not have (`user.roundtrip-probe`) N times (default
20,000). The kernel caches no extended attributes for FUSE, so each read is one GETXATTR to
the daemon, which answers ENODATA at once: the time per read is the request's round trip
(the daemon's wake-up, its reply, the caller's wake-up) plus a system call. Compare it with
the per-opcode latencies of bench/trace.py, which count the daemon's side only, to see how
much of a workload's time is the transport rather than the daemon's work. Run it under
`taskset -c CPU` with the daemon's threads pinned the same way (`taskset -pc CPU TID`) to
tell a wake-up on the caller's CPU from one on another.
"""

import errno
import os
import sys
import time

PROBE = "user.roundtrip-probe"


def roundtrip(path, n):
    """Seconds per getxattr of an absent attribute of `path`, over `n` of them."""
    t0 = time.perf_counter()
    for _ in range(n):
        try:
            os.getxattr(path, PROBE)
        except OSError as e:
            if e.errno != errno.ENODATA:
                raise
        else:
            raise SystemExit(f"roundtrip.py: {path} has {PROBE}; remove it first")
    return (time.perf_counter() - t0) / n


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__.strip().splitlines()[2])
    n = int(sys.argv[2]) if len(sys.argv) == 3 else 20_000
    print(f"{roundtrip(sys.argv[1], n) * 1e6:.1f} us per request")


if __name__ == "__main__":
    main()
