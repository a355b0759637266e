//! Resumable sessions: a proxied connection between two peerup peers that outlives the
//! underlying connection it runs on.
//!
//! - `wire`: the hello that opens or resumes a session, its reply, and the frames.
//! - `engine`: carrying a local socket over the session, across underlying connections.
//! - `table`: the answering side's sessions, by peer and identity.
//! - `link`: where each side's next underlying connection comes from (a redial with backoff
//!   within a grace period; the table).
//!
//! Not wired into the tunnel yet: the next step negotiates it (`/peerup/resume/1.0.0`), keeps
//! the answering side's sessions by peer and identity, and redials through the tunnel.

#![expect(dead_code, reason = "built and tested ahead of its wiring into the tunnel (issue 22)")]

#[cfg(test)]
mod cut;
mod engine;
mod link;
mod table;
mod wire;
