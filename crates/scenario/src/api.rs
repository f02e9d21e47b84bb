//! Installs the scenario API into a Lua state (the scenario's own or a worker's): the
//! deadline hook, `step`, the clock, `log`, `json`, `fs`, `vault`, `spawn`, the helpers and
//! the Lua prelude with the assertions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mlua::{
    Function, HookTriggers, Lua, LuaSerdeExt as _, LuaString, MultiValue, Table, Value, VmState,
};

use crate::fsapi::{self, lua_err};
use crate::shared::Shared;
use crate::vault::Vault;

const PRELUDE: &str = include_str!("prelude.lua");
/// Instructions between deadline checks.
const HOOK_EVERY: u32 = 1000;
/// A runaway allocation stops the state, not the machine.
const MEMORY_LIMIT: usize = 2 << 30;

/// Which state is being set up.
#[derive(Debug)]
pub(crate) enum Role {
    /// The scenario itself.
    Main,
    /// A worker: its label (`name#index`), its group's cancel flag, and whether it is still
    /// loading the scenario file (when `step` bodies are skipped).
    Worker { label: String, cancel: Arc<AtomicBool>, loading: Arc<AtomicBool> },
}

/// A step's failure, carried up through enclosing steps unchanged so the innermost step's
/// name is reported.
#[derive(Debug)]
pub(crate) struct StepError {
    pub step: String,
    pub reason: String,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "step {:?}: {}", self.step, self.reason)
    }
}

impl std::error::Error for StepError {}

/// Raised by `vault.mount` or `spawn` at the top level while a worker loads the scenario
/// file: the worker stops loading there, keeping what was defined before.
#[derive(Debug)]
pub(crate) struct StopLoading;

impl std::fmt::Display for StopLoading {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("end of the worker's loading")
    }
}

impl std::error::Error for StopLoading {}

/// The failing step (if any) and the reason, without mlua's wrapping and tracebacks.
pub(crate) fn describe(e: &mlua::Error) -> (Option<String>, String) {
    if let Some(s) = e.downcast_ref::<StepError>() {
        return (Some(s.step.clone()), s.reason.clone());
    }
    (None, reason(e))
}

fn reason(e: &mlua::Error) -> String {
    match e {
        mlua::Error::CallbackError { cause, .. } => reason(cause),
        mlua::Error::WithContext { context, cause } => format!("{context}: {}", reason(cause)),
        // Lua's own errors come with a traceback appended: the location prefix is enough.
        mlua::Error::RuntimeError(m) | mlua::Error::MemoryError(m) => {
            m.split("\nstack traceback:").next().unwrap_or(m).to_owned()
        }
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::ExternalError(x) => x.to_string(),
        other => other.to_string(),
    }
}

/// One line: `in step "name": reason`, or the reason.
pub(crate) fn message(e: &mlua::Error) -> String {
    match describe(e) {
        (Some(step), r) => format!("in step {step:?}: {r}"),
        (None, r) => r,
    }
}

fn interrupted(shared: &Shared, cancel: Option<&AtomicBool>) -> Option<String> {
    if let Err(i) = shared.check() {
        return Some(i.message(shared));
    }
    if cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
        return Some("cancelled".to_owned());
    }
    None
}

pub(crate) fn install(lua: &Lua, shared: &Arc<Shared>, role: &Role) -> mlua::Result<()> {
    let cancel = match role {
        Role::Main => None,
        Role::Worker { cancel, .. } => Some(cancel.clone()),
    };
    let _ = lua.set_memory_limit(MEMORY_LIMIT);
    {
        let shared = shared.clone();
        let cancel = cancel.clone();
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_, _| {
            match interrupted(&shared, cancel.as_deref()) {
                Some(m) => Err(mlua::Error::runtime(m)),
                None => Ok(VmState::Continue),
            }
        })?;
    }
    let g = lua.globals();
    if let Some(dir) = &shared.script_dir {
        let package: Table = g.get("package")?;
        let path: String = package.get("path")?;
        package.set("path", format!("{}/?.lua;{path}", dir.display()))?;
    }

    g.set("fs", fsapi::table(lua)?)?;
    g.set("json", json_table(lua)?)?;
    install_helpers(lua, &g, shared, role, cancel.as_ref())?;
    install_steps(lua, &g, shared, role)?;
    install_vaults(lua, &g, shared, role)?;

    lua.load(PRELUDE).set_name("=prelude").exec()?;
    Ok(())
}

