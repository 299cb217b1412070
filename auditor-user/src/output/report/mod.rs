//! Session reports rendered from an [`AuditReport`]: aligned text, one JSON
//! document, Graphviz dot and a self-contained HTML page; and
//! [`run_report`], the `map-auditor report` command.

mod dot;
mod html;
mod json;
mod origin;
mod session;
mod svg;
mod tables;
mod text;
mod view;

use std::path::PathBuf;

use anyhow::Context;

pub use dot::render_dot;
pub use html::render_html;
pub use json::{REPORT_SCHEMA_VERSION, ReportDocument, render_json, report_document};
pub use text::render_text;
pub use view::RenderOptions;

use crate::analysis::{AuditReport, report_from_jsonl};
pub use crate::settings::ReportFormat;

/// One `report` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReportSettings {
    /// A JSON-lines recording, or a daemon's log directory.
    pub input: Option<PathBuf>,
    /// Report on a running daemon's whole log, read through its socket.
    pub socket: Option<PathBuf>,
    pub format: ReportFormat,
    /// Write here instead of stdout.
    pub output: Option<PathBuf>,
}

/// Render `report` in `format`.
///
/// ```
/// use map_auditor::analysis::{AccessGraph, AuditReport, GraphLimits};
/// use map_auditor::settings::ReportFormat;
/// use map_auditor::output::report::{render, RenderOptions};
/// let report = AuditReport::from_graph(AccessGraph::new(GraphLimits::default()));
/// let text = render(&report, ReportFormat::Text, &RenderOptions::default());
/// assert!(text.contains("Overlaps: none caught"));
/// ```
pub fn render(report: &AuditReport, format: ReportFormat, opts: &RenderOptions) -> String {
    match format {
        ReportFormat::Text => render_text(report, opts),
        ReportFormat::Json => render_json(report),
        ReportFormat::Dot => render_dot(report, opts),
        ReportFormat::Html => render_html(report, opts),
    }
}

/// `map-auditor report`: read a recording, render it, write it to
/// `--output` or stdout. Errors are one line naming the file (and line).
pub fn run_report(args: &ReportSettings) -> anyhow::Result<()> {
    let input = args
        .input
        .as_deref()
        .context("give a recording file: `map-auditor report FILE`")?;
    let name = input.display().to_string();
    let file =
        std::fs::File::open(input).with_context(|| format!("cannot open recording {name}"))?;
    let mut report = report_from_jsonl(std::io::BufReader::new(file))
        .map_err(|e| anyhow::anyhow!(e.in_file(&name)))?;
    if let Some(r) = report.recording.as_mut() {
        r.source = Some(name);
    }
    let rendered = render(&report, args.format, &RenderOptions::default());
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write report to {}", path.display())),
        None => crate::output::pipe::print(&rendered),
    }
}

#[cfg(test)]
mod tests;
