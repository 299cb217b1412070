//! Renderers: the live log (text or JSON lines), recordings, reports.

pub mod live;
