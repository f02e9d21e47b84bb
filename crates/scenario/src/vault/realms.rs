//! Realms between a scenario's vaults: `v:realm_create(name, { members = ... })`,
//! `v:realm_add(name, peer)`, `v:realm_remove(name, peer)`, `v:realm_leave(name)`,
//! `v:realms()`, `v:realm(name)` and `v:realm_path(name, rel)` (what the mount shows under
//! `realms/<name>/`). Each runs the `indras-fuse realm ...` command a user would against the
//! live mount, as sharing does, and turns a refusal into an error carrying its message.
//! Sharing with a realm is `v:share(path, { with = "realm:NAME", ... })`.

use std::ffi::OsString;

use mlua::{Lua, LuaSerdeExt as _, Table, UserDataMethods, Value};

use super::sharing::{only_keys, peer_names, peer_ref};
use super::{Vault, path_arg};
use crate::fsapi::lua_err;

/// Refuses a realm name the daemon would refuse (and one that is not a single path name).
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a realm name cannot be empty".into());
    }
    if name == "." || name == ".." {
        return Err("a realm name cannot be . or ..".into());
    }
    if name.chars().any(|c| c == '/' || c.is_control()) {
        return Err(format!("bad realm name {name:?}: it cannot hold / or control characters"));
    }
    Ok(())
}

/// `realm create NAME --members a,b` from `{ members = peer or list }`.
fn create_args(
    name: &str,
    name_of: &dyn Fn(&super::sharing::PeerRef) -> Result<String, String>,
    opts: Option<&Table>,
) -> Result<Vec<OsString>, String> {
    check_name(name)?;
    let Some(opts) = opts else {
        return Err("expected options, e.g. { members = { bob, carol } }".into());
    };
    only_keys(opts, &["members"], "realm_create")?;
    let members = opts.get::<Value>("members").map_err(|e| e.to_string())?;
    if members.is_nil() {
        return Err("realm_create: `members` is required: a peer or a list of peers".into());
    }
    let names = peer_names(name_of, &members, "realm_create: members", false)?;
    Ok(vec![
        "realm".into(),
        "create".into(),
        name.into(),
        "--members".into(),
        names.join(",").into(),
    ])
}

impl Vault {
    /// `realm list --json`, parsed: from the daemon when mounted, else from the data dir.
    fn realm_list(&self) -> Result<serde_json::Value, String> {
        let text = if self.running() {
            self.client(&["realm".into(), "list".into(), "--json".into(), self.mnt_arg()])?
        } else {
            let (ok, out) = self.run_cli(&["realm", "list", "--json"])?;
            if !ok {
                return Err(out.trim().to_owned());
            }
            out
        };
        serde_json::from_str(&text)
            .map_err(|e| format!("realm list --json does not parse ({e}): {text}"))
    }

    /// Runs `realm VERB NAME [PEER] MOUNT`; what it says.
    fn realm_cmd(
        &self,
        lua: &Lua,
        verb: &str,
        name: &str,
        peer: Option<Value>,
    ) -> mlua::Result<String> {
        let fail = |e: String| lua_err(lua, format!("{}: realm {verb} {name}: {e}", self.player));
        check_name(name).map_err(fail)?;
        let mut args: Vec<OsString> = vec!["realm".into(), verb.into(), name.into()];
        if let Some(peer) = peer {
            let who = peer_ref(&peer)
                .and_then(|r| self.peer_name(&r))
                .map_err(|e| fail(format!("realm_{verb}: {e}")))?;
            args.push(who.into());
        }
        args.push(self.mnt_arg());
        self.client(&args).map_err(fail)
    }
}