fn json_table(lua: &Lua) -> mlua::Result<Table> {
    let json = lua.create_table()?;
    json.set("null", lua.null())?;
    json.set(
        "decode",
        lua.create_function(|lua, text: LuaString| {
            let v: serde_json::Value = serde_json::from_slice(&text.as_bytes())
                .map_err(|e| lua_err(lua, format!("json.decode: {e}")))?;
            lua.to_value(&v)
        })?,
    )?;
    json.set(
        "encode",
        lua.create_function(|lua, (v, pretty): (Value, Option<bool>)| {
            let v: serde_json::Value =
                lua.from_value(v).map_err(|e| lua_err(lua, format!("json.encode: {e}")))?;
            let s = if pretty.unwrap_or(false) {
                serde_json::to_string_pretty(&v)
            } else {
                serde_json::to_string(&v)
            };
            s.map_err(|e| lua_err(lua, format!("json.encode: {e}")))
        })?,
    )?;
    Ok(json)
}

fn install_helpers(
    lua: &Lua,
    g: &Table,
    shared: &Arc<Shared>,
    role: &Role,
    cancel: Option<&Arc<AtomicBool>>,
) -> mlua::Result<()> {
    let sh = shared.clone();
    g.set("clock", lua.create_function(move |_, ()| Ok(sh.clock()))?)?;
    g.set(
        "now",
        lua.create_function(|_, ()| {
            Ok(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
        })?,
    )?;
    let sh = shared.clone();
    g.set(
        "time_left",
        lua.create_function(move |_, ()| {
            Ok(sh.deadline.saturating_duration_since(Instant::now()).as_secs_f64())
        })?,
    )?;
    let (sh, c) = (shared.clone(), cancel.cloned());
    g.set(
        "sleep",
        lua.create_function(move |lua, secs: f64| {
            if !secs.is_finite() || secs < 0.0 {
                return Err(lua_err(lua, format!("sleep: bad duration {secs}")));
            }
            sh.sleep(Duration::from_secs_f64(secs), c.as_deref()).map_err(|i| {
                mlua::Error::runtime(match i {
                    crate::shared::Interrupt::Timeout => i.message(&sh),
                    crate::shared::Interrupt::Cancelled => "cancelled".to_owned(),
                })
            })
        })?,
    )?;
    let sh = shared.clone();
    let prefix = match role {
        Role::Main => None,
        Role::Worker { label, .. } => Some(label.clone()),
    };
    g.set(
        "__log",
        lua.create_function(move |_, line: String| {
            match &prefix {
                None => {
                    let depth = sh.step_path().map_or(0, |p| p.matches(" > ").count() + 1);
                    sh.say(&format!("{}  | {line}", "  ".repeat(depth)));
                }
                Some(label) => sh.say(&format!("      | [{label}] {line}")),
            }
            Ok(())
        })?,
    )?;
    g.set(
        "blake3",
        lua.create_function(|_, data: LuaString| {
            Ok(blake3::hash(&data.as_bytes()).to_hex().to_string())
        })?,
    )?;
    g.set(
        "bytes",
        lua.create_function(|lua, (seed, len): (i64, usize)| {
            let mut out = vec![0u8; len];
            blake3::Hasher::new().update(&seed.to_le_bytes()).finalize_xof().fill(&mut out);
            lua.create_string(&out)
        })?,
    )?;
    g.set("du", g.get::<Table>("fs")?.get::<Function>("du")?)?;
    g.set(
        "errmsg",
        lua.create_function(|lua, v: Value| {
            Ok(match v {
                Value::Error(e) => message(&e),
                Value::String(s) => s.to_string_lossy(),
                other => lua.globals().get::<Function>("tostring")?.call::<String>(other)?,
            })
        })?,
    )?;
    // The prelude's pcall, xpcall and coroutine.resume re-raise this, so a script cannot
    // catch its own timeout and go on.
    let (sh, c) = (shared.clone(), cancel.cloned());
    g.set("__interrupted", lua.create_function(move |_, ()| Ok(interrupted(&sh, c.as_deref())))?)?;
    let tmp = shared.tmp.display().to_string();
    g.set("tmpdir", lua.create_function(move |_, ()| Ok(tmp.clone()))?)?;
    let worker = match role {
        Role::Main => None,
        Role::Worker { label, .. } => Some(label.clone()),
    };
    g.set("worker_name", lua.create_function(move |_, ()| Ok(worker.clone()))?)?;
    Ok(())
}

fn install_steps(lua: &Lua, g: &Table, shared: &Arc<Shared>, role: &Role) -> mlua::Result<()> {
    let step = match role {
        Role::Main => {
            let sh = shared.clone();
            lua.create_function(move |_, (name, f): (String, Function)| {
                let depth = sh.push_step(&name);
                let indent = "  ".repeat(depth);
                sh.say(&format!("{indent}- {name}"));
                let started = Instant::now();
                let r = f.call::<MultiValue>(());
                let path = sh.step_path().unwrap_or_else(|| name.clone());
                sh.pop_step();
                let secs = started.elapsed().as_secs_f64();
                match r {
                    Ok(v) => {
                        sh.steps_done.fetch_add(1, Ordering::Relaxed);
                        sh.say(&format!("{indent}  ok ({secs:.2}s)"));
                        Ok(v)
                    }
                    Err(e) => {
                        sh.say(&format!("{indent}  FAILED ({secs:.2}s)"));
                        if e.downcast_ref::<StepError>().is_some() {
                            Err(e)
                        } else {
                            Err(mlua::Error::external(StepError { step: path, reason: reason(&e) }))
                        }
                    }
                }
            })?
        }
        Role::Worker { loading, .. } => {
            let loading = loading.clone();
            lua.create_function(move |_, (name, f): (String, Function)| {
                if loading.load(Ordering::Relaxed) {
                    // Loading the file again in a worker: the scenario's own steps do not run.
                    return Ok(MultiValue::new());
                }
                f.call::<MultiValue>(()).map_err(|e| {
                    if e.downcast_ref::<StepError>().is_some() {
                        e
                    } else {
                        mlua::Error::external(StepError { step: name, reason: reason(&e) })
                    }
                })
            })?
        }
    };
    g.set("step", step)?;
    Ok(())
}

fn install_vaults(lua: &Lua, g: &Table, shared: &Arc<Shared>, role: &Role) -> mlua::Result<()> {
    let vault = lua.create_table()?;
    match role {
        Role::Main => {
            let sh = shared.clone();
            vault.set(
                "mount",
                lua.create_function(move |lua, opts: Option<Table>| {
                    Vault::mount(lua, &sh, opts.as_ref())
                })?,
            )?;
            // `spawn` comes from `workers::install_spawn`, which the scenario's state adds.
        }
        Role::Worker { loading, .. } => {
            // While loading the file, the first of them ends the load; called from a worker
            // function, they are errors.
            let l = loading.clone();
            vault.set(
                "mount",
                lua.create_function(move |lua, _: MultiValue| -> mlua::Result<()> {
                    if l.load(Ordering::Relaxed) {
                        return Err(mlua::Error::external(StopLoading));
                    }
                    Err(lua_err(
                        lua,
                        "vault.mount runs only in the scenario, not in a worker (pass workers \
                         paths: v.vault, v:path(...))",
                    ))
                })?,
            )?;
            let l = loading.clone();
            g.set(
                "spawn",
                lua.create_function(move |lua, _: MultiValue| -> mlua::Result<()> {
                    if l.load(Ordering::Relaxed) {
                        return Err(mlua::Error::external(StopLoading));
                    }
                    Err(lua_err(lua, "spawn runs only in the scenario, not in a worker"))
                })?,
            )?;
        }
    }
    g.set("vault", vault)?;
    g.set(
        "is_worker",
        lua.create_function({
            let w = matches!(role, Role::Worker { .. });
            move |_, ()| Ok(w)
        })?,
    )?;
    Ok(())
}
