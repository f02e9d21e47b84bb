//! Peering and sharing between a scenario's vaults: `v:peer(other)`, `v:share(path, {...})`
//! (with peers, or with `realm:NAME`), `v:recall(path, {...})`, `v:grants()`, and paths into
//! what a peer shares (`peers/<name>/`). Each runs the `indras-fuse` command a user would (`invite`, `peer add`,
//! `share`, `recall`, `grants`) against the live mount, bounded in time, and turns a refusal
//! into an error carrying the command's one-line message.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mlua::{AnyUserData, LuaSerdeExt as _, Table, UserDataMethods, Value};

use super::{Vault, path_arg};
use crate::fsapi::lua_err;
use crate::shared::secs;

/// How long one command may take (`peer add` dials for at most 15 s).
const CLIENT_WAIT: Duration = Duration::from_secs(60);
/// How long `v:peer(other)` waits for both sides to show the other connected, by default.
const PEER_WAIT: Duration = Duration::from_secs(30);

/// How `share --with` names every other member of a realm: `realm:NAME`.
const REALM_PREFIX: &str = "realm:";

/// A peer as a script names it: our name for it, or its vault.
pub(super) enum PeerRef {
    Name(String),
    /// The peer's player id and player name.
    Vault {
        id: String,
        player: String,
    },
}

impl Vault {
    /// Runs `indras-fuse ARGS` against this live mount; what it printed, or its error line.
    pub(super) fn client(&self, args: &[OsString]) -> Result<String, String> {
        if !self.running() {
            return Err(format!("{} is not mounted", self.mountpoint.display()));
        }
        let ran = self.shared.run_binary(args, CLIENT_WAIT)?;
        if ran.status.success() {
            return Ok(ran.stdout.trim_end().to_owned());
        }
        let err = ran.stderr.trim();
        let err = err.strip_prefix("indras-fuse: ").unwrap_or(err);
        Err(if err.is_empty() { format!("exited with {}", ran.status) } else { err.to_owned() })
    }

    pub(super) fn mnt_arg(&self) -> OsString {
        self.mountpoint.clone().into_os_string()
    }

    /// A path the script gave: absolute as it is, else relative to the vault's `vault/`.
    fn vault_path(&self, p: &str) -> PathBuf {
        if p.starts_with('/') { PathBuf::from(p) } else { self.vault_dir().join(path_arg(Some(p))) }
    }

    /// The player's id (hex), from `.indra/player.json`; read once.
    fn player_id(&self) -> Result<String, String> {
        if let Some(id) = self.player_id.get() {
            return Ok(id.clone());
        }
        let v = self.indra_json("player.json")?;
        let id = v["player_id"]
            .as_str()
            .ok_or_else(|| ".indra/player.json has no player_id".to_owned())?
            .to_owned();
        Ok(self.player_id.get_or_init(|| id).clone())
    }

    /// The entry of `.indra/peers.json` for `peer`, if we know it.
    fn peer_entry(&self, peer: &PeerRef) -> Result<Option<serde_json::Value>, String> {
        let peers = self.indra_json("peers.json")?;
        let list = peers.as_array().ok_or_else(|| ".indra/peers.json is not a list".to_owned())?;
        Ok(list
            .iter()
            .find(|p| match peer {
                PeerRef::Name(n) => p["name"] == n.as_str(),
                PeerRef::Vault { id, .. } => p["player_id"] == id.as_str(),
            })
            .cloned())
    }

    /// Our name for `peer`: the name as given, or the name we keep for that vault's player.
    pub(super) fn peer_name(&self, peer: &PeerRef) -> Result<String, String> {
        match peer {
            PeerRef::Name(n) => Ok(n.clone()),
            PeerRef::Vault { player, .. } => self
                .peer_entry(peer)?
                .and_then(|e| e["name"].as_str().map(str::to_owned))
                .ok_or_else(|| format!("{player} is not a peer of {}", self.player)),
        }
    }

    fn state(&self, peer: &PeerRef) -> Result<Option<String>, String> {
        Ok(self.peer_entry(peer)?.and_then(|e| e["state"].as_str().map(str::to_owned)))
    }

