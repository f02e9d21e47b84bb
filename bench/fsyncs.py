#!/usr/bin/env python3
"""The benchmark's durable-write workloads: many small writes, each made durable before the
next (bench.py runs the same code).

Usage: bench/fsyncs.py DIR WORKLOAD N

    sqlite_wal        N transactions of one INSERT (an integer and 100 bytes of text) into a
                      sqlite3 database in DIR, journal_mode=WAL, synchronous=FULL
    sqlite_rollback   the same with the rollback journal: journal_mode=DELETE, synchronous=FULL
    append_fdatasync  N appends of 4 KiB to one file in DIR, each followed by fdatasync

Prints operations (transactions, appends) per second and milliseconds per operation. The
database or file is made before the timed part and removed after it. With bench/trace.py:

    bench/trace.py -- bench/fsyncs.py ~/indra/vault/db sqlite_wal 2000
"""

import os
import random
import sqlite3
import sys
import time
from pathlib import Path

WORKLOADS = ("sqlite_wal", "sqlite_rollback", "append_fdatasync")

# sqlite's files beside a database: the WAL and its shared-memory index, the rollback journal.
SQLITE_SUFFIXES = ("", "-wal", "-shm", "-journal")


def _remove(paths):
    for p in paths:
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


def sqlite_inserts(directory, n, journal_mode):
    """n transactions of one INSERT each (BEGIN, INSERT, COMMIT) with synchronous=FULL;
    returns the seconds they took. Opening the database and making its table are not timed;
    the database and its journal files are removed afterwards."""
    db = Path(directory) / f"bench-{journal_mode.lower()}.db"
    files = [f"{db}{s}" for s in SQLITE_SUFFIXES]
    _remove(files)
    rnd = random.Random(17)
    rows = [(i, "".join(rnd.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=100)))
            for i in range(n)]
    # isolation_level=None: the module issues no BEGIN of its own; each transaction is ours.
    con = sqlite3.connect(db, isolation_level=None)
    try:
        mode = con.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0]
        if mode.lower() != journal_mode.lower():
            raise RuntimeError(f"{db}: journal_mode={journal_mode} gave {mode}")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, n INTEGER, s TEXT)")
        t0 = time.perf_counter()
        for row in rows:
            con.execute("BEGIN")
            con.execute("INSERT INTO t (n, s) VALUES (?, ?)", row)
            con.execute("COMMIT")
        dt = time.perf_counter() - t0
        got = con.execute("SELECT count(*) FROM t").fetchone()[0]
        if got != n:
            raise RuntimeError(f"{db}: {got} rows after {n} inserts")
    finally:
        con.close()
    _remove(files)
    return dt


def append_fdatasync(directory, n, block=4096):
    """n appends of `block` bytes (distinct random data) to one file, each followed by
    fdatasync; returns the seconds they took. The file is removed afterwards."""
    path = Path(directory) / "appended.log"
    data = memoryview(os.urandom(n * block))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
    try:
        t0 = time.perf_counter()
        for off in range(0, n * block, block):
            os.write(fd, data[off:off + block])
            os.fdatasync(fd)
        dt = time.perf_counter() - t0
    finally:
        os.close(fd)
    size = path.stat().st_size
    os.unlink(path)
    if size != n * block:
        raise RuntimeError(f"{path}: {size} bytes after {n} appends of {block}")
    return dt


def run(directory, workload, n):
    """Runs one workload with n operations in `directory`; returns the seconds it took."""
    if workload == "sqlite_wal":
        return sqlite_inserts(directory, n, "WAL")
    if workload == "sqlite_rollback":
        return sqlite_inserts(directory, n, "DELETE")
    if workload == "append_fdatasync":
        return append_fdatasync(directory, n)
    raise ValueError(f"unknown workload {workload!r}")


def main():
    if len(sys.argv) != 4 or sys.argv[2] not in WORKLOADS:
        sys.exit(__doc__.strip().splitlines()[3])
    d, workload, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(d, exist_ok=True)
    dt = run(d, workload, n)
    print(f"{workload}: {n / dt:,.0f} ops/s, {dt / n * 1e3:.3f} ms per op")


if __name__ == "__main__":
    main()
