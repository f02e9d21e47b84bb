//! Shared attention between stores, without a network: bob's attention on what alice shares
//! with him is queued signed and chained for alice, and alice counts only what passes every
//! check (signature, sender, steward, chain, grant).

use std::sync::Arc;

use indras_artifacts::chain::{self, BATCH_MAX, OUTBOX_MAX};
use indras_artifacts::{
    AccessMode, AttentionKind, AttentionSwitchEvent, ChainHead, Commit, MirrorEntry, NewNode,
    NodeId, Options, Refused, SignedAttention, Timestamp, Vault,
};
use proptest::prelude::*;

const CC: Commit = Commit::CrashConsistent;

struct World {
    _dirs: Vec<tempfile::TempDir>,
    alice: Arc<Vault>,
    bob: Arc<Vault>,
    carol: Arc<Vault>,
    /// alice's nodes.
    docs: NodeId,
    a_md: NodeId,
    solo: NodeId,
    secret: NodeId,
}

impl World {
    fn new() -> World {
        let mut dirs = Vec::new();
        let mut open = |name: &str| {
            let d = tempfile::tempdir().unwrap();
            let v = Arc::new(Vault::open(d.path(), name, &Options::default()).unwrap());
            dirs.push(d);
            v
        };
        let (alice, bob, carol) = (open("alice"), open("bob"), open("carol"));
        let now = Timestamp::now();
        let file = |parent, name: &str, bytes: &[u8]| {
            let staged = alice.stage(bytes).unwrap();
            alice
                .create(parent, name.as_bytes(), &NewNode::file(0o644), Some(staged), now, CC)
                .unwrap()
                .id
        };
        let docs =
            alice.create(NodeId::ROOT, b"docs", &NewNode::dir(0o755), None, now, CC).unwrap().id;
        let a_md = file(docs, "a.md", b"alpha");
        let solo = file(NodeId::ROOT, "solo.md", b"solo");
        let secret = file(NodeId::ROOT, "secret.md", b"secret");
        let w = World { _dirs: dirs, alice, bob, carol, docs, a_md, solo, secret };
        w.grant(w.docs);
        w.grant(w.solo);
        w.sync();
        w
    }

    fn grant(&self, node: NodeId) {
        let bob = self.bob.player();
        self.alice.grant(node, bob, AccessMode::Revocable, Timestamp::now(), CC).unwrap();
    }

    /// bob's mirror gets what alice shares with him, as the sync engine would apply it.
    fn sync(&self) {
        let now = Timestamp::now();
        let folder = self.bob.mirror_ensure_peer(self.alice.player(), "alice").unwrap();
        let mut roots = Vec::new();
        for g in self.alice.grants_to(self.bob.player(), now).unwrap() {
            roots.extend(self.alice.shared_root(&g).unwrap());
        }
        self.bob.mirror_apply(folder.id, &roots, now).unwrap();
        let docs = self.entry(&["docs"]).id;
        let (items, _) = self.alice.shared_list(self.docs, 0, 1000).unwrap();
        self.bob.mirror_apply(docs, &items, now).unwrap();
    }

    /// bob's mirror entry at `path` under `peers/alice/`.
    fn entry(&self, path: &[&str]) -> MirrorEntry {
        let mut at = MirrorEntry::TOP;
        let mut e = None;
        for label in std::iter::once("alice").chain(path.iter().copied()) {
            let found = self.bob.mirror_lookup(at, label.as_bytes()).unwrap().unwrap();
            at = found.id;
            e = Some(found);
        }
        e.unwrap()
    }

    /// bob reads `path` (open, then close after `dwell_ms`), recorded at once.
    fn read(&self, path: &[&str], dwell_ms: u64) {
        let id = self.entry(path).id;
        let now = Timestamp::now();
        let open = ev(&self.bob, id, AttentionKind::Navigate, now, 0);
        let close = ev(&self.bob, id, AttentionKind::Back, now, dwell_ms);
        self.bob.record_entry_attention(&[open, close], CC).unwrap();
    }

    fn outbox(&self) -> Vec<SignedAttention> {
        self.bob.outbox(self.alice.player(), usize::MAX).unwrap()
    }

    /// alice takes `events` from the authenticated peer `from`.
    fn take(&self, from: &Vault, events: &[SignedAttention]) -> indras_artifacts::Taken {
        self.alice.take_attention(from.player(), events, Timestamp::now()).unwrap()
    }

    fn heat_of(&self, node: NodeId) -> (u64, u64, usize) {
        self.alice
            .attention_of(node)
            .unwrap()
            .map_or((0, 0, 0), |a| (a.opens, a.dwell_ms, a.players.len()))
    }
}

