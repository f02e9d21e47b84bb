//! Which vault a command means, from what it was told.
//!
//! A command names a vault by a path (`PATH` or `-m MOUNTPOINT`: a mount point, or any path
//! inside a mount), by `--data-dir DIR`, or by `--player NAME` (whose data dir defaults to
//! `$XDG_DATA_HOME/indras/NAME`, else `~/.local/share/indras/NAME`). The rules:
//! - `PATH` and `-m` are the same thing; giving both is a conflict.
//! - A path belongs to the nearest mount at or above it (`/proc/self/mountinfo`). If that is an
//!   indras-fuse mount, the path names its vault, whose data dir the mount's
//!   `.indra/player.json` gives; `--data-dir` or `--player` given as well must agree with it.
//! - A path in no indras-fuse mount falls back to `--data-dir` or `--player` when given (a
//!   stored vault), and is "not mounted" otherwise.
//! - `--data-dir` says where; `--player` given with it must be that vault's player, which the
//!   command checks once it knows (`Target::check_player`).
//! - A mount whose daemon is gone (its FUSE connection is) is `Found::DeadMount`.
//!
//! Invariants: nothing here opens a store or talks to a daemon; it reads only
//! `/proc/self/mountinfo` and, for a path inside a mount, that mount's `player.json`. Every
//! refusal is one line.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use serde::Deserialize;

/// How a command names its vault.
#[derive(Args, Clone, Debug, Default)]
pub struct VaultArgs {
    /// A mount point, or any path inside a mount.
    #[arg(value_name = "PATH")]
    pub path: Option<PathBuf>,
    /// The mount point (the same as PATH).
    #[arg(short = 'm', long = "mountpoint", value_name = "MOUNTPOINT")]
    pub mountpoint: Option<PathBuf>,
    /// The vault's data dir.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The player, whose vault is in its default data dir (as for `mount`).
    #[arg(long, value_name = "NAME")]
    pub player: Option<String>,
}

/// What a command's arguments name.
#[derive(Debug)]
pub enum Found {
    Vault(Target),
    /// A mount point whose daemon is gone: nothing answers there, and its data dir is unknown.
    DeadMount(PathBuf),
}

impl Found {
    /// The vault, for a command that needs its data dir.
    pub fn vault(self) -> Result<Target> {
        match self {
            Found::Vault(t) => Ok(t),
            Found::DeadMount(mp) => bail!(
                "{} is mounted but its daemon is not running; `indras-fuse unmount {}` detaches it",
                mp.display(),
                mp.display()
            ),
        }
    }
}

/// A vault's data dir, and how the command found it.
#[derive(Debug)]
pub struct Target {
    pub data_dir: PathBuf,
    /// The live mount the vault was found through, when named by a path.
    pub mount: Option<LiveMount>,
    /// The player the command was told, to check against the vault's.
    pub player: Option<String>,
}

/// A mount that answered for itself (its `player.json`).
#[derive(Debug)]
pub struct LiveMount {
    pub mountpoint: PathBuf,
    /// Its daemon.
    pub pid: u32,
}

impl Target {
    /// Refuses a vault that is not the player the command was told.
    pub fn check_player(&self, found: &str) -> Result<()> {
        match &self.player {
            Some(p) if p != found => bail!(
                "conflicting: the vault at {} is player {found:?}'s, not {p:?}'s",
                self.data_dir.display()
            ),
            _ => Ok(()),
        }
    }

    /// The vault, as "not mounted" messages name it.
    pub fn describe(&self) -> String {
        match &self.mount {
            Some(m) => m.mountpoint.display().to_string(),
            None => format!("the vault at {}", self.data_dir.display()),
        }
    }
}

/// What the mount's `.indra/player.json` says, of what is needed here.
#[derive(Deserialize)]
struct PlayerJson {
    player: String,
    data_dir: PathBuf,
    pid: u32,
}

/// The vault the arguments name.
pub fn locate(args: &VaultArgs) -> Result<Found> {
    if let Some(p) = &args.player {
        check_player_name(p)?;
    }
    let path = match (&args.path, &args.mountpoint) {
        (Some(_), Some(_)) => bail!("conflicting: give the mount point once, as PATH or -m"),
        (p, m) => p.as_ref().or(m.as_ref()),
    };
    if let Some(path) = path {
        if let Some(mp) = enclosing_mount(path)? {
            return from_mount(mp, args);
        }
        if args.data_dir.is_none() && args.player.is_none() {
            bail!(
                "{} is not mounted; pass --data-dir or --player to name a stored vault",
                path.display()
            );
        }
    }
    let data_dir = match (&args.data_dir, &args.player) {
        (Some(d), _) => d.clone(),
        (None, Some(p)) => default_data_dir(p)?,
        (None, None) => bail!(
            "which vault? pass a mount point (or a path inside one), -m MOUNTPOINT, --data-dir \
             or --player"
        ),
    };
    Ok(Found::Vault(Target { data_dir, mount: None, player: args.player.clone() }))
}

/// The vault of the mount at `mp`, checked against the other arguments.
fn from_mount(mp: PathBuf, args: &VaultArgs) -> Result<Found> {
    let file = mp.join(".indra/player.json");
    let info: PlayerJson = match std::fs::read(&file) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .with_context(|| format!("{} does not parse", file.display()))?,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotConnected | io::ErrorKind::ConnectionAborted
            ) =>
        {
            return Ok(Found::DeadMount(mp));
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    if let Some(d) = &args.data_dir
        && resolved(d) != info.data_dir
    {
        bail!(
            "conflicting: {} is the mount of {}, not of {}",
            mp.display(),
            info.data_dir.display(),
            d.display()
        );
    }
    if let Some(p) = &args.player
        && *p != info.player
    {
        bail!("conflicting: {} is player {:?}'s mount, not {p:?}'s", mp.display(), info.player);
    }
    Ok(Found::Vault(Target {
        data_dir: info.data_dir,
        mount: Some(LiveMount { mountpoint: mp, pid: info.pid }),
        player: Some(info.player),
    }))
}

