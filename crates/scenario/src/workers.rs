//! Workers: `spawn("name", n, args)` starts `n` OS threads, each with its own Lua state. A
//! worker state loads the scenario file again (`step` bodies are skipped, and loading stops
//! at the first top-level `vault.mount` or `spawn`), then calls the global function `name`
//! with `(index, args)`. Its return value comes back as a plain value (see `plain.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mlua::{Function, Lua, MetaMethod, UserData, UserDataMethods, Value};

use crate::api::{self, Role};
use crate::fsapi::lua_err;
use crate::plain::Plain;
use crate::shared::Shared;

/// How long dropping an unjoined group waits for its threads after cancelling them.
const DROP_WAIT: Duration = Duration::from_secs(10);

type Outcome = (usize, Result<Plain, String>);

#[derive(Debug)]
pub(crate) struct Workers {
    name: String,
    n: usize,
    cancel: Arc<AtomicBool>,
    rx: Receiver<Outcome>,
    threads: Vec<JoinHandle<()>>,
    results: Vec<Option<Result<Plain, String>>>,
    joined: bool,
}

/// Adds the global `spawn(name, n, args)` to the scenario's own Lua state (a worker's state
/// gets one that refuses, from `api::install`).
pub(crate) fn install_spawn(lua: &Lua, shared: &Arc<Shared>) -> mlua::Result<()> {
    let sh = shared.clone();
    lua.globals().set(
        "spawn",
        lua.create_function(move |lua, (name, n, args): (String, usize, Value)| {
            let workers = Workers::spawn(lua, &sh, &name, n, &args)?;
            Ok(WorkersHandle { workers, shared: sh.clone() })
        })?,
    )
}

/// One worker, on its own thread.
fn worker_main(
    shared: &Arc<Shared>,
    cancel: &Arc<AtomicBool>,
    func: &str,
    index: usize,
    args: &Plain,
) -> Result<Plain, String> {
    let label = format!("{func}#{index}");
    let lua = Lua::new();
    let loading = Arc::new(AtomicBool::new(true));
    let role =
        Role::Worker { label: label.clone(), cancel: cancel.clone(), loading: loading.clone() };
    api::install(&lua, shared, &role).map_err(|e| api::message(&e))?;
    match lua.load(&*shared.source).set_name(&shared.chunk_name).exec() {
        Ok(()) => {}
        // A top-level vault.mount or spawn: the definitions before it are what a worker needs.
        Err(e) if e.downcast_ref::<api::StopLoading>().is_some() => {}
        Err(e) => return Err(format!("loading the scenario: {}", api::message(&e))),
    }
    loading.store(false, Ordering::Relaxed);
    let f: Function = match lua.globals().get::<Value>(func) {
        Ok(Value::Function(f)) => f,
        _ => return Err(format!("no global function {func:?} in the scenario")),
    };
    let a = args.to_lua(&lua).map_err(|e| api::message(&e))?;
    let r: Value = f.call((index, a)).map_err(|e| api::message(&e))?;
    Plain::from_lua(&r, "the worker's result")
}