fn ev(
    v: &Vault,
    node: NodeId,
    kind: AttentionKind,
    at: Timestamp,
    dwell_ms: u64,
) -> AttentionSwitchEvent {
    AttentionSwitchEvent {
        player: v.player(),
        from: None,
        to: None,
        kind,
        at,
        node: Some(node),
        dwell_ms,
    }
}

fn refusals(t: &indras_artifacts::Taken) -> Vec<Refused> {
    t.refused.iter().map(|r| r.1).collect()
}

#[test]
fn bobs_reads_count_on_alices_nodes_and_leave_his_outbox() {
    let w = World::new();
    // alice's own attention first: bob's makes two players.
    let now = Timestamp::now();
    w.alice.append_events(&[ev(&w.alice, w.solo, AttentionKind::Navigate, now, 0)], CC).unwrap();
    w.read(&["solo.md"], 1500);
    w.read(&["docs", "a.md"], 700);
    let folder = w.entry(&["docs"]).id;
    w.bob.record_entry_attention(&[ev(&w.bob, folder, AttentionKind::Scan, now, 0)], CC).unwrap();
    // bob's own view of his attention, keyed by his mirror ids.
    let mine = w.bob.attention_of(w.entry(&["solo.md"]).id).unwrap().unwrap();
    assert_eq!((mine.opens, mine.dwell_ms, mine.players.clone()), (1, 1500, vec![w.bob.player()]));

    let out = w.outbox();
    assert_eq!(out.len(), 5);
    assert_eq!(out.iter().map(|e| e.body.seq).collect::<Vec<_>>(), [1, 2, 3, 4, 5]);
    assert!(out.iter().all(chain::verify));
    assert_eq!(out[0].body.prev, [0; 32]);
    for pair in out.windows(2) {
        assert_eq!(pair[1].body.prev, chain::event_hash(&pair[0].body), "chained");
    }
    assert_eq!((out[0].body.node, out[0].body.dir), (w.solo.0, None));
    assert_eq!(
        (out[2].body.node, out[2].body.dir, out[2].body.name.as_slice()),
        (w.a_md.0, Some(w.docs.0), &b"a.md"[..])
    );
    assert_eq!((out[4].body.node, out[4].body.dir), (w.docs.0, None), "a shared root folder");

    let taken = w.take(&w.bob, &out);
    assert_eq!((taken.counted, taken.head.seq), (5, 5), "{taken:?}");
    assert!(taken.refused.is_empty());
    assert_eq!(w.heat_of(w.solo), (2, 1500, 2), "alice's open and bob's");
    assert_eq!(w.heat_of(w.a_md), (1, 700, 1));
    assert_eq!(w.alice.chain_taken(w.bob.player()).unwrap(), taken.head);

    let d = w.bob.delivered(w.alice.player(), taken.head).unwrap();
    assert_eq!((d.trimmed, d.left, d.rechained), (5, 0, None));
    assert!(w.outbox().is_empty());
    assert!(w.bob.outbox_stewards().unwrap().is_empty());

    // The next read continues the chain.
    w.read(&["solo.md"], 10);
    let out = w.outbox();
    assert_eq!(out[0].body.seq, 6);
    assert_eq!(w.take(&w.bob, &out).counted, 2);
    assert_eq!(w.heat_of(w.solo), (3, 1510, 2));
}

