#!/usr/bin/env python3
"""The benchmark's small-file workload, one phase at a time (bench.py runs the same code).

Usage: bench/smallfiles.py DIR N PHASE      PHASE: create, stat, read or unlink

create makes N files of 4 KiB (distinct content) in DIR; the other phases walk those files.
Prints files per second and microseconds per file. With bench/trace.py:

    bench/trace.py -- bench/smallfiles.py ~/indra/vault/s 10000 create
"""

import os
import random
import sys
import time
from pathlib import Path

PHASES = ("create", "stat", "read", "unlink")


def files_in(directory, n):
    return [Path(directory) / f"f{i:05}" for i in range(n)]


def run_phase(files, phase):
    """Runs one phase over `files`; returns the seconds it took."""
    payload = random.Random(5).randbytes(4096)
    t0 = time.perf_counter()
    if phase == "create":
        for i, p in enumerate(files):
            with open(p, "wb") as f:
                f.write(i.to_bytes(8, "little") + payload[8:])
    elif phase == "stat":
        for p in files:
            os.stat(p)
    elif phase == "read":
        for p in files:
            with open(p, "rb") as f:
                f.read()
    else:
        for p in files:
            os.unlink(p)
    return time.perf_counter() - t0


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in PHASES:
        sys.exit(__doc__.strip().splitlines()[2])
    d, n, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if phase == "create":
        os.makedirs(d, exist_ok=True)
    dt = run_phase(files_in(d, n), phase)
    print(f"{phase}: {n / dt:,.0f} files/s, {dt / n * 1e6:.1f} us per file")


if __name__ == "__main__":
    main()
