//! Listing a large folder while it changes: every listing, plain (`READDIR`) or with
//! attributes (`READDIRPLUS`, which the kernel asks for once a listing's entries are looked
//! up), names no entry twice and names every entry that stayed the whole time. Entries added
//! or removed during a listing may or may not appear.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use indras_e2e::{Dirs, Mount};

/// Files at the start; the writer removes the even ones and adds as many new ones.
const FILES: usize = 3000;

fn name(i: usize) -> String {
    format!("f{i:05}")
}

/// One listing of `dir` from the start: its names, in order. With `stat`, each entry is also
/// looked up as `ls -l` does, which has the kernel ask for the next pages with attributes.
fn list(dir: &Path, stat: bool) -> Vec<String> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if stat {
            // Gone since it was listed: the writer removed it.
            let _ = std::fs::symlink_metadata(e.path());
        }
        names.push(e.file_name().into_string().unwrap());
    }
    names
}

/// No name twice, and every odd-numbered file (the writer never touches those).
fn check(names: &[String], what: &str) {
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "{what}: an entry listed twice");
    for i in (1..FILES).step_by(2) {
        assert!(unique.contains(&name(i)), "{what}: {} stayed but is missing", name(i));
    }
}

#[test]
fn listings_of_a_changing_folder_are_whole_and_never_repeat() {
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let dir = m.vault().join("big");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..FILES {
        File::create(dir.join(name(i))).unwrap();
    }
    check(&list(&dir, false), "before any change");

    let writing = AtomicBool::new(true);
    let counts = std::thread::scope(|s| {
        let listers: Vec<_> = [false, true]
            .into_iter()
            .map(|stat| {
                let (dir, writing) = (&dir, &writing);
                s.spawn(move || {
                    let mut n = 0;
                    // At least a few whole listings, however quickly the writer finishes.
                    while writing.load(Ordering::Acquire) || n < 3 {
                        check(&list(dir, stat), &format!("listing {n} (stat: {stat})"));
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        for i in (0..FILES).step_by(2) {
            std::fs::remove_file(dir.join(name(i))).unwrap();
            File::create(dir.join(format!("new{i:05}"))).unwrap();
        }
        writing.store(false, Ordering::Release);
        listers.into_iter().map(|l| l.join().unwrap()).collect::<Vec<_>>()
    });
    assert!(counts.iter().all(|n| *n >= 3), "listings: {counts:?}");

    // Settled: exactly the odd files and the new ones, in the order they were made.
    let mut want: Vec<String> = (1..FILES).step_by(2).map(name).collect();
    want.extend((0..FILES).step_by(2).map(|i| format!("new{i:05}")));
    assert_eq!(list(&dir, true), want);
}

/// One listing of `dir`: every entry's inode number in the listing is the one `lstat` gives.
/// With `stat`, each entry is looked up as it is listed (as `ls -l` does, which has the kernel
/// ask for the next pages with attributes), else once the listing is done. Returns how many
/// entries were listed.
fn check_inode_numbers(dir: &Path, stat: bool, what: &str) -> usize {
    use std::os::unix::fs::{DirEntryExt, MetadataExt};
    let lstat = |p: &Path| std::fs::symlink_metadata(p).unwrap();
    let mut listed = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = stat.then(|| lstat(&e.path()));
        listed.push((e.path(), e.ino(), meta));
    }
    for (path, ino, meta) in &listed {
        let meta = meta.clone().unwrap_or_else(|| lstat(path));
        assert_eq!(*ino, meta.ino(), "{what}: {} listed with another inode number", path.display());
    }
    listed.len()
}

/// A listing with attributes (`READDIRPLUS`) sends without them the entries the kernel holds
/// already, and with them the others; every entry is listed all the same, under its own
/// inode number (an entry listed with inode number 0 would be dropped by `readdir`). Checked
/// on a fresh mount's empty cache, with lookups between pages (the kernel then asks for
/// attributes page after page), and again once every entry is held.
#[test]
fn listed_entries_keep_their_inode_numbers_with_or_without_attributes() {
    const N: usize = 700;
    let dirs = Dirs::new();
    let m = Mount::start(&dirs);
    let dir = m.vault().join("inos");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..N {
        File::create(dir.join(name(i))).unwrap();
    }
    // Every file was just created through the mount: the kernel holds them all.
    assert_eq!(check_inode_numbers(&dir, false, "held"), N);
    assert_eq!(check_inode_numbers(&dir, true, "held, looked up"), N);
    m.stop();

    // A new mount: the kernel holds none of them until they are listed or looked up.
    let m = Mount::start(&dirs);
    let dir = m.vault().join("inos");
    assert_eq!(check_inode_numbers(&dir, true, "after a remount, looked up"), N);
    assert_eq!(check_inode_numbers(&dir, true, "listed again"), N);
    assert_eq!(list(&dir, false), (0..N).map(name).collect::<Vec<_>>());
    m.stop();
}
