//! The remote protocol: how pg_backrest on one host uses storage on another. The client
//! starts `pg_backrest ... remote` on the other host through SSH ([`ssh`]) and speaks
//! length-prefixed frames ([`frame`]) over that process's stdin/stdout: JSON requests and
//! replies, and data frames for file contents, so files stream in both directions without
//! ever being held whole. docs/protocol.md describes the wire format.
//!
//! This module is the transport only: frames, SSH, the client, and the messages
//! ([`request`]: one typed enum of every request, and the replies). It knows no command,
//! database or storage: the server that answers requests belongs to the command it serves,
//! `crate::command::remote` (its `server` module), which dispatches on [`request::Request`]
//! with an exhaustive match. The client ([`client`]) wraps the async SSH streams in a
//! synchronous API with io-timeout on every wait, so a peer that stops answering fails the
//! command instead of hanging it.

pub mod client;
pub mod frame;
pub mod request;
pub mod ssh;

/// Bumped on any incompatible change of the wire format.
pub const PROTOCOL_VERSION: u64 = 5;
