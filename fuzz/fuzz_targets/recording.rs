//! JSON-lines recordings (`map-auditor report FILE`): read into a report,
//! then rendered as text, JSON and Graphviz dot.
#![no_main]

use libfuzzer_sys::fuzz_target;
use map_auditor::{
    analysis::report_from_jsonl,
    cli::ReportFormat,
    output::report::{RenderOptions, render},
};

fuzz_target!(|data: &[u8]| {
    let Ok(report) = report_from_jsonl(data) else {
        return;
    };
    let opts = RenderOptions::default();
    for format in [ReportFormat::Text, ReportFormat::Json, ReportFormat::Dot] {
        let _ = render(&report, format, &opts);
    }
});
