//! Clients of the daemon: `ctl` (requests over the socket), `tail` (the
//! log directory, or the socket's subscribe stream) and `report` over a
//! log directory or the socket.

use std::{
    collections::VecDeque,
    io::{BufRead, BufReader, Read, Write},
    os::unix::{fs::MetadataExt, net::UnixStream},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{
    log::{FOLLOW_POLL, Follower, line_matches, log_files},
    protocol::{EventFilter, PROTOCOL_VERSION, Response, TargetSpec},
};
use crate::{
    event::{AuditEvent, EventKind},
    output::{
        live::{LiveLog, clock_time},
        pipe::stdout_result,
        report::ReportSettings,
    },
    settings::Format,
};

/// What `ctl` asks the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CtlCommand {
    Attach(TargetSpec),
    Detach(TargetSpec),
    List,
    Status,
}

/// One `ctl` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CtlSettings {
    /// The daemon's control socket.
    pub socket: PathBuf,
    /// Print the daemon's answer as JSON.
    pub json: bool,
    pub command: CtlCommand,
}

/// One `tail` call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailSettings {
    /// Keep printing new events as they are logged (across rotations).
    pub follow: bool,
    /// Only events of this process.
    pub pid: Option<u32>,
    /// Only these kinds (empty: every kind).
    pub kinds: Vec<EventKind>,
    /// Start this far back over every log file.
    pub since: Option<Duration>,
    /// Without `since`: how many of the latest events to show first.
    pub lines: usize,
    pub format: Format,
    /// When text lines are coloured.
    pub color: crate::output::ColorChoice,
    /// The daemon's log directory (read directly).
    pub log_dir: PathBuf,
    /// Read through the daemon's control socket instead of the log files.
    pub socket: Option<PathBuf>,
}

fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot connect to the daemon at {}: is `map-auditor daemon` running (and are you root or in its socket_group)? use --socket for another path",
            socket.display()
        )
    })
}

/// Send one request and read its response line.
fn request(stream: &mut UnixStream, body: Value) -> Result<(Response, BufReader<UnixStream>)> {
    let mut body = body;
    body["v"] = json!(PROTOCOL_VERSION);
    let mut line = serde_json::to_string(&body)?;
    line.push('\n');
    // A refusing daemon answers and closes before reading: the write may
    // fail, and the answer still says why.
    let sent = stream.write_all(line.as_bytes());
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut resp = String::new();
    let read = reader.read_line(&mut resp);
    if resp.is_empty() {
        sent.context("cannot send the request")?;
        read.context("the daemon closed the connection")?;
        bail!("the daemon closed the connection without answering");
    }
    Ok((answer(&resp)?, reader))
}

/// Read the daemon's answer line: a refusal, an answer in another protocol
/// version or a line that is not an answer becomes an error that reads as
/// a sentence.
fn answer(line: &str) -> Result<Response> {
    let line = line.trim();
    let value: Value = serde_json::from_str(line)
        .with_context(|| format!("the daemon's answer is not JSON: {line}"))?;
    match value.get("v").and_then(Value::as_u64) {
        Some(v) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => bail!(
            "the daemon speaks protocol version {v} and this client speaks version {PROTOCOL_VERSION}: use the map-auditor of the daemon's release"
        ),
        None => bail!("the daemon's answer has no protocol version: {line}"),
    }
    let resp: Response = serde_json::from_value(value)
        .with_context(|| format!("the daemon's answer is not one this client knows: {line}"))?;
    if let Some(e) = &resp.error {
        bail!("the daemon refused the request: {}", e.message);
    }
    Ok(resp)
}

fn target_body(op: &str, t: &TargetSpec) -> Value {
    match t {
        TargetSpec::Pid(pid) => json!({"op": op, "pid": pid}),
        TargetSpec::Exe(exe) => {
            // Relative paths mean the client's directory, which the daemon
            // does not share.
            let exe = std::path::absolute(exe).unwrap_or_else(|_| exe.clone());
            json!({"op": op, "exe": exe})
        }
    }
}

