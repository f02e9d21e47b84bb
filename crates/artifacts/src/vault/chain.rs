//! Shared attention: our attention on what peers share with us goes to each artifact's
//! steward, signed and chained, and a steward counts a peer's events only after checking them.
//!
//! # The sender's side
//! [`Vault::record_entry_attention`] takes events on mirror entries (an open, a close with its
//! dwell, a listing of something under `peers/`). In one operation it keeps each as our own
//! attention on the entry (its aggregate is keyed by the mirror id, which never equals a node
//! id), and queues it for the entry's steward (the peer that shares it) in the outbox
//! (`attention_outbox_v1`), about the steward's node (`MirrorEntry::remote`) and where we saw
//! it (the steward's folder and label). An event goes to that steward only, never to anyone
//! else. Each queued event is an [`AttentionBody`] signed with the vault's key: the events we
//! send one steward form one chain, numbered from 1, each carrying the BLAKE3 hash
//! ([`event_hash`]) of the one before. The outbox holds at most [`OUTBOX_MAX`] events per
//! steward; when it is full, new events for that steward are recorded here but not queued (the
//! caller logs it), so what is queued stays one whole chain. [`Vault::delivered`] trims what
//! the steward took; if the steward's chain for us is not where ours says (it lost state, or
//! we did), the events still queued are signed again to continue its chain.
//!
//! # The steward's side
//! [`Vault::take_attention`] checks a batch from an authenticated peer, event by event, in
//! order:
//! 1. the signature, by the event's `sender`, of [`message`] (the canonical encoding with a
//!    domain prefix, re-encoded from the decoded body, never the bytes received);
//! 2. the sender is the peer who sent the batch (a batch relayed or re-signed by anyone else
//!    is dropped), and the steward is us;
//! 3. the chain: `seq` is one past the last event taken from that sender and `prev` is that
//!    event's hash (a `seq` at or below it is a replay);
//! 4. the sender holds a live grant covering the node now (`W::covering_grant`: of the node,
//!    or of the folder it was seen in, whose entry `name` must be that node).
//!
//! An event that fails 1 to 3 is dropped and leaves the chain where it was. An event that
//! passes 1 to 3 but not 4 is authentic and in order, so it advances the chain (it is the
//! sender's real event, and a later one must chain to it), but it does not count. What passes
//! all four is appended to our events with `player` = the sender and folded into the node's
//! aggregate, dated no later than its arrival and with at most [`DWELL_MAX_MS`] of dwell. The
//! chain head is kept per sender (`attention_chains_v1`), durably before the answer.

use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::Result;
use crate::store::meta::W;
use crate::store::schema::{CHAIN_SENT, CHAIN_TAKEN, decode, encode};
use crate::types::{
    AttentionBody, AttentionSwitchEvent, ChainHead, NodeId, PlayerId, SecretKey, SignedAttention,
    Timestamp,
};
use crate::vault::attention::fold_events;
use crate::vault::handle::{Commit, Vault};

/// What every signed attention event begins with, so a signature made for it means nothing
/// elsewhere.
pub const DOMAIN: &[u8] = b"indras-attention-v1\0";
/// The most events in one batch (one request): well under the network's 64 KiB per request
/// even with 255-byte labels.
pub const BATCH_MAX: usize = 64;
/// The most events queued for one steward.
pub const OUTBOX_MAX: u64 = 10_000;
/// The most dwell one event of a peer counts.
pub const DWELL_MAX_MS: u64 = 86_400_000;

/// The bytes an event's signature covers: [`DOMAIN`], then the postcard encoding of `body`.
pub fn message(body: &AttentionBody) -> Vec<u8> {
    let mut m = DOMAIN.to_vec();
    m.extend_from_slice(&encode(body));
    m
}

/// The hash the next event of the chain carries as `prev`.
pub fn event_hash(body: &AttentionBody) -> [u8; 32] {
    *blake3::hash(&message(body)).as_bytes()
}

/// `body`, signed with `key`.
pub fn sign(key: &SecretKey, body: AttentionBody) -> SignedAttention {
    let sig = key.sign(&message(&body)).to_vec();
    SignedAttention { body, sig }
}

