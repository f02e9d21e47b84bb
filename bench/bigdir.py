#!/usr/bin/env python3
"""The benchmark's big-folder workloads (bench.py runs the same code).

Usage: bench/bigdir.py DIR N PHASE      PHASE: create or unlink_listing

create makes N empty files (open with O_CREAT, then close) in the folder DIR.
unlink_listing deletes every other one of those files (the even-numbered ones, N/2 unlinks)
while a second process lists DIR over and over (os.listdir) until the deletions are done. The
lister checks every listing: no name appears twice, every file that is not being deleted (the
odd-numbered ones) is there, and no name appears that was never created. A listing that fails
a check, or a listing that fails, is a filesystem bug: the phase raises. Prints the seconds the
phase took and, for unlink_listing, how many full listings the lister completed meanwhile.
With bench/trace.py:

    bench/trace.py -- bench/bigdir.py ~/indra/vault/big 50000 create   # then unlink_listing
"""

import collections
import multiprocessing
import os
import sys
import time
from pathlib import Path

PHASES = ("create", "unlink_listing")


def names(n):
    return [f"f{i:05}" for i in range(n)]


def create(directory, n):
    """Creates n empty files in `directory`; returns the seconds it took."""
    paths = [os.path.join(directory, name) for name in names(n)]
    t0 = time.perf_counter()
    for p in paths:
        os.close(os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    return time.perf_counter() - t0


def _check(listing, kept, created, which):
    """What is wrong with one listing of the folder, or None."""
    seen = set(listing)
    problems = []
    if len(seen) != len(listing):
        dup = sorted(x for x, k in collections.Counter(listing).items() if k > 1)
        problems.append(f"{len(listing) - len(seen)} duplicate names, e.g. {dup[:5]}")
    missing = kept - seen
    if missing:
        problems.append(f"{len(missing)} names that were never deleted are missing, e.g. "
                        f"{sorted(missing)[:5]}")
    unknown = seen - created
    if unknown:
        problems.append(f"{len(unknown)} names that were never created, e.g. "
                        f"{sorted(unknown)[:5]}")
    return f"listing {which}: " + "; ".join(problems) if problems else None


def _lister(directory, n, conn, stop):
    """The second process: lists `directory` until `stop` is set. The first listing, before
    any deletion, must hold exactly the n files. Sends ("ready", what is wrong with it or
    None), then ("done", (listings completed after ready, first problem found or None)), or
    ("error", why) if a listing failed."""
    try:
        created = set(names(n))
        kept = set(names(n)[1::2])
        problem = _check(os.listdir(directory), created, created, "before the deletions")
        conn.send(("ready", problem))
        count = 0
        while problem is None and not stop.is_set():
            problem = _check(os.listdir(directory), kept, created, f"{count + 1}")
            count += 1
        conn.send(("done", (count, problem)))
    except BaseException as e:  # noqa: BLE001 - every failure goes back to the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def unlink_listing(directory, n, timeout=600):
    """Deletes the even-numbered half of the n files `create` made in `directory` while a
    second process lists it; returns (seconds the deletions took, listings the lister
    completed meanwhile). Raises if a listing was wrong or failed."""
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    proc = ctx.Process(target=_lister, args=(directory, n, child, stop), daemon=True)
    proc.start()
    child.close()
    victims = [os.path.join(directory, name) for name in names(n)[0::2]]
    try:
        if not parent.poll(timeout):
            raise RuntimeError(f"{directory}: the lister's first listing took over {timeout} s")
        kind, detail = parent.recv()
        if kind != "ready":
            raise RuntimeError(f"{directory}: the lister failed before the deletions: {detail}")
        if detail:
            raise RuntimeError(f"{directory}: wrong {detail}")
        t0 = time.perf_counter()
        for p in victims:
            os.unlink(p)
        dt = time.perf_counter() - t0
        stop.set()
        if not parent.poll(timeout):
            raise RuntimeError(f"{directory}: the lister did not stop within {timeout} s")
        kind, detail = parent.recv()
    except EOFError:
        raise RuntimeError(f"{directory}: the lister died (exit code {proc.exitcode})") from None
    finally:
        stop.set()
        proc.join(10)
        if proc.is_alive():
            proc.kill()
            proc.join()
        parent.close()
    if kind == "error":
        raise RuntimeError(f"{directory}: a listing during the deletions failed: {detail}")
    count, problem = detail
    if problem:
        raise RuntimeError(f"{directory}: wrong listing during the deletions, {problem}")
    left = set(os.listdir(directory))
    kept = set(names(n)[1::2])
    if left != kept:
        raise RuntimeError(f"{directory}: after the deletions {len(left)} names, "
                           f"{len(left - kept)} of them deleted or never created, "
                           f"{len(kept - left)} kept ones missing")
    return dt, count


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in PHASES:
        sys.exit(__doc__.strip().splitlines()[2])
    d, n, phase = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if phase == "create":
        os.makedirs(d, exist_ok=True)
        dt = create(d, n)
        print(f"create: {dt:.2f} s, {n / dt:,.0f} files/s")
    else:
        dt, listings = unlink_listing(d, n)
        print(f"unlink_listing: {dt:.2f} s for {len(range(0, n, 2))} unlinks, "
              f"{listings} full listings meanwhile")


if __name__ == "__main__":
    main()
