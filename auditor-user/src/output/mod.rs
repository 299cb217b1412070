//! Renderers: the live log (text or JSON lines) and reports, and the
//! [`sink::Sink`] every event of an audit goes out through.

pub mod live;
pub mod report;
pub mod sink;