/// `map-auditor ctl ...`.
pub fn ctl(args: &CtlSettings) -> Result<i32> {
    let mut stream = connect(&args.socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(90)))?;
    let body = match &args.command {
        CtlCommand::Attach(t) => target_body("attach", t),
        CtlCommand::Detach(t) => target_body("detach", t),
        CtlCommand::List => json!({"op": "list"}),
        CtlCommand::Status => json!({"op": "status"}),
    };
    let (resp, _) = request(&mut stream, body)?;
    let result = resp.result.unwrap_or(Value::Null);
    let text = if args.json {
        format!("{result}\n")
    } else {
        match &args.command {
            CtlCommand::List => list_text(&result),
            CtlCommand::Status => status_text(&result),
            CtlCommand::Attach(_) if result.get("watching").is_some() => format!(
                "watching {} (attaching now: {})\n",
                result["exe"].as_str().unwrap_or("?"),
                result["attaching"]
            ),
            CtlCommand::Attach(_) => format!(
                "attached pid {} ({}, go{}): {} probes\n",
                result["pid"],
                result["exe"].as_str().unwrap_or("?"),
                result["go_version"].as_str().unwrap_or("?"),
                result["probes"]
            ),
            CtlCommand::Detach(_) => detach_text(&result),
        }
    };
    crate::output::pipe::print(&text)?;
    Ok(0)
}

fn list_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let empty = Vec::new();
    let targets = v["targets"].as_array().unwrap_or(&empty);
    let _ = writeln!(
        s,
        "{:>8}  {:<10} {:>7} {:>10} {:>9} {:>8}  EXE (ORIGIN)",
        "PID", "STATE", "PROBES", "EVENTS", "OVERLAPS", "DROPPED"
    );
    for t in targets {
        let _ = writeln!(
            s,
            "{:>8}  {:<10} {:>7} {:>10} {:>9} {:>8}  {} ({})",
            t["pid"].as_u64().unwrap_or(0),
            t["state"].as_str().unwrap_or(""),
            t["probes"].as_u64().unwrap_or(0),
            t["events"].as_u64().unwrap_or(0),
            t["overlaps"].as_u64().unwrap_or(0),
            t["dropped"].as_u64().unwrap_or(0),
            t["exe"].as_str().unwrap_or("?"),
            t["origin"].as_str().unwrap_or("")
        );
    }
    for w in v["watches"].as_array().unwrap_or(&empty) {
        let _ = writeln!(
            s,
            "watch {}: pids {}",
            w["exe"].as_str().unwrap_or("?"),
            w["pids"]
        );
    }
    s
}

/// `ctl detach`'s answer as one sentence.
fn detach_text(v: &Value) -> String {
    if let Some(exe) = v["exe"].as_str()
        && v.get("watching").is_some()
    {
        return format!("stopped watching {exe}; detached pids {}\n", v["detached"]);
    }
    format!(
        "detached pid {} ({}): {} events, {} overlaps\n",
        v["pid"],
        v["exe"].as_str().unwrap_or("?"),
        v["events"],
        v["overlaps"]
    )
}

fn mib(v: &Value) -> String {
    v.as_u64().map_or_else(
        || "?".into(),
        |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64),
    )
}

/// `{"access": 3, "overlap": 1}` as `access 3, overlap 1`.
fn counts(v: &Value) -> String {
    match v.as_object() {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", "),
        _ => "none".into(),
    }
}

/// `ctl status`'s answer for people; fields this client does not know are
/// listed as they come.
fn status_text(v: &Value) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let up = v["uptime_s"].as_u64().unwrap_or(0);
    let _ = writeln!(
        s,
        "daemon {} (protocol {}), pid {}, up {}h{:02}m{:02}s",
        v["version"].as_str().unwrap_or("?"),
        v["protocol"],
        v["pid"],
        up / 3600,
        up / 60 % 60,
        up % 60
    );
    let _ = writeln!(
        s,
        "targets {} (attaching {}), watches {}, at most {} targets",
        v["targets"], v["attaching"], v["watches"], v["max_targets"]
    );
    let _ = writeln!(
        s,
        "log {}: {}, {} rotations, {} write errors",
        v["log_dir"].as_str().unwrap_or("?"),
        mib(&v["log_bytes"]),
        v["log_rotations"],
        v["log_write_errors"]
    );
    let _ = writeln!(s, "events: {}", counts(&v["events_by_kind"]));
    let _ = writeln!(s, "lost: {}", counts(&v["lost_by_what"]));
    let _ = writeln!(
        s,
        "dropped {}, probe hits {}, ring {} of {}, memory {}, subscribers {}",
        v["dropped"],
        v["probe_hits"],
        mib(&v["ring_used_bytes"]),
        mib(&v["ring_size_bytes"]),
        mib(&v["rss_bytes"]),
        v["subscribers"]
    );
    if !v["bpf"].is_null() {
        let _ = writeln!(s, "bpf(2) audit: {}", v["bpf"]);
    }
    const SHOWN: &[&str] = &[
        "version",
        "protocol",
        "pid",
        "uptime_s",
        "targets",
        "attaching",
        "watches",
        "max_targets",
        "log_dir",
        "log_bytes",
        "log_rotations",
        "log_write_errors",
        "events_by_kind",
        "lost_by_what",
        "dropped",
        "probe_hits",
        "ring_used_bytes",
        "ring_size_bytes",
        "rss_bytes",
        "subscribers",
        "bpf",
    ];
    if let Some(m) = v.as_object() {
        for (k, val) in m.iter().filter(|(k, _)| !SHOWN.contains(&k.as_str())) {
            let _ = writeln!(s, "{}: {val}", k.replace('_', " "));
        }
    }
    s
}

