//! `vault.mount{...}` and the vault object: a player's data dir mounted by a real
//! `indras-fuse mount --foreground` daemon, with unmount, remount, kill and readers for the
//! `.indra/` files. Every daemon is held by the run's registry, which stops it whatever
//! happens to the script.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mlua::{Lua, LuaSerdeExt as _, MetaMethod, Table, UserData, UserDataFields, UserDataMethods};

mod realms;
mod sharing;

use crate::fsapi::{describe_io, lua_err};
use crate::shared::{Shared, VaultRecord, detach, is_mounted, tail};

/// How long a mount may take to come up.
const MOUNT_WAIT: Duration = Duration::from_secs(30);
/// How long a daemon may take to commit and unmount after SIGTERM.
const UNMOUNT_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub(crate) struct Vault {
    shared: Arc<Shared>,
    /// The registry key of the current daemon.
    id: u64,
    player: String,
    data_dir: PathBuf,
    /// Canonical: a dead FUSE mount cannot be resolved, so it is never resolved again.
    mountpoint: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    /// How many times it has been mounted.
    mounts: u32,
    /// The player's id (hex), once read from `.indra/player.json`.
    player_id: std::cell::OnceCell<String>,
}

impl Vault {
    /// `vault.mount{ player =, data_dir =, mountpoint =, args = }`.
    pub(crate) fn mount(
        lua: &Lua,
        shared: &Arc<Shared>,
        opts: Option<&Table>,
    ) -> mlua::Result<Vault> {
        let get = |k: &str| -> mlua::Result<Option<String>> {
            match opts {
                Some(t) => t.get::<Option<String>>(k),
                None => Ok(None),
            }
        };
        let player = get("player")?.unwrap_or_else(|| "alice".to_owned());
        if player.is_empty() || player.contains('/') || player.starts_with('.') {
            return Err(lua_err(lua, format!("vault.mount: bad player name {player:?}")));
        }
        let base = shared.tmp.join(&player);
        let data_dir = get("data_dir")?.map_or_else(|| base.join("data"), PathBuf::from);
        let mountpoint = get("mountpoint")?.map_or_else(|| base.join("mnt"), PathBuf::from);
        let args: Vec<String> = match opts {
            Some(t) => t.get::<Option<Vec<String>>>("args")?.unwrap_or_default(),
            None => Vec::new(),
        };
        std::fs::create_dir_all(&mountpoint).map_err(|e| {
            lua_err(
                lua,
                format!("vault.mount: mkdir {}: {}", mountpoint.display(), describe_io(&e)),
            )
        })?;
        if let Some(parent) = data_dir.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let mountpoint = mountpoint.canonicalize().map_err(|e| {
            lua_err(lua, format!("vault.mount: {}: {}", mountpoint.display(), describe_io(&e)))
        })?;
        let log = base.join(format!("daemon-{}.log", shared.new_id()));
        let _ = std::fs::create_dir_all(&base);
        let mut v = Vault {
            shared: shared.clone(),
            id: 0,
            player,
            data_dir,
            mountpoint,
            args,
            log,
            mounts: 0,
            player_id: std::cell::OnceCell::new(),
        };
        v.start().map_err(|e| lua_err(lua, format!("vault.mount: {e}")))?;
        Ok(v)
    }

    fn vault_dir(&self) -> PathBuf {
        self.mountpoint.join("vault")
    }

    fn running(&self) -> bool {
        self.shared.pid(self.id).is_some()
    }

    fn log_tail(&self) -> String {
        let t = tail(&self.log, 15);
        if t.is_empty() { "(the daemon log is empty)".to_owned() } else { t }
    }

