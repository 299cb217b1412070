//! From ring-buffer bytes to enriched [`crate::event::AuditEvent`]s.
//!
//! - [`ring`]: async reading of the ring buffer (tokio `AsyncFd`).
//! - [`decode`]: bytes to raw kernel records (pure, fuzzable).
//! - [`clock`]: kernel monotonic time to wall-clock time.

pub mod clock;
pub mod decode;
pub mod enrich;
pub mod filter;
pub mod ring;
