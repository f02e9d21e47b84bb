//! Heat as `.indra/heat.json` and `.indra/heat.html` show it. Both are made from one list,
//! `spots`: every entry of `vault/` and `peers/`, and each realm's items (`realms/<realm>/`,
//! the same artifacts again, with the same figures), by its path in the mount, with its size and,
//! if it has had attention, the figures behind its heat. So whatever `heat.json` covers, the
//! page covers: a part of the mount whose attention is kept (aggregates keyed by node or mirror
//! entry id; the ids never collide) shows in both once `spots` walks it.
//!
//! - `heat.json`: the spots that have had attention, hottest first (ties by id).
//! - `heat.html`: one self-contained page (inline CSS, script and data; no fetch of any kind)
//!   drawing a squarified treemap: area is size, colour is heat, folders nest. Its data is
//!   JSON inside `<script type="application/json">` with every `<`, `>` and `&` escaped, so
//!   no label can end the script or open a comment; labels are lossy UTF-8, and the page's
//!   script only ever puts them in text and attributes. It holds at most `PAGE_ENTRIES_MAX`
//!   entries (and `PAGE_PATH_BYTES_MAX` bytes of paths): the hottest, then the largest; the
//!   page says how many were left out.

use std::collections::{HashMap, HashSet};

use indras_artifacts::{MirrorEntry, NodeId, NodeKind, RealmTarget, SharedKind, Timestamp, Vault};
use serde::Serialize;

use crate::attention::display_heat;
use crate::error::{FsError, FsResult};
use crate::time::rfc3339;

/// Entries the page holds at most.
pub(crate) const PAGE_ENTRIES_MAX: usize = 20_000;
/// Bytes of paths the page holds at most (paths can be long; this bounds the page too).
pub(crate) const PAGE_PATH_BYTES_MAX: usize = 8 << 20;

/// The page around its data: the data goes where `DATA_MARK` is.
const TEMPLATE: &str = include_str!("heat.html");
const DATA_MARK: &str = "@HEAT_DATA@";

/// What attention an entry has had.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Figures {
    /// In [0, 1), as computed (`display_heat` rounds it for showing).
    pub heat: f64,
    pub unique_peers: usize,
    pub dwell_ms: u64,
    pub opens: u64,
    pub last_seen: Timestamp,
}

/// One entry of the mount that heat is shown for.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Spot {
    /// The vault node or mirror entry.
    pub id: NodeId,
    /// Where it is in the mount (`vault/notes/a.md`, `peers/bob/spec.md`), lossy UTF-8.
    pub path: String,
    pub folder: bool,
    /// Bytes (0 for folders).
    pub size: u64,
    pub attention: Option<Figures>,
}

/// Which entries `spots` lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cover {
    /// Those that have had attention (`heat.json`): the vault's nodes are then read one by one
    /// instead of in a pass over them all.
    Attended,
    /// Every one (`heat.html`).
    Everything,
}

/// The entries of `vault/` and `peers/` with their heat at `now`: the vault's nodes from one
/// walk of its tree, then the mirror's entries from one walk of the mirror (without those
/// whose grant has ended at `now`, which `peers/` no longer shows). A node with several names
/// is listed once. An entry is the same spot whichever `cover` lists it.
pub(crate) fn spots(vault: &Vault, now: Timestamp, cover: Cover) -> FsResult<Vec<Spot>> {
    let mut heat: HashMap<NodeId, Figures> = vault
        .heat(now)?
        .into_iter()
        .map(|h| {
            let figures = Figures {
                heat: h.heat,
                unique_peers: h.unique_players,
                dwell_ms: h.dwell_ms,
                opens: h.opens,
                last_seen: h.last_seen,
            };
            (h.node, figures)
        })
        .collect();
    let attended: HashSet<NodeId> = heat.keys().copied().collect();
    // Realm items are artifacts shown under vault/ or peers/ as well: they keep their figures.
    let all = heat.clone();
    let only = (cover == Cover::Attended).then_some(&attended);
    let mut out = Vec::new();
    for p in vault.walk(only)? {
        let folder = p.kind == NodeKind::Dir;
        out.push(Spot {
            id: p.node,
            path: format!("vault/{}", String::from_utf8_lossy(&p.path)),
            folder,
            size: if folder { 0 } else { p.size },
            attention: heat.remove(&p.node),
        });
    }
    let mirror = vault.mirror_walk()?;
    let ended: HashSet<NodeId> = mirror
        .iter()
        .filter(|(_, e)| e.root == e.id && e.grant.is_some_and(|g| !g.is_active(now)))
        .map(|(_, e)| e.id)
        .collect();
    for (path, e) in mirror {
        let attention = heat.remove(&e.id);
        if ended.contains(&e.root) || (cover == Cover::Attended && attention.is_none()) {
            continue;
        }
        out.push(mirror_spot(&path, &e, attention));
    }
    for row in vault.realms()? {
        for item in vault.realm_view(&row, now)? {
            let id = item.target.id();
            let attention = all.get(&id).cloned();
            if cover == Cover::Attended && attention.is_none() {
                continue;
            }
            let size = if item.dir {
                0
            } else {
                match item.target {
                    RealmTarget::Own(n) => vault.node(n)?.size,
                    RealmTarget::Theirs(e) => vault.mirror_entry(e)?.map_or(0, |e| e.size),
                }
            };
            let path = format!("realms/{}/{}", row.label, String::from_utf8_lossy(&item.label));
            out.push(Spot { id, path, folder: item.dir, size, attention });
        }
    }
    Ok(out)
}

