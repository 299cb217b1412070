//! The live log: one line per access, a block per finding, in text (aligned
//! columns, colour on a terminal) or JSON lines (docs/events.md).

use std::io::{self, Write};

use crate::{
    event::{
        Access, AccessCounts, AttachReport, AuditEvent, Coverage, Frame, Overlap, OverlapParty,
        Summary,
    },
    settings::Format,
};

/// Writes events to a stream in the chosen format.
pub struct LiveLog<W: Write> {
    out: W,
    format: Format,
    colour: bool,
    header_done: bool,
    /// Print every probe site in the attach report.
    pub show_plan: bool,
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const MAGENTA: &str = "\x1b[35m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// `HH:MM:SS.uuuuuu` (UTC) of a Unix-epoch nanosecond time.
pub fn clock_time(ts_ns: u64) -> String {
    let secs = ts_ns / 1_000_000_000;
    let micros = (ts_ns % 1_000_000_000) / 1000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        micros
    )
}

fn site(function: &str, file: &str, line: u32) -> String {
    if file.is_empty() {
        function.to_string()
    } else {
        let short = file.rsplit('/').next().unwrap_or(file);
        format!("{function} ({short}:{line})")
    }
}

impl<W: Write> LiveLog<W> {
    pub fn new(out: W, format: Format, colour: bool) -> Self {
        Self {
            out,
            format,
            colour,
            header_done: false,
            show_plan: false,
        }
    }

