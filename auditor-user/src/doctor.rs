//! Environment checks.
