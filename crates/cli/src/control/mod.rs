//! The control socket: how the command line reaches a running mount's daemon.
//!
//! A mount's daemon listens on `<data dir>/control.sock` from before it reports the mount
//! ready until it has unmounted. The socket has mode 0600, and the daemon also checks each
//! connecting process's credentials (`SO_PEERCRED`): only the mount's owner and root are
//! served. A data dir has at most one daemon (its `LOCK`), so at most one live socket; a socket
//! left behind by a daemon that was killed answers nothing and is treated as no daemon.
//!
//! - `addr`: the socket's path in a data dir, and a name for it that `bind`/`connect` accept.
//! - `protocol`: the versioned messages and their bounded frames.
//! - `server`: the listener (creation, credentials, connection threads, removal).
//! - `client`: one exchange with a data dir's daemon, or the news that none answers.
//! - `daemon`: what a live mount answers to each request.

pub mod addr;
pub mod client;
pub mod daemon;
pub mod protocol;
pub mod server;
