//! output
pub mod report;
