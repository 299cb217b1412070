//! Reading a JSON-lines recording (what `--record FILE` writes: one
//! [`AuditEvent`] per line) back into an [`AccessGraph`]. Bad lines fail with
//! their line number; events of kinds this version does not know are counted
//! and skipped, so a newer recording still renders.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};

use serde::Serialize;

use super::graph::{AccessGraph, GraphLimits};
use super::{AuditReport, Findings};
use crate::event::{AuditEvent, EventKind};

/// Longest line accepted; a longer one is not something `--record` wrote.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Event kinds this version reads.
const KNOWN_KINDS: [&str; 5] = [
    EventKind::Access.as_str(),
    EventKind::Overlap.as_str(),
    EventKind::BpfMap.as_str(),
    EventKind::Lost.as_str(),
    EventKind::Summary.as_str(),
];

/// Distinct unknown kinds remembered by name; more are counted as `other`.
const MAX_UNKNOWN_KINDS: usize = 64;

/// What reading a recording saw, besides the events.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RecordingStats {
    /// Where the recording came from (file path), when known.
    pub source: Option<String>,
    pub lines: u64,
    pub blank_lines: u64,
    /// Events ingested.
    pub events: u64,
    /// Skipped events by unknown `kind` (written by a newer map-auditor?).
    pub unknown_kinds: BTreeMap<String, u64>,
}

impl RecordingStats {
    /// Events skipped because of their kind.
    pub fn skipped(&self) -> u64 {
        self.unknown_kinds.values().sum()
    }
}

/// A recording that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// One line is not an event; `source` is the file name (or `recording`).
    #[error("{source_name}:{line}: {problem}")]
    BadLine {
        source_name: String,
        line: u64,
        problem: String,
    },
    #[error("{source_name}: read failed after line {line}: {error}")]
    Io {
        source_name: String,
        line: u64,
        error: std::io::Error,
    },
}

impl RecordingError {
    /// Name the file in the message: `recording.jsonl:17: ...`.
    pub fn in_file(mut self, name: &str) -> Self {
        match &mut self {
            Self::BadLine { source_name, .. } | Self::Io { source_name, .. } => {
                *source_name = name.to_owned();
            }
        }
        self
    }

    /// The 1-based line number the error is about.
    pub fn line(&self) -> u64 {
        match self {
            Self::BadLine { line, .. } | Self::Io { line, .. } => *line,
        }
    }
}

/// Outcome of decoding one line.
enum Line {
    Event(Box<AuditEvent>),
    Unknown(String),
    Blank,
}

/// serde_json appends "at line 1 column N"; the line is ours to give.
fn column_only(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    match msg.rfind(" at line ") {
        Some(i) => format!("{} at column {}", &msg[..i], e.column()),
        None => msg,
    }
}

fn decode_line(bytes: &[u8]) -> Result<Line, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(Line::Blank);
    }
    match serde_json::from_slice::<AuditEvent>(bytes) {
        Ok(ev) => return Ok(Line::Event(Box::new(ev))),
        Err(e) if e.is_syntax() || e.is_eof() => {
            return Err(format!(
                "not JSON: {}; was it written by --record?",
                column_only(&e)
            ));
        }
        Err(_) => {}
    }
    // Slow path, errors only: find out why the event did not decode.
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| column_only(&e))?;
    let Some(obj) = value.as_object() else {
        return Err(
            "not a map-auditor event: expected a JSON object; was it written by --record?".into(),
        );
    };
    let kind = match obj.get("kind") {
        None => {
            return Err(
                "not a map-auditor event: missing field `kind`; was it written by --record?".into(),
            );
        }
        Some(serde_json::Value::String(k)) => k.as_str(),
        Some(other) => {
            return Err(format!(
                "not a map-auditor event: field `kind` is {other}, expected a string; was it written by --record?"
            ));
        }
    };
    if !KNOWN_KINDS.contains(&kind) {
        return Ok(Line::Unknown(kind.to_owned()));
    }
    let kind = kind.to_owned();
    match serde_json::from_value::<AuditEvent>(value) {
        Ok(ev) => Ok(Line::Event(Box::new(ev))),
        Err(e) => Err(format!("bad `{kind}` event: {}", column_only(&e))),
    }
}

/// Read every event of a JSON-lines recording into `graph`.
///
/// Errors name the line (`recording:17: ...`; use
/// [`RecordingError::in_file`] to name the file).
pub fn read_recording<R: BufRead>(
    mut reader: R,
    graph: &mut AccessGraph,
) -> Result<RecordingStats, RecordingError> {
    let mut stats = RecordingStats::default();
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let n = reader
            .by_ref()
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|error| RecordingError::Io {
                source_name: "recording".into(),
                line: stats.lines,
                error,
            })?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        let bad = |problem: String| RecordingError::BadLine {
            source_name: "recording".into(),
            line: stats.lines,
            problem,
        };
        if buf.len() > MAX_LINE_BYTES {
            return Err(bad(format!(
                "line longer than {} MiB; was it written by --record?",
                MAX_LINE_BYTES >> 20
            )));
        }
        match decode_line(&buf).map_err(bad)? {
            Line::Event(ev) => {
                stats.events += 1;
                graph.ingest(&ev);
            }
            Line::Unknown(kind) => {
                let key = if stats.unknown_kinds.len() < MAX_UNKNOWN_KINDS
                    || stats.unknown_kinds.contains_key(&kind)
                {
                    kind
                } else {
                    "other".to_owned()
                };
                *stats.unknown_kinds.entry(key).or_default() += 1;
            }
            Line::Blank => stats.blank_lines += 1,
        }
    }
    Ok(stats)
}

/// Read a recording and draw its findings, with default [`GraphLimits`].
///
/// ```
/// let line = r#"{"kind":"access","ts_ns":1,"pid":7,"tid":7,"goid":1,"map":"0xc0000a0000","map_gen":0,"op":"write","runtime_fn":"runtime.mapassign_fast64","function":"main.main","file":"/src/main.go","line":9}"#;
/// let report = map_auditor::analysis::report_from_jsonl(line.as_bytes()).unwrap();
/// assert_eq!(report.graph.process_graph(7).unwrap().accesses, 1);
/// ```
pub fn report_from_jsonl<R: BufRead>(reader: R) -> Result<AuditReport, RecordingError> {
    report_from_jsonl_with_limits(reader, GraphLimits::default())
}

/// [`report_from_jsonl`] with explicit caps.
pub fn report_from_jsonl_with_limits<R: BufRead>(
    reader: R,
    limits: GraphLimits,
) -> Result<AuditReport, RecordingError> {
    let mut graph = AccessGraph::new(limits);
    let recording = read_recording(reader, &mut graph)?;
    let findings = Findings::from_graph(&graph);
    Ok(AuditReport {
        graph,
        findings,
        recording: Some(recording),
    })
}
