//! The grantee's mirror against a reference model: whatever listings a peer sends, in any
//! order and with any labels, a folder holds exactly the distinct entries of the last listing,
//! every label is a valid name and unique in its folder, an entry keeps its label while the
//! peer's does not change, and the leaves the mirror holds are counted exactly (fsck).

mod common;

use std::collections::{BTreeMap, BTreeSet, HashSet};

use common::open;
use indras_artifacts::{
    AccessMode, Commit, FsckOptions, Hash, MirrorEntry, NewNode, NodeId, PlayerId, SharedItem,
    SharedKind, Timestamp, validate_name,
};
use proptest::prelude::*;

const LABELS: &[&[u8]] =
    &[b"spec.md", b"spec.md", b"notes", b"", b".", b"..", b"a/b", b"x\0y", b"spec (2).md"];

fn item(remote: u64, label: usize, dir: bool, content: Option<Hash>) -> SharedItem {
    SharedItem {
        remote,
        label: LABELS[label].to_vec(),
        kind: if dir { SharedKind::Dir } else { SharedKind::File },
        size: 1,
        mtime: Timestamp::from_millis(1_700_000_000_000),
        content: if dir { None } else { content },
        grant: Some(AccessMode::Revocable),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn a_folder_holds_exactly_the_last_listing(
        listings in prop::collection::vec(
            prop::collection::vec((0u64..7, 0usize..LABELS.len(), any::<bool>(), 0usize..3), 0..10),
            1..6,
        ),
        long in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let v = open(dir.path());
        let now = Timestamp::now();
        // Three contents this vault holds, so entries take them without a fetch.
        let contents: Vec<Hash> = (0..3u8)
            .map(|i| {
                let name = format!("f{i}");
                let staged = v.stage(&[i; 100]).unwrap();
                v.create(NodeId::ROOT, name.as_bytes(), &NewNode::file(0o644), Some(staged), now, Commit::CrashConsistent)
                    .unwrap()
                    .content
                    .unwrap()
            })
            .collect();
        let peer = PlayerId([9; 32]);
        let folder = v.mirror_ensure_peer(peer, "bob").unwrap();
        // Roots first, then a folder root's entries.
        let mut shared_dir = None;
        let mut labels_before: BTreeMap<(u64, SharedKind), (Vec<u8>, Vec<u8>)> = BTreeMap::new();
        for listing in &listings {
            let mut items: Vec<SharedItem> = listing
                .iter()
                .map(|&(r, l, d, c)| item(r, l, d, Some(contents[c])))
                .collect();
            if long {
                items.push(SharedItem { label: vec![b'z'; 300], ..item(99, 0, false, Some(contents[0])) });
            }
            let target = shared_dir.unwrap_or(folder.id);
            let at_top = target == folder.id;
            v.mirror_apply(target, &items, now).unwrap();
            // The model: the distinct (remote, kind) of the listing, remote 0 never.
            let want: BTreeSet<(u64, SharedKind)> =
                items.iter().filter(|i| i.remote != 0).map(|i| (i.remote, i.kind)).collect();
            let kids = v.mirror_list(target, 0, 10_000).unwrap();
            let got: BTreeSet<(u64, SharedKind)> = kids.iter().map(|e| (e.remote, e.kind)).collect();
            prop_assert_eq!(&got, &want);
            let mut seen = HashSet::new();
            for e in &kids {
                prop_assert!(validate_name(&e.label).is_ok(), "{:?}", e.label);
                prop_assert!(seen.insert(e.label.clone()), "label twice: {:?}", e.label);
                prop_assert_eq!(v.mirror_lookup(target, &e.label).unwrap().map(|x| x.id), Some(e.id));
                prop_assert!(e.ready(), "held content: {e:?}");
                if let Some((their, ours)) = labels_before.get(&(e.remote, e.kind))
                    && *their == e.their_label
                {
                    prop_assert_eq!(ours, &e.label, "a label kept while the peer's is the same");
                }
            }
            labels_before = kids.iter().map(|e| ((e.remote, e.kind), (e.their_label.clone(), e.label.clone()))).collect();
            if at_top {
                // Go one level down, into a folder root, when the listing has one.
                shared_dir = kids.iter().find(|e| e.kind == SharedKind::Dir).map(|e| e.id);
                labels_before.clear();
            }
            let report = v.fsck(FsckOptions { deep: false, repair: false }, &mut |_| {}).unwrap();
            prop_assert!(report.is_clean(), "{:?}", report.problems);
        }
        // Forgetting the peer leaves no entry and no held leaf.
        v.mirror_forget_peer(peer, now).unwrap();
        prop_assert!(v.mirror_list(MirrorEntry::TOP, 0, 10).unwrap().is_empty());
        let report = v.fsck(FsckOptions { deep: false, repair: false }, &mut |_| {}).unwrap();
        prop_assert!(report.is_clean(), "{:?}", report.problems);
    }
}