fn mirror_spot(path: &[u8], e: &MirrorEntry, attention: Option<Figures>) -> Spot {
    let folder = e.kind == SharedKind::Dir;
    Spot {
        id: e.id,
        path: format!("peers/{}", String::from_utf8_lossy(path)),
        folder,
        size: if folder { 0 } else { e.size },
        attention,
    }
}

#[derive(Serialize)]
struct HeatEntry {
    heat: f64,
    unique_peers: usize,
    dwell_ms: u64,
    opens: u64,
    last_seen: String,
}

/// `heat.json`: `{ path: figures }` for every spot with attention, hottest first, pretty.
pub(crate) fn heat_json(spots: &[Spot]) -> FsResult<Vec<u8>> {
    let mut hot: Vec<(&Spot, &Figures)> =
        spots.iter().filter_map(|s| s.attention.as_ref().map(|f| (s, f))).collect();
    hot.sort_by(|a, b| b.1.heat.total_cmp(&a.1.heat).then(a.0.id.cmp(&b.0.id)));
    let mut map = serde_json::Map::new();
    for (s, f) in hot {
        let entry = HeatEntry {
            heat: display_heat(f.heat),
            unique_peers: f.unique_peers,
            dwell_ms: f.dwell_ms,
            opens: f.opens,
            last_seen: rfc3339(f.last_seen),
        };
        map.insert(s.path.clone(), serde_json::to_value(entry).map_err(|e| json_error(&e))?);
    }
    serde_json::to_vec_pretty(&map).map_err(|e| json_error(&e))
}

fn json_error(e: &serde_json::Error) -> FsError {
    FsError::new(libc::EIO, e.to_string())
}

/// How much the page holds at most.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    pub entries: usize,
    pub path_bytes: usize,
}

impl Limits {
    pub(crate) const PAGE: Limits =
        Limits { entries: PAGE_ENTRIES_MAX, path_bytes: PAGE_PATH_BYTES_MAX };
}

/// The page's data, as its script reads it.
#[derive(Serialize)]
struct PageData<'a> {
    player: &'a str,
    generated_at: String,
    /// `Limits::entries`.
    cap: usize,
    /// Entries that could be drawn (files, and folders that are empty or have attention), and
    /// the bytes of their files.
    entries: usize,
    bytes: u64,
    left_out: LeftOut,
    /// One array per entry drawn: `[path, folder (0 or 1), size, heat, opens, dwell_ms,
    /// unique_peers, last_seen (RFC 3339, or null without attention)]`.
    rows: Vec<Row<'a>>,
}

#[derive(Serialize)]
struct LeftOut {
    entries: usize,
    bytes: u64,
}

type Row<'a> = (&'a str, u8, u64, f64, u64, u64, usize, Option<String>);