pub(super) fn add_methods<M: UserDataMethods<Vault>>(m: &mut M) {
    m.add_method("realm_create", |lua, this, (name, opts): (String, Option<Table>)| {
        let fail = |e: String| lua_err(lua, format!("{}: realm create {name}: {e}", this.player));
        let mut args = create_args(&name, &|r| this.peer_name(r), opts.as_ref()).map_err(fail)?;
        args.push(this.mnt_arg());
        this.client(&args).map_err(fail)
    });
    m.add_method("realm_add", |lua, this, (name, peer): (String, Value)| {
        this.realm_cmd(lua, "add", &name, Some(peer))
    });
    m.add_method("realm_remove", |lua, this, (name, peer): (String, Value)| {
        this.realm_cmd(lua, "remove", &name, Some(peer))
    });
    m.add_method("realm_leave", |lua, this, name: String| {
        this.realm_cmd(lua, "leave", &name, None)
    });
    m.add_method("realms", |lua, this, ()| {
        let v =
            this.realm_list().map_err(|e| lua_err(lua, format!("{}: realms: {e}", this.player)))?;
        lua.to_value(&v)
    });
    m.add_method("realm", |lua, this, name: String| {
        let v = this
            .realm_list()
            .map_err(|e| lua_err(lua, format!("{}: realm {name}: {e}", this.player)))?;
        let found = v.as_array().and_then(|l| l.iter().find(|r| r["name"] == name.as_str()));
        match found {
            Some(r) => lua.to_value(r),
            None => Ok(Value::Nil),
        }
    });
    m.add_method("realm_path", |lua, this, (name, rel): (String, Option<String>)| {
        check_name(&name).map_err(|e| lua_err(lua, format!("realm_path: {e}")))?;
        let p = this.mountpoint.join("realms").join(&name).join(path_arg(rel.as_deref()));
        Ok(p.display().to_string())
    });
}

#[cfg(test)]
mod tests {
    use super::super::sharing::PeerRef;
    use super::*;

    /// Our name for a peer, as a test stands it in: a vault's player name; "nobody" is no
    /// peer of ours.
    fn by_player(r: &PeerRef) -> Result<String, String> {
        match r {
            PeerRef::Name(n) if n == "nobody" => Err("nobody is not a peer".into()),
            PeerRef::Name(n) => Ok(n.clone()),
            PeerRef::Vault { player, .. } => Ok(player.clone()),
        }
    }

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn create_names_its_members() {
        let lua = Lua::new();
        let t: Table = lua.load(r#"return { members = { "bob", "carol" } }"#).eval().unwrap();
        let args = create_args("aurora", &by_player, Some(&t)).unwrap();
        assert_eq!(strings(&args), ["realm", "create", "aurora", "--members", "bob,carol"]);
        let t: Table = lua.load(r#"return { members = "bob" }"#).eval().unwrap();
        let args = create_args("aurora", &by_player, Some(&t)).unwrap();
        assert_eq!(strings(&args)[4], "bob");
    }

    #[test]
    fn create_refuses_what_it_cannot_run() {
        let lua = Lua::new();
        let cases = [
            ("aurora", "return {}", "`members` is required"),
            ("aurora", "return { members = {} }", "members: an empty list"),
            ("aurora", "return { member = { \"bob\" } }", "unknown option \"member\""),
            ("aurora", "return { members = { \"realm:x\" } }", "for `share`'s `with` only"),
            ("aurora", "return { members = { 42 } }", "expected a peer's name or vault"),
            ("aurora", "return { members = { \"bob\", \"nobody\" } }", "nobody is not a peer"),
            ("a/b", "return { members = \"bob\" }", "cannot hold /"),
            ("", "return { members = \"bob\" }", "cannot be empty"),
            ("..", "return { members = \"bob\" }", "cannot be . or .."),
        ];
        for (name, src, want) in cases {
            let t: Table = lua.load(src).eval().unwrap();
            let err = create_args(name, &by_player, Some(&t)).unwrap_err();
            assert!(err.contains(want), "{name} {src}: {err}");
        }
        assert!(create_args("aurora", &by_player, None).unwrap_err().contains("members ="));
    }
}
