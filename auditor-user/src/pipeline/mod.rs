//! From ring-buffer bytes to enriched [`crate::event::AuditEvent`]s.
//!
//! - [`ring`]: async reading of the ring buffer (tokio `AsyncFd`).
//! - [`decode`]: bytes to raw kernel records (pure, fuzzable).
//! - [`clock`]: kernel monotonic time to wall-clock time.
//! - [`enrich`]: raw records to events (call sites, map identities).
//! - [`filter`]: what the live log shows.
//! - [`loss`]: the loss counters of each audit, and what grew since last time.

pub mod clock;
pub mod decode;
pub mod enrich;
pub mod filter;
pub mod loss;
pub mod ring;