/// `heat.html` for `spots`, rendered at `now` for `player`, holding at most `limits`.
///
/// The page draws files and the folders that are empty or have had attention (any other
/// folder shows through the files in it). When there are more than it holds, it keeps the
/// hottest, then the largest, then by path.
pub(crate) fn heat_html(
    spots: &[Spot],
    player: &str,
    now: Timestamp,
    limits: Limits,
) -> FsResult<Vec<u8>> {
    let parents: HashSet<&str> =
        spots.iter().filter_map(|s| s.path.rsplit_once('/').map(|(p, _)| p)).collect();
    let mut drawn: Vec<&Spot> = spots
        .iter()
        .filter(|s| !s.folder || s.attention.is_some() || !parents.contains(s.path.as_str()))
        .collect();
    let heat = |s: &Spot| s.attention.as_ref().map_or(0.0, |f| f.heat);
    drawn.sort_by(|a, b| {
        heat(b).total_cmp(&heat(a)).then(b.size.cmp(&a.size)).then(a.path.cmp(&b.path))
    });
    let entries = drawn.len();
    let bytes = drawn.iter().map(|s| s.size).sum();
    let mut rows = Vec::new();
    let mut path_bytes = 0;
    let mut left_out = LeftOut { entries: 0, bytes: 0 };
    for s in drawn {
        if rows.len() >= limits.entries || path_bytes + s.path.len() > limits.path_bytes {
            left_out.entries += 1;
            left_out.bytes += s.size;
            continue;
        }
        path_bytes += s.path.len();
        let f = s.attention.as_ref();
        rows.push((
            s.path.as_str(),
            u8::from(s.folder),
            s.size,
            f.map_or(0.0, |f| display_heat(f.heat)),
            f.map_or(0, |f| f.opens),
            f.map_or(0, |f| f.dwell_ms),
            f.map_or(0, |f| f.unique_peers),
            f.map(|f| rfc3339(f.last_seen)),
        ));
    }
    let data = PageData {
        player,
        generated_at: rfc3339(now),
        cap: limits.entries,
        entries,
        bytes,
        left_out,
        rows,
    };
    let text = serde_json::to_string(&data).map_err(|e| json_error(&e))?;
    let (head, tail) = TEMPLATE
        .split_once(DATA_MARK)
        .ok_or_else(|| FsError::new(libc::EIO, "the heat page has no place for its data"))?;
    let mut out = Vec::with_capacity(head.len() + text.len() + tail.len() + 64);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(script_safe(&text).as_bytes());
    out.extend_from_slice(tail.as_bytes());
    Ok(out)
}

