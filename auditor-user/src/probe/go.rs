//! Attaching a Go probe plan to one process.