#[test]
fn forged_relayed_misdirected_broken_and_replayed_events_are_dropped() {
    let w = World::new();
    w.read(&["solo.md"], 1000);
    w.read(&["solo.md"], 1000);
    let out = w.outbox();
    assert_eq!(out.len(), 4);

    // A forged signature, and a body changed after signing.
    let mut forged = out[0].clone();
    forged.sig[5] ^= 1;
    let mut inflated = out[0].clone();
    inflated.body.dwell_ms = 3_600_000;
    let mut short = out[0].clone();
    short.sig.truncate(10);
    let t = w.take(&w.bob, &[forged, inflated, short]);
    assert_eq!(refusals(&t), [Refused::Forged; 3]);
    assert_eq!((t.counted, t.head), (0, ChainHead::default()), "the chain did not move");

    // bob's events re-signed by carol, sent by bob: not the sender. Sent by carol herself,
    // they chain (her first), but carol holds no grant: they do not count.
    let resigned: Vec<SignedAttention> = out
        .iter()
        .map(|e| {
            let body =
                indras_artifacts::AttentionBody { sender: w.carol.player(), ..e.body.clone() };
            chain::sign(w.carol.secret_key(), body)
        })
        .collect();
    assert_eq!(refusals(&w.take(&w.bob, &resigned)), [Refused::NotSender; 4]);
    // carol's own chain: re-chained from her first event.
    let mut head = ChainHead::default();
    let carols: Vec<SignedAttention> = resigned
        .iter()
        .map(|e| {
            let body = indras_artifacts::AttentionBody {
                seq: head.seq + 1,
                prev: head.hash,
                ..e.body.clone()
            };
            head = ChainHead { seq: body.seq, hash: chain::event_hash(&body) };
            chain::sign(w.carol.secret_key(), body)
        })
        .collect();
    let t = w.take(&w.carol, &carols);
    assert_eq!(refusals(&t), [Refused::NotGranted; 4]);
    assert_eq!((t.counted, t.head.seq), (0, 4));
    assert_eq!(w.heat_of(w.solo), (0, 0, 0));

    // bob's events sent to carol's vault: not her artifacts.
    let t = w.carol.take_attention(w.bob.player(), &out, Timestamp::now()).unwrap();
    assert_eq!(refusals(&t), [Refused::NotSteward; 4]);

    // A gap: event 2 before event 1.
    let t = w.take(&w.bob, &out[1..2]);
    assert_eq!(refusals(&t), [Refused::Broken]);
    // The chain in order counts; then the same batch again is a replay.
    let t = w.take(&w.bob, &out);
    assert_eq!((t.counted, t.head.seq), (4, 4));
    assert_eq!(w.heat_of(w.solo), (2, 2000, 1));
    let t = w.take(&w.bob, &out);
    assert_eq!(refusals(&t), [Refused::Replay; 4]);
    assert_eq!((t.counted, t.head.seq), (0, 4));
    assert_eq!(w.heat_of(w.solo), (2, 2000, 1), "unchanged by the replay");
    // A fork: a different event 5 signed by bob, then the real one, which no longer chains.
    w.read(&["solo.md"], 5);
    let next = w.outbox();
    let next: Vec<SignedAttention> = next.into_iter().filter(|e| e.body.seq > 4).collect();
    let mut fork = next[0].body.clone();
    fork.prev = [9; 32];
    let t = w.take(&w.bob, &[chain::sign(w.bob.secret_key(), fork)]);
    assert_eq!(refusals(&t), [Refused::Broken]);
    assert_eq!(w.take(&w.bob, &next).counted, 2);
}

/// An event about a node no longer granted is bob's real event: it advances his chain (the
/// next one chains to it) but does not count; a node never granted likewise.
#[test]
fn events_after_a_recall_advance_the_chain_without_counting() {
    let w = World::new();
    w.read(&["solo.md"], 100);
    w.read(&["docs", "a.md"], 100);
    w.alice.revoke(w.solo, w.bob.player(), CC).unwrap();
    let t = w.take(&w.bob, &w.outbox());
    assert_eq!(refusals(&t), [Refused::NotGranted; 2]);
    assert_eq!((t.counted, t.head.seq), (2, 4), "a.md counts, solo.md does not");
    assert_eq!(w.heat_of(w.solo), (0, 0, 0));
    w.bob.delivered(w.alice.player(), t.head).unwrap();

    // Seen in a folder under another name, or a file outside the folder named as in it.
    w.read(&["docs", "a.md"], 1);
    let mut out = w.outbox();
    let mut renamed = out[0].body.clone();
    renamed.name = b"b.md".to_vec();
    let mut outside = out[1].body.clone();
    outside.node = w.secret.0;
    out[0] = chain::sign(w.bob.secret_key(), renamed);
    out[1] = chain::sign(
        w.bob.secret_key(),
        indras_artifacts::AttentionBody { prev: chain::event_hash(&out[0].body), ..outside },
    );
    let t = w.take(&w.bob, &out);
    assert_eq!(refusals(&t), [Refused::NotGranted; 2]);
    assert_eq!(w.heat_of(w.secret), (0, 0, 0));
    // Those two were not the events bob signed: his chain and alice's part here, and his
    // next answer from her puts his queue back on hers.
    let d = w.bob.delivered(w.alice.player(), t.head).unwrap();
    assert_eq!((d.trimmed, d.rechained), (2, Some((6, 0))));
    // Granted again: counted again, the chain whole.
    w.grant(w.solo);
    w.read(&["solo.md"], 1);
    let rest: Vec<_> = w.outbox().into_iter().filter(|e| e.body.seq > 6).collect();
    assert_eq!(w.take(&w.bob, &rest).counted, 2);
}