    /// Spawns the daemon and waits until the mount is live.
    fn start(&mut self) -> Result<(), String> {
        if self.running() {
            return Err(format!("{} is already mounted by this vault", self.mountpoint.display()));
        }
        if is_mounted(&self.mountpoint) {
            return Err(format!("{} is already a mount point", self.mountpoint.display()));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("daemon log {}: {}", self.log.display(), describe_io(&e)))?;
        let child = Command::new(&self.shared.binary)
            .arg("mount")
            .arg(&self.mountpoint)
            .arg("--player")
            .arg(&self.player)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--foreground")
            // Scenarios run on this machine only: peers, if any, are reached on loopback.
            .args(["--listen", "127.0.0.1:0", "--relay", "none"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| {
                format!("running {}: {}", self.shared.binary.display(), describe_io(&e))
            })?;
        self.id = self.shared.new_id();
        self.shared.register(self.id, child, &self.player, self.mountpoint.clone());
        self.shared.record_vault(VaultRecord {
            player: self.player.clone(),
            mountpoint: self.mountpoint.clone(),
            log: self.log.clone(),
        });
        let started = Instant::now();
        loop {
            if is_mounted(&self.mountpoint) && self.vault_dir().is_dir() {
                break;
            }
            if let Some(status) = self.shared.exit_status(self.id) {
                self.shared.forget(self.id);
                detach(&self.mountpoint);
                return Err(format!(
                    "the daemon exited ({status}) before mounting {}:\n{}",
                    self.mountpoint.display(),
                    self.log_tail()
                ));
            }
            if let Err(i) = self.shared.check() {
                self.shared.stop(self.id, Duration::from_secs(2));
                return Err(i.message(&self.shared));
            }
            if started.elapsed() > MOUNT_WAIT {
                self.shared.stop(self.id, Duration::from_secs(2));
                return Err(format!(
                    "{} was not mounted after {}s:\n{}",
                    self.mountpoint.display(),
                    MOUNT_WAIT.as_secs(),
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.mounts += 1;
        Ok(())
    }

    /// SIGTERM, then waits for a clean exit and the mount to be gone.
    fn unmount(&self, lua: &Lua) -> Result<(), String> {
        if !self.running() {
            return Err(format!("{} is not mounted", self.mountpoint.display()));
        }
        // Handles the script dropped without closing would keep the mount busy.
        let _ = lua.gc_collect();
        let _ = lua.gc_collect();
        self.shared.signal(self.id, rustix::process::Signal::TERM);
        let started = Instant::now();
        let status = loop {
            if let Some(s) = self.shared.exit_status(self.id) {
                break s;
            }
            let timed_out = self.shared.check().err();
            if timed_out.is_some() || started.elapsed() > UNMOUNT_WAIT {
                self.shared.stop(self.id, Duration::from_secs(1));
                return Err(match timed_out {
                    Some(i) => i.message(&self.shared),
                    None => format!(
                        "the daemon did not exit within {}s of SIGTERM (killed it):\n{}",
                        UNMOUNT_WAIT.as_secs(),
                        self.log_tail()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        self.shared.forget(self.id);
        let still = is_mounted(&self.mountpoint);
        if still {
            detach(&self.mountpoint);
        }
        if !status.success() {
            return Err(format!(
                "the daemon exited with {status} on SIGTERM:\n{}",
                self.log_tail()
            ));
        }
        if still {
            return Err(format!(
                "{} was still mounted after the daemon exited (detached it)",
                self.mountpoint.display()
            ));
        }
        Ok(())
    }

    /// SIGKILL: a crash. Then detaches the dead mount.
    fn kill(&self, lua: &Lua) -> Result<(), String> {
        if !self.running() {
            return Err(format!("{} is not mounted", self.mountpoint.display()));
        }
        let _ = lua.gc_collect();
        self.shared.signal(self.id, rustix::process::Signal::KILL);
        if self.shared.wait_exit(self.id, Duration::from_secs(10)).is_none() {
            return Err("the daemon did not die within 10s of SIGKILL".to_owned());
        }
        self.shared.forget(self.id);
        if !detach(&self.mountpoint) {
            return Err(format!("could not detach {}", self.mountpoint.display()));
        }
        Ok(())
    }

    /// Runs the binary on this vault's data dir (`fsck`, `status`), at most until the deadline.
    fn run_cli(&self, args: &[&str]) -> Result<(bool, String), String> {
        if self.running() {
            return Err(format!(
                "{} is mounted: unmount or kill it first (the daemon holds the store)",
                self.mountpoint.display()
            ));
        }
        let mut full: Vec<std::ffi::OsString> = args.iter().map(Into::into).collect();
        full.push("--data-dir".into());
        full.push(self.data_dir.clone().into_os_string());
        let ran = self.shared.run_binary(&full, self.shared.time_left())?;
        let mut text = ran.stdout;
        text.push_str(&ran.stderr);
        Ok((ran.status.success(), text))
    }

    /// The text of `.indra/NAME`.
    fn indra(&self, name: &str) -> Result<String, String> {
        let path = self.mountpoint.join(".indra").join(name);
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("read {}: {}", path.display(), describe_io(&e)))?;
        String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8", path.display()))
    }

    fn indra_json(&self, name: &str) -> Result<serde_json::Value, String> {
        let text = self.indra(name)?;
        serde_json::from_str(&text).map_err(|e| format!(".indra/{name} does not parse: {e}"))
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        // Still mounted when the script ends (or fails): unmount, as `unmount` would.
        self.shared.stop_checked(self.id, Duration::from_secs(20));
    }
}

fn path_arg(rel: Option<&str>) -> &str {
    rel.unwrap_or("").trim_start_matches('/')
}

impl UserData for Vault {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("player", |_, this| Ok(this.player.clone()));
        f.add_field_method_get("data_dir", |_, this| Ok(this.data_dir.display().to_string()));
        f.add_field_method_get("mountpoint", |_, this| Ok(this.mountpoint.display().to_string()));
        f.add_field_method_get("vault", |_, this| Ok(this.vault_dir().display().to_string()));
        f.add_field_method_get("log", |_, this| Ok(this.log.display().to_string()));
        f.add_field_method_get("mounts", |_, this| Ok(this.mounts));
    }

    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("path", |_, this, rel: Option<String>| {
            Ok(this.vault_dir().join(path_arg(rel.as_deref())).display().to_string())
        });
        m.add_method("root", |_, this, rel: Option<String>| {
            Ok(this.mountpoint.join(path_arg(rel.as_deref())).display().to_string())
        });
        m.add_method(
            "is_mounted",
            |_, this, ()| Ok(this.running() && is_mounted(&this.mountpoint)),
        );
        m.add_method("pid", |_, this, ()| Ok(this.shared.pid(this.id)));
        m.add_method("unmount", |lua, this, ()| {
            this.unmount(lua).map_err(|e| lua_err(lua, format!("unmount {}: {e}", this.player)))
        });
        m.add_method_mut("remount", |lua, this, ()| {
            if this.running() {
                this.unmount(lua)
                    .map_err(|e| lua_err(lua, format!("remount {}: {e}", this.player)))?;
            }
            this.start().map_err(|e| lua_err(lua, format!("remount {}: {e}", this.player)))
        });
        m.add_method_mut("mount", |lua, this, ()| {
            this.start().map_err(|e| lua_err(lua, format!("mount {}: {e}", this.player)))
        });
        m.add_method("kill", |lua, this, ()| {
            this.kill(lua).map_err(|e| lua_err(lua, format!("kill {}: {e}", this.player)))
        });
        m.add_method("fsck", |lua, this, opts: Option<Table>| {
            let mut args = vec!["fsck"];
            if let Some(t) = &opts {
                if t.get::<Option<bool>>("repair")?.unwrap_or(false) {
                    args.push("--repair");
                }
                if t.get::<Option<bool>>("deep")?.unwrap_or(false) {
                    args.push("--deep");
                }
            }
            let (ok, output) = this
                .run_cli(&args)
                .map_err(|e| lua_err(lua, format!("fsck {}: {e}", this.player)))?;
            let t = lua.create_table()?;
            t.set("ok", ok)?;
            t.set("output", output)?;
            Ok(t)
        });
        m.add_method("offline_status", |lua, this, ()| {
            let (ok, output) = this
                .run_cli(&["status", "--json"])
                .map_err(|e| lua_err(lua, format!("offline_status {}: {e}", this.player)))?;
            if !ok {
                return Err(lua_err(lua, format!("indras-fuse status failed: {output}")));
            }
            let v: serde_json::Value = serde_json::from_str(&output).map_err(|e| {
                lua_err(lua, format!("indras-fuse status --json does not parse: {e}: {output}"))
            })?;
            lua.to_value(&v)
        });
        m.add_method("indra", |lua, this, name: String| {
            this.indra(&name).map_err(|e| lua_err(lua, e))
        });
        m.add_method("indra_json", |lua, this, name: String| {
            let v = this.indra_json(&name).map_err(|e| lua_err(lua, e))?;
            lua.to_value(&v)
        });
        for (method, file) in
            [("status", "status.json"), ("player_info", "player.json"), ("peers", "peers.json")]
        {
            m.add_method(method, move |lua, this, ()| {
                let v = this.indra_json(file).map_err(|e| lua_err(lua, e))?;
                lua.to_value(&v)
            });
        }
        m.add_method("attention", |lua, this, ()| {
            let text = this.indra("attention.log").map_err(|e| lua_err(lua, e))?;
            let t = lua.create_table()?;
            for (i, line) in text.lines().enumerate() {
                let v: serde_json::Value = serde_json::from_str(line).map_err(|e| {
                    lua_err(
                        lua,
                        format!("attention.log line {} does not parse ({e}): {line}", i + 1),
                    )
                })?;
                t.raw_set(i + 1, lua.to_value(&v)?)?;
            }
            Ok(t)
        });
        m.add_method("heat", |lua, this, ()| {
            let v = this.indra_json("heat.json").map_err(|e| lua_err(lua, e))?;
            let serde_json::Value::Object(map) = v else {
                return Err(lua_err(lua, "heat.json is not an object"));
            };
            // In file order: hottest first.
            let t = lua.create_table()?;
            for (i, (path, entry)) in map.into_iter().enumerate() {
                let e: Table = match lua.to_value(&entry)? {
                    mlua::Value::Table(e) => e,
                    _ => {
                        return Err(lua_err(
                            lua,
                            format!("heat.json entry {path:?} is not an object"),
                        ));
                    }
                };
                e.set("path", path)?;
                t.raw_set(i + 1, e)?;
            }
            Ok(t)
        });
        m.add_method("du", |lua, this, rel: Option<String>| {
            let p = this.data_dir.join(path_arg(rel.as_deref()));
            crate::fsapi::du(&p)
                .map_err(|e| lua_err(lua, format!("du {}: {}", p.display(), describe_io(&e))))
        });
        m.add_method("log_text", |_, this, ()| {
            Ok(std::fs::read(&this.log)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default())
        });
        sharing::add_methods(m);
        realms::add_methods(m);
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            Ok(format!("vault({} at {})", this.player, this.mountpoint.display()))
        });
    }
}

/// Whether `p` lies inside the scenario's temp dir.
pub(crate) fn under(p: &Path, root: &Path) -> bool {
    p.starts_with(root)
}