/// Whether `ev` carries a valid signature of its body by its sender.
pub fn verify(ev: &SignedAttention) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(ev.sig.as_slice()) else { return false };
    let Ok(key) = VerifyingKey::from_bytes(&ev.body.sender.0) else { return false };
    key.verify_strict(&message(&ev.body), &Signature::from_bytes(&sig)).is_ok()
}

/// Why a steward dropped an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refused {
    /// The signature is not the sender's.
    Forged,
    /// Signed by someone other than the peer who sent it.
    NotSender,
    /// About another steward's artifact.
    NotSteward,
    /// At or below the last event taken from the sender.
    Replay,
    /// Not the next event of the sender's chain.
    Broken,
    /// Authentic and in order, about a node the sender has no live grant of: it advances
    /// the chain but does not count.
    NotGranted,
}

impl Refused {
    pub fn name(self) -> &'static str {
        match self {
            Refused::Forged => "forged signature",
            Refused::NotSender => "not signed by the peer who sent it",
            Refused::NotSteward => "about another steward's artifact",
            Refused::Replay => "a replay",
            Refused::Broken => "not the next of its chain",
            Refused::NotGranted => "about a node not granted to the sender",
        }
    }
}

/// What a steward did with a batch.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Taken {
    /// The sender's chain as far as we took it now.
    pub head: ChainHead,
    /// Events counted in our attention.
    pub counted: usize,
    /// Events dropped, by sequence number.
    pub refused: Vec<(u64, Refused)>,
}

/// What recording attention on mirror entries queued.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Events queued for their stewards.
    pub queued: usize,
    /// Stewards whose outbox was full: events for them were recorded here only.
    pub full: Vec<PlayerId>,
}

/// What a steward's answer did to its outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// Events the steward took, now gone from the outbox.
    pub trimmed: u64,
    /// Set when the steward's chain was not where ours said: our last sequence number before,
    /// and the events signed again to continue its chain.
    pub rechained: Option<(u64, u64)>,
    /// Events still queued.
    pub left: u64,
}

impl W<'_> {
    fn chain_head(&mut self, peer: PlayerId, which: u8) -> Result<ChainHead> {
        match self.chains()?.get((&peer.0, which))? {
            Some(v) => decode("chain head", v.value()),
            None => Ok(ChainHead::default()),
        }
    }

    fn set_chain_head(&mut self, peer: PlayerId, which: u8, head: ChainHead) -> Result<()> {
        self.chains()?.insert((&peer.0, which), encode(&head).as_slice())?;
        Ok(())
    }

    /// The first sequence number queued for `steward`, if any.
    fn outbox_first(&mut self, steward: PlayerId) -> Result<Option<u64>> {
        let first = self
            .outbox()?
            .range((&steward.0, 0u64)..=(&steward.0, u64::MAX))?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().1);
        Ok(first)
    }

    /// The events queued for `steward`, in order, with their sequence numbers.
    fn outbox_rows(&mut self, steward: PlayerId, limit: usize) -> Result<Vec<SignedAttention>> {
        self.outbox()?
            .range((&steward.0, 0u64)..=(&steward.0, u64::MAX))?
            .take(limit)
            .map(|row| {
                let (_, v) = row?;
                decode("outbox event", v.value())
            })
            .collect()
    }

    /// Whether `sender` may pay attention to our node `b.node`, seen where `b` says, now.
    fn attention_granted(
        &mut self,
        sender: PlayerId,
        b: &AttentionBody,
        now: Timestamp,
    ) -> Result<bool> {
        match b.dir {
            None => Ok(self.covering_grant(sender, NodeId(b.node), now)?.is_some()),
            Some(dir) => {
                if self.covering_grant(sender, NodeId(dir), now)?.is_none() {
                    return Ok(false);
                }
                if crate::vault::namespace::validate_name(&b.name).is_err() {
                    return Ok(false);
                }
                if let Some((child, _)) = self.entry(NodeId(dir), &b.name)? {
                    return Ok(child.0 == b.node);
                }
                // A folder that a permanent grant gave us, shared on: its entries are ours.
                let named = self.mirror_names()?.get((dir, b.name.as_slice()))?.map(|v| v.value());
                Ok(named == Some(b.node))
            }
        }
    }
}

