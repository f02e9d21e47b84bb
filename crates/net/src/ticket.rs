//! Invitation tickets: one line of text that lets its holder become our peer once.
//!
//! Format: `indras1` followed by lowercase base32 (RFC 4648 "extended hex" alphabet, no
//! padding) of `postcard(TicketBody) || blake3(body)[..4]`. The checksum turns typos and
//! truncation into a clear "malformed" error instead of a failed dial.
//!
//! Invariants:
//! - The secret is 32 random bytes. Only `blake3(secret)` ([`secret_hash`]) is stored by
//!   the inviter; the secret itself exists only inside the ticket and the `Hello` that
//!   redeems it, and no `Debug` output here shows it.
//! - Decoding never panics and rejects input longer than [`MAX_TICKET_LEN`] unread.

use std::net::SocketAddr;

use indras_artifacts::{PlayerId, Timestamp};
use serde::{Deserialize, Serialize};

/// Every ticket starts with this prefix; the digit is the ticket format version.
pub const TICKET_PREFIX: &str = "indras1";

/// The longest ticket accepted, in characters.
pub const MAX_TICKET_LEN: usize = 4096;

const CHECKSUM_LEN: usize = 4;

/// An invitation: who invites, where to reach them, and the one-time secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Ticket {
    pub inviter: PlayerId,
    /// The inviter's display name.
    pub name: String,
    pub addrs: Vec<SocketAddr>,
    pub relay: Option<String>,
    pub secret: [u8; 32],
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("inviter", &self.inviter)
            .field("name", &self.name)
            .field("addrs", &self.addrs)
            .field("relay", &self.relay)
            .field("secret", &"<secret>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

#[derive(Serialize, Deserialize)]
struct TicketBody {
    inviter: PlayerId,
    name: String,
    addrs: Vec<SocketAddr>,
    relay: Option<String>,
    secret: [u8; 32],
    expires_at: Timestamp,
}

/// Why a ticket string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TicketError(pub &'static str);

/// The hash under which the inviter keeps a ticket's secret.
pub fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    *blake3::hash(secret).as_bytes()
}

impl Ticket {
    /// The one-line text form.
    pub fn encode(&self) -> String {
        let body = TicketBody {
            inviter: self.inviter,
            name: self.name.clone(),
            addrs: self.addrs.clone(),
            relay: self.relay.clone(),
            secret: self.secret,
            expires_at: self.expires_at,
        };
        // Serializing plain owned data into a Vec cannot fail.
        let mut bytes = postcard::to_stdvec(&body).unwrap_or_default();
        let sum = blake3::hash(&bytes);
        bytes.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
        format!("{TICKET_PREFIX}{}", data_encoding::BASE32HEX_NOPAD.encode(&bytes).to_lowercase())
    }

    /// Parses the text form. Surrounding whitespace is ignored and case does not matter.
    pub fn decode(text: &str) -> Result<Ticket, TicketError> {
        let text = text.trim();
        if text.len() > MAX_TICKET_LEN {
            return Err(TicketError("ticket is too long"));
        }
        let lower = text.to_ascii_lowercase();
        let Some(rest) = lower.strip_prefix(TICKET_PREFIX) else {
            return Err(if lower.starts_with("indras") {
                TicketError("ticket is of an unknown format version")
            } else {
                TicketError("not an indras ticket (it must start with indras1)")
            });
        };
        let bytes = data_encoding::BASE32HEX_NOPAD
            .decode(rest.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError("ticket text is damaged (bad characters or length)"))?;
        if bytes.len() <= CHECKSUM_LEN {
            return Err(TicketError("ticket is too short"));
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if blake3::hash(body).as_bytes()[..CHECKSUM_LEN] != *sum {
            return Err(TicketError("ticket checksum does not match (copied incompletely?)"));
        }
        let body: TicketBody = postcard::from_bytes(body)
            .map_err(|_| TicketError("ticket content does not decode"))?;
        Ok(Ticket {
            inviter: body.inviter,
            name: body.name,
            addrs: body.addrs,
            relay: body.relay,
            secret: body.secret,
            expires_at: body.expires_at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> Ticket {
        Ticket {
            inviter: PlayerId([3; 32]),
            name: "alice".into(),
            addrs: vec!["127.0.0.1:1234".parse().unwrap(), "[::1]:9".parse().unwrap()],
            relay: Some("https://relay.example./".into()),
            secret: [9; 32],
            expires_at: Timestamp { secs: 1_900_000_000, nanos: 0 },
        }
    }

    #[test]
    fn round_trips_as_one_line() {
        let t = ticket();
        let text = t.encode();
        assert!(text.starts_with(TICKET_PREFIX));
        assert!(!text.contains(char::is_whitespace));
        assert_eq!(Ticket::decode(&text).unwrap(), t);
        assert_eq!(Ticket::decode(&format!("  {}\n", text.to_uppercase())).unwrap(), t);
    }

    #[test]
    fn rejects_damaged_tickets_with_distinct_reasons() {
        let text = ticket().encode();
        let cases = [
            ("", "not an indras ticket (it must start with indras1)"),
            ("hello", "not an indras ticket (it must start with indras1)"),
            ("indras9abc", "ticket is of an unknown format version"),
            ("indras1!!!!", "ticket text is damaged (bad characters or length)"),
            ("indras10", "ticket text is damaged (bad characters or length)"),
            ("indras1", "ticket is too short"),
        ];
        for (input, want) in cases {
            assert_eq!(Ticket::decode(input).unwrap_err().0, want, "{input:?}");
        }
        // Any single changed character is caught by the checksum (or the base32 decoder).
        for i in [TICKET_PREFIX.len(), text.len() / 2, text.len() - 2] {
            let mut chars: Vec<char> = text.chars().collect();
            chars[i] = if chars[i] == '0' { '1' } else { '0' };
            let damaged: String = chars.into_iter().collect();
            assert!(Ticket::decode(&damaged).is_err(), "changed at {i}");
        }
        let cut = &text[..text.len() - 8];
        assert!(Ticket::decode(cut).is_err());
        assert_eq!(
            Ticket::decode(&"a".repeat(MAX_TICKET_LEN + 1)).unwrap_err().0,
            "ticket is too long"
        );
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let shown = format!("{:?}", ticket());
        assert!(shown.contains("<secret>") && !shown.contains("9, 9"), "{shown}");
        assert_ne!(secret_hash(&[9; 32]), [9; 32]);
    }
}