/// `path` with symlinks resolved, or as an absolute path when it cannot be (it does not exist,
/// or lies in a mount whose daemon is gone).
fn resolved(path: &Path) -> PathBuf {
    path.canonicalize()
        .or_else(|_| std::path::absolute(path))
        .unwrap_or_else(|_| path.to_path_buf())
}

/// The indras-fuse mount `path` lies in, if the nearest mount at or above it is one.
pub fn enclosing_mount(path: &Path) -> Result<Option<PathBuf>> {
    let path = path
        .canonicalize()
        .or_else(|_| std::path::absolute(path))
        .with_context(|| format!("{}: not a path this process can resolve", path.display()))?;
    let nearest = indras_fuse::mount_points()
        .into_iter()
        .filter(|mp| path.starts_with(mp))
        .max_by_key(|mp| mp.components().count());
    Ok(nearest.filter(|mp| indras_fuse::vault_mount_points().contains(mp)))
}

/// `$XDG_DATA_HOME/indras/<player>`, else `~/.local/share/indras/<player>`.
pub fn default_data_dir(player: &str) -> Result<PathBuf> {
    data_dir_from(std::env::var_os("XDG_DATA_HOME"), std::env::var_os("HOME"), player)
}

fn data_dir_from(xdg: Option<OsString>, home: Option<OsString>, player: &str) -> Result<PathBuf> {
    let base = match xdg.filter(|v| !v.is_empty()) {
        Some(x) => PathBuf::from(x),
        None => {
            let home = home.ok_or_else(|| anyhow!("HOME is not set; pass --data-dir"))?;
            PathBuf::from(home).join(".local/share")
        }
    };
    Ok(base.join("indras").join(player))
}

pub fn check_player_name(name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 64
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        || name.starts_with('.')
    {
        bail!("invalid player name {name:?}: use 1-64 letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(
        path: Option<&str>,
        m: Option<&str>,
        data: Option<&str>,
        player: Option<&str>,
    ) -> VaultArgs {
        VaultArgs {
            path: path.map(PathBuf::from),
            mountpoint: m.map(PathBuf::from),
            data_dir: data.map(PathBuf::from),
            player: player.map(str::to_owned),
        }
    }

    fn target(a: &VaultArgs) -> Target {
        match locate(a).expect("locate") {
            Found::Vault(t) => t,
            Found::DeadMount(mp) => panic!("dead mount {}", mp.display()),
        }
    }

    fn refusal(a: &VaultArgs) -> String {
        let e = locate(a).expect_err("refused").to_string();
        assert!(!e.contains('\n'), "one line: {e}");
        e
    }

    #[test]
    fn data_dir_and_player_name_stored_vaults() {
        let t = target(&args(None, None, Some("/d"), None));
        assert_eq!((t.data_dir.as_path(), t.mount.is_none()), (Path::new("/d"), true));
        let t = target(&args(None, None, Some("/d"), Some("alice")));
        assert_eq!(t.data_dir, Path::new("/d"));
        assert!(t.check_player("alice").is_ok());
        let e = t.check_player("bob").unwrap_err().to_string();
        assert!(e.starts_with("conflicting") && e.contains("\"bob\"") && e.contains("/d"), "{e}");
        if std::env::var_os("HOME").is_some() {
            let t = target(&args(None, None, None, Some("alice")));
            assert!(t.data_dir.ends_with("indras/alice"), "{}", t.data_dir.display());
        }
        // A path in no indras-fuse mount falls back to the store flags.
        let t = target(&args(Some("/"), None, Some("/d"), None));
        assert_eq!(t.data_dir, Path::new("/d"));
    }

    #[test]
    fn missing_and_conflicting_names_are_one_line_refusals() {
        assert!(refusal(&args(None, None, None, None)).starts_with("which vault?"));
        let e = refusal(&args(Some("/"), Some("/"), None, None));
        assert!(e.starts_with("conflicting"), "{e}");
        let e = refusal(&args(Some("/"), None, None, None));
        assert_eq!(e, "/ is not mounted; pass --data-dir or --player to name a stored vault");
        let e = refusal(&args(None, Some("/nonexistent/x"), None, None));
        assert!(e.contains("is not mounted"), "{e}");
        assert!(refusal(&args(None, None, None, Some("../x"))).contains("invalid player name"));
    }

    #[test]
    fn the_default_data_dir_follows_xdg_then_home() {
        let d = data_dir_from(Some("/x".into()), Some("/h".into()), "alice").expect("dir");
        assert_eq!(d, Path::new("/x/indras/alice"));
        let d = data_dir_from(Some("".into()), Some("/h".into()), "alice").expect("dir");
        assert_eq!(d, Path::new("/h/.local/share/indras/alice"));
        assert!(data_dir_from(None, None, "alice").is_err());
    }

    #[test]
    fn player_names_are_checked() {
        for ok in ["alice", "a.b-c_d", "x"] {
            assert!(check_player_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".hidden", "a/b", &"x".repeat(65), "é"] {
            assert!(check_player_name(bad).is_err(), "{bad}");
        }
    }
}
