//! Renderers: the live log (text or JSON lines) and reports.

pub mod live;
pub mod report;