    fn as_peer(&self) -> Result<PeerRef, String> {
        Ok(PeerRef::Vault { id: self.player_id()?, player: self.player.clone() })
    }

    /// `self` invites, `other` redeems the ticket calling us by our player name; then both
    /// must show the other `connected` within `wait`.
    fn peer_with(&self, other: &Vault, wait: Duration) -> Result<(), String> {
        if self.mountpoint == other.mountpoint {
            return Err("a vault cannot peer with itself".to_owned());
        }
        let (me, them) = (self.as_peer()?, other.as_peer()?);
        let ticket = self
            .client(&["invite".into(), self.mnt_arg()])
            .map_err(|e| format!("{}: invite: {e}", self.player))?;
        other
            .client(&[
                "peer".into(),
                "add".into(),
                self.player.clone().into(),
                ticket.trim().into(),
                other.mnt_arg(),
            ])
            .map_err(|e| format!("{}: peer add {}: {e}", other.player, self.player))?;
        let started = Instant::now();
        loop {
            let a = self.state(&them)?;
            let b = other.state(&me)?;
            if a.as_deref() == Some("connected") && b.as_deref() == Some("connected") {
                return Ok(());
            }
            if let Err(i) = self.shared.check() {
                return Err(i.message(&self.shared));
            }
            if started.elapsed() >= wait {
                let show = |s: Option<String>| s.unwrap_or_else(|| "not a peer".to_owned());
                return Err(format!(
                    "{} and {} did not both show the other connected within {}: {} sees {} {}, \
                     {} sees {} {}",
                    self.player,
                    other.player,
                    secs(wait),
                    self.player,
                    other.player,
                    show(a),
                    other.player,
                    self.player,
                    show(b),
                ));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }
}

/// A peer given as a name or a vault.
pub(super) fn peer_ref(v: &Value) -> Result<PeerRef, String> {
    match v {
        Value::String(s) => Ok(PeerRef::Name(s.to_string_lossy())),
        Value::UserData(ud) => {
            let other = ud.borrow::<Vault>().map_err(|_| "expected a peer's name or vault")?;
            other.as_peer()
        }
        other => Err(format!("expected a peer's name or vault, got a {}", other.type_name())),
    }
}

/// Peers given as a name, a vault, or a list of them: our names for them (`name_of` turns a
/// vault into ours). With `realms`, a string `realm:NAME` stands for every other member of
/// realm NAME (the command expands it) and passes as it is.
pub(super) fn peer_names(
    name_of: &dyn Fn(&PeerRef) -> Result<String, String>,
    v: &Value,
    what: &str,
    realms: bool,
) -> Result<Vec<String>, String> {
    let one = |v: &Value| -> Result<String, String> {
        if let Value::String(s) = v {
            let s = s.to_string_lossy();
            if let Some(realm) = s.strip_prefix(REALM_PREFIX) {
                if !realms {
                    return Err(format!("{what}: {s}: a realm is for `share`'s `with` only"));
                }
                if realm.is_empty() {
                    return Err(format!("{what}: {s}: a realm's name is missing"));
                }
                return Ok(s);
            }
        }
        let r = peer_ref(v).map_err(|e| format!("{what}: {e}"))?;
        name_of(&r)
    };
    match v {
        Value::Table(t) => {
            let mut out = Vec::new();
            for item in t.sequence_values::<Value>() {
                out.push(one(&item.map_err(|e| e.to_string())?)?);
            }
            if out.is_empty() {
                return Err(format!("{what}: an empty list"));
            }
            Ok(out)
        }
        other => Ok(vec![one(other)?]),
    }
}

/// Refuses keys a call does not know (a typo would otherwise be silently ignored).
pub(super) fn only_keys(t: &Table, known: &[&str], call: &str) -> Result<(), String> {
    for pair in t.pairs::<Value, Value>() {
        let (k, _) = pair.map_err(|e| e.to_string())?;
        let name = match &k {
            Value::String(s) => s.to_string_lossy(),
            other => format!("{other:?}"),
        };
        if !known.contains(&name.as_str()) {
            return Err(format!("{call}: unknown option {name:?} (known: {})", known.join(", ")));
        }
    }
    Ok(())
}

/// `share --with ... --mode ... [--for D | --until T]` from `{ with =, mode =, for =, until = }`
/// (`name_of` gives our name for a peer given as a vault).
fn share_args(
    name_of: &dyn Fn(&PeerRef) -> Result<String, String>,
    opts: &Table,
) -> Result<Vec<OsString>, String> {
    only_keys(opts, &["with", "mode", "for", "until"], "share")?;
    let get = |k: &str| opts.get::<Value>(k).map_err(|e| e.to_string());
    let with = get("with")?;
    if with.is_nil() {
        return Err("share: `with` is required: a peer's name or vault, \"realm:NAME\", or a \
                    list of them"
            .into());
    }
    let names = peer_names(name_of, &with, "share: with", true)?;
    let mode = match get("mode")? {
        Value::String(s) => s.to_string_lossy(),
        Value::Nil => {
            return Err("share: `mode` is required: revocable, permanent, timed or transfer".into());
        }
        other => {
            return Err(format!("share: mode: expected a string, got a {}", other.type_name()));
        }
    };
    let mut args: Vec<OsString> =
        vec!["--with".into(), names.join(",").into(), "--mode".into(), mode.into()];
    match get("for")? {
        Value::Nil => {}
        Value::String(s) => args.extend(["--for".into(), s.to_string_lossy().into()]),
        Value::Integer(n) => args.extend(["--for".into(), format!("{n}s").into()]),
        Value::Number(n) if n.is_finite() && n >= 1.0 => {
            args.extend(["--for".into(), format!("{}s", n.round()).into()]);
        }
        other => {
            return Err(format!(
                "share: for: expected a duration (\"7d\", \"1h\") or seconds, got {other:?}"
            ));
        }
    }
    match get("until")? {
        Value::Nil => {}
        Value::String(s) => args.extend(["--until".into(), s.to_string_lossy().into()]),
        other => {
            return Err(format!(
                "share: until: expected an RFC 3339 time, got a {}",
                other.type_name()
            ));
        }
    }
    Ok(args)
}

pub(super) fn add_methods<M: UserDataMethods<Vault>>(m: &mut M) {
    m.add_method("player_id", |lua, this, ()| {
        this.player_id().map_err(|e| lua_err(lua, format!("player_id {}: {e}", this.player)))
    });
    m.add_method("invite", |lua, this, ()| {
        this.client(&["invite".into(), this.mnt_arg()])
            .map(|t| t.trim().to_owned())
            .map_err(|e| lua_err(lua, format!("{}: invite: {e}", this.player)))
    });
    m.add_method("peer_add", |lua, this, (name, ticket): (String, String)| {
        this.client(&[
            "peer".into(),
            "add".into(),
            name.clone().into(),
            ticket.trim().into(),
            this.mnt_arg(),
        ])
        .map_err(|e| lua_err(lua, format!("{}: peer add {name}: {e}", this.player)))
    });
    m.add_method("peer", |lua, this, (other, opts): (AnyUserData, Option<Table>)| {
        let other = other
            .borrow::<Vault>()
            .map_err(|_| lua_err(lua, "peer: expected another vault, e.g. alice:peer(bob)"))?;
        let mut wait = PEER_WAIT;
        if let Some(t) = &opts {
            only_keys(t, &["timeout"], "peer").map_err(|e| lua_err(lua, e))?;
            if let Some(s) = t.get::<Option<f64>>("timeout")? {
                if !s.is_finite() || s <= 0.0 {
                    return Err(lua_err(lua, format!("peer: bad timeout {s}")));
                }
                wait = Duration::from_secs_f64(s);
            }
        }
        this.peer_with(&other, wait)
            .map_err(|e| lua_err(lua, format!("peer {} with {}: {e}", this.player, other.player)))
    });
    m.add_method("peer_name", |lua, this, peer: Value| {
        let r = peer_ref(&peer).map_err(|e| lua_err(lua, format!("peer_name: {e}")))?;
        match this.peer_entry(&r) {
            Ok(e) => Ok(e.and_then(|e| e["name"].as_str().map(str::to_owned))),
            Err(e) => Err(lua_err(lua, format!("peer_name: {e}"))),
        }
    });
    m.add_method("peer_state", |lua, this, peer: Value| {
        let r = peer_ref(&peer).map_err(|e| lua_err(lua, format!("peer_state: {e}")))?;
        this.state(&r).map_err(|e| lua_err(lua, format!("peer_state: {e}")))
    });
    m.add_method("peer_path", |lua, this, (peer, rel): (Value, Option<String>)| {
        let name = peer_ref(&peer)
            .and_then(|r| this.peer_name(&r))
            .map_err(|e| lua_err(lua, format!("peer_path: {e}")))?;
        let p = this.mountpoint.join("peers").join(name).join(path_arg(rel.as_deref()));
        Ok(p.display().to_string())
    });
    m.add_method("share", |lua, this, (path, opts): (String, Option<Table>)| {
        let fail = |e: String| lua_err(lua, format!("{}: share {path}: {e}", this.player));
        let Some(opts) = opts else {
            return Err(fail(
                "expected options, e.g. { with = \"bob\", mode = \"revocable\" }".to_owned(),
            ));
        };
        let mut args: Vec<OsString> = vec!["share".into(), this.vault_path(&path).into()];
        args.extend(share_args(&|r| this.peer_name(r), &opts).map_err(fail)?);
        this.client(&args).map_err(fail)
    });
    m.add_method("recall", |lua, this, (path, opts): (String, Option<Table>)| {
        let fail = |e: String| lua_err(lua, format!("{}: recall {path}: {e}", this.player));
        let mut args: Vec<OsString> = vec!["recall".into(), this.vault_path(&path).into()];
        if let Some(t) = &opts {
            only_keys(t, &["from"], "recall").map_err(fail)?;
            let from = t.get::<Value>("from")?;
            if !from.is_nil() {
                let names = peer_names(&|r| this.peer_name(r), &from, "recall: from", false)
                    .map_err(fail)?;
                args.extend(["--from".into(), names.join(",").into()]);
            }
        }
        this.client(&args).map_err(fail)
    });
    m.add_method("grants", |lua, this, path: Option<String>| {
        let fail = |e: String| lua_err(lua, format!("{}: grants: {e}", this.player));
        let target = match &path {
            Some(p) => this.vault_path(p).into_os_string(),
            None => this.mnt_arg(),
        };
        let text = this.client(&["grants".into(), target, "--json".into()]).map_err(fail)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| fail(format!("grants --json does not parse ({e}): {text}")))?;
        lua.to_value(&v)
    });
}

#[cfg(test)]
mod tests {
    use mlua::Lua;

