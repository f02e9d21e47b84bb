//! Lua scenarios: readable scripts that drive real mounts of the `indras-fuse` binary.
//!
//! [`run`] loads a scenario file into an embedded Lua 5.4 state with the API described in
//! `lua-scenarios/README.md` (vaults, several players peered, sharing and in realms, file
//! operations, `.indra/` readers, workers, a clock, steps and assertions) and runs it under a
//! deadline. Whatever happens (a failed assertion, a Lua error, a timeout, a blocked system
//! call, a panic) every daemon the run started is stopped and every mount it made is gone
//! before `run` returns.

mod api;
mod fsapi;
mod plain;
mod shared;
mod vault;
mod workers;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use mlua::Lua;

use crate::api::Role;
use crate::shared::{Shared, detach};
use indras_fuse::mount_points;

/// The deadline when neither the script's header nor the caller sets one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// How long after the deadline the scenario thread has to unwind by itself before the run
/// takes its mounts away (which ends any system call blocked on them).
const GRACE: Duration = Duration::from_secs(3);

/// How to run a scenario.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `indras-fuse` binary that mounts vaults.
    pub binary: PathBuf,
    /// Overrides the script's `-- timeout: N` header; else [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    /// Keep the run's temp dir (data dirs, mount points, daemon logs) afterwards.
    pub keep: bool,
    /// Print each step and `log()` line to stdout as the scenario runs.
    pub progress: bool,
}

impl Options {
    pub fn new(binary: impl Into<PathBuf>) -> Options {
        Options { binary: binary.into(), timeout: None, keep: false, progress: false }
    }
}

/// A scenario that passed.
#[derive(Debug)]
pub struct Report {
    /// Steps completed (nested steps count too).
    pub steps: usize,
    pub elapsed: Duration,
    pub timeout: Duration,
    /// The temp dir, when kept.
    pub kept: Option<PathBuf>,
}

/// A scenario that failed: `scenario FILE failed at step "NAME": REASON`.
#[derive(Debug)]
pub struct Failure {
    pub scenario: String,
    /// The innermost step running when it failed (`outer > inner`), if any.
    pub step: Option<String>,
    pub reason: String,
    pub timed_out: bool,
    /// The last lines of each vault's daemon log: (player, text).
    pub logs: Vec<(String, String)>,
    pub kept: Option<PathBuf>,
}

impl Failure {
    fn setup(scenario: &str, reason: String) -> Failure {
        Failure {
            scenario: scenario.to_owned(),
            step: None,
            reason,
            timed_out: false,
            logs: Vec::new(),
            kept: None,
        }
    }