impl Workers {
    pub(crate) fn spawn(
        lua: &Lua,
        shared: &Arc<Shared>,
        func: &str,
        n: usize,
        args: &Value,
    ) -> mlua::Result<Workers> {
        match lua.globals().get::<Value>(func)? {
            Value::Function(_) => {}
            _ => {
                return Err(lua_err(
                    lua,
                    format!(
                        "spawn: no global function {func:?}: workers run a global function \
                         defined in the scenario file"
                    ),
                ));
            }
        }
        if n == 0 {
            return Err(lua_err(lua, "spawn: the number of workers must be at least 1"));
        }
        let args = Plain::from_lua(args, "the workers' args").map_err(|e| lua_err(lua, e))?;
        let cancel = Arc::new(AtomicBool::new(false));
        let (tx, rx): (Sender<Outcome>, Receiver<Outcome>) = mpsc::channel();
        let mut threads = Vec::with_capacity(n);
        for index in 1..=n {
            let (shared, cancel, tx, args) =
                (shared.clone(), cancel.clone(), tx.clone(), args.clone());
            let func = func.to_owned();
            let t = std::thread::Builder::new()
                .name(format!("worker-{func}-{index}"))
                .spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        worker_main(&shared, &cancel, &func, index, &args)
                    }))
                    .unwrap_or_else(|_| Err("the worker panicked".to_owned()));
                    let _ = tx.send((index, r));
                })
                .map_err(|e| lua_err(lua, format!("spawn: starting a thread: {e}")))?;
            threads.push(t);
        }
        Ok(Workers {
            name: func.to_owned(),
            n,
            cancel,
            rx,
            threads,
            results: (0..n).map(|_| None).collect(),
            joined: false,
        })
    }

    fn pending(&self) -> Vec<usize> {
        (1..=self.n).filter(|i| self.results[i - 1].is_none()).collect()
    }

    /// Collects every result, up to `limit`.
    fn collect(&mut self, shared: &Shared, limit: Option<Duration>) -> Result<(), String> {
        let started = Instant::now();
        while !self.pending().is_empty() {
            match self.rx.recv_timeout(Duration::from_millis(20)) {
                Ok((i, r)) => self.results[i - 1] = Some(r),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if let Err(i) = shared.check() {
                self.cancel.store(true, Ordering::Relaxed);
                return Err(i.message(shared));
            }
            if let Some(l) = limit
                && started.elapsed() > l
            {
                self.cancel.store(true, Ordering::Relaxed);
                let names: Vec<String> =
                    self.pending().iter().map(|i| format!("{}#{i}", self.name)).collect();
                return Err(format!(
                    "workers still running after {:.1}s (a deadlock?): {}",
                    l.as_secs_f64(),
                    names.join(", ")
                ));
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Ok(())
    }

    fn join(&mut self, lua: &Lua, shared: &Shared, limit: Option<Duration>) -> mlua::Result<Value> {
        if self.joined {
            return Err(lua_err(lua, format!("workers {:?} were already joined", self.name)));
        }
        self.collect(shared, limit).map_err(|e| lua_err(lua, format!("join: {e}")))?;
        self.joined = true;
        let failures: Vec<String> = self
            .results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| match r {
                Some(Err(e)) => Some(format!("{}#{}: {e}", self.name, i + 1)),
                None => Some(format!("{}#{}: did not report", self.name, i + 1)),
                Some(Ok(_)) => None,
            })
            .collect();
        if !failures.is_empty() {
            return Err(lua_err(
                lua,
                format!(
                    "{} of {} {:?} workers failed; {}",
                    failures.len(),
                    self.n,
                    self.name,
                    failures.join("; ")
                ),
            ));
        }
        let t = lua.create_table()?;
        for (i, r) in self.results.iter().enumerate() {
            if let Some(Ok(p)) = r {
                t.raw_set(i + 1, p.to_lua(lua)?)?;
            }
        }
        Ok(Value::Table(t))
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.cancel.store(true, Ordering::Relaxed);
        let until = Instant::now() + DROP_WAIT;
        while self.threads.iter().any(|t| !t.is_finished()) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
        // Threads still blocked (in a hung system call) are left behind, not waited for.
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// The handle a script holds: `local ws = spawn(...); local results = ws:join()`.
#[derive(Debug)]
pub(crate) struct WorkersHandle {
    pub(crate) workers: Workers,
    pub(crate) shared: Arc<Shared>,
}

impl UserData for WorkersHandle {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("join", |lua, this, timeout: Option<f64>| {
            let limit = timeout.map(Duration::from_secs_f64);
            let shared = this.shared.clone();
            this.workers.join(lua, &shared, limit)
        });
        m.add_method("cancel", |_, this, ()| {
            this.workers.cancel.store(true, Ordering::Relaxed);
            Ok(())
        });
        m.add_method("count", |_, this, ()| Ok(this.workers.n));
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("workers({} x {})", this.workers.name, this.workers.n))
        });
    }
}