impl Vault {
    /// Records our attention on mirror entries (each event's `node` is a mirror entry id), and
    /// queues each event, signed and chained, for the entry's steward; see the module doc.
    pub fn record_entry_attention(
        &self,
        events: &[AttentionSwitchEvent],
        commit: Commit,
    ) -> Result<Recorded> {
        let me = self.player();
        self.write_fs(commit, |w| {
            fold_events(w, events)?;
            let mut out = Recorded::default();
            for ev in events {
                let Some(id) = ev.node else { continue };
                let Some(e) = w.mirror_get(id)? else { continue };
                // A peer's folder is ours, not a node of the peer's.
                if e.remote == 0 {
                    continue;
                }
                let dir = if e.root == e.id {
                    None
                } else {
                    match w.mirror_get(e.parent)? {
                        Some(p) => Some(p.remote),
                        None => continue,
                    }
                };
                let head = w.chain_head(e.peer, CHAIN_SENT)?;
                let first = w.outbox_first(e.peer)?.unwrap_or(head.seq + 1);
                if head.seq + 1 - first >= OUTBOX_MAX {
                    if !out.full.contains(&e.peer) {
                        out.full.push(e.peer);
                    }
                    continue;
                }
                let body = AttentionBody {
                    sender: me,
                    steward: e.peer,
                    seq: head.seq + 1,
                    prev: head.hash,
                    node: e.remote,
                    name: if dir.is_some() { e.their_label.clone() } else { Vec::new() },
                    dir,
                    kind: ev.kind,
                    at: ev.at,
                    dwell_ms: ev.dwell_ms,
                };
                let next = ChainHead { seq: body.seq, hash: event_hash(&body) };
                let signed = sign(self.secret_key(), body);
                w.outbox()?.insert((&e.peer.0, next.seq), encode(&signed).as_slice())?;
                w.set_chain_head(e.peer, CHAIN_SENT, next)?;
                out.queued += 1;
            }
            Ok(out)
        })
    }

    /// The stewards with events queued for them.
    pub fn outbox_stewards(&self) -> Result<Vec<PlayerId>> {
        self.scan(&["outbox"], |r| {
            let mut out: Vec<PlayerId> = Vec::new();
            let mut next = Some([0u8; 32]);
            while let Some(from) = next {
                let Some(row) = r.outbox()?.range((&from, 0u64)..)?.next() else { break };
                let steward = *row?.0.value().0;
                out.push(PlayerId(steward));
                // On past every key of this steward.
                next = successor(&steward);
            }
            Ok(out)
        })
    }

    /// Up to `limit` events queued for `steward`, oldest first.
    pub fn outbox(&self, steward: PlayerId, limit: usize) -> Result<Vec<SignedAttention>> {
        self.read_fs(|r| r.outbox_rows(steward, limit))
    }

    /// How many events are queued for `steward`.
    pub fn outbox_len(&self, steward: PlayerId) -> Result<u64> {
        self.read_fs(|r| {
            let head = r.chain_head(steward, CHAIN_SENT)?;
            Ok(r.outbox_first(steward)?.map_or(0, |first| head.seq + 1 - first))
        })
    }

    /// The end of the chain we sign for `steward`.
    pub fn chain_sent(&self, steward: PlayerId) -> Result<ChainHead> {
        self.read_fs(|r| r.chain_head(steward, CHAIN_SENT))
    }

    /// The end of `sender`'s chain as far as we took it.
    pub fn chain_taken(&self, sender: PlayerId) -> Result<ChainHead> {
        self.read_fs(|r| r.chain_head(sender, CHAIN_TAKEN))
    }