    /// The one-line summary.
    pub fn headline(&self) -> String {
        match &self.step {
            Some(step) => {
                format!("scenario {} failed at step \"{step}\": {}", self.scenario, self.reason)
            }
            None => format!("scenario {} failed: {}", self.scenario, self.reason),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.headline())?;
        for (player, text) in &self.logs {
            write!(f, "\n  last lines of {player}'s daemon log:")?;
            for line in text.lines() {
                write!(f, "\n    {line}")?;
            }
        }
        if let Some(k) = &self.kept {
            write!(f, "\n  kept the scenario's files in {}", k.display())?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// The `-- timeout: N` header (seconds), in the comment lines at the top of the script.
pub fn header_timeout(source: &str) -> Option<Duration> {
    for line in source.lines() {
        let l = line.trim();
        if l.is_empty() || l.starts_with("#!") {
            continue;
        }
        let Some(comment) = l.strip_prefix("--") else { break };
        if let Some(v) = comment.trim().strip_prefix("timeout:") {
            let v = v.trim().trim_end_matches('s').trim();
            return v
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s > 0.0)
                .map(Duration::from_secs_f64);
        }
    }
    None
}

/// Runs the scenario in `file`.
pub fn run(file: &Path, opts: &Options) -> Result<Report, Box<Failure>> {
    let display = file.display().to_string();
    let source = std::fs::read_to_string(file).map_err(|e| {
        Box::new(Failure::setup(&display, format!("reading it: {}", fsapi::describe_io(&e))))
    })?;
    let name =
        file.file_name().map_or_else(|| display.clone(), |n| n.to_string_lossy().into_owned());
    let dir = file.parent().map(|d| if d.as_os_str().is_empty() { Path::new(".") } else { d });
    let dir = dir.and_then(|d| d.canonicalize().ok());
    run_script(&display, &name, dir, &source, opts)
}

/// Runs a scenario given as text; `name` stands for its file name in messages.
pub fn run_source(name: &str, source: &str, opts: &Options) -> Result<Report, Box<Failure>> {
    run_script(name, name, None, source, opts)
}

type Outcome = Result<(), (Option<String>, String)>;

fn run_script(
    display: &str,
    name: &str,
    script_dir: Option<PathBuf>,
    source: &str,
    opts: &Options,
) -> Result<Report, Box<Failure>> {
    let timeout = opts.timeout.or_else(|| header_timeout(source)).unwrap_or(DEFAULT_TIMEOUT);
    let tmp = tempfile::Builder::new()
        .prefix("indras-scenario-")
        .tempdir()
        .map_err(|e| Box::new(Failure::setup(display, format!("creating a temp dir: {e}"))))?;
    let tmp_path = tmp.path().canonicalize().unwrap_or_else(|_| tmp.path().to_owned());
    let shared = Arc::new(Shared::new(
        opts.binary.clone(),
        tmp_path.clone(),
        format!("@{name}"),
        script_dir,
        Arc::from(source),
        timeout,
        opts.progress,
    ));
    shared.say(&format!("scenario {display} (timeout {})", shared::secs(timeout)));

    let (tx, rx) = mpsc::channel::<Outcome>();
    let sh = shared.clone();
    let thread = std::thread::Builder::new().name("scenario".to_owned()).spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Outcome {
            let lua = Lua::new();
            let r = api::install(&lua, &sh, &Role::Main)
                .and_then(|()| workers::install_spawn(&lua, &sh))
                .and_then(|()| lua.load(&*sh.source).set_name(&sh.chunk_name).exec());
            // Where it failed, before dropping the state (which stops its vaults).
            let step_at_failure = sh.step_path();
            let r = r.map_err(|e| {
                let (step, reason) = api::describe(&e);
                (step.or(step_at_failure), reason)
            });
            drop(lua);
            r
        }));
        let r = r.unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err((sh.step_path(), format!("the runner panicked: {msg}")))
        });
        let _ = tx.send(r);
    });
    if let Err(e) = thread {
        return Err(Box::new(Failure::setup(
            display,
            format!("starting the scenario thread: {e}"),
        )));
    }

    let hard = shared.deadline + GRACE;
    let mut abandoned = false;
    let outcome = match rx.recv_timeout(hard.saturating_duration_since(Instant::now())) {
        Ok(r) => r,
        Err(_) => {
            // Blocked in a system call (a hung mount): take the mounts away, which ends it.
            shared.mark_timed_out();
            shared.cancel();
            let step = shared.step_path();
            shared.say("timed out: stopping every daemon to unblock the scenario");
            shared.stop_all(Duration::from_secs(3));
            rx.recv_timeout(Duration::from_secs(15)).unwrap_or_else(|_| {
                abandoned = true;
                Err((step, "did not stop after its deadline (blocked); abandoned it".to_owned()))
            })
        }
    };
    // Workers still running stop; daemons still running are stopped.
    shared.cancel();
    shared.stop_all(Duration::from_secs(20));
    let leftover: Vec<PathBuf> =
        mount_points().into_iter().filter(|m| vault::under(m, &tmp_path)).collect();
    let still_mounted: Vec<String> =
        leftover.iter().filter(|m| !detach(m)).map(|m| m.display().to_string()).collect();
    let elapsed = shared.start.elapsed();

    let problems = shared.problems();
    let failure = match outcome {
        // The script ended, but stopping its vaults ran past the deadline.
        Ok(()) if shared.timed_out() => Some((
            None,
            format!(
                "timed out after {} while stopping the vaults{}",
                shared::secs(timeout),
                if problems.is_empty() {
                    String::new()
                } else {
                    format!(": {}", problems.join("; "))
                }
            ),
        )),
        Ok(()) if !leftover.is_empty() => Some((
            None,
            format!(
                "mounts were left behind (detached them): {}",
                leftover.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", ")
            ),
        )),
        Ok(()) if !problems.is_empty() => Some((None, problems.join("; "))),
        Ok(()) => None,
        Err((step, reason)) => {
            let reason = if shared.timed_out() && !reason.starts_with("timed out") {
                format!("timed out after {} ({reason})", shared::secs(timeout))
            } else {
                reason
            };
            Some((step, reason))
        }
    };
    let keep = opts.keep || abandoned || !still_mounted.is_empty();
    let kept = if keep { Some(tmp.keep()) } else { None };
    if let Some(k) = &kept {
        shared.say(&format!("kept the scenario's files in {}", k.display()));
    }
    match failure {
        None => Ok(Report {
            steps: shared.steps_done.load(std::sync::atomic::Ordering::Relaxed),
            elapsed,
            timeout,
            kept,
        }),
        Some((step, reason)) => {
            let logs = shared
                .vaults()
                .iter()
                .map(|v| (v.player.clone(), shared::tail(&v.log, 10)))
                .filter(|(_, t)| !t.is_empty())
                .collect();
            Err(Box::new(Failure {
                scenario: display.to_owned(),
                step,
                reason,
                timed_out: shared.timed_out(),
                logs,
                kept,
            }))
        }
    }
}

#[cfg(test)]
mod tests;