/// A steward that lost its chain (it answers an older head) gets the events still queued,
/// signed again to continue its chain; one ahead of us likewise.
#[test]
fn a_steward_whose_chain_differs_gets_the_queue_rechained() {
    let w = World::new();
    w.read(&["solo.md"], 1);
    w.read(&["solo.md"], 2);
    let out = w.outbox();
    let t = w.take(&w.bob, &out[..2]);
    assert_eq!(w.bob.delivered(w.alice.player(), t.head).unwrap().left, 2);
    // The steward's answer says it has nothing of ours.
    let d = w.bob.delivered(w.alice.player(), ChainHead::default()).unwrap();
    assert_eq!((d.trimmed, d.left, d.rechained), (0, 2, Some((4, 2))));
    let again = w.outbox();
    assert_eq!(again.iter().map(|e| e.body.seq).collect::<Vec<_>>(), [1, 2]);
    assert_eq!(again[0].body.prev, [0; 32]);
    assert_eq!(again[1].body.prev, chain::event_hash(&again[0].body));
    assert_eq!(again[0].body.dwell_ms, out[2].body.dwell_ms, "the same events");
    assert!(again.iter().all(chain::verify));
    w.read(&["solo.md"], 3);
    assert_eq!(w.outbox()[2].body.seq, 3, "new events continue the new chain");

    // A steward ahead of us (we lost state): the queue continues from its head.
    let ahead = ChainHead { seq: 50, hash: [7; 32] };
    let d = w.bob.delivered(w.alice.player(), ahead).unwrap();
    assert_eq!(d.trimmed, 4, "everything at or below its head");
    assert_eq!(w.bob.chain_sent(w.alice.player()).unwrap(), ahead);
    w.read(&["solo.md"], 4);
    let out = w.outbox();
    assert_eq!((out[0].body.seq, out[0].body.prev), (51, [7; 32]));
}

/// The outbox is bounded per steward: when full, new events are recorded locally only and
/// the queued chain stays whole; once the steward takes some, new ones queue again.
#[test]
fn a_full_outbox_keeps_its_chain_whole() {
    let w = World::new();
    let id = w.entry(&["solo.md"]).id;
    let now = Timestamp::now();
    let many: Vec<_> =
        (0..OUTBOX_MAX + 5).map(|_| ev(&w.bob, id, AttentionKind::Navigate, now, 0)).collect();
    let r = w.bob.record_entry_attention(&many, CC).unwrap();
    assert_eq!((r.queued as u64, r.full.clone()), (OUTBOX_MAX, vec![w.alice.player()]));
    assert_eq!(w.bob.outbox_len(w.alice.player()).unwrap(), OUTBOX_MAX);
    let mine = w.bob.attention_of(id).unwrap().unwrap();
    assert_eq!(mine.opens, OUTBOX_MAX + 5, "recorded here all the same");
    let first = w.bob.outbox(w.alice.player(), BATCH_MAX).unwrap();
    let t = w.take(&w.bob, &first);
    assert_eq!(t.counted, BATCH_MAX);
    w.bob.delivered(w.alice.player(), t.head).unwrap();
    let r = w.bob.record_entry_attention(&many[..1], CC).unwrap();
    assert_eq!(r.queued, 1);
    let last = w.bob.outbox(w.alice.player(), usize::MAX).unwrap();
    assert_eq!(last.last().unwrap().body.seq, OUTBOX_MAX + 1, "no gap where events were refused");
    // Only the first BATCH_MAX of a longer batch are looked at.
    let t = w.take(&w.bob, &last);
    assert_eq!((t.counted, t.head.seq), (BATCH_MAX, 2 * BATCH_MAX as u64));
}

/// Times from the future count as the arrival's, and dwell is bounded.
#[test]
fn a_peers_event_cannot_inflate_heat_past_its_arrival() {
    let w = World::new();
    let id = w.entry(&["solo.md"]).id;
    let future = Timestamp::from_millis(Timestamp::now().as_millis() + 10 * 86_400_000);
    let evs = [ev(&w.bob, id, AttentionKind::Back, future, u64::MAX)];
    w.bob.record_entry_attention(&evs, CC).unwrap();
    w.bob.record_entry_attention(&evs, CC).unwrap();
    assert_eq!(w.take(&w.bob, &w.outbox()).counted, 2);
    let agg = w.alice.attention_of(w.solo).unwrap().unwrap();
    assert!(agg.last_seen <= Timestamp::now());
    assert_eq!(agg.dwell_ms, 2 * chain::DWELL_MAX_MS);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Any change to the bytes of a signed event either fails to decode, decodes to the same
    /// event, or is dropped: nothing else ever counts, and nothing panics.
    #[test]
    fn a_changed_byte_never_counts(at in 0usize..400, mask in 1u8..=255) {
        let w = World::new();
        w.read(&["docs", "a.md"], 42);
        let good = w.outbox()[0].clone();
        let mut bytes = postcard::to_allocvec(&good).unwrap();
        let at = at % bytes.len();
        bytes[at] ^= mask;
        if let Ok(changed) = postcard::from_bytes::<SignedAttention>(&bytes) {
            let t = w.take(&w.bob, std::slice::from_ref(&changed));
            if changed == good {
                prop_assert_eq!(t.counted, 1);
            } else {
                prop_assert_eq!(t.counted, 0);
                prop_assert_eq!(w.heat_of(w.a_md), (0, 0, 0));
            }
        }
    }
}
