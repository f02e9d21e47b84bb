//! `.indra/heat.html` in a real browser: headless Chromium opens it straight from a real mount
//! (a `file://` URL), runs its script, and the test reads the DOM it leaves: one rectangle per
//! file, areas in proportion to sizes, the hot file the hottest, a hostile name kept as text,
//! and no error, in the page or on Chromium's console. An empty vault's page runs cleanly too.
//! A screenshot is kept in `<target>/test-output/heat.png`.
//!
//! Chromium must be installed in CI (`scripts/test.sh` installs it); elsewhere the test is
//! skipped without it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use indras_e2e::{Dirs, Mount, have, settle};

/// How long one Chromium run may take before it counts as hung (generous: a cold start on a
/// busy machine takes seconds).
const CHROMIUM_LIMIT: Duration = Duration::from_secs(120);

/// What one headless Chromium run left: its stdout and its stderr.
struct Run {
    stdout: String,
    stderr: String,
}

/// Runs headless Chromium on `url` with `extra` arguments, in a fresh profile and its own
/// process group; kills the whole group when it is done or past `CHROMIUM_LIMIT`, so no
/// process of it outlives the call.
fn chromium(url: &str, extra: &[&str]) -> Run {
    use std::os::unix::process::CommandExt as _;
    let profile = tempfile::Builder::new().prefix("indras-chromium").tempdir().expect("tempdir");
    let out = profile.path().join("stdout");
    let err = profile.path().join("stderr");
    let mut child = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,800",
            "--virtual-time-budget=5000",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().join("profile").display()))
        .args(extra)
        .arg(url)
        .env("HOME", profile.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .process_group(0)
        .spawn()
        .expect("run chromium");
    let group = rustix::process::Pid::from_child(&child);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for chromium") {
            break Some(status);
        }
        if start.elapsed() > CHROMIUM_LIMIT {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Its helpers (zygote, renderer, GPU process) share the group; none may stay behind.
    let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    if status.is_none() {
        let _ = child.wait();
    }
    let run = Run {
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    let status = status.unwrap_or_else(|| {
        panic!("chromium did not finish in {CHROMIUM_LIMIT:?}; stderr:\n{}", run.stderr)
    });
    assert!(status.success(), "chromium exited with {status}; stderr:\n{}", run.stderr);
    run
}

/// The page's DOM after its scripts ran.
fn dump_dom(url: &str) -> Run {
    let run = chromium(url, &["--dump-dom"]);
    // The page writes nothing to the console; every message there (an uncaught exception, a
    // refused load) is a failure.
    let console: Vec<&str> =
        run.stderr.lines().filter(|l| l.contains(":CONSOLE") || l.contains("Uncaught")).collect();
    assert!(console.is_empty(), "the page wrote to the console:\n{}", console.join("\n"));
    run
}

/// The attributes of every start tag `<tag` whose class is `class`, decoded.
fn elements(dom: &str, tag: &str, class: &str) -> Vec<HashMap<String, String>> {
    let mut out = Vec::new();
    let open = format!("<{tag} ");
    let mut rest = dom;
    while let Some(at) = rest.find(&open) {
        let tail = &rest[at + open.len()..];
        // Attribute values are serialized with `<`, `>`, `&` and `"` escaped.
        let end = tail.find('>').expect("end of a start tag");
        let attrs = attributes(&tail[..end]);
        if attrs.get("class").is_some_and(|c| c.split(' ').any(|c| c == class)) {
            out.push(attrs);
        }
        rest = &tail[end..];
    }
    out
}

fn attributes(tag: &str) -> HashMap<String, String> {
    let mut out = HashMap::new();
    let mut rest = tag.trim();
    while !rest.is_empty() {
        let name_end = rest.find(['=', ' ']).unwrap_or(rest.len());
        let name = rest[..name_end].to_owned();
        rest = &rest[name_end..];
        if let Some(value) = rest.strip_prefix("=\"") {
            let end = value.find('"').expect("end of a value");
            out.insert(name, unescape(&value[..end]));
            rest = &value[end + 1..];
        } else {
            out.insert(name, String::new());
        }
        rest = rest.trim_start();
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// The attributes of `<html>`: the page's own report of its run.
fn page_state(dom: &str) -> HashMap<String, String> {
    let at = dom.find("<html").expect("an html element");
    let tail = &dom[at + "<html".len()..];
    attributes(&tail[..tail.find('>').expect("end of <html>")])
}

fn url(mount: &Mount) -> String {
    format!("file://{}", mount.mnt.join(".indra/heat.html").display())
}

fn number(attrs: &HashMap<String, String>, name: &str) -> f64 {
    attrs[name].parse().unwrap_or_else(|e| panic!("{name}={:?}: {e}", attrs[name]))
}

/// Where test output goes: `<target>/test-output`, next to the build's profile folders.
fn output_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let target = exe.ancestors().nth(3).expect("the target folder");
    let dir = target.join("test-output");
    std::fs::create_dir_all(&dir).expect("mkdir test-output");
    dir
}

#[test]
fn heat_page_draws_the_vault_in_chromium() {
    if !have("chromium") {
        eprintln!("skipped: chromium is not installed (scripts/test.sh installs it)");
        return;
    }
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let v = m.vault();

    // An empty vault: the page runs, draws nothing, and says so.
    let dom = dump_dom(&url(&m)).stdout;
    let state = page_state(&dom);
    assert_eq!(state.get("data-ready").map(String::as_str), Some("1"), "script ran: {state:?}");
    assert_eq!(state["data-errors"], "0", "{state:?}");
    assert!(elements(&dom, "div", "file").is_empty(), "{dom}");
    assert!(dom.contains("Nothing to show"), "{dom}");

    let hostile = "<img src=x onerror=alert(1)>.txt";
    let files: [(&str, usize); 5] = [
        ("notes/a.md", 40 << 10),
        ("notes/b.md", 10 << 10),
        ("img/c.png", 50 << 10),
        ("empty.txt", 0),
        (hostile, 1),
    ];
    std::fs::create_dir(v.join("notes")).unwrap();
    std::fs::create_dir(v.join("img")).unwrap();
    for (i, (path, size)) in files.iter().enumerate() {
        std::fs::write(v.join(path), indras_e2e::bytes(i as u64, *size)).unwrap();
    }
    for _ in 0..8 {
        std::fs::read(v.join("notes/a.md")).unwrap();
    }
    settle(&m.mnt);

    let dom = dump_dom(&url(&m)).stdout;
    let state = page_state(&dom);
    assert_eq!(state.get("data-ready").map(String::as_str), Some("1"), "script ran: {state:?}");
    assert_eq!(state["data-errors"], "0", "{state:?}");
    assert_eq!(state["data-left-out"], "0", "{state:?}");
    let rects = elements(&dom, "div", "file");
    let mut by_path: HashMap<&str, &HashMap<String, String>> = HashMap::new();
    for r in &rects {
        assert!(by_path.insert(&r["data-path"], r).is_none(), "{} twice", r["data-path"]);
    }
    let mut drawn: Vec<&str> = by_path.keys().copied().collect();
    drawn.sort_unstable();
    let mut want: Vec<String> = files.iter().map(|(p, _)| format!("vault/{p}")).collect();
    want.sort_unstable();
    assert_eq!(drawn, want, "one rectangle per file");
    let rect = |p: &str| by_path[format!("vault/{p}").as_str()];
    for (path, size) in files {
        assert_eq!(rect(path)["data-size"], size.to_string(), "{path}");
        assert!(number(rect(path), "data-area") > 0.0, "{path} is drawn: {:?}", rect(path));
    }
    // Areas are in proportion to sizes: b is a quarter of a (same folder), c is 1.25 a (a
    // folder of the same total, so with the same header and padding).
    let area = |p: &str| number(rect(p), "data-area");
    let close = |got: f64, want: f64| (got / want - 1.0).abs() < 0.1;
    assert!(close(area("notes/a.md") / area("notes/b.md"), 4.0), "{rects:?}");
    assert!(close(area("img/c.png") / area("notes/a.md"), 1.25), "{rects:?}");
    // The file opened eight times is the hottest; those never opened are cold.
    let heat = |p: &str| number(rect(p), "data-heat");
    assert!(heat("notes/a.md") > 0.3, "{:?}", rect("notes/a.md"));
    for (path, _) in &files[1..] {
        assert!(heat(path) < heat("notes/a.md"), "{path}: {:?}", rect(path));
    }
    // The hostile name is an attribute value and text, never markup.
    assert!(!dom.contains("<img"), "a label became markup:\n{dom}");
    assert!(dom.contains("vault/notes"), "folders are drawn too");

    // A picture to look at.
    let png = output_dir().join("heat.png");
    let _ = std::fs::remove_file(&png);
    chromium(&url(&m), &[&format!("--screenshot={}", png.display())]);
    let bytes = std::fs::read(&png).unwrap_or_default();
    assert!(bytes.starts_with(b"\x89PNG"), "{} is not a PNG", png.display());
    println!("screenshot: {} ({} bytes)", png.display(), bytes.len());
    m.stop();
}

#[test]
fn the_attribute_reader_decodes_what_chromium_escapes() {
    let dom = r#"<div class="file x" data-path="vault/&lt;a&gt; &amp;&quot;" data-i="3"><span>"#;
    let found = elements(dom, "div", "file");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["data-path"], "vault/<a> &\"");
    assert_eq!(found[0]["data-i"], "3");
    assert!(elements(dom, "div", "dir").is_empty());
}
