//! JSON-lines recordings (`map-auditor report FILE`): read into a report,
//! then rendered as text, JSON, Graphviz dot and HTML.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::{
    analysis::report_from_jsonl,
    output::report::{RenderOptions, render},
    settings::ReportFormat,
};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = report_from_jsonl(data) else {
        return;
    };
    let opts = RenderOptions::default();
    for format in [
        ReportFormat::Text,
        ReportFormat::Json,
        ReportFormat::Dot,
        ReportFormat::Html,
    ] {
        let _ = render(&report, format, &opts);
    }
});
