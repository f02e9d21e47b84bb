//! Argument parsing and the commands: mount (daemonizing unless `--foreground`), unmount,
//! status, gc, fsck and scenario.
//!
//! A command that takes a vault finds it with `locate` (a path in a mount, `-m`, `--data-dir`
//! or `--player`). What acts on a live vault goes through its daemon's control socket
//! (`control`); a mount's daemon serves that socket from before it reports the mount ready
//! until it has unmounted. With no daemon, `status` reads the store itself, `gc` and `fsck`
//! work only on a store no mount holds (as always), and `unmount` says the vault is not
//! mounted.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use indras_artifacts::{
    Commit, FsckOptions, Keep, Options, Progress, SpaceLimits, Timestamp, Vault,
};
use indras_fuse::network::{
    NetworkState, NoNetwork, PeerJson, PeerStatus, RealmJson, peers_json, realms_json,
};
use indras_fuse::retention::HistoryConfig;
use indras_fuse::{Invalidator, MountConfig, MountError, MountSession, Status, is_mounted};
use indras_net::{Config as NetConfig, Net, Relay};
use indras_share::Share;

use crate::control::addr::socket_path;
use crate::control::client::{self, ANSWER_TIMEOUT};
use crate::control::daemon;
use crate::control::protocol::{Request, Response, ShareMode};
use crate::history;
use crate::history::{Pick, SnapshotJson, VersionJson};
use crate::locate::{Found, Target, VaultArgs, check_player_name, default_data_dir, locate};
use crate::network::{KernelCaches, NetTransport, NetView, ShareService, StoreBook};

