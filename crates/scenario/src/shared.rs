//! What every Lua state of one scenario run shares: the deadline, cancellation, the step
//! stack, and the registry of `indras-fuse` daemons this run started. The registry is the
//! one place that signals, reaps and detaches daemons, so the timeout watchdog can take every
//! mount away even while the scenario thread is blocked in a system call.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// Why a running script must stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Interrupt {
    /// The scenario's deadline passed.
    Timeout,
    /// The scenario (or a worker group) was cancelled: another part failed.
    Cancelled,
}

impl Interrupt {
    pub(crate) fn message(self, shared: &Shared) -> String {
        match self {
            Interrupt::Timeout => format!("timed out after {}", secs(shared.timeout)),
            Interrupt::Cancelled => "cancelled".to_owned(),
        }
    }
}

/// `300s`, `0.5s`.
pub(crate) fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A daemon this run started.
#[derive(Debug)]
struct Daemon {
    child: Child,
    /// The player, for messages.
    player: String,
    mountpoint: PathBuf,
    exit: Option<ExitStatus>,
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// A vault this run has mounted at some point: for the final checks and the failure report.
#[derive(Clone, Debug)]
pub(crate) struct VaultRecord {
    pub player: String,
    pub mountpoint: PathBuf,
    pub log: PathBuf,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub start: Instant,
    pub deadline: Instant,
    pub timeout: Duration,
    cancelled: AtomicBool,
    timed_out: AtomicBool,
    /// The `indras-fuse` binary.
    pub binary: PathBuf,
    /// This run's temp dir: data dirs, mount points and daemon logs live here.
    pub tmp: PathBuf,
    /// The chunk name Lua reports in locations (`@name.lua`).
    pub chunk_name: String,
    /// The script's directory, for `require`.
    pub script_dir: Option<PathBuf>,
    pub source: Arc<str>,
    pub progress: bool,
    pub steps_done: AtomicUsize,
    step_stack: Mutex<Vec<String>>,
    daemons: Mutex<BTreeMap<u64, Daemon>>,
    next_id: AtomicU64,
    vaults: Mutex<Vec<VaultRecord>>,
    /// What went wrong while stopping daemons the script left running.
    problems: Mutex<Vec<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        binary: PathBuf,
        tmp: PathBuf,
        chunk_name: String,
        script_dir: Option<PathBuf>,
        source: Arc<str>,
        timeout: Duration,
        progress: bool,
    ) -> Shared {
        let start = Instant::now();
        Shared {
            start,
            deadline: start + timeout,
            timeout,
            cancelled: AtomicBool::new(false),
            timed_out: AtomicBool::new(false),
            binary,
            tmp,
            chunk_name,
            script_dir,
            source,
            progress,
            steps_done: AtomicUsize::new(0),
            step_stack: Mutex::new(Vec::new()),
            daemons: Mutex::new(BTreeMap::new()),
            next_id: AtomicU64::new(1),
            vaults: Mutex::new(Vec::new()),
            problems: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn problems(&self) -> Vec<String> {
        lock(&self.problems).clone()
    }

    /// Whether the scenario may go on; sets the timed-out flag when the deadline has passed.
    pub(crate) fn check(&self) -> Result<(), Interrupt> {
        if self.timed_out.load(Ordering::Relaxed) {
            return Err(Interrupt::Timeout);
        }
        if Instant::now() >= self.deadline {
            self.timed_out.store(true, Ordering::Relaxed);
            return Err(Interrupt::Timeout);
        }
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(Interrupt::Cancelled);
        }
        Ok(())
    }

    pub(crate) fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    pub(crate) fn mark_timed_out(&self) {
        self.timed_out.store(true, Ordering::Relaxed);
    }

    pub(crate) fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::Relaxed)
    }

    /// Sleeps `d`, waking early (with the reason) on timeout or cancellation.
    pub(crate) fn sleep(&self, d: Duration, extra: Option<&AtomicBool>) -> Result<(), Interrupt> {
        let until = Instant::now() + d;
        loop {
            self.check()?;
            if extra.is_some_and(|c| c.load(Ordering::Relaxed)) {
                return Err(Interrupt::Cancelled);
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            std::thread::sleep((until - now).min(Duration::from_millis(20)));
        }
    }

    /// Seconds since the scenario started.
    pub(crate) fn clock(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Prints a progress line (when progress output is on).
    pub(crate) fn say(&self, line: &str) {
        if self.progress {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{line}");
            let _ = out.flush();
        }
    }

    pub(crate) fn push_step(&self, name: &str) -> usize {
        let mut s = lock(&self.step_stack);
        s.push(name.to_owned());
        s.len()
    }

    pub(crate) fn pop_step(&self) {
        lock(&self.step_stack).pop();
    }

    /// The steps running now, outermost first, joined with " > ".
    pub(crate) fn step_path(&self) -> Option<String> {
        let s = lock(&self.step_stack);
        if s.is_empty() { None } else { Some(s.join(" > ")) }
    }

    pub(crate) fn new_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn record_vault(&self, rec: VaultRecord) {
        let mut v = lock(&self.vaults);
        if !v.iter().any(|r| r.mountpoint == rec.mountpoint) {
            v.push(rec);
        }
    }

    pub(crate) fn vaults(&self) -> Vec<VaultRecord> {
        lock(&self.vaults).clone()
    }

    /// Takes ownership of a spawned daemon under `id`.
    pub(crate) fn register(&self, id: u64, child: Child, player: &str, mountpoint: PathBuf) {
        let player = player.to_owned();
        lock(&self.daemons).insert(id, Daemon { child, player, mountpoint, exit: None });
    }

    /// The daemon's pid while it runs.
    pub(crate) fn pid(&self, id: u64) -> Option<u32> {
        let mut d = lock(&self.daemons);
        let daemon = d.get_mut(&id)?;
        reap(daemon);
        daemon.exit.is_none().then(|| daemon.child.id())
    }

    /// The daemon's exit status once it has exited; `None` while it runs or if unknown.
    pub(crate) fn exit_status(&self, id: u64) -> Option<ExitStatus> {
        let mut d = lock(&self.daemons);
        let daemon = d.get_mut(&id)?;
        reap(daemon);
        daemon.exit
    }

    pub(crate) fn is_registered(&self, id: u64) -> bool {
        lock(&self.daemons).contains_key(&id)
    }

    pub(crate) fn signal(&self, id: u64, sig: rustix::process::Signal) {
        let mut d = lock(&self.daemons);
        if let Some(daemon) = d.get_mut(&id) {
            reap(daemon);
            // Signalled only while unreaped, so the pid cannot have been reused.
            if daemon.exit.is_none()
                && let Some(pid) =
                    i32::try_from(daemon.child.id()).ok().and_then(rustix::process::Pid::from_raw)
            {
                let _ = rustix::process::kill_process(pid, sig);
            }
        }
    }

    /// Waits up to `limit` for the daemon to exit.
    pub(crate) fn wait_exit(&self, id: u64, limit: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + limit;
        loop {
            if let Some(s) = self.exit_status(id) {
                return Some(s);
            }
            if !self.is_registered(id) || Instant::now() >= until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Forgets a daemon that has exited.
    pub(crate) fn forget(&self, id: u64) {
        lock(&self.daemons).remove(&id);
    }

    /// Stops a daemon however it takes: SIGTERM (it commits and unmounts), then after
    /// `term_wait` SIGKILL, then a lazy unmount of whatever is left. Returns the exit status
    /// if the daemon exited by itself after SIGTERM.
    pub(crate) fn stop(&self, id: u64, term_wait: Duration) -> Option<ExitStatus> {
        let mountpoint = lock(&self.daemons).get(&id).map(|d| d.mountpoint.clone())?;
        self.signal(id, rustix::process::Signal::TERM);
        let mut status = self.wait_exit(id, term_wait);
        if status.is_none() {
            self.signal(id, rustix::process::Signal::KILL);
            let _ = self.wait_exit(id, Duration::from_secs(10));
            status = None;
        }
        detach(&mountpoint);
        self.forget(id);
        status
    }

    /// Stops a daemon the script left running (see [`Shared::stop`]), noting a problem if it
    /// did not exit cleanly on SIGTERM: that is a failure of the scenario.
    pub(crate) fn stop_checked(&self, id: u64, term_wait: Duration) {
        let Some(player) = lock(&self.daemons).get(&id).map(|d| d.player.clone()) else {
            return;
        };
        match self.stop(id, term_wait) {
            Some(s) if s.success() => {}
            Some(s) => lock(&self.problems)
                .push(format!("{player}'s daemon exited with {s} when stopped with SIGTERM")),
            None => lock(&self.problems).push(format!(
                "{player}'s daemon did not exit within {} of SIGTERM (killed it)",
                secs(term_wait)
            )),
        }
    }

    /// Runs the binary with `args` (a short-lived command such as `fsck`, `invite` or
    /// `share`) and waits for it, at most `limit` and never past the deadline: a command
    /// still running then is killed, so none outlives the step that started it. Its output
    /// goes to unlinked files in the run's temp dir, so a chatty command cannot block on a
    /// full pipe.
    pub(crate) fn run_binary<S: AsRef<OsStr>>(
        &self,
        args: &[S],
        limit: Duration,
    ) -> Result<Ran, String> {
        let describe = |e: std::io::Error| crate::fsapi::describe_io(&e);
        let out = tempfile::tempfile_in(&self.tmp).map_err(describe)?;
        let err = tempfile::tempfile_in(&self.tmp).map_err(describe)?;
        let mut child = Command::new(&self.binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().map_err(describe)?)
            .stderr(err.try_clone().map_err(describe)?)
            .spawn()
            .map_err(|e| format!("running {}: {}", self.binary.display(), describe(e)))?;
        let until = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break s,
                Ok(None) => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("waiting for {}: {}", self.binary.display(), describe(e)));
                }
            }
            let stop = self.check().err();
            if stop.is_some() || Instant::now() >= until {
                let _ = child.kill();
                let _ = child.wait();
                return Err(match stop {
                    Some(i) => i.message(self),
                    None => format!("it did not finish within {} (killed it)", secs(limit)),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let read = |mut f: std::fs::File| -> String {
            let mut buf = Vec::new();
            let _ = f.seek(SeekFrom::Start(0)).and_then(|_| f.read_to_end(&mut buf));
            String::from_utf8_lossy(&buf).into_owned()
        };
        Ok(Ran { status, stdout: read(out), stderr: read(err) })
    }

    /// Time until the deadline.
    pub(crate) fn time_left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Stops every daemon still registered (see [`Shared::stop_checked`]).
    pub(crate) fn stop_all(&self, term_wait: Duration) {
        let ids: Vec<u64> = lock(&self.daemons).keys().copied().collect();
        for id in ids {
            self.stop_checked(id, term_wait);
        }
    }
}

fn reap(d: &mut Daemon) {
    if d.exit.is_none()
        && let Ok(Some(s)) = d.child.try_wait()
    {
        d.exit = Some(s);
    }
}

/// Whether `path` (already canonical: a dead FUSE mount cannot be resolved) is a mount point.
pub(crate) fn is_mounted(path: &Path) -> bool {
    indras_fuse::mount_points().iter().any(|m| m == path)
}

/// Lazily unmounts `path` until it is no longer a mount point (a path can be mounted over
/// more than once). Returns whether it is gone.
pub(crate) fn detach(path: &Path) -> bool {
    for _ in 0..50 {
        if !is_mounted(path) {
            return true;
        }
        let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
        std::thread::sleep(Duration::from_millis(10));
    }
    !is_mounted(path)
}

/// The last `n` lines of a file, for error reports.
pub(crate) fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).map(|b| String::from_utf8_lossy(&b).into_owned());
    let text = text.unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
