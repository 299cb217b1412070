//! One way out: every event of an audit goes through a [`Sink`], whether it
//! ends in the terminal (the live log), a recording for `report`, or both.
//! A sink decides only how an event is written; what the user asked to see
//! is a [`Filtered`] sink in front of it.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    path::Path,
};

use crate::{event::AuditEvent, output::live::LiveLog, pipeline::filter::AccessFilter};

/// Where events go.
pub trait Sink {
    /// Write one event. Findings, losses and summaries are on their way to
    /// the reader (or the disk) when this returns.
    fn emit(&mut self, ev: &AuditEvent) -> io::Result<()>;

    /// Push out whatever is buffered.
    fn flush(&mut self) -> io::Result<()>;
}

impl<W: Write> Sink for LiveLog<W> {
    fn emit(&mut self, ev: &AuditEvent) -> io::Result<()> {
        self.write(ev)
    }

    fn flush(&mut self) -> io::Result<()> {
        LiveLog::flush(self)
    }
}

/// Every event as a JSON line (docs/events.md): the input of `report`.
/// Anything but the access streams is flushed at once, so a finding is on
/// disk even if the auditor is killed next.
pub struct Recording<W: Write> {
    out: W,
}

impl Recording<BufWriter<File>> {
    /// Create (or truncate) a recording file.
    pub fn create(path: &Path) -> io::Result<Self> {
        Ok(Self::new(BufWriter::new(File::create(path)?)))
    }
}

impl<W: Write> Recording<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

impl<W: Write> Sink for Recording<W> {
    fn emit(&mut self, ev: &AuditEvent) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, ev)?;
        self.out.write_all(b"\n")?;
        if ev.kind().is_durable() {
            self.out.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A sink that only receives what the user's filter lets through.
pub struct Filtered<S> {
    pub filter: AccessFilter,
    pub inner: S,
}

impl<S: Sink> Sink for Filtered<S> {
    fn emit(&mut self, ev: &AuditEvent) -> io::Result<()> {
        if self.filter.passes(ev) {
            self.inner.emit(ev)
        } else {
            Ok(())
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use auditor_common::go_map::MapOp;

    use super::*;
    use crate::event::{Access, Lost, Summary};

    fn access(op: MapOp) -> AuditEvent {
        AuditEvent::Access(Access {
            ts_ns: 1,
            pid: 2,
            tid: 2,
            goid: 1,
            map: 0xc000010000,
            map_gen: 0,
            op,
            map_type: None,
            map_global: None,
            runtime_fn: "runtime.mapassign_fast64".into(),
            function: "main.main".into(),
            file: "/src/main.go".into(),
            line: 3,
            stack: vec![],
        })
    }

    /// A writer that remembers how often it was flushed.
    #[derive(Default)]
    struct Counting {
        bytes: Vec<u8>,
        flushes: usize,
    }

    impl Write for Counting {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.bytes.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            self.flushes += 1;
            Ok(())
        }
    }

    #[test]
    fn recording_writes_json_lines_and_flushes_only_findings_and_losses() {
        let mut r = Recording::new(Counting::default());
        r.emit(&access(MapOp::Write)).unwrap();
        assert_eq!(r.out.flushes, 0, "accesses stay buffered");
        r.emit(&AuditEvent::Lost(Lost {
            ts_ns: 2,
            pid: 2,
            what: "access".into(),
            count: 1,
            total: 1,
        }))
        .unwrap();
        assert_eq!(r.out.flushes, 1);
        r.emit(&AuditEvent::Summary(Summary::default())).unwrap();
        let text = String::from_utf8(r.into_inner().bytes).unwrap();
        let kinds: Vec<String> = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"].to_string())
            .collect();
        assert_eq!(kinds, ["\"access\"", "\"lost\"", "\"summary\""]);
    }

    #[test]
    fn filtered_sink_passes_only_what_the_filter_lets_through() {
        let mut f = Filtered {
            filter: AccessFilter {
                ops: Some(vec![MapOp::Delete]),
                ..AccessFilter::default()
            },
            inner: Recording::new(Vec::new()),
        };
        f.emit(&access(MapOp::Write)).unwrap();
        f.emit(&access(MapOp::Delete)).unwrap();
        f.emit(&AuditEvent::Summary(Summary::default())).unwrap();
        let text = String::from_utf8(f.inner.into_inner()).unwrap();
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(text.contains("\"op\":\"delete\""));
        assert!(!text.contains("\"op\":\"write\""));
    }
}