    fn paint(&self, code: &'static str) -> &'static str {
        if self.colour { code } else { "" }
    }

    /// Write one event. JSON lines are flushed at once so a consumer (or
    /// the disk) has every finding even if the auditor is killed next.
    pub fn write(&mut self, ev: &AuditEvent) -> io::Result<()> {
        match self.format {
            Format::Json => {
                serde_json::to_writer(&mut self.out, ev)?;
                self.out.write_all(b"\n")?;
                if !matches!(
                    ev,
                    AuditEvent::Access(_) | AuditEvent::AccessCounts(_) | AuditEvent::BpfMap(_)
                ) {
                    self.out.flush()?;
                }
                Ok(())
            }
            Format::Text => match ev {
                AuditEvent::Attach(r) => self.attach(r),
                AuditEvent::Access(a) => self.access(a),
                AuditEvent::AccessCounts(c) => self.access_counts(c),
                AuditEvent::Coverage(c) => self.coverage(c),
                AuditEvent::Overlap(o) => self.overlap(o),
                AuditEvent::Escalation(e) => {
                    let (d, r) = (self.paint(DIM), self.paint(RESET));
                    let cost = match (e.emulated, e.tracking.as_str()) {
                        (true, _) => "emulated".to_string(),
                        (false, "sampled") => format!(
                            "single-stepped: sampled, attached part of the time so that stepped exits cost at most {}% of a CPU",
                            crate::settings::STEPPED_EXIT_BUDGET_PCT
                        ),
                        (false, "off") => "single-stepped: not placed (--stepped-exits off); its reads are decided at entry only".to_string(),
                        (false, _) => "single-stepped, attached all the time".to_string(),
                    };
                    match &e.error {
                        None if e.tracking == "off" => writeln!(
                            self.out,
                            "{d}{} escalation of {} {} ({}:{}): reads map {:#x} that another goroutine writes; its exit would be `{}` at {:#x}, {cost}{r}",
                            clock_time(e.ts_ns),
                            e.function,
                            e.runtime_fn,
                            e.file,
                            e.line,
                            e.map,
                            e.instruction,
                            e.pc
                        ),
                        None => writeln!(
                            self.out,
                            "{d}{} escalated: {} {} ({}:{}) reads map {:#x} that another goroutine writes; its exits are now tracked (probe on `{}` at {:#x}, {cost}){r}",
                            clock_time(e.ts_ns),
                            e.function,
                            e.runtime_fn,
                            e.file,
                            e.line,
                            e.map,
                            e.instruction,
                            e.pc
                        ),
                        Some(why) => writeln!(
                            self.out,
                            "{d}{} escalation of {} ({}:{}) failed: {why}{r}",
                            clock_time(e.ts_ns),
                            e.function,
                            e.file,
                            e.line
                        ),
                    }
                }
                AuditEvent::Lost(l) => {
                    let (y, r) = (self.paint(YELLOW), self.paint(RESET));
                    let whose = if l.pid == 0 {
                        "unattributed".to_string()
                    } else {
                        format!("pid {}", l.pid)
                    };
                    writeln!(
                        self.out,
                        "{y}{} LOST {whose}: {} {} events (total {}){r}",
                        clock_time(l.ts_ns),
                        l.count,
                        l.what,
                        l.total
                    )
                }
                AuditEvent::Summary(s) => {
                    let text = self.summary_text(s);
                    self.out.write_all(text.as_bytes())?;
                    self.out.flush()
                }
                AuditEvent::BpfMap(e) => {
                    writeln!(self.out, "{}", crate::bpf::render::event_line(e))
                }
                AuditEvent::Alert(a) => {
                    let (red, r) = (self.paint(RED), self.paint(RESET));
                    writeln!(self.out, "{red}{}{r}", crate::bpf::render::alert_line(a))?;
                    self.out.flush()
                }
            },
        }
    }

    fn attach(&mut self, r: &AttachReport) -> io::Result<()> {
        let (d, rs) = (self.paint(DIM), self.paint(RESET));
        let emulated = r.probes.iter().filter(|p| p.emulated).count();
        let exits = r.probes.iter().filter(|p| p.exit).count();
        writeln!(
            self.out,
            "{d}attached to pid {} ({}): go{}{}, {}{}, {} maps, detect={}, scope={}{rs}",
            r.pid,
            r.exe,
            r.go_version,
            r.module
                .as_deref()
                .map(|m| format!(" {m}"))
                .unwrap_or_default(),
            if r.pie { "PIE" } else { "non-PIE" },
            if r.stripped { ", stripped" } else { "" },
            if r.swiss_maps { "Swiss" } else { "classic" },
            r.detect,
            r.scope
        )?;
        writeln!(
            self.out,
            "{d}  {} probes ({} entry, {} exit); {} on emulated instructions, {} single-stepped{rs}",
            r.probes.len(),
            r.probes.len() - exits,
            exits,
            emulated,
            r.probes.len() - emulated
        )?;
        if self.show_plan {
            for p in &r.probes {
                // A scoped plan's site is named by the calling function.
                let (place, offset) = match &p.call_site {
                    Some(c) => (format!("{c} -> {}", p.function), String::new()),
                    None => (p.function.clone(), format!("+{}", p.offset)),
                };
                writeln!(
                    self.out,
                    "{d}    {:<32} {:<7} {:<5} {:<5} {:<28} {}{rs}",
                    place,
                    p.op.as_str(),
                    offset,
                    if p.exit { "exit" } else { "entry" },
                    p.instruction,
                    if p.emulated {
                        "emulated"
                    } else {
                        "single-step"
                    }
                )?;
            }
        }
        if !r.missing.is_empty() {
            writeln!(
                self.out,
                "{d}  not in this binary: {}{rs}",
                r.missing.join(", ")
            )?;
        }
        for f in &r.failed {
            let (y, rs) = (self.paint(YELLOW), self.paint(RESET));
            writeln!(self.out, "{y}  not attached: {f}{rs}")?;
        }
        let g = &r.map_globals;
        if g.not_watched > 0 {
            writeln!(
                self.out,
                "{d}  {} package-level {} watched at findings, {} more named only while the process can be read{rs}",
                g.watched.len(),
                if g.map_typed { "maps" } else { "variables" },
                g.not_watched
            )?;
        } else if self.show_plan && !g.watched.is_empty() {
            writeln!(
                self.out,
                "{d}  watched at findings: {}{rs}",
                g.watched.join(", ")
            )?;
        }
        self.out.flush()
    }

    fn access_header(&mut self) -> io::Result<()> {
        if !self.header_done {
            self.header_done = true;
            let d = self.paint(DIM);
            let r = self.paint(RESET);
            writeln!(
                self.out,
                "{d}{:<15} {:>7} {:>7} {:>6} {:<7} {:<14} CALLER{r}",
                "TIME", "PID", "TID", "GOID", "OP", "MAP"
            )?;
        }
        Ok(())
    }

    /// One line per counted key: the access line's columns, then how many
    /// accesses and over how long.
    fn access_counts(&mut self, c: &AccessCounts) -> io::Result<()> {
        self.access_header()?;
        let map = if c.map_gen > 0 {
            format!("{:#x}/{}", c.map, c.map_gen)
        } else {
            format!("{:#x}", c.map)
        };
        let span_ms = c.last_ts_ns.saturating_sub(c.first_ts_ns) as f64 / 1e6;
        writeln!(
            self.out,
            "{:<15} {:>7} {:>7} {:>6} {:<7} {:<14} {}  x{} in {span_ms:.1}ms",
            clock_time(c.first_ts_ns),
            c.pid,
            c.tid,
            c.goid,
            c.op.as_str(),
            map,
            site(&c.function, &c.file, c.line),
            c.count
        )
    }

    fn coverage(&mut self, c: &Coverage) -> io::Result<()> {
        let (y, r) = (self.paint(YELLOW), self.paint(RESET));
        writeln!(
            self.out,
            "{y}{} COVERAGE pid {}: probes on {:.1}% of the time ({} of every {} ms): {}; estimated cost {:.1}% of the target's CPU with every probe on, budget {}% ({:.0} hits/s, {:.0} ns a hit, {}){r}",
            clock_time(c.ts_ns),
            c.pid,
            c.coverage_pct,
            c.window_on_ms,
            c.window_ms,
            c.reason,
            c.estimated_pct,
            c.budget_pct,
            c.hits_per_s,
            c.ns_per_hit,
            c.cost_source
        )?;
        for (what, list) in [("detached", &c.narrowed), ("attached again", &c.widened)] {
            for x in list {
                writeln!(
                    self.out,
                    "{y}  {what}: {} (calls {}, {:.0} hits/s when measured){r}",
                    x.call_site, x.runtime_fn, x.hits_per_s
                )?;
            }
        }
        self.out.flush()
    }

    fn access(&mut self, a: &Access) -> io::Result<()> {
        self.access_header()?;
        let map = if a.map_gen > 0 {
            format!("{:#x}/{}", a.map, a.map_gen)
        } else {
            format!("{:#x}", a.map)
        };
        writeln!(
            self.out,
            "{:<15} {:>7} {:>7} {:>6} {:<7} {:<14} {}",
            clock_time(a.ts_ns),
            a.pid,
            a.tid,
            a.goid,
            a.op.as_str(),
            map,
            site(&a.function, &a.file, a.line)
        )
    }

    fn party(&mut self, label: &str, colour: &'static str, p: &OverlapParty) -> io::Result<()> {
        let (c, r) = (self.paint(colour), self.paint(RESET));
        writeln!(
            self.out,
            "{c}  {label}: goroutine {} (tid {}) {} via {} at {}{r}",
            p.goid,
            p.tid,
            p.op.as_str(),
            p.runtime_fn,
            site(&p.function, &p.file, p.line)
        )?;
        for f in p.stack.iter().skip(1) {
            let Frame {
                function,
                file,
                line,
                ..
            } = f;
            writeln!(self.out, "{c}        {}{r}", site(function, file, *line))?;
        }
        Ok(())
    }

    fn overlap(&mut self, o: &Overlap) -> io::Result<()> {
        let (red, r) = (self.paint(RED), self.paint(RESET));
        writeln!(
            self.out,
            "{red}{} OVERLAP pid {} map {}: concurrent {}/{} ({}){}{r}",
            clock_time(o.ts_ns),
            o.pid,
            map_label(o),
            o.first.op.as_str(),
            o.second.op.as_str(),
            match o.detection {
                crate::event::DetectionMode::WritingMarker => "writing marker set",
                crate::event::DetectionMode::Interval => "intervals overlap",
                crate::event::DetectionMode::RuntimeFatal => "runtime fatal error",
                crate::event::DetectionMode::Exit => "writer entered while this access was inside",
            },
            if o.suppressed > 0 {
                format!(", and {} more like it since the last report", o.suppressed)
            } else {
                String::new()
            }
        )?;
        self.party("first ", YELLOW, &o.first)?;
        self.party("second", MAGENTA, &o.second)?;
        self.out.flush()
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The end-of-session block: totals, what was not shown and why, every
    /// race once with its count, and how the target ended.
    pub fn summary_text(&self, s: &Summary) -> String {
        use std::fmt::Write as _;
        let (red, r) = (self.paint(RED), self.paint(RESET));
        let mut t = String::new();
        let _ = writeln!(t, "--- summary (pid {}) ---", s.pid);
        let _ = writeln!(
            t,
            "events {}  accesses {}  overlaps {}  dropped {}  probe hits {}  duration {:.1}s",
            s.events,
            s.accesses,
            s.overlaps,
            s.dropped,
            s.probe_hits,
            s.duration_ms as f64 / 1000.0
        );
        if s.access_counts > 0 {
            let _ = writeln!(
                t,
                "counted accesses {} in {} access_counts events (the kernel counted them; --all-accesses sends each)",
                s.counted_accesses, s.access_counts
            );
        }
        if let Some(pct) = s.coverage_pct {
            let _ = writeln!(
                t,
                "coverage: {pct:.1}% of time{}",
                s.coverage_reason
                    .as_deref()
                    .map(|r| format!(", {r}"))
                    .unwrap_or_default()
            );
        }
        for x in &s.exit_sites {
            // Exits held `always` are parked too while a --max-overhead
            // window is closed.
            let share = if x.armed_pct < 99.5 {
                format!(" {:.1}% of the time", x.armed_pct)
            } else {
                String::new()
            };
            let how = match (x.stepped, x.tracking.as_str()) {
                (false, _) => format!("emulated, attached{share}"),
                (true, "off") => {
                    "single-stepped, not placed (--stepped-exits off): its reads were decided at entry only".to_string()
                }
                (true, "sampled") => format!(
                    "single-stepped, sampled: attached {:.1}% of the time, {} hits, ~{:.2}% of a CPU (a writer entering while a read is inside is seen only then)",
                    x.armed_pct, x.hits, x.cost_pct
                ),
                (true, _) => format!(
                    "single-stepped, attached{share}, {} hits, ~{:.2}% of a CPU",
                    x.hits, x.cost_pct
                ),
            };
            let _ = writeln!(
                t,
                "exit probe at {} ({}:{}): {how}",
                x.function, x.file, x.line
            );
        }
        for x in &s.narrowed_sites {
            let _ = writeln!(
                t,
                "call site {} ({}) detached by the budget {:.1}% of the time ({} ms, {} time{}{}): its accesses were not seen meanwhile",
                x.call_site,
                x.runtime_fn,
                x.narrowed_pct,
                x.narrowed_ms,
                x.times,
                if x.times == 1 { "" } else { "s" },
                if x.narrowed_at_end {
                    ", detached at the end"
                } else {
                    ""
                }
            );
        }
        if let Some(shown) = s.shown {
            let _ = writeln!(
                t,
                "shown {shown} of {} events (filters, --quiet and repeated findings hide the rest)",
                s.events
            );
        }
        if s.shed > 0 {
            let _ = writeln!(
                t,
                "{} access lines not shown: the output could not keep up (the recording, if any, has them)",
                s.shed
            );
        }
        if let Some(f) = &s.fatal_unattributed {
            let advice = if f.scope == "all" {
                "the call it died in was not the one recorded (an iteration step of an enclosing loop, or a loop whose map no writer entered in the last 10 ms)"
            } else {
                "run again with --scope all to probe every map access"
            };
            let _ = writeln!(
                t,
                "{red}the runtime died of a concurrent map error in a call no probe recorded (scope {}): {advice}{r}",
                f.scope
            );
        }
        if !s.findings.is_empty() {
            let _ = writeln!(t, "{red}findings ({}):{r}", s.findings.len());
            for g in &s.findings {
                let span = if g.count > 1 {
                    format!(
                        ", {} .. {}",
                        clock_time(g.first_ts_ns),
                        clock_time(g.last_ts_ns)
                    )
                } else {
                    format!(", {}", clock_time(g.first_ts_ns))
                };
                let _ = writeln!(
                    t,
                    "{red}  map {}: {} {} / {} {}: {}x{span}{r}",
                    match &g.map_global {
                        Some(name) => format!("{name} ({:#x})", g.map),
                        None => format!("{:#x}", g.map),
                    },
                    g.sites[0],
                    g.ops[0],
                    g.sites[1],
                    g.ops[1],
                    g.count
                );
            }
        }
        if let Some(c) = s.target_exit_code {
            let _ = writeln!(t, "target exited with status {c}");
        }
        if let Some(sig) = s.target_signal {
            let _ = writeln!(t, "target killed by signal {sig}");
        }
        if let Some(f) = &s.target_fatal {
            let _ = writeln!(t, "target fatal error: {f}");
        }
        t
    }
}

/// `main.counts map[int]int (0xc000012000)`, or the address alone when
/// the map has no known name.
fn map_label(o: &Overlap) -> String {
    match (&o.map_global, &o.map_type) {
        (Some(g), Some(t)) => format!("{g} {t} ({:#x})", o.map),
        (Some(g), None) => format!("{g} ({:#x})", o.map),
        (None, Some(t)) => format!("{:#x} {t}", o.map),
        (None, None) => format!("{:#x}", o.map),
    }
}

/// One line naming what was attached: pid, executable, Go version, probes.
pub fn banner(r: &AttachReport) -> String {
    let failed = if r.failed.is_empty() {
        String::new()
    } else {
        format!(", {} not attached", r.failed.len())
    };
    format!(
        "map-auditor: attached to pid {} ({}): go{}, {} probes{failed}, detect={}, scope={}",
        r.pid,
        r.exe,
        r.go_version,
        r.probes.len(),
        r.detect,
        r.scope
    )
}

impl LiveLog<Vec<u8>> {
    /// Take what was rendered so far.
    pub fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::go_map::MapOp;

    #[test]
    fn clock_time_is_utc_time_of_day() {
        assert_eq!(clock_time(3_723_000_123_000), "01:02:03.000123");
    }

    #[test]
    fn text_access_line_names_caller_with_short_file() {
        let mut buf = Vec::new();
        let mut log = LiveLog::new(&mut buf, Format::Text, false);
        log.write(&AuditEvent::Access(Access {
            ts_ns: 0,
            pid: 1,
            tid: 2,
            goid: 3,
            map: 0xc000,
            map_gen: 0,
            op: MapOp::Delete,
            map_type: None,
            map_global: None,
            runtime_fn: "runtime.mapdelete".into(),
            function: "main.evict".into(),
            file: "/src/app/cache.go".into(),
            line: 77,
            stack: vec![],
        }))
        .unwrap();
        let text = String::from_utf8(buf).unwrap();
        let line = text.lines().nth(1).unwrap();
        assert!(line.contains("delete"), "{line}");
        assert!(line.ends_with("main.evict (cache.go:77)"), "{line}");
    }
}
