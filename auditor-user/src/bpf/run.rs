//! The `map-auditor bpf` command: the shared [`BpfEngine`] with a filter,
//! a terminal or JSON sink and a summary.

use std::{
    fs::File,
    io::{BufWriter, Write},
};

use anyhow::Context as _;
use auditor_common::Counter;
use tokio::signal::unix::{SignalKind, signal};

use super::{
    engine::{BpfEngine, BpfFilter, BpfSettings},
    render,
};
use crate::{
    event::AuditEvent,
    output::sink::{Recording, Sink as _},
    settings::{BpfAuditSettings, Format},
};

struct Sink {
    format: Format,
    quiet: bool,
    out: BufWriter<std::io::Stdout>,
    record: Option<Recording<BufWriter<File>>>,
    /// The reader of stdout went away: the audit ends.
    closed: bool,
}

impl Sink {
    fn emit(&mut self, ev: &AuditEvent) {
        if let Some(r) = &mut self.record {
            let _ = r.emit(ev);
        }
        if self.quiet && matches!(ev, AuditEvent::BpfMap(_)) {
            return;
        }
        let line = match self.format {
            Format::Json => serde_json::to_string(ev).unwrap_or_default(),
            Format::Text => match ev {
                AuditEvent::BpfMap(e) => render::event_line(e),
                AuditEvent::Alert(a) => render::alert_line(a),
                AuditEvent::Lost(l) => render::lost_line(l),
                _ => return,
            },
        };
        let r = writeln!(self.out, "{line}");
        self.note(r);
    }

    fn note(&mut self, r: std::io::Result<()>) {
        if r.is_err_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) {
            self.closed = true;
        }
    }

    fn flush(&mut self) {
        let r = self.out.flush();
        self.note(r);
        if let Some(r) = &mut self.record {
            let _ = r.flush();
        }
    }
}

/// Run `map-auditor bpf`. Builds its own tokio runtime (current thread);
/// returns the process exit code (0 after a clean end by Ctrl-C, SIGTERM or
/// `--duration`).
pub fn run(args: &BpfAuditSettings) -> anyhow::Result<i32> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(run_async(args))
}

async fn run_async(args: &BpfAuditSettings) -> anyhow::Result<i32> {
    let mut settings = BpfSettings::new(&args.guard, &args.allow_exe, args.include_self)
        .map_err(anyhow::Error::msg)?;
    settings.verify_hash = args.verify_hash;
    let mut filter = BpfFilter::new(
        args.pid,
        args.comm.clone(),
        args.map_id,
        args.map_name.clone(),
    );
    let mut sink = Sink {
        format: args.format,
        quiet: args.quiet,
        out: BufWriter::new(std::io::stdout()),
        closed: false,
        record: match &args.record {
            Some(p) => Some(
                Recording::create(p).with_context(|| format!("cannot create {}", p.display()))?,
            ),
            None => None,
        },
    };
    let mut engine = BpfEngine::start(&settings)?;
    // Handlers before the "auditing" line: a signal right after it must
    // end the audit cleanly, not kill it.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut notes = engine.take_notes();
    let live = notes.pop();
    for n in notes {
        eprintln!("note: {n}");
    }
    if let Some(live) = live {
        eprintln!("{live}; Ctrl-C to stop");
    }
    let mut shown = 0u64;
    let deadline = args.duration.map(|d| tokio::time::Instant::now() + d);
    let mut out: Vec<AuditEvent> = Vec::new();

    let mut show = |out: &mut Vec<AuditEvent>, sink: &mut Sink, filter: &mut BpfFilter| {
        for ev in out.drain(..) {
            let keep = match &ev {
                AuditEvent::BpfMap(e) => filter.matches(e),
                AuditEvent::Alert(a) => filter.matches_alert(a),
                _ => true,
            };
            if keep {
                if matches!(ev, AuditEvent::BpfMap(_)) {
                    shown += 1;
                }
                sink.emit(&ev);
            }
        }
    };

    loop {
        let stop = tokio::select! {
            _ = engine.wait() => false,
            _ = sigint.recv() => true,
            _ = sigterm.recv() => true,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => true,
        };
        engine.process(&mut out);
        if !stop && engine.poll_due() {
            engine.poll(&mut out);
            for n in engine.take_notes() {
                eprintln!("note: {n}");
            }
        }
        show(&mut out, &mut sink, &mut filter);
        // Once per read batch: a lone event shows at once, a flood is
        // written in large blocks.
        sink.flush();
        if stop || sink.closed {
            break;
        }
    }

    engine.finish(&mut out);
    show(&mut out, &mut sink, &mut filter);
    let summary = engine.summary(shown);
    let snap = engine.counters();
    let text = render::summary_text(
        &summary,
        &engine.graph,
        snap.get(Counter::BpfResolveFailed),
        &|pid, comm| filter.process_matches(pid, comm),
    );
    if sink.closed {
        // Nobody reads stdout any more: the summary goes to stderr, and
        // the command ends as for SIGPIPE.
        eprint!("{text}");
        if let Some(r) = &mut sink.record {
            let _ = r.emit(&AuditEvent::Summary(summary));
            let _ = r.flush();
        }
        return Err(crate::output::pipe::StdoutClosed.into());
    }
    match args.format {
        Format::Json => sink.emit(&AuditEvent::Summary(summary)),
        Format::Text => {
            let r = write!(sink.out, "{text}");
            sink.note(r);
            if let Some(r) = &mut sink.record {
                let _ = r.emit(&AuditEvent::Summary(summary));
            }
        }
    }
    sink.flush();
    if sink.closed {
        eprint!("{text}");
        return Err(crate::output::pipe::StdoutClosed.into());
    }
    Ok(0)
}
