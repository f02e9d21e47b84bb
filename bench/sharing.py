#!/usr/bin/env python3
"""Sharing between two indras-fuse mounts on 127.0.0.1, measured as a user sees it.

alice and bob are two mounts of the release binary, each with its own data dir, peered by
`invite` and `peer add` and listening on 127.0.0.1 only (no relay). alice shares; bob reads
under `peers/alice/`. Measured:

- latency from `indras-fuse share` returning until bob's read of the file gives its content,
  and from alice's edit (write + close) until bob's read shows it: median and p95;
- throughput: a large file shared, from `share` returning until bob holds all of it (his
  first read returns: a read of a file whose content has not arrived waits for it, and the
  daemon checks the whole file against its BLAKE3 id first), then read back and compared by
  hash, untimed. Against it, in the same rounds, interleaved: the same number of bytes moved
  by raw iroh-blobs 0.104 between two processes on loopback (`bench/blobs-ref`, fs store on
  both sides), from the dial until the blob is complete and verified. The ratio is ours over
  the reference's (goal: 0.8x or more);
- many small files in a shared folder: from `share` returning until every file reads back
  with its content on bob;
- a 1-byte edit in the middle of a large shared file: bytes on the wire until bob reads the
  new version, from the per-peer counters of `.indra/sync-status.json` (each side's UDP bytes
  of the connection, QUIC overhead included), goal under 1 MiB.

Results: a Markdown table and the same data as JSON, `sharing-<git short hash>.{md,json}` in
--out. Every loop that waits is bounded in time; the mounts are unmounted and the temp dirs
removed however the run ends.

Run it through bench/run.sh, which builds the binaries (`--only sharing` runs this alone).
"""

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import (  # bench/, beside this
    is_mounted, machine_facts, proc_cpu_seconds, stop_daemon, unmount,
)

MIB = 1 << 20
GIB = 1 << 30
POLL = 0.002  # between two reads of the peer's view while waiting for a change
LONG = 60.0  # the longest any single wait may take before the run fails

GOAL_RATIO = 0.8
GOAL_EDIT_WIRE = MIB


class Failed(Exception):
    pass


def deadline_after(secs):
    end = time.monotonic() + secs

    def check(what):
        if time.monotonic() > end:
            raise Failed(f"timed out after {secs:.0f} s: {what}")
    return check