fn tail_filter(args: &TailSettings) -> EventFilter {
    let since_ns = args.since.map(|d| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        now.saturating_sub(d).as_nanos() as u64
    });
    EventFilter {
        pid: args.pid,
        kinds: args.kinds.clone(),
        since_ns,
        follow: args.follow,
    }
}

/// Renders tail lines: JSON as logged, or one readable line per event.
struct TailOut {
    format: Format,
    live: LiveLog<Box<dyn Write>>,
    out: std::io::Stdout,
}

impl TailOut {
    fn new(format: Format, color: crate::output::ColorChoice) -> Self {
        use std::io::IsTerminal;
        let colour = color.enabled(std::io::stdout().is_terminal());
        Self {
            format,
            live: LiveLog::new(Box::new(std::io::stdout()), Format::Text, colour),
            out: std::io::stdout(),
        }
    }

    /// Write one line; a closed stdout is [`StdoutClosed`].
    fn line(&mut self, line: &str) -> Result<()> {
        let r = match self.format {
            Format::Json => writeln!(self.out, "{line}"),
            Format::Text => match serde_json::from_str::<AuditEvent>(line) {
                Ok(ev) => self.live.write(&ev).and_then(|()| self.live.flush()),
                Err(_) => writeln!(self.out, "{}", text_of_other(line)),
            },
        };
        stdout_result(r)
    }
}

/// Readable form of a daemon-only event (`target`) or an unknown one.
fn text_of_other(line: &str) -> String {
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return line.to_string();
    };
    if v["kind"] == "target" {
        let mut s = format!(
            "{} TARGET pid {} {}",
            clock_time(v["ts_ns"].as_u64().unwrap_or(0)),
            v["pid"],
            v["state"].as_str().unwrap_or("?")
        );
        if let Some(e) = v["exe"].as_str() {
            s.push_str(&format!(" {e}"));
        }
        if let Some(r) = v["reason"].as_str() {
            s.push_str(&format!(" ({r})"));
        }
        return s;
    }
    line.to_string()
}