/// JSON text made safe inside a `<script>` element: `<`, `>` and `&` (which JSON has only
/// inside strings) become `\u` escapes, so the text holds no `</script`, `<!--` or `-->`,
/// and parses to the same value.
fn script_safe(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use indras_artifacts::{Commit, NewNode, Options};

    const NOW: i64 = 1_790_000_000_000;

    fn spot(path: &str, size: u64, heat: Option<f64>) -> Spot {
        Spot {
            id: NodeId(16 + path.len() as u64),
            path: path.into(),
            folder: false,
            size,
            attention: heat.map(|heat| Figures {
                heat,
                unique_peers: 1,
                dwell_ms: 1500,
                opens: 3,
                last_seen: Timestamp::from_millis(NOW),
            }),
        }
    }

    /// The data the page holds, parsed back as its script parses it.
    fn page_data(page: &[u8]) -> serde_json::Value {
        let page = std::str::from_utf8(page).expect("utf-8");
        let open = r#"<script type="application/json" id="heat-data">"#;
        let start = page.find(open).expect("data script") + open.len();
        let len = page[start..].find("</script>").expect("end of the data");
        serde_json::from_str(&page[start..start + len]).expect("data parses")
    }

    fn render(spots: &[Spot], limits: Limits) -> Vec<u8> {
        heat_html(spots, "alice", Timestamp::from_millis(NOW), limits).expect("render")
    }

    #[test]
    fn the_template_has_one_place_for_data_and_fetches_nothing() {
        assert_eq!(TEMPLATE.matches(DATA_MARK).count(), 1);
        for never in ["http:", "https:", "//cdn", "fetch(", "XMLHttpRequest", "@import", "src="] {
            assert!(!TEMPLATE.contains(never), "the page must not load anything: {never}");
        }
        assert!(TEMPLATE.contains("default-src 'none'"), "the page forbids every load");
    }

    #[test]
    fn hostile_labels_stay_data() {
        let hostile = "vault/x</script><script>alert(1)</script><!--y-->&amp;";
        let spots = [spot(hostile, 10, Some(0.5)), spot("vault/\u{2028}\u{fffd}", 3, None)];
        let page = render(&spots, Limits::PAGE);
        let text = String::from_utf8(page.clone()).expect("utf-8");
        // The page's own script elements, and nothing more: the label ends none of them.
        assert_eq!(text.matches("</script>").count(), TEMPLATE.matches("</script>").count());
        assert_eq!(text.matches("<script").count(), TEMPLATE.matches("<script").count());
        assert!(!text.contains("alert(1)</"), "{text}");
        assert!(!text.contains("<!--y"), "{text}");
        let data = page_data(&page);
        let paths: Vec<&str> =
            data["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(paths, [hostile, "vault/\u{2028}\u{fffd}"], "labels come back exactly");
        assert_eq!(data["player"], "alice");
    }

    #[test]
    fn the_page_holds_at_most_its_cap_keeping_the_hottest_then_the_largest() {
        let spots = [
            spot("vault/small", 1, None),
            spot("vault/big", 1000, None),
            spot("vault/warm", 5, Some(0.2)),
            spot("vault/hot", 2, Some(0.9)),
            spot("vault/mid", 100, None),
        ];
        let data = page_data(&render(&spots, Limits { entries: 3, path_bytes: 1 << 20 }));
        let paths: Vec<&str> =
            data["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(paths, ["vault/hot", "vault/warm", "vault/big"]);
        assert_eq!((data["entries"].as_u64(), data["bytes"].as_u64()), (Some(5), Some(1108)));
        assert_eq!(data["left_out"]["entries"], 2);
        assert_eq!(data["left_out"]["bytes"], 101, "mid and small");
        assert_eq!(data["cap"], 3);
        // Path bytes bound the page as well.
        let data = page_data(&render(&spots, Limits { entries: 100, path_bytes: 20 }));
        assert_eq!(data["rows"].as_array().unwrap().len(), 2, "{data}");
        assert_eq!(data["left_out"]["entries"], 3);
    }

    #[test]
    fn a_large_vault_makes_a_bounded_page() {
        let spots: Vec<Spot> =
            (0..100_000).map(|i| spot(&format!("vault/d{}/f{i}", i % 100), i, None)).collect();
        let page = render(&spots, Limits::PAGE);
        let data = page_data(&page);
        assert_eq!(data["rows"].as_array().unwrap().len(), PAGE_ENTRIES_MAX);
        assert_eq!(data["left_out"]["entries"], 100_000 - PAGE_ENTRIES_MAX);
        assert!(page.len() < 2 << 20, "{} bytes", page.len());
    }

    #[test]
    fn an_empty_vault_makes_a_page_with_no_rows() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let now = Timestamp::from_millis(NOW);
        let spots = spots(&vault, now, Cover::Everything).unwrap();
        assert!(spots.is_empty(), "{spots:?}");
        let data = page_data(&render(&spots, Limits::PAGE));
        assert_eq!(data["rows"], serde_json::json!([]));
        assert_eq!(heat_json(&spots).unwrap(), b"{}");
    }

    /// Files, empty folders and folders with attention are drawn; a folder with files in it
    /// and no attention shows only through them. Every node appears once, by its first path.
    #[test]
    fn spots_walk_the_vault_and_the_page_draws_files_and_empty_folders() {
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let now = Timestamp::from_millis(NOW);
        let c = Commit::CrashConsistent;
        let root = indras_artifacts::NodeId::ROOT;
        let notes = vault.create(root, b"notes", &NewNode::dir(0o755), None, now, c).unwrap();
        let empty = vault.create(root, b"empty", &NewNode::dir(0o755), None, now, c).unwrap();
        let staged = vault.stage(&[7u8; 300]).unwrap();
        let a =
            vault.create(notes.id, b"a.md", &NewNode::file(0o644), Some(staged), now, c).unwrap();
        vault.create(notes.id, b"e", &NewNode::file(0o644), None, now, c).unwrap();
        vault.link(a.id, root, b"z-link", now, c).unwrap();
        let spots = spots(&vault, now, Cover::Everything).unwrap();
        let mut seen: Vec<(&str, bool, u64)> =
            spots.iter().map(|s| (s.path.as_str(), s.folder, s.size)).collect();
        seen.sort_unstable();
        // The walk meets the root's own entries before those of its folders.
        assert_eq!(
            seen,
            [
                ("vault/empty", true, 0),
                ("vault/notes", true, 0),
                ("vault/notes/e", false, 0),
                ("vault/z-link", false, 300),
            ],
            "notes/a.md and z-link are one node, listed once"
        );
        assert_eq!(spots.iter().find(|s| s.size == 300).unwrap().id, a.id);
        assert_eq!(spots.iter().find(|s| s.path == "vault/empty").unwrap().id, empty.id);
        let data = page_data(&render(&spots, Limits::PAGE));
        let mut rows: Vec<(String, u64)> = data["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r[0].as_str().unwrap().to_owned(), r[1].as_u64().unwrap()))
            .collect();
        rows.sort_unstable();
        let want = [("vault/empty", 1), ("vault/notes/e", 0), ("vault/z-link", 0)];
        assert_eq!(rows, want.map(|(p, f)| (p.to_owned(), f)));
        assert_eq!(data["bytes"], 300);
    }

    /// heat.json and the page are made from the same spots: what the one lists with
    /// attention, the other draws with the same figures.
    #[test]
    fn attended_spots_are_the_attended_part_of_every_spot() {
        use indras_artifacts::{AttentionKind, AttentionSwitchEvent};
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let now = Timestamp::from_millis(NOW);
        let c = Commit::CrashConsistent;
        let root = indras_artifacts::NodeId::ROOT;
        let d = vault.create(root, b"d", &NewNode::dir(0o755), None, now, c).unwrap();
        let mut events = Vec::new();
        for (i, name) in ["a", "b", "c", "e"].iter().enumerate() {
            let staged = vault.stage(&vec![1u8; 10 * (i + 1)]).unwrap();
            let f = vault
                .create(d.id, name.as_bytes(), &NewNode::file(0o644), Some(staged), now, c)
                .unwrap();
            for _ in 0..i {
                events.push(AttentionSwitchEvent {
                    player: vault.player(),
                    from: None,
                    to: None,
                    kind: AttentionKind::Navigate,
                    at: now,
                    node: Some(f.id),
                    dwell_ms: 0,
                });
            }
        }
        vault.append_events(&events, c).unwrap();
        let every = spots(&vault, now, Cover::Everything).unwrap();
        let attended = spots(&vault, now, Cover::Attended).unwrap();
        let want: Vec<Spot> = every.iter().filter(|s| s.attention.is_some()).cloned().collect();
        assert_eq!(attended, want);
        assert_eq!(attended.len(), 3, "{attended:?}");
        let json: serde_json::Value =
            serde_json::from_slice(&heat_json(&attended).unwrap()).unwrap();
        let keys: Vec<&String> = json.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["vault/d/e", "vault/d/c", "vault/d/b"], "hottest first");
        let page = page_data(&render(&every, Limits::PAGE));
        let rows = page["rows"].as_array().unwrap();
        for (path, figures) in json.as_object().unwrap() {
            let row = rows.iter().find(|r| r[0] == path.as_str()).expect("drawn");
            assert_eq!(row[3], figures["heat"], "{path}");
            assert_eq!(row[4], figures["opens"], "{path}");
            assert_eq!(row[7], figures["last_seen"], "{path}");
        }
    }

    /// What peers share shows under `peers/`, by our labels, as `peers/` shows it: an entry
    /// whose timed grant has ended is gone.
    #[test]
    fn spots_walk_what_peers_share() {
        use indras_artifacts::{AccessMode, PlayerId, SharedItem};
        let dir = tempfile::tempdir().unwrap();
        let vault = Vault::open(dir.path(), "alice", &Options::default()).unwrap();
        let now = Timestamp::from_millis(NOW);
        let item = |remote, label: &str, kind, size, grant| SharedItem {
            remote,
            label: label.as_bytes().to_vec(),
            kind,
            size,
            mtime: now,
            content: (kind == SharedKind::File).then(|| *blake3::hash(label.as_bytes()).as_bytes()),
            grant,
        };
        let ended = AccessMode::Timed { expires_at: Timestamp::from_millis(NOW - 1) };
        let bob = vault.mirror_ensure_peer(PlayerId([7; 32]), "bob").unwrap();
        let roots = [
            item(1, "gone", SharedKind::File, 9, Some(ended)),
            item(2, "a.txt", SharedKind::File, 5, Some(AccessMode::Revocable)),
            item(3, "docs", SharedKind::Dir, 0, Some(AccessMode::Permanent)),
        ];
        vault.mirror_apply(bob.id, &roots, now).unwrap();
        let docs = vault.mirror_lookup(bob.id, b"docs").unwrap().unwrap();
        vault.mirror_apply(docs.id, &[item(4, "b.txt", SharedKind::File, 7, None)], now).unwrap();
        let kept = vault.mirror_walk().unwrap();
        assert!(kept.iter().any(|(p, _)| p == b"bob/gone"), "kept until the sweep");
        let spots = spots(&vault, now, Cover::Everything).unwrap();
        let seen: Vec<(&str, bool, u64)> =
            spots.iter().map(|s| (s.path.as_str(), s.folder, s.size)).collect();
        assert_eq!(
            seen,
            [
                ("peers/bob", true, 0),
                ("peers/bob/a.txt", false, 5),
                ("peers/bob/docs", true, 0),
                ("peers/bob/docs/b.txt", false, 7),
            ]
        );
        let data = page_data(&render(&spots, Limits::PAGE));
        let drawn: Vec<&str> =
            data["rows"].as_array().unwrap().iter().map(|r| r[0].as_str().unwrap()).collect();
        assert_eq!(drawn, ["peers/bob/docs/b.txt", "peers/bob/a.txt"], "largest first");
    }
}
