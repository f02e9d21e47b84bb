//! Realms between peers. A realm's creator is the only source of its record: members ask it
//! (`Request::Realms`, at every connection and after a `RealmsChanged` notice) and apply what
//! it offers as the whole truth about the realms it created (`Vault::realm_apply`). Every
//! member also answers, for each realm it shares with the requester, which of its own files
//! and folders hold live grants to all the realm's other members; the requester keeps that
//! as that member's word about itself (`Vault::realm_set_items`).
//!
//! Whenever something a member could learn this way changes here (a share, a recall, an
//! expiry, a realm's members), every connected co-member gets a `RealmsChanged` notice, so
//! the realm views follow within a round trip. A leave goes to the creator
//! (`LeaveRealm`), now or at the next connection with it.

use std::collections::BTreeSet;

use indras_artifacts::{PlayerId, RealmId, Timestamp};
use tracing::{debug, info, warn};

use crate::Inner;
use crate::fetch::{self, Ask};
use crate::proto::{Request, Response};

/// The most item ids one `Realms` answer carries in all (a bound on its size).
const ITEMS_PER_ANSWER: usize = 400_000;

impl Inner {
    /// The answer to `Realms` from `peer`.
    pub(crate) fn realms_answer(&self, peer: PlayerId, now: Timestamp) -> Response {
        let v = &self.vault;
        let me = v.player();
        let rows = match v.realms() {
            Ok(r) => r,
            Err(e) => return Response::Failed(e.to_string()),
        };
        let mut created = Vec::new();
        let mut items = Vec::new();
        let mut budget = ITEMS_PER_ANSWER;
        for row in rows.into_iter().filter(|r| r.realm.has(peer)) {
            match v.realm_own_items(&row.realm, now) {
                Ok(own) => {
                    let own: Vec<u64> = own.into_iter().take(budget).map(|n| n.0).collect();
                    budget -= own.len();
                    items.push((row.realm.id, own));
                }
                Err(e) => return Response::Failed(e.to_string()),
            }
            if row.realm.creator == me {
                created.push(row.realm);
            }
        }
        Response::Realms { created, items }
    }

    /// `peer` leaves realm `id`: if we created it, it goes from the members, and everyone
    /// who was a member hears of it.
    pub(crate) fn realm_left_by(&self, peer: PlayerId, id: RealmId) -> Response {
        let v = &self.vault;
        let row = match v.realm(id) {
            Ok(Some(r)) if r.realm.creator == v.player() && r.realm.has(peer) => r,
            // Not ours, or it is out already: nothing to do, and nothing to ask again.
            Ok(_) => return Response::Ok,
            Err(e) => return Response::Failed(e.to_string()),
        };
        let members: Vec<PlayerId> =
            row.realm.members.iter().copied().filter(|m| *m != peer).collect();
        match v.realm_set_members(id, members) {
            Ok(_) => {
                info!(%peer, realm = %row.label, "a member left a realm");
                self.realms_changed_here(&row.realm.members);
                Response::Ok
            }
            Err(e) => Response::Failed(e.to_string()),
        }
    }

    /// Something co-members learn from us changed: they are told, and so are `also` (members
    /// who just left or were removed); and our own views follow.
    pub(crate) fn realms_changed_here(&self, also: &[PlayerId]) {
        let mut w = self.work.lock();
        w.realm_notice.extend(also.iter().copied());
        w.realm_notice_all = true;
        self.work_cv.notify_all();
        drop(w);
        self.observer.realms_changed();
    }

    /// Sends the queued `RealmsChanged` notices: to `extra`, and with `all` to every
    /// connected co-member of any of our realms.
    pub(crate) fn send_realm_notices(&self, extra: &BTreeSet<PlayerId>, all: bool) {
        let me = self.vault.player();
        let mut to: BTreeSet<PlayerId> = extra.clone();
        if all {
            match self.vault.realms() {
                Ok(rows) => to.extend(rows.iter().flat_map(|r| r.realm.others(me))),
                Err(e) => warn!(error = %e, "could not read the realms to announce a change"),
            }
        }
        let live = self.transport.connected();
        for peer in to.into_iter().filter(|p| *p != me && live.contains(p)) {
            if let Err(e) = self.ask(peer, &Request::RealmsChanged) {
                debug!(%peer, error = %e, "could not announce a realm change; the peer asks at its next connection");
            }
        }
    }

    /// Asks `peer` for its realms and its word about what it shares in ours, and applies
    /// both; tells it first of the realms of its we left.
    pub(crate) fn sync_realms(&self, peer: PlayerId) -> Result<(), String> {
        let v = &self.vault;
        for (id, creator) in v.realm_left().map_err(|e| e.to_string())? {
            if creator != peer {
                continue;
            }
            match self.ask(peer, &Request::LeaveRealm { id })? {
                Response::Ok => v.realm_left_told(id).map_err(|e| e.to_string())?,
                other => debug!(answer = fetch::kind(&other), "a leave was not taken yet"),
            }
        }
        let (created, items) = match self.ask(peer, &Request::Realms)? {
            Response::Realms { created, items } => (created, items),
            other => return Err(format!("unexpected answer {}", fetch::kind(&other))),
        };
        let changes = v.realm_apply(peer, &created).map_err(|e| e.to_string())?;
        let mut changed = !changes.is_empty();
        for row in v.realms().map_err(|e| e.to_string())? {
            if !row.realm.has(peer) {
                continue;
            }
            let said = items.iter().find(|(id, _)| *id == row.realm.id).map(|(_, i)| i.as_slice());
            changed |= v
                .realm_set_items(row.realm.id, peer, said.unwrap_or_default())
                .map_err(|e| e.to_string())?;
        }
        if !changes.is_empty() {
            // The members changed: what we share with all of them may have too.
            self.realms_changed_here(&[]);
        } else if changed {
            self.observer.realms_changed();
        }
        Ok(())
    }
}
