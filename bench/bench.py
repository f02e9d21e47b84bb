#!/usr/bin/env python3
"""indras-fuse against tmpfs, the bare disk and other FUSE filesystems, in one run.

Every target keeps its data on the same disk (tmpfs excepted), and the targets are interleaved
round by round so that drift on the machine hits all of them alike. Results: a Markdown table
with medians and spreads, the same data as JSON, and a PNG chart of indras-fuse's ratios.

With --baseline BINARY, an older build of indras-fuse runs as one more target,
indras-fuse@base, in the same rounds and the same way as indras-fuse (its own mount and data
directory); it is not one of the "other FUSE filesystems". The report then gives indras-fuse
relative to it for every workload and flags each one below 0.95x.

With --trace-requests, indras-fuse runs each small-file phase once more in the first round
with the kernel's fuse tracepoints on (bench/trace.py), and the report gives the FUSE requests
per file of each phase, per opcode, with their median latency.

Run it through bench/run.sh, which installs what it needs.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

# bench/, beside this file (its trace.py comes before the standard library's module of that name)
import bigdir
import fsyncs
import smallfiles
import trace as fusetrace

MIB = 1 << 20
GIB = 1 << 30

# The target that runs the --baseline binary, and the ratio to it below which a workload is
# flagged as a regression.
BASE = "indras-fuse@base"
BASE_FLOOR = 0.95

# metric -> (label, unit, higher is better, kind: "meta" small-file/metadata or "data").
# {seq}, {dedup} and {bigdir} in a label are the run's sizes (smaller in --quick mode).
METRICS = {
    "seq_write": ("sequential write {seq} (1 MiB blocks) + fsync", "MB/s", True, "data"),
    "seq_read_cold": ("sequential read, cold cache", "MB/s", True, "data"),
    "seq_read_warm": ("sequential read, warm cache", "MB/s", True, "data"),
    "rand_read_4k": ("4 KiB random read", "IOPS", True, "data"),
    "small_create": ("small files: create + write 4 KiB + close", "files/s", True, "meta"),
    "small_stat": ("small files: stat", "files/s", True, "meta"),
    "small_read": ("small files: open + read + close", "files/s", True, "meta"),
    "small_unlink": ("small files: unlink", "files/s", True, "meta"),
    "tar_x": ("tar x of a source tree", "s", False, "meta"),
    "rm_rf": ("rm -rf of that tree", "s", False, "meta"),
    "git_clone": ("git clone of a local repository", "s", False, "meta"),
    "overwrite_4k": ("4 KiB overwrite + close inside a {seq} file", "ops/s", True, "data"),
    "close_after_1g": ("close() after a {seq} write", "ms", False, "data"),
    "dedup_growth": ("store growth for 4 identical {dedup} copies", "x one copy", False, "data"),
    "edit_growth": ("store growth for 100 saves of a 1-byte edit to a 10 MiB file",
                    "x (10 MiB + 100 x 256 KiB)", False, "data"),
    "cpu_per_gib": ("daemon CPU seconds per GiB written, deferred work included", "s/GiB", False,
                    "data"),
    "sqlite_wal": ("sqlite WAL, synchronous=FULL: transactions of 1 small INSERT", "tx/s", True,
                   "data"),
    "sqlite_rollback": ("sqlite rollback journal (DELETE), synchronous=FULL: the same",
                        "tx/s", True, "data"),
    "append_fdatasync": ("append 4 KiB + fdatasync to one file", "ops/s", True, "data"),
    "bigdir_create": ("create {bigdir} empty files in one folder", "s", False, "meta"),
    "bigdir_unlink_listing": ("unlink every other one while another process lists the folder",
                              "s", False, "meta"),
}


def sh(cmd, **kw):
    return subprocess.run(cmd, shell=isinstance(cmd, str), check=True, **kw)


def is_mounted(path):
    path = os.path.realpath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def wait_mounted(path, proc=None, limit=30):
    start = time.time()
    while not is_mounted(path):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount of {path} exited with {proc.returncode}")
        if time.time() - start > limit:
            raise RuntimeError(f"{path} did not mount")
        time.sleep(0.05)


def unmount(path):
    for _ in range(50):
        if not is_mounted(path):
            return
        subprocess.run(["umount", path], stderr=subprocess.DEVNULL)
        if is_mounted(path):
            time.sleep(0.1)
    subprocess.run(["umount", "-l", path], stderr=subprocess.DEVNULL)


def stop_daemon(proc, mnt):
    """Asks an indras-fuse daemon to commit and unmount (SIGTERM), kills it after 2 minutes,
    and makes sure nothing stays mounted at mnt."""
    if proc and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    unmount(str(mnt))


def dir_bytes(path):
    """Allocated bytes under path (du -sk)."""
    out = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True).stdout
    return int(out.split()[0]) * 1024 if out else 0


def drop_caches():
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def proc_cpu_seconds(pid):
    if not pid:
        return None
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def machine_facts():
    return (f"{os.cpu_count()} cores, "
            f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') // GIB} GiB, "
            f"kernel {os.uname().release}")


class Target:
    """A filesystem under test: where to work, what backs it, which process serves it."""

    fuse = False

    def __init__(self, name, root):
        self.name = name
        self.root = Path(root) / name
        self.proc = None

    @property
    def work(self):
        return self.mnt

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def backing(self):
        return self.mnt

    def stored(self, path, size):
        """Whether the file at `path` (on the mount) has reached the backing store whole.
        Only a target that defers writes past close (rclone) can say no."""
        return True

    def start(self):
        raise NotImplementedError

    def stop(self):
        pass


class Tmpfs(Target):
    def start(self):
        self.mnt = self.root / "mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        sh(["mount", "-t", "tmpfs", "-o", "size=8g", "bench-tmpfs", str(self.mnt)])

    def stop(self):
        unmount(str(self.mnt))


class Disk(Target):
    def start(self):
        self.mnt = self.root / "dir"
        self.mnt.mkdir(parents=True, exist_ok=True)


class FuseTarget(Target):
    fuse = True

    def stop(self):
        if self.proc and self.proc.poll() is None:
            unmount(str(self.mnt))
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        unmount(str(self.mnt))


class Bindfs(FuseTarget):
    def start(self):
        self.back = self.root / "back"
        self.mnt = self.root / "mnt"
        for d in (self.back, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["bindfs", "-f", str(self.back), str(self.mnt)])
        wait_mounted(self.mnt, self.proc)

    def backing(self):
        return self.back


class Gocryptfs(FuseTarget):
    def start(self):
        self.cipher = self.root / "cipher"
        self.mnt = self.root / "mnt"
        for d in (self.cipher, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        if not (self.cipher / "gocryptfs.conf").exists():
            sh(["gocryptfs", "-init", "-quiet", "-extpass", "echo bench", str(self.cipher)],
               stdout=subprocess.DEVNULL)
        self.proc = subprocess.Popen(["gocryptfs", "-fg", "-quiet", "-extpass", "echo bench",
                                      str(self.cipher), str(self.mnt)])
        wait_mounted(self.mnt, self.proc)

    def backing(self):
        return self.cipher


class Rclone(FuseTarget):
    def start(self):
        self.back = self.root / "back"
        self.cache = self.root / "cache"
        self.mnt = self.root / "mnt"
        for d in (self.back, self.cache, self.mnt):
            d.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(["rclone", "mount", str(self.back), str(self.mnt),
                                      "--vfs-cache-mode", "full", "--cache-dir", str(self.cache),
                                      "--config", "/dev/null", "--log-level", "ERROR"])
        wait_mounted(self.mnt, self.proc)

    def backing(self):
        return self.back

    def stored(self, path, size):
        # The VFS cache uploads a closed file to the backing directory later
        # (--vfs-write-back, 5 s by default).
        try:
            return (self.back / Path(path).relative_to(self.mnt)).stat().st_size == size
        except OSError:
            return False


class Indras(FuseTarget):
    def __init__(self, name, root, binary, extra=()):
        super().__init__(name, root)
        self.binary = binary
        self.extra = list(extra)

    def start(self):
        self.data = self.root / "data"
        self.mnt = self.root / "mnt"
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.log = open(self.root / "daemon.log", "a")
        self.proc = subprocess.Popen([self.binary, "mount", str(self.mnt), "--player", "bench",
                                      "--data-dir", str(self.data), "--foreground",
                                      "--log-level", "warn", *self.extra], stderr=self.log)
        wait_mounted(self.mnt, self.proc)

    @property
    def work(self):
        return self.mnt / "vault"

    def backing(self):
        return self.data

    def stop(self):
        stop_daemon(self.proc, self.mnt)
        self.log.close()


# ----- workloads ------------------------------------------------------------------------------

_CONTENT = {}


def content(seed, size):
    """`size` random bytes, the same for the same seed within one run. Every block differs,
    so a deduplicating store cannot shrink the data (a repeated block with a counter in
    front would dedup in a content-defined chunker), and generating it stays out of the
    timed part."""
    key = (seed, size)
    if key not in _CONTENT:
        _CONTENT[key] = os.urandom(size)
    return memoryview(_CONTENT[key])


def write_file(path, size, block=MIB, fsync=True, seed=1):
    data = content(seed, size)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for off in range(0, size, block):
            os.write(fd, data[off:off + block])
        if fsync:
            os.fsync(fd)
        t = time.perf_counter()
        os.close(fd)
        return time.perf_counter() - t
    except BaseException:
        os.close(fd)
        raise


def remove_tree(path, attempts=20):
    """`rm -rf`, retried: rclone's VFS can fail a directory removal with EIO while its
    uploads of the files just extracted are still being cancelled. The time spent retrying
    counts, as it would for a user."""
    for i in range(attempts):
        try:
            shutil.rmtree(path)
            return
        except OSError as e:
            if i == attempts - 1:
                raise
            print(f"rm -rf {path}: {e}; retrying", file=sys.stderr, flush=True)
            time.sleep(0.25)


def read_file(path, block=MIB):
    fd = os.open(path, os.O_RDONLY)
    n = 0
    try:
        while True:
            b = os.read(fd, block)
            if not b:
                break
            n += len(b)
    finally:
        os.close(fd)
    return n


def dependency_sources(repo):
    lock = (repo / "Cargo.lock").read_text()
    registry = sorted(Path.home().glob(".cargo/registry/src/index.crates.io-*"))
    out = []
    for name, version in re.findall(r'name = "([^"]+)"\nversion = "([^"]+)"', lock):
        for reg in registry:
            d = reg / f"{name}-{version}"
            if d.is_dir() and not name.startswith("windows") and dir_bytes(d) < 2 * MIB:
                out.append(d)
                break
    if not out:
        raise RuntimeError("no dependency sources: run `cargo build` first")
    return out


def cpu_after_deferred_work(t, path, size, limit=60):
    """The daemon's CPU seconds once the write of `path` is in the backing store and the
    daemon has gone quiet: work deferred past close (rclone's upload from its cache) is part
    of the cost of writing. None if that does not happen within `limit` seconds."""
    deadline = time.time() + limit
    while not t.stored(path, size):
        if time.time() > deadline:
            return None
        time.sleep(0.1)
    last = proc_cpu_seconds(t.pid)
    while last is not None and time.time() < deadline:
        time.sleep(0.5)
        now = proc_cpu_seconds(t.pid)
        if now is None or now - last < 0.02:
            return now
        last = now
    return None


def run_workloads(t, cfg, tree_tar, git_src, res):
    """Runs every workload on a started target, recording each figure in `res` as it is
    measured (so a failure keeps the figures before it)."""
    base = t.work / f"round-{cfg['round']}"
    base.mkdir(parents=True, exist_ok=True)
    size = cfg["seq_size"]

    # sequential write + fsync, with the daemon's CPU time
    big = base / "big.bin"
    cpu0 = proc_cpu_seconds(t.pid)
    t0 = time.perf_counter()
    write_file(big, size)
    dt = time.perf_counter() - t0
    res["seq_write"] = size / dt / 1e6
    cpu1 = cpu_after_deferred_work(t, big, size)
    if cpu0 is not None and cpu1 is not None:
        res["cpu_per_gib"] = (cpu1 - cpu0) / (size / GIB)

    # sequential read, cold and warm
    if drop_caches():
        t0 = time.perf_counter()
        read_file(big)
        res["seq_read_cold"] = size / (time.perf_counter() - t0) / 1e6
    read_file(big)
    t0 = time.perf_counter()
    read_file(big)
    res["seq_read_warm"] = size / (time.perf_counter() - t0) / 1e6

    # 4 KiB random reads
    rnd = random.Random(7)
    fd = os.open(big, os.O_RDONLY)
    n = cfg["rand_reads"]
    t0 = time.perf_counter()
    for _ in range(n):
        os.pread(fd, 4096, rnd.randrange(0, size // 4096) * 4096)
    res["rand_read_4k"] = n / (time.perf_counter() - t0)
    os.close(fd)

    # 4 KiB overwrite + close inside the big file: as many as fit in a time budget
    data = random.Random(3).randbytes(4096)
    t0 = time.perf_counter()
    done = 0
    while done < cfg["overwrites"] and time.perf_counter() - t0 < cfg["overwrite_budget"]:
        fd = os.open(big, os.O_WRONLY)
        os.pwrite(fd, data, rnd.randrange(0, size // 4096) * 4096)
        os.close(fd)
        done += 1
    res["overwrite_4k"] = done / (time.perf_counter() - t0)
    os.unlink(big)

    # close() after a 1 GiB write (no fsync)
    closing = base / "close.bin"
    res["close_after_1g"] = write_file(closing, size, fsync=False, seed=9) * 1e3
    os.unlink(closing)

    # small files
    small = base / "small"
    small.mkdir()
    files = smallfiles.files_in(small, cfg["small_files"])
    for phase in smallfiles.PHASES:
        res[f"small_{phase}"] = len(files) / smallfiles.run_phase(files, phase)

    # tar x of a source tree, then rm -rf
    dest = base / "tree"
    dest.mkdir()
    t0 = time.perf_counter()
    sh(["tar", "-xf", str(tree_tar), "-C", str(dest)])
    res["tar_x"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    remove_tree(dest)
    res["rm_rf"] = time.perf_counter() - t0

    # git clone
    t0 = time.perf_counter()
    sh(["git", "clone", "-q", "--no-local", str(git_src), str(base / "clone")])
    res["git_clone"] = time.perf_counter() - t0
    shutil.rmtree(base / "clone")

    # dedup: 4 identical copies
    os.sync()
    before = dir_bytes(t.backing())
    one = base / "copy0"
    write_file(one, cfg["dedup_size"], seed=11)
    os.sync()
    time.sleep(0.5)
    after_one = dir_bytes(t.backing())
    for i in range(1, 4):
        write_file(base / f"copy{i}", cfg["dedup_size"], seed=11)
    os.sync()
    time.sleep(1.5)  # let lazy writers (rclone's uploads, the store's sync) land
    after_four = dir_bytes(t.backing())
    # A target whose backing store has not received the data yet (rclone uploads from its
    # cache later) cannot be measured this way.
    if after_one > before:
        res["dedup_growth"] = (after_four - before) / (after_one - before)
    for i in range(4):
        os.unlink(base / f"copy{i}")

    # 100 saves of a 1-byte edit to a 10 MiB file: what history costs (each save is a
    # version), against one copy plus 256 KiB per save
    edited = base / "edited.bin"
    os.sync()
    before = dir_bytes(t.backing())
    write_file(edited, 10 * MIB, seed=13)
    rnd = random.Random(5)
    for i in range(100):
        fd = os.open(edited, os.O_WRONLY)
        os.pwrite(fd, bytes([i]), rnd.randrange(0, 10 * MIB))
        os.fsync(fd)
        os.close(fd)
    os.sync()
    time.sleep(1.5)
    res["edit_growth"] = (dir_bytes(t.backing()) - before) / (10 * MIB + 100 * 256 * 1024)
    os.unlink(edited)

    # durable small writes: sqlite transactions (WAL, then rollback journal), 4 KiB appends
    # with fdatasync; each removes its database or file
    durable = base / "durable"
    durable.mkdir()
    for w in fsyncs.WORKLOADS:
        res[w] = cfg["fsync_ops"] / fsyncs.run(durable, w, cfg["fsync_ops"])
    remove_tree(durable)

    # a big folder: create its files, then unlink every other one while a second process
    # lists the folder (a wrong listing raises); how many listings it made is extra
    # information, not a metric
    folder = base / "bigdir"
    folder.mkdir()
    res["bigdir_create"] = bigdir.create(folder, cfg["bigdir_files"])
    res["bigdir_unlink_listing"], res["bigdir_listings"] = bigdir.unlink_listing(
        folder, cfg["bigdir_files"])
    remove_tree(folder)
    shutil.rmtree(base, ignore_errors=True)


def trace_small_files(t, n):
    """Runs each small-file phase once more on n files in target t, with the kernel's fuse
    tracepoints on and only t's requests kept: per phase and opcode, the requests per file
    and their median latency."""
    folder = t.work / "traced"
    folder.mkdir()
    files = smallfiles.files_in(folder, n)
    conn = fusetrace.connection(t.mnt)
    phases = {}
    for phase in smallfiles.PHASES:
        tracing = fusetrace.start()
        try:
            smallfiles.run_phase(files, phase)
            time.sleep(0.2)  # the kernel sends RELEASE after close() has returned
        finally:
            latencies = fusetrace.stop(tracing, conn)
        phases[phase] = {
            op.removeprefix("FUSE_"): {"count": len(lat), "per_file": len(lat) / n,
                                       "p50_us": round(statistics.median(lat) * 1e6, 1)}
            for op, lat in sorted(latencies.items(), key=lambda kv: (-len(kv[1]), kv[0]))}
    remove_tree(folder)
    return {"target": t.name, "files": n, "phases": phases}


# ----- reporting ------------------------------------------------------------------------------

def summarize(samples):
    out = {}
    for target, runs in samples.items():
        out[target] = {}
        for m in METRICS:
            vals = [r[m] for r in runs if m in r]
            if vals:
                out[target][m] = {"median": statistics.median(vals), "min": min(vals),
                                  "max": max(vals), "n": len(vals)}
    return out


def fmt(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def count(v):
    return "n/a" if v is None else f"{v:g}"


def ratio(m, ours, theirs):
    """How many times better indras-fuse is (>1 is better)."""
    if ours is None or theirs is None or ours == 0 or theirs == 0:
        return None
    higher = METRICS[m][2]
    return ours / theirs if higher else theirs / ours


def size_label(n):
    return f"{n // GIB} GiB" if n >= GIB and n % GIB == 0 else f"{n // MIB} MiB"


def report(summary, targets, meta, out_dir, listings, traced):
    """listings: per target, the lister's full listings in each round of
    bigdir_unlink_listing; traced: trace_small_files()'s result, or None."""
    others = [t for t in targets if t not in ("tmpfs", "disk", "indras-fuse", BASE)]
    has_base = BASE in targets
    sizes = {"seq": size_label(meta["config"]["seq_size"]),
             "dedup": size_label(meta["config"]["dedup_size"]),
             "bigdir": f"{meta['config']['bigdir_files']:,}"}
    rows = []
    for m, (label, unit, higher, kind) in METRICS.items():
        label = label.format(**sizes)
        med = {t: summary.get(t, {}).get(m, {}).get("median") for t in targets}
        ours = med.get("indras-fuse")
        candidates = [(med[o], o) for o in others if med.get(o) is not None]
        best = None
        if candidates:
            best = (max if higher else min)(candidates)
        rows.append({
            "metric": m, "label": label, "unit": unit, "higher_is_better": higher, "kind": kind,
            "median": med,
            "spread": {t: [summary.get(t, {}).get(m, {}).get("min"),
                           summary.get(t, {}).get(m, {}).get("max")] for t in targets},
            "ratio_vs_tmpfs": ratio(m, ours, med.get("tmpfs")),
            "ratio_vs_disk": ratio(m, ours, med.get("disk")),
            "best_other_fuse": best[1] if best else None,
            "ratio_vs_best_other_fuse": ratio(m, ours, best[0]) if best else None,
        })
        if has_base:
            rbase = ratio(m, ours, med.get(BASE))
            rows[-1]["ratio_vs_baseline"] = rbase
            rows[-1]["below_baseline_floor"] = rbase is not None and rbase < BASE_FLOOR
    data = {"meta": meta, "targets": targets, "rows": rows,
            "bigdir_listings": {t: {"rounds": v, "median": statistics.median(v) if v else None}
                                for t, v in listings.items()},
            "requests_per_file": traced}
    if has_base:
        data["baseline"] = {
            "target": BASE, "binary": meta["baseline"], "floor": BASE_FLOOR,
            "below_floor": [r["metric"] for r in rows if r["below_baseline_floor"]],
            "not_compared": [r["metric"] for r in rows if r["ratio_vs_baseline"] is None],
        }
    (out_dir / "results.json").write_text(json.dumps(data, indent=2) + "\n")

    lines = [f"# indras-fuse benchmark ({meta['date']})", "",
             f"Machine: {meta['machine']}. Rounds: {meta['rounds']} (median, spread min–max). "
             f"Mode: {meta['mode']}. Command: `{meta['command']}`.", "",
             "Ratios are indras-fuse relative to the other target, oriented so that > 1 means "
             "indras-fuse is better (faster, or smaller for times and growth).", ""]
    if has_base:
        lines += [f"{BASE} is the baseline build `{meta['baseline']}`, run in the same rounds "
                  "as indras-fuse; it is not counted among the other FUSE filesystems. ×base is "
                  f"indras-fuse relative to it (> 1: the new build is better); **bold** marks a "
                  f"workload below {BASE_FLOOR}x." +
                  (" With one round, a flag can be run-to-run noise." if meta["rounds"] == 1
                   else ""), ""]
    head = ("| workload | unit | " + " | ".join(targets) +
            " | ×tmpfs | ×disk | ×best other FUSE |")
    head += " ×base |" if has_base else ""
    lines += [head, "|" + "---|" * (len(targets) + 5 + has_base)]
    for r in rows:
        cells = []
        for t in targets:
            med = r["median"].get(t)
            lo, hi = r["spread"][t]
            cells.append(fmt(med) if med is None or lo is None or lo == hi
                         else f"{fmt(med)} ({fmt(lo)}–{fmt(hi)})")
        rt = r["ratio_vs_tmpfs"]
        rd = r["ratio_vs_disk"]
        rb = r["ratio_vs_best_other_fuse"]
        lines.append(f"| {r['label']} | {r['unit']} | " + " | ".join(cells) +
                     f" | {fmt(rt)} | {fmt(rd)} | {fmt(rb)}" + (f" ({r['best_other_fuse']})" if rb else "") + " |"
                     + (f" {base_cell(r)} |" if has_base else ""))
    if has_base:
        b = data["baseline"]
        below = [f"{r['metric']} ({fmt(r['ratio_vs_baseline'])}x)" for r in rows
                 if r["below_baseline_floor"]]
        lines += ["", "Against the baseline: " +
                  (f"below {BASE_FLOOR}x: " + ", ".join(below) + "." if below
                   else f"no workload below {BASE_FLOOR}x.") +
                  (" Not compared (a figure is missing): " + ", ".join(b["not_compared"]) + "."
                   if b["not_compared"] else "")]
    lines += ["", "Full listings the second process completed during bigdir_unlink_listing "
                  "(median): " + ", ".join(f"{t} {count(data['bigdir_listings'][t]['median'])}"
                                           for t in targets) + "."]
    if traced:
        lines += requests_table(traced)
    if meta["failures"]:
        lines += ["", "Failed workloads (the rest of that target's round is missing from the "
                      "medians):", ""] + [f"- round {f['round']}, {f['target']}: {f['error']}"
                                          for f in meta["failures"]]
    (out_dir / "results.md").write_text("\n".join(lines) + "\n")
    chart(rows, out_dir / "ratios.png")
    print("\n".join(lines))


def requests_table(traced):
    """The Markdown section for trace_small_files()'s result."""
    lines = ["", f"## FUSE requests per file, small-file phases ({traced['target']})", "",
             f"Each phase run once more on {traced['files']:,} files in the first round, with "
             "the kernel's fuse tracepoints on (bench/trace.py). p50 is a request's median "
             "latency, from the kernel queuing it to the daemon's reply.", "",
             "| phase | opcode | requests | per file | p50 µs |", "|---|---|---|---|---|"]
    for phase, ops in traced["phases"].items():
        for op, v in ops.items():
            lines.append(f"| {phase} | {op} | {v['count']:,} | {v['per_file']:.2f} | "
                         f"{v['p50_us']:.0f} |")
        total = sum(v["count"] for v in ops.values())
        lines.append(f"| {phase} | all | {total:,} | {total / traced['files']:.2f} | |")
    return lines


def base_cell(r):
    v = r["ratio_vs_baseline"]
    return f"**{fmt(v)}**" if r["below_baseline_floor"] else fmt(v)


def chart(rows, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib missing: no chart", file=sys.stderr)
        return
    labels = [r["metric"] for r in rows]
    vt = [r["ratio_vs_tmpfs"] or 0 for r in rows]
    vb = [r["ratio_vs_best_other_fuse"] or 0 for r in rows]
    series = [(vt, "indras-fuse / tmpfs"), (vb, "indras-fuse / best other FUSE")]
    if "ratio_vs_baseline" in rows[0]:
        series.append(([r["ratio_vs_baseline"] or 0 for r in rows],
                       f"indras-fuse / baseline ({BASE})"))
    fig, ax = plt.subplots(figsize=(11, 5.5))
    x = range(len(labels))
    w = 0.8 / len(series)
    for k, (vals, label) in enumerate(series):
        ax.bar([i + (k - (len(series) - 1) / 2) * w for i in x], vals, width=w, label=label)
    ax.axhline(1.0, color="black", linewidth=0.8)
    if len(series) == 3:
        ax.axhline(BASE_FLOOR, color="red", linewidth=0.8, linestyle="--")
    ax.set_yscale("log")
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=35, ha="right")
    ax.set_ylabel("ratio (> 1: indras-fuse better)")
    ax.legend()
    ax.set_title("indras-fuse relative to tmpfs and the best of bindfs, gocryptfs, rclone"
                 + (", and to its baseline build" if len(series) == 3 else ""))
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    # A SIGTERM unwinds like Ctrl-C, so every target's `finally` unmounts it.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="small sizes, one round (a smoke test)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/var/tmp/indras-bench")
    ap.add_argument("--binary", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--targets", default="tmpfs,disk,bindfs,gocryptfs,rclone,indras-fuse")
    ap.add_argument("--baseline", metavar="BINARY",
                    help=f"an older indras-fuse build, run as one more target ({BASE}) in the "
                         f"same rounds; the report compares indras-fuse with it and flags "
                         f"workloads below {BASE_FLOOR}x")
    ap.add_argument("--trace-requests", action="store_true",
                    help="run each small-file phase once more on indras-fuse (first round) "
                         "under the kernel's fuse tracepoints and report the FUSE requests "
                         "per file, per opcode, with their median latency")
    ap.add_argument("--baseline-args", default="",
                    help="extra mount options for the baseline target, e.g. \"--keep none\" "
                         "with --baseline the same binary, to measure what history costs")
    args = ap.parse_args()
    if args.baseline:
        args.baseline = os.path.abspath(args.baseline)
        if not os.access(args.baseline, os.X_OK):
            ap.error(f"--baseline {args.baseline}: not an executable file")

    quick = args.quick
    rounds = 1 if quick else args.rounds
    cfg = {
        "seq_size": 64 * MIB if quick else GIB,
        "rand_reads": 2000 if quick else 20000,
        "overwrites": 20 if quick else 2000,
        "overwrite_budget": 3.0 if quick else 5.0,
        "small_files": 500 if quick else 10000,
        "dedup_size": 16 * MIB if quick else 256 * MIB,
        "fsync_ops": 200 if quick else 5000,
        "bigdir_files": 2000 if quick else 50000,
    }
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    # a real source tree to untar, and a repository to clone
    git_src = Path(__file__).resolve().parent.parent
    tree_tar = work / "tree.tar"
    # A real source tree: this project's locked dependencies, as cargo unpacked them (the
    # Windows bindings and crates over 2 MiB left out, to bound the run). Symlinks are
    # dereferenced: rclone mount cannot create them.
    with tarfile.open(tree_tar, "w", dereference=True) as tf:
        for d in dependency_sources(git_src):
            tf.add(d, arcname=d.name)

    makers = {
        "tmpfs": lambda: Tmpfs("tmpfs", work),
        "disk": lambda: Disk("disk", work),
        "bindfs": lambda: Bindfs("bindfs", work),
        "gocryptfs": lambda: Gocryptfs("gocryptfs", work),
        "rclone": lambda: Rclone("rclone", work),
        "indras-fuse": lambda: Indras("indras-fuse", work, args.binary),
    }
    if args.baseline:
        makers[BASE] = lambda: Indras(BASE, work, args.baseline, args.baseline_args.split())
    names = [n for n in args.targets.split(",") if n in makers]
    if args.baseline and BASE not in names:
        # right after indras-fuse, so that the two run back to back in each round
        names.insert(names.index("indras-fuse") + 1 if "indras-fuse" in names else len(names),
                     BASE)
    trace_requests = args.trace_requests
    if trace_requests:
        try:
            if "indras-fuse" not in names:
                raise fusetrace.Unavailable("indras-fuse is not among the targets")
            fusetrace.tracing_dir()
        except fusetrace.Unavailable as e:
            print(f"--trace-requests: skipped: {e}", file=sys.stderr, flush=True)
            trace_requests = False
    traced = None
    samples = {n: [] for n in names}
    failures = []
    for rnd in range(rounds):
        order = names[rnd % len(names):] + names[:rnd % len(names)]
        if BASE in order and "indras-fuse" in order:
            # every other round the baseline goes first, so neither build always follows the
            # other (the rotation alone may already have put them either way round)
            i, j = order.index("indras-fuse"), order.index(BASE)
            if (j < i) != bool(rnd % 2):
                order[i], order[j] = order[j], order[i]
        for name in order:
            t = makers[name]()
            print(f"round {rnd + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
            res = {}
            try:
                t.start()
                run_workloads(t, dict(cfg, round=rnd), tree_tar, git_src, res)
                if trace_requests and name == "indras-fuse" and traced is None:
                    traced = trace_small_files(t, cfg["small_files"])
            except Exception as e:  # noqa: BLE001 - a failing target must not end the run
                # The round keeps what it measured before the failure, and the report says so.
                failures.append({"round": rnd + 1, "target": name,
                                 "error": f"{type(e).__name__}: {e}"})
                print(f"FAILED: round {rnd + 1}, {name}: {failures[-1]['error']}",
                      file=sys.stderr, flush=True)
            finally:
                samples[name].append(res)
                t.stop()
                shutil.rmtree(t.root, ignore_errors=True)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine_facts(),
        "rounds": rounds,
        "mode": "quick" if quick else "full",
        "command": "bench/run.sh" + (" --quick" if quick else "") +
                   (f" --baseline {args.baseline}" if args.baseline else "") +
                   (f" --baseline-args '{args.baseline_args}'" if args.baseline_args else "") +
                   (" --trace-requests" if args.trace_requests else "") +
                   (f" --targets {args.targets}" if args.targets != ap.get_default("targets")
                    else ""),
        "baseline": args.baseline,
        "config": cfg,
        "failures": failures,
    }
    listings = {n: [r["bigdir_listings"] for r in runs if "bigdir_listings" in r]
                for n, runs in samples.items()}
    report(summarize(samples), names, meta, out_dir, listings, traced)
    shutil.rmtree(work, ignore_errors=True)
    # Other filesystems' failures are reported and tolerated; ours fail the run.
    if any(f["target"] == "indras-fuse" for f in failures):
        sys.exit("indras-fuse failed a workload (see above)")


if __name__ == "__main__":
    main()