class Player:
    """One mount: `indras-fuse mount --foreground`, listening on 127.0.0.1 only."""

    def __init__(self, binary, root, name):
        self.binary = binary
        self.name = name
        self.root = Path(root) / name
        self.mnt = self.root / "mnt"
        self.data = self.root / "data"
        self.proc = None
        self.log = None

    def start(self):
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "daemon.log", "a")
        self.proc = subprocess.Popen(
            [self.binary, "mount", str(self.mnt), "--player", self.name, "--data-dir",
             str(self.data), "--foreground", "--log-level", "warn",
             "--listen", "127.0.0.1:0", "--relay", "none"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log)
        check = deadline_after(30)
        sock = self.data / "control.sock"
        while not (is_mounted(self.mnt) and (self.mnt / "vault").is_dir() and sock.exists()):
            if self.proc.poll() is not None:
                raise Failed(f"{self.name}'s mount exited with {self.proc.returncode}:\n"
                             + self.log_tail())
            check(f"{self.name}'s mount to come up")
            time.sleep(0.02)

    def stop(self):
        stop_daemon(self.proc, self.mnt)
        if self.log:
            self.log.close()
            self.log = None

    def log_tail(self, lines=20):
        try:
            return "\n".join((self.root / "daemon.log").read_text().splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def vault(self):
        return self.mnt / "vault"

    def peer(self, name):
        """This mount's view of what `name` shares with it."""
        return self.mnt / "peers" / name

    def cli(self, *args):
        out = subprocess.run([self.binary, *map(str, args)], capture_output=True, text=True,
                             stdin=subprocess.DEVNULL, timeout=120)
        if out.returncode != 0:
            raise Failed(f"indras-fuse {' '.join(map(str, args))}: {out.stderr.strip()}")
        return out.stdout

    def cpu(self):
        return proc_cpu_seconds(self.proc.pid)

    def _indra(self, name):
        return json.loads((self.mnt / ".indra" / name).read_text())

    def connected(self, peer):
        try:
            return any(p["name"] == peer and p["state"] == "connected"
                       for p in self._indra("peers.json"))
        except (OSError, ValueError):
            return False

    def wire(self, peer):
        """(bytes in, bytes out) of this mount's connections with `peer`."""
        for p in self._indra("sync-status.json")["peers"]:
            if p["name"] == peer:
                return p["bytes_in"], p["bytes_out"]
        raise Failed(f"{self.name}'s sync-status.json has no peer {peer}")


# ----- helpers --------------------------------------------------------------------------------

def write_file(path, data):
    """Writes and closes; returns when close() has returned (the commit on close)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        for off in range(0, len(data), MIB):
            os.write(fd, view[off:off + MIB])
    finally:
        os.close(fd)


def read_all(path):
    with open(path, "rb") as f:
        return f.read()


def read_matches(path, want):
    try:
        return read_all(path) == want
    except OSError:  # not there yet (ENOENT), or not arrived within the view's wait (EIO)
        return False


def wait_content(path, want, limit=LONG):
    """Seconds until a fresh read of `path` gives `want`."""
    check = deadline_after(limit)
    t0 = time.perf_counter()
    while not read_matches(path, want):
        check(f"{path} to read back as expected")
        time.sleep(POLL)
    return time.perf_counter() - t0


def wait_gone(path, limit=LONG):
    check = deadline_after(limit)
    while os.path.lexists(path):
        check(f"{path} to go")
        time.sleep(0.01)


def wait_readable(path, limit, offset=0, want=None):
    """Waits until one byte at `offset` of `path` can be read (and equals `want` if given):
    on the peer's view, a read returns only once the file's whole current content has
    arrived and been checked. Returns the perf_counter at that moment."""
    check = deadline_after(limit)
    while True:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            fd = None
        if fd is not None:
            try:
                got = os.pread(fd, 1, offset)
                if want is None or got == want:
                    return time.perf_counter()
            except OSError:
                pass  # EIO: not arrived within the view's wait; ask again
            finally:
                os.close(fd)
        check(f"{path} to be readable")
        time.sleep(POLL)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MIB)
            if not b:
                return h.hexdigest()
            h.update(b)


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def p95(values):
    """The nearest-rank 95th percentile."""
    s = sorted(values)
    return s[max(0, math.ceil(0.95 * len(s)) - 1)]


def quantiles(secs):
    ms = [s * 1e3 for s in secs]
    return {"n": len(ms), "median_ms": statistics.median(ms), "p95_ms": p95(ms),
            "min_ms": min(ms), "max_ms": max(ms)}


def pair(binary, work):
    alice = Player(binary, work, "alice")
    bob = Player(binary, work, "bob")
    return alice, bob


def peer_up(alice, bob):
    ticket = alice.cli("invite", alice.mnt).strip()
    bob.cli("peer", "add", "alice", ticket, bob.mnt)
    check = deadline_after(30)
    while not (alice.connected("bob") and bob.connected("alice")):
        check("alice and bob to see each other connected")
        time.sleep(0.05)


# ----- the measurements -----------------------------------------------------------------------

def latencies(alice, bob, runs, res):
    """share -> readable on bob, and edit -> bob's read shows it, `runs` times each."""
    base = alice.vault / "latency"
    base.mkdir()
    seen = bob.peer("alice")
    share, command = [], []
    for i in range(runs):
        name = f"share-{i}.txt"
        body = f"share {i} {random.random()}\n".encode()
        write_file(base / name, body)
        t0 = time.perf_counter()
        alice.cli("share", base / name, "--with", "bob", "--mode", "revocable")
        command.append(time.perf_counter() - t0)
        share.append(wait_content(seen / name, body))
        # Every run starts from the same state: nothing of it left on bob.
        alice.cli("recall", base / name, "--from", "bob")
        wait_gone(seen / name)
    res["share_to_read"] = quantiles(share)
    res["share_to_read"]["samples_ms"] = [s * 1e3 for s in share]
    # The command's own run (start-up, the grant committed durably, the reply), for scale:
    # the peer is told while it runs.
    res["share_command"] = quantiles(command)
    res["share_invoked_to_read"] = quantiles([a + b for a, b in zip(command, share)])

    edit = []
    name = "edited.txt"
    body = b"version 0\n"
    write_file(base / name, body)
    alice.cli("share", base / name, "--with", "bob", "--mode", "revocable")
    wait_content(seen / name, body)
    for i in range(1, runs + 1):
        body = f"version {i} {random.random()}\n".encode()
        write_file(base / name, body)  # write + close
        edit.append(wait_content(seen / name, body))
    res["edit_to_read"] = quantiles(edit)
    res["edit_to_read"]["samples_ms"] = [s * 1e3 for s in edit]


def reference_round(blobs_ref, work, size, k):
    """One transfer of `size` fresh random bytes by raw iroh-blobs; its JSON plus CPU."""
    d = work / f"ref-{k}"
    d.mkdir()
    src = d / "file.bin"
    data = os.urandom(size)
    src.write_bytes(data)
    del data
    serve = subprocess.Popen([blobs_ref, "serve", str(d / "serve-store"), str(src)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = serve.stdout.readline()
        if not line:
            raise Failed(f"blobs-ref serve exited with {serve.wait()}")
        info = json.loads(line)
        serve_cpu0 = proc_cpu_seconds(serve.pid)
        fetch = subprocess.Popen([blobs_ref, "fetch", str(d / "fetch-store"), info["id"],
                                  info["addr"], info["hash"]], stdout=subprocess.PIPE, text=True)
        try:
            _, status, usage = os.wait4(fetch.pid, 0)
        except BaseException:
            fetch.kill()
            raise
        fetch.returncode = os.waitstatus_to_exitcode(status)
        out = fetch.stdout.read()
        if fetch.returncode != 0:
            raise Failed(f"blobs-ref fetch exited with {fetch.returncode}")
        got = json.loads(out)
        serve_cpu = proc_cpu_seconds(serve.pid) - serve_cpu0
    finally:
        serve.stdin.close()
        try:
            serve.wait(timeout=30)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
    if got["bytes"] != size:
        raise Failed(f"the reference fetched {got['bytes']} bytes, not {size}")
    shutil.rmtree(d)
    # The fetcher's CPU includes its start-up and store (milliseconds), the server's only
    # what it spent while the fetch ran.
    return {"mb_per_s": got["mb_per_s"], "secs": got["secs"],
            "cpu_s": usage.ru_utime + usage.ru_stime + serve_cpu}


def ours_round(alice, bob, size, k):
    """One large file of `size` fresh random bytes shared; MB/s until bob holds all of it."""
    d = alice.vault / "large"
    d.mkdir(exist_ok=True)
    name = f"large-{k}.bin"
    data = os.urandom(size)
    digest = sha256_bytes(data)
    write_file(d / name, data)
    del data
    cpu0 = (alice.cpu(), bob.cpu())
    wire0 = bob.wire("alice")
    alice.cli("share", d / name, "--with", "bob", "--mode", "revocable")
    t0 = time.perf_counter()
    t1 = wait_readable(bob.peer("alice") / name, limit=max(LONG, size / (5 * MIB)))
    secs = t1 - t0
    cpu1 = (alice.cpu(), bob.cpu())
    wire1 = bob.wire("alice")
    # Read back through bob's mount and compare (untimed).
    if sha256_file(bob.peer("alice") / name) != digest:
        raise Failed(f"{name} read back on bob differs from what alice wrote")
    alice.cli("recall", d / name, "--from", "bob")
    wait_gone(bob.peer("alice") / name)
    os.unlink(d / name)
    return {"mb_per_s": size / secs / 1e6, "secs": secs,
            "cpu_alice_s": cpu1[0] - cpu0[0], "cpu_bob_s": cpu1[1] - cpu0[1],
            "cpu_s": (cpu1[0] - cpu0[0]) + (cpu1[1] - cpu0[1]),
            "wire_in_bob": wire1[0] - wire0[0], "wire_out_bob": wire1[1] - wire0[1]}


def throughput(alice, bob, blobs_ref, work, size, rounds, res):
    ours, ref = [], []
    for k in range(rounds):
        # Interleaved, each going first every other round.
        order = ["ours", "ref"] if k % 2 == 0 else ["ref", "ours"]
        for which in order:
            if which == "ours":
                ours.append(ours_round(alice, bob, size, k))
                print(f"  {size // MIB} MiB shared: {ours[-1]['mb_per_s']:.1f} MB/s",
                      file=sys.stderr, flush=True)
            elif blobs_ref:
                ref.append(reference_round(blobs_ref, work, size, k))
                print(f"  {size // MIB} MiB by raw iroh-blobs: {ref[-1]['mb_per_s']:.1f} MB/s",
                      file=sys.stderr, flush=True)
    out = {"size": size, "rounds": rounds, "ours": ours, "reference": ref}
    mo = statistics.median(r["mb_per_s"] for r in ours)
    out["ours_mb_per_s"] = mo
    if ref:
        mr = statistics.median(r["mb_per_s"] for r in ref)
        out["reference_mb_per_s"] = mr
        out["ratio"] = mo / mr
    res["throughput"] = out


def many_files(alice, bob, count, res):
    """`count` files of 4 KiB in a shared folder: share -> every one reads back on bob."""
    d = alice.vault / "many"
    d.mkdir()
    bodies = [os.urandom(4096) for _ in range(count)]
    for i, b in enumerate(bodies):
        write_file(d / f"f{i:05}", b)
    cpu0 = (alice.cpu(), bob.cpu())
    wire0 = bob.wire("alice")
    alice.cli("share", d, "--with", "bob", "--mode", "revocable")
    t0 = time.perf_counter()
    seen = bob.peer("alice") / "many"
    check = deadline_after(max(LONG, count / 20))
    for i, b in enumerate(bodies):
        while not read_matches(seen / f"f{i:05}", b):
            check(f"{count} files to read back on bob ({i} so far)")
            time.sleep(POLL)
    secs = time.perf_counter() - t0
    cpu1 = (alice.cpu(), bob.cpu())
    wire1 = bob.wire("alice")
    listed = len(os.listdir(seen))
    if listed != count:
        raise Failed(f"bob lists {listed} files in the shared folder, not {count}")
    res["many_files"] = {"count": count, "secs": secs, "files_per_s": count / secs,
                         "cpu_alice_s": cpu1[0] - cpu0[0], "cpu_bob_s": cpu1[1] - cpu0[1],
                         "wire_in_bob": wire1[0] - wire0[0],
                         "wire_out_bob": wire1[1] - wire0[1]}
    alice.cli("recall", d, "--from", "bob")
    wait_gone(seen)
    shutil.rmtree(d)


def one_byte_edit(alice, bob, size, res):
    """A 1-byte edit in the middle of a shared `size` file: bytes on the wire until bob
    reads the new version."""
    d = alice.vault / "edit"
    d.mkdir()
    path = d / "large.bin"
    data = bytearray(os.urandom(size))
    write_file(path, data)
    alice.cli("share", path, "--with", "bob", "--mode", "revocable")
    seen = bob.peer("alice") / "large.bin"
    t0 = time.perf_counter()
    wait_readable(seen, limit=max(LONG, size / (5 * MIB)))
    first = time.perf_counter() - t0
    # Let the first transfer's tail (acknowledgements) pass before the counters are read.
    time.sleep(1.0)
    mid = size // 2
    new = bytes([data[mid] ^ 0xFF])
    a0, b0 = alice.wire("bob"), bob.wire("alice")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, new, mid)
    finally:
        os.close(fd)  # the edit is committed on close
    t0 = time.perf_counter()
    t1 = wait_readable(seen, limit=LONG, offset=mid, want=new)
    b1, a1 = bob.wire("alice"), alice.wire("bob")
    data[mid] = new[0]
    if sha256_file(seen) != sha256_bytes(data):
        raise Failed("the edited file read back on bob differs from alice's")
    res["one_byte_edit"] = {
        "size": size, "first_transfer_s": first, "edit_to_read_s": t1 - t0,
        "bob_in": b1[0] - b0[0], "bob_out": b1[1] - b0[1],
        "alice_out": a1[1] - a0[1], "alice_in": a1[0] - a0[0],
        # Both directions of the one connection, as bob counts them.
        "wire_total": (b1[0] - b0[0]) + (b1[1] - b0[1]),
    }
    alice.cli("recall", path, "--from", "bob")
    wait_gone(seen)
    del data
    os.unlink(path)


# ----- reporting ------------------------------------------------------------------------------

def fmt_bytes(n):
    if n >= MIB:
        return f"{n / MIB:.2f} MiB"
    if n >= 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n} B"


def ms(v):
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def size_label(n):
    return f"{n // GIB} GiB" if n >= GIB and n % GIB == 0 else f"{n // MIB} MiB"


def report(res, meta, out_dir):
    cfg = meta["config"]
    la = meta["load_average_1min"]
    lines = [f"# indras-fuse sharing benchmark ({meta['date']})", "",
             f"Machine: {meta['machine']}; 1-minute load average {la[0]:.2f} at the start, "
             f"{la[1]:.2f} at the end. Mode: {meta['mode']}. Command: `{meta['command']}`. "
             f"Commit: {meta['commit']}.", "",
             "Two mounts of the release binary on this machine, alice and bob, each with its "
             "own data dir, listening on 127.0.0.1 only (no relay), peered by `invite` and "
             "`peer add`. alice shares from `vault/`; bob reads under `peers/alice/`. Times run "
             "from the moment `indras-fuse share` (or alice's `close()`) returns until a fresh "
             "read on bob gives the new content; bob's view is polled every "
             f"{POLL * 1e3:.0f} ms. MB = 10^6 bytes.", ""]
    rows = []
    missed = []
    if "share_to_read" in res:
        q = res["share_to_read"]
        rows.append(("`share` returns → a read on bob (open, read to the end, as `cat` does) "
                     "gives the content (a new small file; "
                     "recalled after each run)", f"{q['n']}",
                     f"median {ms(q['median_ms'])} ms, p95 {ms(q['p95_ms'])} ms "
                     f"(min {ms(q['min_ms'])}, max {ms(q['max_ms'])})", "—", ""))
    if "share_command" in res:
        c, q = res["share_command"], res["share_invoked_to_read"]
        rows.append(("the same, from running `indras-fuse share` (its own run: median "
                     f"{ms(c['median_ms'])} ms, p95 {ms(c['p95_ms'])} ms)", f"{q['n']}",
                     f"median {ms(q['median_ms'])} ms, p95 {ms(q['p95_ms'])} ms "
                     f"(min {ms(q['min_ms'])}, max {ms(q['max_ms'])})", "—", ""))
    if "edit_to_read" in res:
        q = res["edit_to_read"]
        rows.append(("alice's edit (write + close) → bob's read shows it (a shared small file)",
                     f"{q['n']}", f"median {ms(q['median_ms'])} ms, p95 {ms(q['p95_ms'])} ms "
                     f"(min {ms(q['min_ms'])}, max {ms(q['max_ms'])})", "—", ""))
    if "throughput" in res:
        t = res["throughput"]
        sl = size_label(t["size"])
        spread = [r["mb_per_s"] for r in t["ours"]]
        cpu = statistics.median(r["cpu_s"] for r in t["ours"]) / (t["size"] / GIB)
        rows.append((f"{sl} shared: `share` returns → bob holds all of it (read back, "
                     "SHA-256 equal)", f"{len(t['ours'])}",
                     f"{t['ours_mb_per_s']:.0f} MB/s ({min(spread):.0f}–{max(spread):.0f}); "
                     f"both daemons' CPU {cpu:.2f} s/GiB", "—", ""))
        if t["reference"]:
            rs = [r["mb_per_s"] for r in t["reference"]]
            rcpu = statistics.median(r["cpu_s"] for r in t["reference"]) / (t["size"] / GIB)
            rows.append((f"the same {sl} by raw iroh-blobs 0.104, two processes on loopback, "
                         "fs store (`bench/blobs-ref`)", f"{len(rs)}",
                         f"{t['reference_mb_per_s']:.0f} MB/s ({min(rs):.0f}–{max(rs):.0f}); "
                         f"both processes' CPU {rcpu:.2f} s/GiB", "—", ""))
            ok = t["ratio"] >= GOAL_RATIO
            rows.append(("ratio: ours / raw iroh-blobs (medians)", "",
                         f"{t['ratio']:.2f}x", f"≥ {GOAL_RATIO}x", "yes" if ok else "**no**"))
            if not ok:
                missed.append(f"throughput: {t['ratio']:.2f}x the raw iroh-blobs reference "
                              f"(goal {GOAL_RATIO}x)")
        else:
            rows.append(("ratio: ours / raw iroh-blobs", "", "not measured (the reference "
                         "runs in full runs only)", f"≥ {GOAL_RATIO}x", "n/a"))
    if "many_files" in res:
        m = res["many_files"]
        rows.append((f"{m['count']:,} files of 4 KiB in a shared folder: `share` returns → "
                     "every one reads back on bob", "1",
                     f"{m['secs']:.2f} s ({m['files_per_s']:,.0f} files/s); "
                     f"{fmt_bytes(m['wire_in_bob'])} in to bob", "—", ""))
    if "one_byte_edit" in res:
        e = res["one_byte_edit"]
        ok = e["wire_total"] < GOAL_EDIT_WIRE
        rows.append((f"1-byte edit in the middle of a shared {size_label(e['size'])} file: "
                     "bytes on the wire until bob reads the new version (both directions)", "1",
                     f"{fmt_bytes(e['wire_total'])}: alice → bob {fmt_bytes(e['bob_in'])} "
                     f"(alice counts {fmt_bytes(e['alice_out'])} out), bob → alice "
                     f"{fmt_bytes(e['bob_out'])}; the edit showed on bob after "
                     f"{e['edit_to_read_s'] * 1e3:.0f} ms", "< 1 MiB",
                     "yes" if ok else "**no**"))
        if not ok:
            missed.append(f"1-byte edit: {fmt_bytes(e['wire_total'])} on the wire (goal under "
                          "1 MiB)")
    lines += ["| measure | runs | result | goal | met |", "|---|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows]
    lines.append("")
    if "throughput" in res:
        t = res["throughput"]
        lines += ["Per round (in run order, interleaved): ours " +
                  ", ".join(f"{r['mb_per_s']:.0f}" for r in t["ours"]) + " MB/s" +
                  (("; raw iroh-blobs " + ", ".join(f"{r['mb_per_s']:.0f}"
                                                    for r in t["reference"]) + " MB/s")
                   if t["reference"] else "") +
                  ". Ours: alice's daemon " +
                  ", ".join(f"{r['cpu_alice_s']:.2f}" for r in t["ours"]) +
                  " CPU s, bob's " + ", ".join(f"{r['cpu_bob_s']:.2f}" for r in t["ours"]) +
                  " CPU s, over " + ", ".join(f"{r['secs']:.2f}" for r in t["ours"]) +
                  " s of wall time, on 2 cores.", ""]
    if "one_byte_edit" in res:
        e = res["one_byte_edit"]
        lines += [f"The {size_label(e['size'])} file's first transfer took "
                  f"{e['first_transfer_s']:.2f} s ({e['size'] / e['first_transfer_s'] / 1e6:.0f}"
                  " MB/s). The counters are each side's UDP bytes of its connection with the "
                  "other (QUIC headers, acknowledgements and keep-alives included), read from "
                  "`.indra/sync-status.json` just before the edit and as soon as bob read the "
                  "new byte.", ""]
    if missed:
        lines += ["**Goals missed:** " + "; ".join(missed) + ".", ""]
    else:
        lines += ["Every goal measured in this run was met.", ""]
    if meta["failures"]:
        lines += ["Failed:", ""] + [f"- {f}" for f in meta["failures"]] + [""]
    lines.append(f"Sizes: {json.dumps(cfg)}.")
    text = "\n".join(lines) + "\n"
    name = f"sharing-{meta['commit']}"
    (out_dir / f"{name}.md").write_text(text)
    (out_dir / f"{name}.json").write_text(
        json.dumps({"meta": meta, "results": res}, indent=2) + "\n")
    print(text)
    return out_dir / f"{name}.md"


def git_commit():
    here = Path(__file__).resolve().parent.parent
    try:
        h = subprocess.run(["git", "-C", str(here), "rev-parse", "--short", "HEAD"],
                           capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True).stdout.strip()
        return h + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main():
    # A SIGTERM unwinds like Ctrl-C, so the `finally` below unmounts both.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--binary", required=True, help="the indras-fuse release binary")
    ap.add_argument("--reference", help="the blobs-ref binary (bench/blobs-ref); without it "
                                        "the raw iroh-blobs reference is not measured")
    ap.add_argument("--work", default="/var/tmp/indras-bench-sharing")
    ap.add_argument("--out", required=True)
    ap.add_argument("--command", default="bench/run.sh --only sharing")
    args = ap.parse_args()
    quick = args.quick
    cfg = {
        "latency_runs": 10 if quick else 50,
        "large_size": 32 * MIB if quick else 256 * MIB,
        "large_rounds": 1 if quick else 3,
        "small_files": 1000 if quick else 10000,
        "edit_size": 256 * MIB if quick else GIB,
    }
    work = Path(args.work)
    for name in ("alice", "bob"):  # a run that was killed may have left its mounts
        unmount(str(work / name / "mnt"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    res, failures = {}, []
    load_start = os.getloadavg()[0]
    alice, bob = pair(args.binary, work)
    try:
        alice.start()
        bob.start()
        peer_up(alice, bob)
        steps = [
            ("latencies", lambda: latencies(alice, bob, cfg["latency_runs"], res)),
            ("throughput", lambda: throughput(alice, bob, args.reference, work,
                                              cfg["large_size"], cfg["large_rounds"], res)),
            ("many files", lambda: many_files(alice, bob, cfg["small_files"], res)),
            ("1-byte edit", lambda: one_byte_edit(alice, bob, cfg["edit_size"], res)),
        ]
        for what, step in steps:
            print(f"sharing: {what}", file=sys.stderr, flush=True)
            t = time.monotonic()
            try:
                step()
            except (Failed, OSError) as e:
                failures.append(f"{what}: {type(e).__name__}: {e}")
                print(f"FAILED: {failures[-1]}\nalice's log:\n{alice.log_tail()}\n"
                      f"bob's log:\n{bob.log_tail()}", file=sys.stderr, flush=True)
            print(f"sharing: {what} took {time.monotonic() - t:.0f} s", file=sys.stderr,
                  flush=True)
    except Failed as e:
        failures.append(f"setup: {e}")
        print(f"FAILED: {failures[-1]}", file=sys.stderr, flush=True)
    finally:
        bob.stop()
        alice.stop()
        shutil.rmtree(work, ignore_errors=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_facts(),
        # Other work on the machine shares its cores with both mounts and the reference.
        "load_average_1min": [round(load_start, 2), round(os.getloadavg()[0], 2)],
        "mode": "quick" if quick else "full",
        "command": args.command,
        "commit": git_commit(),
        "config": cfg,
        "failures": failures,
    }
    report(res, meta, out_dir)
    if failures:
        sys.exit("the sharing benchmark failed (see above)")


if __name__ == "__main__":
    main()
