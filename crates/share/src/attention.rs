//! Shared attention over the protocol (see `indras_artifacts::chain` for the events and their
//! checks):
//! - the sender's side ([`Outbound::deliver`]): each steward with events queued for it, while
//!   connected, gets them in batches of at most `BATCH_MAX` (`Request::Attention`), oldest
//!   first; its answer (`Response::Taken`) trims the queue. A steward that is away, refuses
//!   (`Denied`: it takes no attention) or fails is asked again after a wait that doubles from
//!   `RETRY_MIN` to `RETRY_MAX`, and at once when it connects again. The queue is in the store,
//!   so a restart loses nothing of it.
//! - the steward's side ([`Outbound::take`]): a batch from an authenticated peer is checked
//!   event by event (`Vault::take_attention`); what is dropped is logged at most once per
//!   `LOG_EVERY` per peer, with counts, and earns the peer nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indras_artifacts::chain::BATCH_MAX;
use indras_artifacts::{ChainHead, PlayerId, Refused, SignedAttention, Timestamp, Vault};
use parking_lot::Mutex;
use tracing::{debug, info, warn};

use crate::fetch::Ask;
use crate::proto::{Request, Response};

/// The first wait before a steward is asked again; it doubles up to `RETRY_MAX`.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Batches sent to one steward in one round, before the others get their turn.
const ROUND_BATCHES: usize = 16;
/// How often dropped events of one peer are logged at most.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// The state of shared attention in one engine.
#[derive(Debug, Default)]
pub(crate) struct Outbound {
    /// Stewards not to ask before a time, with the failures so far.
    waits: Mutex<HashMap<PlayerId, (Instant, u32)>>,
    /// Per peer, when its dropped events were last logged, and those dropped since.
    dropped: Mutex<HashMap<PlayerId, Dropped>>,
}

/// When a peer's dropped events were last logged, and how many were dropped since, by why.
type Dropped = (Option<Instant>, HashMap<Refused, u64>);

impl Outbound {
    /// `peer` connected: ask it at once.
    pub(crate) fn connected(&self, peer: PlayerId) {
        self.waits.lock().remove(&peer);
    }

    /// The answer to `Request::Attention { events }` from `peer`.
    pub(crate) fn take(
        &self,
        vault: &Vault,
        peer: PlayerId,
        events: &[SignedAttention],
    ) -> Response {
        if events.len() > BATCH_MAX {
            debug!(%peer, events = events.len(), "refused a batch of attention events over the limit");
            return Response::Denied;
        }
        match vault.take_attention(peer, events, Timestamp::now()) {
            Ok(taken) => {
                if !taken.refused.is_empty() {
                    self.note_dropped(peer, &taken.refused, events.len());
                }
                if taken.counted > 0 {
                    debug!(%peer, counted = taken.counted, "took a peer's attention");
                }
                Response::Taken { through: taken.head.seq, head: taken.head.hash }
            }
            Err(e) => {
                warn!(%peer, error = %e, "could not take a peer's attention");
                Response::Failed(e.to_string())
            }
        }
    }

    /// Logs dropped events of `peer`, at most once per `LOG_EVERY`, with what was dropped since.
    fn note_dropped(&self, peer: PlayerId, refused: &[(u64, Refused)], batch: usize) {
        let mut d = self.dropped.lock();
        let (last, counts) = d.entry(peer).or_default();
        for (_, why) in refused {
            *counts.entry(*why).or_default() += 1;
        }
        // A peer never logged is logged at once.
        if last.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            let what: Vec<String> =
                counts.iter().map(|(w, n)| format!("{n} {}", w.name())).collect();
            warn!(%peer, batch, dropped = %what.join(", "), "dropped attention events from a peer");
            *last = Some(Instant::now());
            counts.clear();
        }
    }

    /// Sends each connected steward in `live` the events queued for it (see the module doc).
    pub(crate) fn deliver(
        &self,
        vault: &Vault,
        ask: &dyn Ask,
        live: &[PlayerId],
        stop: &AtomicBool,
    ) {
        let stewards = match vault.outbox_stewards() {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "could not read the attention outbox");
                return;
            }
        };
        let now = Instant::now();
        for steward in stewards {
            if !live.contains(&steward)
                || self.waits.lock().get(&steward).is_some_and(|(at, _)| *at > now)
            {
                continue;
            }
            for _ in 0..ROUND_BATCHES {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                match self.send_batch(vault, ask, steward) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(why) => {
                        let mut w = self.waits.lock();
                        let tries = w.get(&steward).map_or(0, |(_, n)| *n);
                        let wait = RETRY_MIN.saturating_mul(1 << tries.min(5)).min(RETRY_MAX);
                        debug!(peer = %steward, error = %why, ?wait, "attention not delivered; asking again later");
                        w.insert(steward, (Instant::now() + wait, tries + 1));
                        break;
                    }
                }
            }
        }
    }

    /// Sends `steward` one batch; returns whether more may follow at once.
    fn send_batch(&self, vault: &Vault, ask: &dyn Ask, steward: PlayerId) -> Result<bool, String> {
        let events = vault.outbox(steward, BATCH_MAX).map_err(|e| e.to_string())?;
        let Some(last) = events.last().map(|e| e.body.seq) else { return Ok(false) };
        let sent = events.len();
        match ask.ask(steward, &Request::Attention { events })? {
            Response::Taken { through, head } => {
                let d = vault
                    .delivered(steward, ChainHead { seq: through, hash: head })
                    .map_err(|e| e.to_string())?;
                self.waits.lock().remove(&steward);
                if let Some((ours, left)) = d.rechained {
                    info!(peer = %steward, ours, theirs = through, left, "a steward's chain of our attention differs from ours; the queue continues its chain");
                    return Ok(left > 0);
                }
                if through < last {
                    // It took part of the batch and dropped the rest: nothing to gain from
                    // sending it again now.
                    return Err(format!("the steward took our events up to {through} of {last}"));
                }
                Ok(d.left > 0 && sent == BATCH_MAX)
            }
            Response::Denied => Err("the steward takes no attention".into()),
            other => Err(format!("unexpected answer {}", crate::fetch::kind(&other))),
        }
    }
}