/// `map-auditor tail`.
pub fn tail(args: &TailSettings) -> Result<i32> {
    let filter = tail_filter(args);
    let mut out = TailOut::new(args.format, args.color);
    if let Some(socket) = &args.socket {
        return tail_socket(socket, filter, args.lines, &mut out);
    }
    let dir = &args.log_dir;
    if !dir.is_dir() {
        bail!(
            "no audit log directory {}: pass the daemon's --log-dir, or --socket to read through the daemon",
            dir.display()
        );
    }
    // The follower opens the current file at its start before anything is
    // listed: the current file's history and what is appended later then
    // come from one reader, each line exactly once. Rotated files are read
    // directly (for --since), except one the follower already holds.
    let mut follower = Follower::new(dir, true);
    let files =
        log_files(dir).with_context(|| format!("cannot list {} (are you root?)", dir.display()))?;
    let held = follower.inode();
    let mut lines = Vec::new();
    if filter.since_ns.is_some() {
        for p in &files {
            let inode = std::fs::metadata(p).map_or(0, |m| m.ino());
            if p.ends_with(super::log::CURRENT) || inode == held {
                continue;
            }
            let f = std::fs::File::open(p)
                .with_context(|| format!("cannot read {} (are you root?)", p.display()))?;
            for line in BufReader::new(f).lines().map_while(Result::ok) {
                if line_matches(&line, &filter) {
                    out.line(&line)?;
                }
            }
        }
        follower.poll(&mut lines);
        for line in lines.drain(..) {
            if line_matches(&line, &filter) {
                out.line(&line)?;
            }
        }
    } else {
        // Like tail: the last N events of the current file.
        follower.poll(&mut lines);
        let mut last = VecDeque::with_capacity(args.lines);
        for line in lines.drain(..) {
            if args.lines > 0 && line_matches(&line, &filter) {
                if last.len() == args.lines {
                    last.pop_front();
                }
                last.push_back(line);
            }
        }
        for line in last {
            out.line(&line)?;
        }
    }
    if !args.follow {
        return Ok(0);
    }
    loop {
        follower.poll(&mut lines);
        for line in lines.drain(..) {
            if line_matches(&line, &filter) {
                out.line(&line)?;
            }
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

fn tail_socket(socket: &Path, filter: EventFilter, n: usize, out: &mut TailOut) -> Result<i32> {
    let mut stream = connect(socket)?;
    let mut body = json!({"op": "subscribe", "follow": filter.follow, "kinds": filter.kinds});
    if let Some(p) = filter.pid {
        body["pid"] = json!(p);
    }
    // Without --since a subscriber only gets live events; with --follow off
    // and no --since, ask for the whole log (what `tail` without -f means).
    match filter.since_ns {
        Some(s) => body["since_ns"] = json!(s),
        None if !filter.follow => body["since_ns"] = json!(0),
        None => {}
    }
    let (_, reader) = request(&mut stream, body)?;
    // Without --follow or --since: like tail, the last N events of the log.
    let last_n = !filter.follow && filter.since_ns.is_none();
    let mut last = VecDeque::with_capacity(n.min(4096));
    for line in reader.lines() {
        let line = line.context("lost the connection to the daemon")?;
        if !last_n {
            out.line(&line)?;
        } else if n > 0 {
            if last.len() == n {
                last.pop_front();
            }
            last.push_back(line);
        }
    }
    for line in last {
        out.line(&line)?;
    }
    Ok(0)
}

/// All lines of a log directory in order, as one reader.
fn directory_reader(dir: &Path) -> Result<Box<dyn Read>> {
    let files = log_files(dir).with_context(|| format!("cannot list {}", dir.display()))?;
    if files.is_empty() {
        bail!("{} holds no audit log (audit*.jsonl)", dir.display());
    }
    let mut r: Box<dyn Read> = Box::new(std::io::empty());
    for p in files {
        let f = std::fs::File::open(&p).with_context(|| format!("cannot read {}", p.display()))?;
        r = Box::new(r.chain(f));
    }
    Ok(r)
}

/// `map-auditor report` over a log directory or the daemon's socket.
pub fn report(args: &ReportSettings) -> Result<i32> {
    let (reader, name): (Box<dyn Read>, String) = match (&args.socket, &args.input) {
        (Some(socket), _) => {
            let mut stream = connect(socket)?;
            let (_, reader) = request(
                &mut stream,
                json!({"op": "subscribe", "since_ns": 0, "follow": false}),
            )?;
            (Box::new(reader), format!("daemon at {}", socket.display()))
        }
        (None, Some(dir)) => (directory_reader(dir)?, dir.display().to_string()),
        (None, None) => bail!("give a recording, a log directory, or --socket"),
    };
    let mut report = crate::analysis::report_from_jsonl(BufReader::new(reader))
        .map_err(|e| anyhow::anyhow!(e.in_file(&name)))?;
    if let Some(r) = report.recording.as_mut() {
        r.source = Some(name);
        // Target lifecycle lines are the daemon's own, not unknown kinds.
        r.unknown_kinds.remove("target");
    }
    let rendered = crate::output::report::render(
        &report,
        args.format,
        &crate::output::report::RenderOptions::default(),
    );
    match &args.output {
        Some(path) => std::fs::write(path, rendered)
            .with_context(|| format!("cannot write report to {}", path.display()))?,
        None => crate::output::pipe::print(&rendered)?,
    }
    Ok(0)
}

/// Whether `report`'s input is one for [`report`] rather than a recording.
pub fn is_daemon_report(args: &ReportSettings) -> bool {
    args.socket.is_some() || args.input.as_deref().is_some_and(Path::is_dir)
}

/// Default log directory for clients.
pub fn default_log_dir() -> PathBuf {
    PathBuf::from(super::config::DEFAULT_LOG_DIR)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_that_cannot_be_used_read_as_sentences() {
        let e = answer(r#"{"v":2,"ok":true,"result":{}}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "the daemon speaks protocol version 2 and this client speaks version 1: use the map-auditor of the daemon's release"
        );
        let e = answer(
            r#"{"v":1,"ok":false,"error":{"code":"unsupported_version","message":"protocol version 2 is not supported"}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "the daemon refused the request: protocol version 2 is not supported"
        );
        let e = answer("garbage").unwrap_err();
        assert_eq!(e.to_string(), "the daemon's answer is not JSON: garbage");
        let e = answer(r#"{"ok":true}"#).unwrap_err();
        assert!(e.to_string().contains("has no protocol version"), "{e}");
        assert!(answer(r#"{"v":1,"ok":true,"result":[]}"#).unwrap().ok);
    }
}