    /// `steward` answered that it took our chain up to `head`: trims what it took, and if its
    /// chain is not where ours says, signs the events still queued again so that they
    /// continue its chain (see the module doc).
    pub fn delivered(&self, steward: PlayerId, head: ChainHead) -> Result<Delivered> {
        self.write_fs(Commit::CrashConsistent, |w| {
            let mut out = Delivered::default();
            let taken: Vec<u64> = w
                .outbox()?
                .range((&steward.0, 0u64)..=(&steward.0, head.seq))?
                .map(|row| row.map(|(k, _)| k.value().1))
                .collect::<std::result::Result<_, _>>()?;
            for seq in &taken {
                w.outbox()?.remove((&steward.0, *seq))?;
            }
            out.trimmed = taken.len() as u64;
            let ours = w.chain_head(steward, CHAIN_SENT)?;
            let first = w.outbox_rows(steward, 1)?.pop();
            let (first, prev) =
                first.map_or((ours.seq + 1, ours.hash), |e| (e.body.seq, e.body.prev));
            let left = ours.seq + 1 - first;
            if first == head.seq + 1 && prev == head.hash {
                out.left = left;
                return Ok(out);
            }
            // The steward's chain for us ends elsewhere: continue it from there.
            let rows = w.outbox_rows(steward, usize::MAX)?;
            for r in &rows {
                w.outbox()?.remove((&steward.0, r.body.seq))?;
            }
            let mut at = head;
            for r in rows {
                let body = AttentionBody { seq: at.seq + 1, prev: at.hash, ..r.body };
                at = ChainHead { seq: body.seq, hash: event_hash(&body) };
                let signed = sign(self.secret_key(), body);
                w.outbox()?.insert((&steward.0, at.seq), encode(&signed).as_slice())?;
            }
            w.set_chain_head(steward, CHAIN_SENT, at)?;
            out.rechained = Some((ours.seq, left));
            out.left = left;
            Ok(out)
        })
    }

    /// Checks a batch of events that the authenticated peer `sender` sent us, keeps what
    /// passes, and returns the sender's chain head; see the module doc. Only the first
    /// [`BATCH_MAX`] events are looked at. Durable before it returns.
    pub fn take_attention(
        &self,
        sender: PlayerId,
        events: &[SignedAttention],
        now: Timestamp,
    ) -> Result<Taken> {
        let me = self.player();
        self.write_fs(Commit::Durable, |w| {
            let mut head = w.chain_head(sender, CHAIN_TAKEN)?;
            let mut out = Taken::default();
            let mut keep = Vec::new();
            for ev in events.iter().take(BATCH_MAX) {
                let b = &ev.body;
                let refused = if !verify(ev) {
                    Some(Refused::Forged)
                } else if b.sender != sender {
                    Some(Refused::NotSender)
                } else if b.steward != me {
                    Some(Refused::NotSteward)
                } else if b.seq <= head.seq {
                    Some(Refused::Replay)
                } else if b.seq != head.seq + 1 || b.prev != head.hash {
                    Some(Refused::Broken)
                } else {
                    head = ChainHead { seq: b.seq, hash: event_hash(b) };
                    if w.attention_granted(sender, b, now)? {
                        keep.push(AttentionSwitchEvent {
                            player: sender,
                            from: None,
                            to: None,
                            kind: b.kind,
                            at: b.at.min(now),
                            node: Some(NodeId(b.node)),
                            dwell_ms: b.dwell_ms.min(DWELL_MAX_MS),
                        });
                        None
                    } else {
                        Some(Refused::NotGranted)
                    }
                };
                if let Some(why) = refused {
                    out.refused.push((b.seq, why));
                }
            }
            if !keep.is_empty() {
                fold_events(w, &keep)?;
            }
            out.counted = keep.len();
            w.set_chain_head(sender, CHAIN_TAKEN, head)?;
            out.head = head;
            Ok(out)
        })
    }
}

/// The 32 bytes just above every key that starts with `id`, if any.
fn successor(id: &[u8; 32]) -> Option<[u8; 32]> {
    let mut next = *id;
    for b in next.iter_mut().rev() {
        if *b == u8::MAX {
            *b = 0;
        } else {
            *b += 1;
            return Some(next);
        }
    }
    None
}