    use super::*;

    fn names_only(r: &PeerRef) -> Result<String, String> {
        match r {
            PeerRef::Name(n) => Ok(n.clone()),
            PeerRef::Vault { player, .. } => Err(format!("{player}: no vault here")),
        }
    }

    fn args(src: &str) -> Result<Vec<String>, String> {
        let lua = Lua::new();
        let t: Table = lua.load(src).eval().unwrap();
        share_args(&names_only, &t)
            .map(|a| a.iter().map(|s| s.to_string_lossy().into_owned()).collect())
    }

    #[test]
    fn share_with_a_realm_passes_it_to_the_command() {
        assert_eq!(
            args(r#"return { with = "realm:aurora", mode = "revocable" }"#).unwrap(),
            ["--with", "realm:aurora", "--mode", "revocable"]
        );
        assert_eq!(
            args(r#"return { with = { "dave", "realm:aurora" }, mode = "timed", ["for"] = 60 }"#)
                .unwrap(),
            ["--with", "dave,realm:aurora", "--mode", "timed", "--for", "60s"]
        );
        let err = args(r#"return { with = "realm:", mode = "revocable" }"#).unwrap_err();
        assert_eq!(err, "share: with: realm:: a realm's name is missing");
        let err = args(r#"return { mode = "revocable" }"#).unwrap_err();
        assert!(err.contains("\"realm:NAME\""), "{err}");
    }

    #[test]
    fn recall_refuses_a_realm() {
        let lua = Lua::new();
        let v: Value = lua.load(r#"return { "bob", "realm:aurora" }"#).eval().unwrap();
        let err = peer_names(&names_only, &v, "recall: from", false).unwrap_err();
        assert_eq!(err, "recall: from: realm:aurora: a realm is for `share`'s `with` only");
    }
}