#[derive(Parser, Debug)]
#[command(
    name = "indras-fuse",
    version,
    about = "A content-addressed artifact vault, mounted as a folder"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a player's vault at MOUNTPOINT (daemonizes unless --foreground).
    Mount(MountArgs),
    /// Commit every open file durably, then unmount.
    Unmount {
        #[command(flatten)]
        vault: VaultArgs,
        /// Seconds to wait for the daemon to finish.
        #[arg(long, default_value_t = 60)]
        timeout: u64,
    },
    /// Show what is mounted and the vault's figures (from its daemon, else from the store).
    Status {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Print a one-time invitation ticket for a player to peer with this vault (mounted).
    Invite {
        #[command(flatten)]
        vault: VaultArgs,
        /// How long the ticket stays valid (e.g. 1h, 30m, 7d).
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid: Duration,
    },
    /// Peers: add one from its ticket, list them, accept or reject requests, remove one.
    Peer {
        #[command(subcommand)]
        command: PeerCmd,
    },
    /// Realms: groups of players who see what every member shares with all the others.
    Realm {
        #[command(subcommand)]
        command: RealmCmd,
    },
    /// Share a file or folder of a mounted vault with peers.
    Share {
        /// The file or folder, inside the mount's `vault/`.
        path: PathBuf,
        /// The peers (our names for them), comma-separated; `realm:NAME` names every other
        /// member of realm NAME as it is now.
        #[arg(long, value_delimiter = ',', required = true)]
        with: Vec<String>,
        /// revocable, permanent, timed (with --for or --until) or transfer.
        #[arg(long, value_parser = ["revocable", "permanent", "timed", "transfer"])]
        mode: String,
        /// How long a timed grant lasts (e.g. 7d, 1h).
        #[arg(long = "for", value_parser = parse_duration, conflicts_with = "until")]
        for_: Option<Duration>,
        /// When a timed grant ends (RFC 3339, e.g. 2026-12-31T00:00:00Z).
        #[arg(long)]
        until: Option<String>,
    },
    /// Recall what was shared of a file or folder: from every peer, or from --from.
    Recall {
        /// The file or folder, inside the mount's `vault/`.
        path: PathBuf,
        /// Only these peers, comma-separated.
        #[arg(long, value_delimiter = ',')]
        from: Vec<String>,
    },
    /// List the grants we gave: all of them, or those of PATH.
    Grants {
        /// A shared file or folder inside the mount's `vault/`, or the mount itself.
        path: Option<PathBuf>,
        /// The mount, when PATH is not given.
        #[arg(short = 'm', long = "mountpoint")]
        mountpoint: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List a file's versions: when each was committed, its size, content id and committer.
    /// For a path with no file, the versions of the deleted files history keeps by that name.
    History {
        /// The file: a path in a mount's `vault/`, or, with --data-dir or --player, a path from
        /// the vault's root (notes/ideas.md).
        path: PathBuf,
        #[command(flatten)]
        vault: StoreArgs,
        /// Machine-readable output: a JSON array of the versions.
        #[arg(long)]
        json: bool,
    },
    /// Make an old version of a file its content again (as a new version), or bring back a
    /// deleted file where it was or at --to.
    Restore {
        /// The file, as for `history`.
        path: PathBuf,
        /// The version committed at this time (as `history` prints it), or the latest before.
        #[arg(long, value_name = "TIME")]
        at: Option<String>,
        /// The version with this id (as `history` prints it).
        #[arg(long, value_name = "HEX")]
        id: Option<String>,
        /// Bring a deleted file back here instead of where it was.
        #[arg(long, value_name = "PATH")]
        to: Option<PathBuf>,
        #[command(flatten)]
        vault: StoreArgs,
    },
    /// Snapshots: frozen copies of the whole vault, by name.
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCmd,
    },
    /// Reclaim payloads and chunks that nothing references (the vault must not be mounted).
    Gc {
        #[command(flatten)]
        vault: VaultArgs,
        /// Retention, as `mount --keep`: versions it no longer keeps are dropped first, so
        /// that GC keeps exactly what retention and snapshots name.
        #[arg(long, value_name = "SPEC", default_value = "24h:all,7d:1h,30d:1d")]
        keep: String,
    },
    /// Verify every chunk and reference in the store (the vault must not be mounted).
    Fsck {
        #[command(flatten)]
        vault: VaultArgs,
        /// Fix reference counts, stray files and dangling entries; quarantine corrupt chunks.
        #[arg(long)]
        repair: bool,
        /// Also rehash every file end to end.
        #[arg(long)]
        deep: bool,
    },
    /// Run a Lua scenario (lua-scenarios/README.md) against real mounts of this binary.
    Scenario {
        file: PathBuf,
        /// Seconds before it is stopped [default: its `-- timeout: N` header, else 300].
        #[arg(long)]
        timeout: Option<u64>,
        /// Keep its temp dir (data dirs, mount points, daemon logs) afterwards.
        #[arg(long)]
        keep: bool,
        /// The binary that mounts vaults [default: this one].
        #[arg(long)]
        binary: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    /// Peer with the player who made TICKET, calling it NAME here (mounted).
    Add {
        name: String,
        ticket: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Every peer and connection request, with its state.
    List {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output (as `.indra/peers.json`).
        #[arg(long)]
        json: bool,
    },
    /// Accept the connection request NAME (mounted).
    Accept {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Reject and forget the connection request NAME (mounted).
    Reject {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Forget the peer NAME, closing its connection.
    Remove {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// A stored vault, for a command whose PATH names a file rather than the vault.
#[derive(Args, Clone, Debug, Default)]
struct StoreArgs {
    /// The vault's data dir (PATH is then from the vault's root, unless it is in a mount).
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The player, whose vault is in its default data dir (as for `mount`).
    #[arg(long, value_name = "NAME")]
    player: Option<String>,
}

#[derive(Subcommand, Debug)]
enum SnapshotCmd {
    /// Take the snapshot NAME of the whole vault as it is now.
    Create {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Every snapshot, oldest first.
    List {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Delete the snapshot NAME (what only it held goes with the next collection).
    Delete {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

#[derive(Subcommand, Debug)]
enum RealmCmd {
    /// Create realm NAME with the peers --members (mounted).
    Create {
        name: String,
        /// Its first members besides you: peers (our names for them), comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Every realm you belong to, with its members and what it shows.
    List {
        #[command(flatten)]
        vault: VaultArgs,
        /// Machine-readable output (as `.indra/realms.json`).
        #[arg(long)]
        json: bool,
    },
    /// Add the peer PEER to realm NAME (its creator only; mounted).
    Add {
        name: String,
        peer: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Remove the member PEER from realm NAME (its creator only; mounted).
    Remove {
        name: String,
        peer: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Leave realm NAME; its creator's leave dissolves it (mounted).
    Leave {
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    match humantime::parse_duration(s) {
        Ok(d) if d.is_zero() => Err("must be longer than zero".to_owned()),
        Ok(d) if d > Duration::from_secs(365 * 86_400) => Err("at most a year".to_owned()),
        Ok(d) => Ok(d),
        Err(e) => Err(e.to_string()),
    }
}

fn parse_relay(s: &str) -> Result<Relay, String> {
    match s {
        "default" => Ok(Relay::Default),
        "none" => Ok(Relay::Disabled),
        url if url.starts_with("https://") || url.starts_with("http://") => {
            Ok(Relay::Url(url.to_owned()))
        }
        _ => Err("expected default, none or a relay URL (https://...)".to_owned()),
    }
}

#[derive(Args, Debug)]
struct MountArgs {
    mountpoint: PathBuf,
    /// The player whose vault to mount.
    #[arg(long)]
    player: String,
    /// Where the vault lives [default: $`XDG_DATA_HOME/indras`/<player>].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Stay attached and log to stderr.
    #[arg(long)]
    foreground: bool,
    /// Let other users access the mount.
    #[arg(long)]
    allow_other: bool,
    /// Have the kernel unmount when the daemon exits.
    #[arg(long)]
    auto_unmount: bool,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, default_value = "info", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: String,
    /// Mount options, comma-separated (ro, noatime, `allow_other`, ...).
    #[arg(short = 'o', value_name = "OPTS")]
    options: Vec<String>,
    /// FUSE request threads.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=64))]
    threads: u16,
    /// Record attention (opens, closes, listings) and compute heat. Attention on what a peer
    /// shares is also sent, signed, to that peer only; peers' attention on what we share is
    /// taken after it is checked. `off` records, sends and takes none (peers keep theirs).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    attention: String,
    /// Attention events kept at most (heat keeps per-file totals of older ones).
    #[arg(long, default_value_t = 100_000)]
    attention_max_events: u64,
    /// Days attention events are kept.
    #[arg(long, default_value_t = 30)]
    attention_max_age_days: u64,
    /// Milliseconds a closed file's commit may wait, so that saves that reopen it within that
    /// time make one version; 0 commits at every close. What a crash without `fsync` can
    /// lose grows by as much.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(0..=60_000))]
    commit_delay: u64,
    /// Seconds between background collections of content no file references any more (old
    /// versions of edited files, deleted files' content); 0 turns them off. Besides, all of
    /// it is collected at once past 1% of the disk (at most 32 MiB), and on a full disk.
    #[arg(long, default_value_t = 600)]
    gc_interval: u64,
    /// Seconds content must have been unreferenced before a background collection takes it.
    #[arg(long, default_value_t = 600)]
    gc_grace: u64,
    /// How long file history keeps versions: tiers WITHIN:EVERY, where EVERY is `all` or one
    /// version per that period (units s, m, h, d, w), or `none` to keep no history.
    /// Automatic snapshots are kept by the same tiers.
    #[arg(long, value_name = "SPEC", default_value = "24h:all,7d:1h,30d:1d")]
    keep: String,
    /// Take an automatic snapshot this often (e.g. 1h, 1d) [default: never].
    #[arg(long, value_name = "DURATION")]
    snapshot_every: Option<String>,
    /// History may hold at most this percent of the data dir's filesystem; past it, the
    /// oldest versions go first.
    #[arg(long, value_name = "N", default_value = "20")]
    history_max_percent: String,
    /// History gives way, oldest versions first, while the filesystem has less than this
    /// percent free.
    #[arg(long, value_name = "N", default_value = "5")]
    min_free_percent: String,
    /// Where to listen for peers, ADDR:PORT (repeatable) [default: 0.0.0.0:0, and [::]:0
    /// where IPv6 exists].
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<std::net::SocketAddr>,
    /// Relays for reaching peers behind NAT: default (public relays and discovery), none (a
    /// LAN or an offline machine), or a relay URL.
    #[arg(long, default_value = "default", value_parser = parse_relay)]
    relay: Relay,
    /// Open no network socket at all.
    #[arg(long, conflicts_with = "listen")]
    no_network: bool,
    /// Internal: this process is the daemon started by `mount`.
    #[arg(long, hide = true)]
    daemon_child: bool,
}

pub fn run() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Mount(args) => mount(&args),
        Cmd::Unmount { vault, timeout } => unmount(&vault, Duration::from_secs(timeout)),
        Cmd::Status { vault, json } => status(&vault, json),
        Cmd::Invite { vault, valid } => invite(&vault, valid),
        Cmd::Peer { command } => peer(command),
        Cmd::Realm { command } => realm(command),
        Cmd::Share { path, with, mode, for_, until } => share(&path, with, &mode, for_, until),
        Cmd::Recall { path, from } => recall(&path, from),
        Cmd::Grants { path, mountpoint, json } => grants(path, mountpoint, json),
        Cmd::History { path, vault, json } => history(&path, &vault, json),
        Cmd::Restore { path, at, id, to, vault } => restore(&path, at, id, to.as_deref(), &vault),
        Cmd::Snapshot { command } => snapshot(&command),
        Cmd::Gc { vault, keep } => gc(&vault, &keep),
        Cmd::Fsck { vault, repair, deep } => fsck(&vault, repair, deep),
        Cmd::Scenario { file, timeout, keep, binary } => scenario(&file, timeout, keep, binary),
    }
}

fn scenario(file: &Path, timeout: Option<u64>, keep: bool, binary: Option<PathBuf>) -> Result<()> {
    let binary = match binary {
        Some(b) => b,
        None => std::env::current_exe().context("finding this program")?,
    };
    let mut opts = indras_scenario::Options::new(binary);
    opts.timeout = timeout.map(Duration::from_secs);
    opts.keep = keep;
    opts.progress = true;
    let report = indras_scenario::run(file, &opts).map_err(|f| anyhow!("{f}"))?;
    println!(
        "scenario {}: ok ({} steps, {:.1}s)",
        file.display(),
        report.steps,
        report.elapsed.as_secs_f64()
    );
    Ok(())
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(format!("{level},fuser=warn"))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
}

/// The history flags of `mount`, checked: each bad value is a one-line refusal.
fn history_config(args: &MountArgs) -> Result<HistoryConfig> {
    let keep = Keep::parse(&args.keep).map_err(|e| anyhow!("--keep {}: {e}", args.keep))?;
    let snapshot_every = match &args.snapshot_every {
        None => None,
        Some(s) if s == "off" || s == "never" => None,
        Some(s) => Some(parse_duration(s).map_err(|e| anyhow!("--snapshot-every {s}: {e}"))?),
    };
    let percent = |flag: &str, s: &str, max: u8| -> Result<u8> {
        match s.trim().parse::<u8>() {
            Ok(n) if n <= max => Ok(n),
            _ => bail!("{flag} {s}: expected a whole number from 0 to {max}"),
        }
    };
    Ok(HistoryConfig {
        keep,
        snapshot_every,
        space: SpaceLimits {
            max_percent: percent("--history-max-percent", &args.history_max_percent, 100)?,
            min_free_percent: percent("--min-free-percent", &args.min_free_percent, 99)?,
        },
    })
}

fn mount(args: &MountArgs) -> Result<()> {
    check_player_name(&args.player)?;
    let history = history_config(args)?;
    let data_dir = match &args.data_dir {
        Some(d) => d.clone(),
        None => default_data_dir(&args.player)?,
    };
    let mountpoint =
        std::path::absolute(&args.mountpoint).unwrap_or_else(|_| args.mountpoint.clone());
    if !args.foreground && !args.daemon_child {
        return spawn_daemon(args, &mountpoint, &data_dir);
    }
    init_logging(&args.log_level);
    let mut cfg = MountConfig::new(&mountpoint, &data_dir, &args.player);
    cfg.allow_other = args.allow_other;
    cfg.auto_unmount = args.auto_unmount;
    cfg.options.clone_from(&args.options);
    cfg.threads = usize::from(args.threads);
    cfg.commit_delay = Duration::from_millis(args.commit_delay);
    cfg.gc_interval = Duration::from_secs(args.gc_interval);
    cfg.gc_grace = Duration::from_secs(args.gc_grace);
    cfg.history = history;
    cfg.attention = indras_fuse::attention::AttentionConfig {
        enabled: args.attention == "on",
        retention: indras_artifacts::Retention {
            max_events: Some(args.attention_max_events),
            max_age_ms: Some(args.attention_max_age_days.saturating_mul(86_400_000)),
        },
    };
    if args.daemon_child {
        let _ = rustix::process::setsid();
    }
    // Signals are taken before mounting, so none is lost in between.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ])
    .context("installing signal handlers")?;
    let net_slot: Arc<OnceLock<(Arc<Net>, Arc<Share>)>> = Arc::default();
    let start_network = |vault: &Arc<Vault>, invalidator: Invalidator| -> Arc<dyn NetworkState> {
        let key = vault.secret_key().to_bytes();
        let net = if args.no_network {
            Net::disabled(key, "--no-network")
        } else {
            let mut ncfg = NetConfig::new(&args.player);
            if !args.listen.is_empty() {
                ncfg.listen.clone_from(&args.listen);
            }
            ncfg.relay = args.relay.clone();
            Net::start(key, Arc::new(StoreBook::new(vault.clone(), invalidator.clone())), ncfg)
        };
        let net = Arc::new(net);
        let share = Arc::new(Share::start_with(
            vault.clone(),
            Arc::new(NetTransport(Arc::downgrade(&net))),
            Arc::new(KernelCaches(invalidator)),
            args.attention == "on",
        ));
        net.set_service(Arc::new(ShareService(share.clone())));
        let _ = net_slot.set((net.clone(), share.clone()));
        Arc::new(NetView(net, Some(share)))
    };
    let session = match MountSession::start_with(&cfg, &start_network) {
        Ok(s) => s,
        Err(e) => {
            if args.daemon_child {
                // The parent is waiting for one line on stdout.
                let _ = writeln!(std::io::stdout(), "error: {}", describe(&e));
            }
            bail!("{}", describe(&e));
        }
    };
    // Commands reach the mount through this socket from the moment it is reported ready.
    let (net, share) =
        net_slot.get().cloned().ok_or_else(|| anyhow!("the network was not started"))?;
    let control = match daemon::serve(
        session.fs(),
        session.stop_handle(),
        session.invalidator(),
        net,
        share.clone(),
    ) {
        Ok(c) => c,
        Err(e) => {
            let msg = format!("the control socket: {e}");
            if args.daemon_child {
                let _ = writeln!(std::io::stdout(), "error: {msg}");
            }
            if let Err(e) = session.shutdown() {
                tracing::error!(error = %e, "shutting the mount down failed");
            }
            bail!("{msg}");
        }
    };
    tracing::info!(socket = %control.path().display(), "control socket listening");
    if args.daemon_child {
        let _ = writeln!(std::io::stdout(), "ready");
        let _ = std::io::stdout().flush();
    } else {
        eprintln!(
            "indras-fuse: mounted {} (player {}, data dir {})",
            mountpoint.display(),
            args.player,
            data_dir.display()
        );
    }
    let stop = session.stop_handle();
    let handle = signals.handle();
    let waiter = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            tracing::info!(signal = sig, "stopping: committing open files, then unmounting");
            stop.stop();
        }
    });
    let result = session.wait();
    share.shutdown();
    control.stop();
    handle.close();
    let _ = waiter.join();
    result.context("shutting down")?;
    tracing::info!("unmounted cleanly");
    Ok(())
}

fn describe(e: &MountError) -> String {
    match e {
        MountError::Store(indras_artifacts::Error::WrongPlayer { found, requested }) => {
            format!("the data dir belongs to player {found:?}, not {requested:?}")
        }
        other => other.to_string(),
    }
}

/// Starts this program again as the daemon and waits until it reports the mount live.
fn spawn_daemon(args: &MountArgs, mountpoint: &Path, data_dir: &Path) -> Result<()> {
    std::fs::create_dir_all(data_dir)
        .with_context(|| format!("data dir {} is not writable", data_dir.display()))?;
    let log_path = data_dir.join("indras-fuse.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("data dir {} is not writable", data_dir.display()))?;
    let exe = std::env::current_exe().context("finding this program")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount")
        .arg(mountpoint)
        .arg("--player")
        .arg(&args.player)
        .arg("--data-dir")
        .arg(data_dir);
    cmd.arg("--log-level").arg(&args.log_level).arg("--threads").arg(args.threads.to_string());
    cmd.arg("--attention").arg(&args.attention);
    cmd.arg("--attention-max-events").arg(args.attention_max_events.to_string());
    cmd.arg("--attention-max-age-days").arg(args.attention_max_age_days.to_string());
    cmd.arg("--commit-delay").arg(args.commit_delay.to_string());
    cmd.arg("--gc-interval").arg(args.gc_interval.to_string());
    cmd.arg("--gc-grace").arg(args.gc_grace.to_string());
    cmd.arg("--keep").arg(&args.keep);
    if let Some(every) = &args.snapshot_every {
        cmd.arg("--snapshot-every").arg(every);
    }
    cmd.arg("--history-max-percent").arg(&args.history_max_percent);
    cmd.arg("--min-free-percent").arg(&args.min_free_percent);
    for l in &args.listen {
        cmd.arg("--listen").arg(l.to_string());
    }
    cmd.arg("--relay").arg(match &args.relay {
        Relay::Default => "default",
        Relay::Disabled => "none",
        Relay::Url(u) => u,
    });
    if args.no_network {
        cmd.arg("--no-network");
    }
    if args.allow_other {
        cmd.arg("--allow-other");
    }
    if args.auto_unmount {
        cmd.arg("--auto-unmount");
    }
    for o in &args.options {
        cmd.arg("-o").arg(o);
    }
    cmd.arg("--daemon-child").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log);
    let mut child = cmd.spawn().context("starting the daemon")?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("daemon has no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).context("waiting for the daemon")?;
    match line.trim_end() {
        "ready" => {
            println!(
                "mounted {} (player {}, data dir {}, log {})",
                mountpoint.display(),
                args.player,
                data_dir.display(),
                log_path.display()
            );
            Ok(())
        }
        other => {
            let status = child.wait().ok();
            let msg = other.strip_prefix("error: ").unwrap_or(other);
            if msg.is_empty() {
                bail!(
                    "the daemon exited ({}) before mounting; see {}",
                    status.map_or_else(|| "?".into(), |s| s.to_string()),
                    log_path.display()
                );
            }
            bail!("{msg}");
        }
    }
}

/// An answer no request of this command gets.
/// Asks the daemon of the vault `args` names; `None` when no mount of it runs (a mount that
/// holds it without answering is an error).
fn ask(args: &VaultArgs, request: &Request) -> Result<(Target, Option<Response>)> {
    let target = locate(args)?.vault()?;
    let timeout = match request {
        Request::PeerAdd { .. } => ANSWER_TIMEOUT + Duration::from_secs(20),
        _ => ANSWER_TIMEOUT,
    };
    match client::call(&target.data_dir, request, timeout)? {
        Some(r) => Ok((target, Some(r))),
        None => match &target.mount {
            Some(m) => bail!(
                "{} is mounted, but its daemon does not answer on {}",
                m.mountpoint.display(),
                socket_path(&target.data_dir).display()
            ),
            None if store_locked(&target.data_dir) => Err(not_answering(&target.data_dir)),
            None => Ok((target, None)),
        },
    }
}

/// Asks a request only a running mount can answer.
fn ask_live(args: &VaultArgs, request: &Request) -> Result<Response> {
    match ask(args, request)? {
        (_, Some(r)) => Ok(r),
        (target, None) => bail!("{} is not mounted", target.describe()),
    }
}

fn invite(args: &VaultArgs, valid: Duration) -> Result<()> {
    match ask_live(args, &Request::Invite { valid_secs: valid.as_secs().max(1) })? {
        Response::Ticket { ticket, .. } => {
            println!("{ticket}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn peer(command: PeerCmd) -> Result<()> {
    let done = |r: Response| match r {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    };
    match command {
        PeerCmd::Add { name, ticket, vault } => {
            done(ask_live(&vault, &Request::PeerAdd { name, ticket: ticket.trim().to_owned() })?)
        }
        PeerCmd::Accept { name, vault } => done(ask_live(&vault, &Request::PeerAccept { name })?),
        PeerCmd::Reject { name, vault } => done(ask_live(&vault, &Request::PeerReject { name })?),
        PeerCmd::Remove { name, vault } => {
            match ask(&vault, &Request::PeerRemove { name: name.clone() })? {
                (_, Some(r)) => done(r),
                (target, None) => {
                    let store = open_store(&target.data_dir)?;
                    let Some(p) = store.peers()?.into_iter().find(|p| p.name == name) else {
                        bail!("no peer named {name}");
                    };
                    store.remove_peer(p.id, Commit::Durable)?;
                    // What it shared with us goes too, except permanent grants.
                    store.mirror_forget_peer(p.id, Timestamp::now())?;
                    println!("removed {name}");
                    Ok(())
                }
            }
        }
        PeerCmd::List { vault, json } => {
            let peers = match ask(&vault, &Request::PeerList)? {
                (_, Some(Response::Peers(p))) => p,
                (_, Some(other)) => return Err(unexpected(&other)),
                (target, None) => {
                    let store = open_store(&target.data_dir)?;
                    peers_json(&store, &NoNetwork("not mounted".into()).snapshot())?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&peers)?);
            } else {
                print!("{}", peers_text(&peers));
            }
            Ok(())
        }
    }
}

fn realm(command: RealmCmd) -> Result<()> {
    let done = |r: Response| match r {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    };
    match command {
        RealmCmd::Create { name, members, vault } => {
            done(ask_live(&vault, &Request::RealmCreate { name, members })?)
        }
        RealmCmd::Add { name, peer, vault } => {
            done(ask_live(&vault, &Request::RealmAdd { name, peer })?)
        }
        RealmCmd::Remove { name, peer, vault } => {
            done(ask_live(&vault, &Request::RealmRemove { name, peer })?)
        }
        RealmCmd::Leave { name, vault } => done(ask_live(&vault, &Request::RealmLeave { name })?),
        RealmCmd::List { vault, json } => {
            let realms = match ask(&vault, &Request::RealmList)? {
                (_, Some(Response::Realms(r))) => r,
                (_, Some(other)) => return Err(unexpected(&other)),
                (target, None) => {
                    let store = open_store(&target.data_dir)?;
                    let snap = NoNetwork("not mounted".into()).snapshot();
                    realms_json(&store, &snap, Timestamp::now())?
                }
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&realms)?);
            } else {
                print!("{}", realms_text(&realms));
            }
            Ok(())
        }
    }
}

/// Realms as `realm list` prints them: one line per realm, then one per member.
fn realms_text(realms: &[RealmJson]) -> String {
    use std::fmt::Write as _;
    if realms.is_empty() {
        return "no realms\n".to_owned();
    }
    let mut out = String::new();
    for r in realms {
        let _ = writeln!(
            out,
            "{}  (created by {}, {} shared, id {})",
            r.name, r.creator, r.shared_artifacts, r.id
        );
        for m in &r.members {
            let _ = writeln!(out, "  {:<16} {}", m.name, m.state);
        }
    }
    out
}

/// The mount holding `path`, and `path` from the mount's root: `~/indra/vault/notes/a.md`
/// gives `["vault", "notes", "a.md"]`. Fails for a path outside the mount's `vault/` and
/// `peers/`.
fn in_vault(path: &Path) -> Result<(VaultArgs, Vec<String>)> {
    let (args, names) = in_mount(path)?;
    shareable(path, &names)?;
    Ok((args, names))
}

/// Fails unless `names` (from the mount's root) are a file or folder under `vault/` or
/// `peers/`.
fn shareable(path: &Path, names: &[String]) -> Result<()> {
    match names.first().map(String::as_str) {
        Some("vault" | "peers") if names.len() == 1 => {
            bail!("{} itself cannot be shared; share a file or folder in it", names[0])
        }
        Some("vault" | "peers") => {}
        _ => bail!("{} is not inside the mount's vault/ or peers/", path.display()),
    }
    Ok(())
}

/// The mount holding `path`, and `path`'s names from the mount's root (none for the mount
/// point itself).
fn in_mount(path: &Path) -> Result<(VaultArgs, Vec<String>)> {
    let full = std::fs::canonicalize(path)
        .with_context(|| format!("{}: cannot resolve the path", path.display()))?;
    let args = VaultArgs { path: Some(full.clone()), ..VaultArgs::default() };
    let target = locate(&args)?.vault()?;
    let Some(m) = &target.mount else {
        bail!("{} is not inside a mounted vault", path.display());
    };
    let rel = full.strip_prefix(&m.mountpoint).unwrap_or(&full);
    let parts = rel.components().map(|c| c.as_os_str().to_str().map(str::to_owned));
    let names: Option<Vec<String>> = parts.collect();
    let names = names.ok_or_else(|| anyhow!("{}: a name is not UTF-8", path.display()))?;
    Ok((VaultArgs { mountpoint: Some(m.mountpoint.clone()), ..VaultArgs::default() }, names))
}

fn share(
    path: &Path,
    with: Vec<String>,
    mode: &str,
    for_: Option<Duration>,
    until: Option<String>,
) -> Result<()> {
    let mode = match (mode, for_, until) {
        ("timed", Some(d), None) => {
            let now = Timestamp::now();
            ShareMode::Timed {
                until_secs: now.secs.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
            }
        }
        ("timed", None, Some(t)) => {
            let t = chrono::DateTime::parse_from_rfc3339(&t)
                .map_err(|e| anyhow!("--until {t}: not an RFC 3339 time ({e})"))?;
            ShareMode::Timed { until_secs: t.timestamp() }
        }
        ("timed", None, None) => bail!("a timed grant needs --for DURATION or --until TIME"),
        (_, Some(_), _) | (_, _, Some(_)) => bail!("--for and --until go with --mode timed"),
        ("revocable", ..) => ShareMode::Revocable,
        ("permanent", ..) => ShareMode::Permanent,
        ("transfer", ..) if with.len() != 1 => bail!("a transfer goes to exactly one peer"),
        ("transfer", ..) => ShareMode::Transfer,
        (other, ..) => bail!("unknown mode {other}"),
    };
    let (args, names) = in_vault(path)?;
    match ask_live(&args, &Request::Share { path: names, with, mode })? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn recall(path: &Path, from: Vec<String>) -> Result<()> {
    let (args, names) = in_vault(path)?;
    match ask_live(&args, &Request::Recall { path: names, from })? {
        Response::Done { message } => {
            println!("{message}");
            Ok(())
        }
        other => Err(unexpected(&other)),
    }
}

fn grants(path: Option<PathBuf>, mountpoint: Option<PathBuf>, json: bool) -> Result<()> {
    // The mount itself lists every grant; a file or folder in it, its own.
    let (args, names) = match path {
        Some(p) => {
            let (args, names) = in_mount(&p)?;
            if names.is_empty() {
                (args, None)
            } else {
                shareable(&p, &names)?;
                (args, Some(names))
            }
        }
        None => (VaultArgs { mountpoint, ..VaultArgs::default() }, None),
    };
    let list = match ask_live(&args, &Request::Grants { path: names })? {
        Response::Grants(g) => g,
        other => return Err(unexpected(&other)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        println!("nothing shared");
    }
    for g in &list {
        let until = g.expires_at.as_deref().map(|t| format!(" until {t}")).unwrap_or_default();
        println!("{}  {}  {}{until}", g.path, g.peer, g.mode);
    }
    Ok(())
}

/// `path` made absolute with every part that exists resolved (symlinks, `..`), the rest (a
/// deleted file's name, say) appended as given.
fn resolve_partly(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("{}: cannot resolve the path", path.display()))?;
    let mut base = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(mut out) = base.canonicalize() {
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (base.parent(), base.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                base = parent;
            }
            _ => return Ok(abs),
        }
    }
}

/// A path from the vault's root (`notes/ideas.md`), as names.
fn vault_names(path: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for c in path.components() {
        match c {
            std::path::Component::Normal(n) => names.push(
                n.to_str()
                    .ok_or_else(|| anyhow!("{}: a name is not UTF-8", path.display()))?
                    .to_owned(),
            ),
            std::path::Component::CurDir => {}
            _ => bail!(
                "{} is in no mount; with --data-dir or --player, give the file's path from the \
                 vault's root (like notes/ideas.md)",
                path.display()
            ),
        }
    }
    if names.is_empty() {
        bail!("name a file in the vault");
    }
    Ok(names)
}

/// The vault a history command's PATH is in, and the file's names from the vault's root.
/// PATH is a file in a mount's `vault/` (it need not exist: a deleted file's path), or, with
/// --data-dir or --player and no mount around it, a path from the vault's root.
fn file_in_vault(path: &Path, store: &StoreArgs) -> Result<(VaultArgs, Vec<String>)> {
    let full = resolve_partly(path)?;
    let stored = store.data_dir.is_some() || store.player.is_some();
    if stored && crate::locate::enclosing_mount(&full)?.is_none() {
        let args = VaultArgs {
            data_dir: store.data_dir.clone(),
            player: store.player.clone(),
            ..VaultArgs::default()
        };
        return Ok((args, vault_names(path)?));
    }
    let args = VaultArgs {
        path: Some(full.clone()),
        data_dir: store.data_dir.clone(),
        player: store.player.clone(),
        ..VaultArgs::default()
    };
    let target = locate(&args)?.vault()?;
    let Some(m) = &target.mount else {
        bail!("{} is not inside a mounted vault", path.display());
    };
    let rel = full.strip_prefix(&m.mountpoint).unwrap_or(&full);
    let names: Option<Vec<String>> =
        rel.components().map(|c| c.as_os_str().to_str().map(str::to_owned)).collect();
    let names = names.ok_or_else(|| anyhow!("{}: a name is not UTF-8", path.display()))?;
    match names.split_first() {
        Some((top, rest)) if top == "vault" && !rest.is_empty() => Ok((
            VaultArgs { mountpoint: Some(m.mountpoint.clone()), ..VaultArgs::default() },
            rest.to_vec(),
        )),
        _ => bail!("{} is not a file in the mount's vault/", path.display()),
    }
}

/// `restore --to`: a path in the same mount as PATH, or (relative, in no mount) a path from
/// the vault's root.
fn to_names(to: &Path, of: &VaultArgs, store: &StoreArgs) -> Result<Vec<String>> {
    let full = resolve_partly(to)?;
    if to.is_relative() && crate::locate::enclosing_mount(&full)?.is_none() {
        return vault_names(to);
    }
    let (args, names) = file_in_vault(to, store)?;
    if args.mountpoint != of.mountpoint {
        bail!("--to {}: not in the same vault as the file restored", to.display());
    }
    Ok(names)
}

/// A stored vault the command opens itself (no daemon answers for it).
fn open_stored(target: &Target) -> Result<Vault> {
    let vault = open_store(&target.data_dir)?;
    target.check_player(vault.player_name())?;
    Ok(vault)
}

fn history(path: &Path, store: &StoreArgs, json: bool) -> Result<()> {
    let (args, names) = file_in_vault(path, store)?;
    let versions = match ask(&args, &Request::History { path: names.clone() })? {
        (_, Some(Response::History(v))) => v,
        (_, Some(other)) => return Err(unexpected(&other)),
        (target, None) => {
            let vault = open_stored(&target)?;
            history::history(&vault, &names).map_err(|e| anyhow!(e))?
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&versions)?);
    } else {
        print!("{}", history_text(&names.join("/"), &versions));
    }
    Ok(())
}

/// `history`: one line per version, oldest first; a deleted file's under a line that says
/// when it was deleted.
fn history_text(path: &str, versions: &[VersionJson]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if versions.is_empty() {
        let _ = writeln!(out, "no versions of {path} are kept");
    }
    let mut group: Option<&Option<String>> = None;
    for v in versions {
        if group != Some(&v.deleted_at) {
            group = Some(&v.deleted_at);
            if let Some(at) = &v.deleted_at {
                let _ = writeln!(out, "{path}, deleted {at}:");
            }
        }
        let indent = if v.deleted_at.is_some() { "  " } else { "" };
        let _ = writeln!(
            out,
            "{indent}{}  {:>10}  {}  {}  {}",
            v.time,
            bytes(v.size),
            v.indra_id,
            v.committer,
            v.version
        );
    }
    out
}

fn restore(
    path: &Path,
    at: Option<String>,
    id: Option<String>,
    to: Option<&Path>,
    store: &StoreArgs,
) -> Result<()> {
    let pick = match (at, id) {
        (Some(at), None) => Pick::At { millis: history::parse_time(&at).map_err(|e| anyhow!(e))? },
        (None, Some(id)) => {
            Pick::Id { id: history::parse_version_id(&id).map_err(|e| anyhow!(e))? }
        }
        (Some(_), Some(_)) => bail!("give --at or --id, not both"),
        (None, None) => {
            bail!("which version? give --at TIME or --id HEX (`indras-fuse history` lists them)")
        }
    };
    let (args, names) = file_in_vault(path, store)?;
    let to = to.map(|t| to_names(t, &args, store)).transpose()?;
    let request = Request::Restore { path: names.clone(), pick, to: to.clone() };
    match ask(&args, &request)? {
        (_, Some(Response::Done { message })) => println!("{message}"),
        (_, Some(other)) => return Err(unexpected(&other)),
        (target, None) => {
            let vault = open_stored(&target)?;
            let r = history::restore(&vault, &names, pick, to.as_deref(), Timestamp::now())
                .map_err(|e| anyhow!(e))?;
            println!("{}", r.message);
        }
    }
    Ok(())
}

fn snapshot(command: &SnapshotCmd) -> Result<()> {
    let (vault, request) = match command {
        SnapshotCmd::Create { name, vault } => {
            (vault, Request::SnapshotCreate { name: name.clone() })
        }
        SnapshotCmd::List { vault, .. } => (vault, Request::SnapshotList),
        SnapshotCmd::Delete { name, vault } => {
            (vault, Request::SnapshotDelete { name: name.clone() })
        }
    };
    let answer = match ask(vault, &request)? {
        (_, Some(r)) => r,
        (target, None) => {
            let v = open_stored(&target)?;
            let r = match command {
                SnapshotCmd::Create { name, .. } => {
                    history::snapshot_create(&v, name, Timestamp::now())
                        .map(|message| Response::Done { message })
                }
                SnapshotCmd::List { .. } => history::snapshot_list(&v).map(Response::Snapshots),
                SnapshotCmd::Delete { name, .. } => {
                    history::snapshot_delete(&v, name).map(|message| Response::Done { message })
                }
            };
            r.map_err(|e| anyhow!(e))?
        }
    };
    match (answer, command) {
        (Response::Done { message }, SnapshotCmd::Create { .. } | SnapshotCmd::Delete { .. }) => {
            println!("{message}");
        }
        (Response::Snapshots(list), SnapshotCmd::List { json, .. }) => {
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print!("{}", snapshots_text(&list));
            }
        }
        (other, _) => return Err(unexpected(&other)),
    }
    Ok(())
}

/// `snapshot list`: one line per snapshot, oldest first.
fn snapshots_text(list: &[SnapshotJson]) -> String {
    use std::fmt::Write as _;
    if list.is_empty() {
        return "no snapshots\n".to_owned();
    }
    let mut out = String::new();
    for s in list {
        let _ = writeln!(
            out,
            "{}  {}  {} entries, {} of files{}",
            s.name,
            s.created_at,
            s.entries,
            bytes(s.bytes),
            if s.auto { "  (automatic)" } else { "" }
        );
    }
    out
}

/// `peer list`: one line per peer.
fn peers_text(peers: &[PeerJson]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if peers.is_empty() {
        out.push_str("no peers yet: `indras-fuse invite` on one side, `peer add` on the other\n");
    }
    for p in peers {
        let state = match p.state {
            PeerStatus::Connected => "connected",
            PeerStatus::Offline => "offline",
            PeerStatus::Pending => "pending (peer accept or reject)",
        };
        let rtt = p.rtt_ms.map(|r| format!(", rtt {r:.0} ms")).unwrap_or_default();
        let seen = p.last_seen.as_deref().map(|s| format!(", last seen {s}")).unwrap_or_default();
        let _ = writeln!(out, "{}  {}  {state}{rtt}{seen}", p.name, p.player_id);
    }
    out
}

fn unexpected(r: &Response) -> anyhow::Error {
    anyhow!("the daemon gave an unexpected answer ({})", r.kind())
}

fn unmount(args: &VaultArgs, timeout: Duration) -> Result<()> {
    let target = match locate(args)? {
        Found::DeadMount(mp) => {
            rustix::mount::unmount(&mp, rustix::mount::UnmountFlags::DETACH)
                .with_context(|| format!("unmounting {}", mp.display()))?;
            println!("unmounted {} (its daemon was not running)", mp.display());
            return Ok(());
        }
        Found::Vault(t) => t,
    };
    if args.data_dir.is_some() && args.player.is_some() {
        // Told both: the vault must be that player's before anything stops.
        match client::call(&target.data_dir, &Request::Status, ANSWER_TIMEOUT)? {
            Some(Response::Status(s)) => target.check_player(&s.player)?,
            Some(other) => return Err(unexpected(&other)),
            None => bail!("{} is not mounted", target.describe()),
        }
    }
    let (pid, mountpoint) = match client::call(&target.data_dir, &Request::Unmount, ANSWER_TIMEOUT)?
    {
        Some(Response::Unmounting { pid, mountpoint }) => (pid, PathBuf::from(mountpoint)),
        Some(other) => return Err(unexpected(&other)),
        // A live mount without a control socket (its daemon is of an older build): ask it to
        // stop by signal, as unmount always could.
        None => match &target.mount {
            Some(m) => {
                let pid = pid_of(m.pid)?;
                rustix::process::kill_process(pid, rustix::process::Signal::TERM).with_context(
                    || format!("signalling the daemon (pid {})", pid.as_raw_nonzero()),
                )?;
                (m.pid, m.mountpoint.clone())
            }
            None if store_locked(&target.data_dir) => {
                bail!("{:#}; unmount it by its mount point", not_answering(&target.data_dir));
            }
            None => bail!("{} is not mounted", target.describe()),
        },
    };
    let pid = pid_of(pid)?;
    let start = Instant::now();
    while is_mounted(&mountpoint) || is_running(pid) {
        if start.elapsed() > timeout {
            bail!(
                "the daemon (pid {}) did not finish within {}s",
                pid.as_raw_nonzero(),
                timeout.as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!("unmounted {}", mountpoint.display());
    Ok(())
}

fn pid_of(pid: u32) -> Result<rustix::process::Pid> {
    i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .ok_or_else(|| anyhow!("the daemon reports an impossible pid {pid}"))
}

/// Whether a process exists and has not exited (a zombie waiting for its parent has).
fn is_running(pid: rustix::process::Pid) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()));
    // The state letter follows the parenthesised command name.
    stat.is_ok_and(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| !rest.starts_with('Z')))
}

/// Whether a process holds the store's lock. When no daemon answers on the control socket, that
/// is a mount whose daemon has no socket (an older build's) or lost it.
fn store_locked(dir: &Path) -> bool {
    std::fs::File::open(dir.join("LOCK"))
        .is_ok_and(|f| matches!(f.try_lock_shared(), Err(std::fs::TryLockError::WouldBlock)))
}

/// The one line for a mount that holds the store but does not answer on its socket.
fn not_answering(dir: &Path) -> anyhow::Error {
    anyhow!(
        "{} is in use by a mount whose daemon does not answer on {}",
        dir.display(),
        socket_path(dir).display()
    )
}

fn open_store(dir: &Path) -> Result<Vault> {
    Vault::open_existing(dir, &Options::default()).map_err(|e| match e {
        indras_artifacts::Error::Locked(_) => {
            anyhow!("{} is in use by a mount; unmount it first", dir.display())
        }
        indras_artifacts::Error::Io { ref source, .. }
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            anyhow!("no vault at {}", dir.display())
        }
        e => anyhow!("opening {}: {e}", dir.display()),
    })
}

/// The status of a live mount (from its daemon), or of a stored vault (read from the store):
/// the same model and the same lines either way.
fn status(args: &VaultArgs, json: bool) -> Result<()> {
    let target = locate(args)?.vault()?;
    let status = match client::call(&target.data_dir, &Request::Status, ANSWER_TIMEOUT)? {
        Some(Response::Status(s)) => *s,
        Some(other) => return Err(unexpected(&other)),
        None => {
            if let Some(m) = &target.mount {
                bail!(
                    "{} is mounted, but its daemon does not answer on {}",
                    m.mountpoint.display(),
                    socket_path(&target.data_dir).display()
                );
            }
            let vault = match open_store(&target.data_dir) {
                Err(_) if store_locked(&target.data_dir) => {
                    return Err(not_answering(&target.data_dir));
                }
                opened => opened?,
            };
            Status::build(&vault, Timestamp::now(), None)?
        }
    };
    target.check_player(&status.player)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print!("{}", status_text(&status)?);
    }
    Ok(())
}

/// The status as `indras-fuse status` prints it: the same lines mounted or not, but for
/// those only a live mount knows, which are left out.
fn status_text(s: &Status) -> Result<String> {
    use std::fmt::Write as _;
    let mut out = String::new();
    let a = &s.artifacts;
    let hot: Vec<String> = s.hot.iter().map(|h| format!("{} ({:.2})", h.path, h.heat)).collect();
    writeln!(out, "Mounted: {}", s.mountpoint.as_deref().unwrap_or("no (not mounted)"))?;
    writeln!(out, "Player: {} ({})", s.player, s.player_id)?;
    writeln!(out, "Data dir: {}", s.data_dir)?;
    writeln!(out, "Artifacts: {} ({} trees, {} leaves)", a.total, a.trees, a.leaves)?;
    if let Some(open) = s.open_files {
        writeln!(out, "Open files: {open}")?;
    }
    writeln!(out, "Peers: {} connected ({} known)", s.peers.connected, s.peers.known)?;
    if let Some(n) = &s.network {
        match &n.off_reason {
            None => writeln!(out, "Network: online at {}", n.addresses.join(", "))?,
            Some(why) => writeln!(out, "Network: off ({why})")?,
        }
    }
    writeln!(out, "Attention events (last hour): {}", s.attention.events_last_hour)?;
    writeln!(
        out,
        "Hot artifacts: {}",
        if hot.is_empty() { "none yet".to_owned() } else { hot.join(", ") }
    )?;
    writeln!(
        out,
        "Stored: {} of content in {} of chunks ({} on disk) and {} inline",
        bytes(s.store.logical_bytes),
        bytes(s.store.chunk_bytes),
        bytes(s.store.pack_bytes),
        bytes(s.store.inline_bytes)
    )?;
    let h = &s.history;
    writeln!(
        out,
        "History: {} versions of {} files ({} deleted), {} held only by history",
        h.versions,
        h.files,
        h.deleted,
        bytes(h.bytes)
    )?;
    if let Some(keep) = &h.keep {
        writeln!(out, "History kept: {keep}")?;
    }
    writeln!(
        out,
        "Snapshots: {} ({} held only by snapshots)",
        s.snapshots.count,
        bytes(s.snapshots.bytes)
    )?;
    if let Some(t) = &h.thinned {
        writeln!(
            out,
            "Warning: history was thinned for space at {}: its {} oldest versions ({}) were \
             dropped",
            t.at,
            t.versions,
            bytes(t.bytes)
        )?;
    }
    Ok(out)
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{n} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// A progress bar on a terminal; silent otherwise.
fn progress_bar() -> impl FnMut(Progress) {
    let bar = if std::io::stderr().is_terminal() {
        indicatif::ProgressBar::new(0)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    move |p: Progress| {
        if p.phase == "done" {
            bar.finish_and_clear();
            return;
        }
        bar.set_message(p.phase);
        bar.set_length(p.total);
        bar.set_position(p.done);
    }
}

fn gc(args: &VaultArgs, keep: &str) -> Result<()> {
    let keep = Keep::parse(keep).map_err(|e| anyhow!("--keep {keep}: {e}"))?;
    let target = locate(args)?.vault()?;
    let v = open_store(&target.data_dir)?;
    target.check_player(v.player_name())?;
    v.set_keep(keep);
    let pruned = v.prune_history(Timestamp::now())?;
    if pruned.versions > 0 {
        println!("dropped {} version(s) retention no longer keeps", pruned.versions);
    }
    let r = v.gc(None, &mut progress_bar())?;
    println!(
        "removed {} leaves ({} inline), {} chunks ({}), {} empty packs, {} stray files",
        r.leaves_removed,
        bytes(r.inline_bytes_freed),
        r.chunks_removed,
        bytes(r.chunk_bytes_freed),
        r.packs_removed,
        r.stray_files_removed
    );
    Ok(())
}

fn fsck(args: &VaultArgs, repair: bool, deep: bool) -> Result<()> {
    let target = locate(args)?.vault()?;
    let v = open_store(&target.data_dir)?;
    target.check_player(v.player_name())?;
    let r = v.fsck(FsckOptions { deep, repair }, &mut progress_bar())?;
    for p in &r.problems {
        println!("problem: {p}");
    }
    for fix in &r.repaired {
        println!("repaired: {fix}");
    }
    println!(
        "checked {} nodes, {} leaves, {} chunks ({} verified): {} problem(s)",
        r.nodes_checked,
        r.leaves_checked,
        r.chunks_checked,
        bytes(r.bytes_verified),
        r.problems.len()
    );
    if !r.is_clean() && !repair {
        bail!("the store has {} problem(s); run `indras-fuse fsck --repair`", r.problems.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_fuse::MountInfo;
    use indras_fuse::status::Live;

    /// Mounted or not, `status` prints the same lines, but for the mount's own (open files,
    /// the network).
    #[test]
    fn status_prints_the_same_lines_mounted_or_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let vault = Vault::open(dir.path(), "alice", &Options::default()).expect("open");
        let now = Timestamp::now();
        let info = MountInfo {
            mountpoint: "/mnt/alice".into(),
            ..MountInfo::unmounted("alice", dir.path())
        };
        let live = Live { info: &info, open_files: 2, attention: true };
        let mounted =
            status_text(&Status::build(&vault, now, Some(live)).expect("status")).expect("text");
        let stored = status_text(&Status::build(&vault, now, None).expect("status")).expect("text");
        let mut mounted: Vec<&str> = mounted.lines().collect();
        let stored: Vec<&str> = stored.lines().collect();
        assert_eq!(mounted[0], "Mounted: /mnt/alice");
        assert_eq!(stored[0], "Mounted: no (not mounted)");
        assert_eq!(mounted.remove(4), "Open files: 2");
        assert_eq!(mounted.remove(5), "Network: off (no network: not mounted by a daemon)");
        let kept = mounted.iter().position(|l| l.starts_with("History kept: ")).expect("keep");
        assert_eq!(mounted.remove(kept), "History kept: 1d:all,7d:1h,30d:1d");
        assert_eq!(mounted[1..], stored[1..]);
        assert!(stored.contains(&"Peers: 0 connected (0 known)"), "{stored:?}");
    }
}
