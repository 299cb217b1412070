//! The control socket: who may connect (SO_PEERCRED), how much they may
//! send (line size, request rate, connections), and the connection loop
//! that turns request lines into messages for the daemon's main loop.

use std::{
    fs::File,
    os::unix::fs::PermissionsExt,
    path::Path,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream, unix::OwnedWriteHalf},
    sync::{Semaphore, broadcast, mpsc, oneshot},
};

use super::say::say;
use super::{
    log::{line_matches, read_lines_bounded},
    protocol::{
        ErrorCode, EventFilter, MAX_REQUEST_BYTES, ProtocolError, Request, Response, parse_request,
    },
};

/// Concurrent connections; more are told `busy` and closed.
pub const MAX_CONNECTIONS: usize = 64;
/// Requests a connection may send per second, sustained.
pub const RATE_PER_SEC: f64 = 20.0;
/// Requests a connection may send at once.
pub const RATE_BURST: f64 = 40.0;
/// Refusals for rate after which a connection is closed.
const MAX_RATE_REFUSALS: u32 = 100;
/// A request connection idle this long is closed (subscribers are not).
const IDLE: Duration = Duration::from_secs(60);
/// Longest a request waits for the main loop (attach plans the target).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Who the peer is, from SO_PEERCRED.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
}

/// Who may use the socket: root, and members of one group when configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessPolicy {
    pub group: Option<u32>,
}

impl AccessPolicy {
    pub fn allows(&self, peer: &Peer) -> bool {
        if peer.uid == 0 {
            return true;
        }
        let Some(g) = self.group else { return false };
        peer.gid == g
            || peer
                .pid
                .is_some_and(|p| crate::proc::supplementary_groups(p).contains(&g))
    }
}

/// A token bucket per connection.
pub struct RateLimit {
    tokens: f64,
    last: Instant,
}

impl Default for RateLimit {
    fn default() -> Self {
        Self {
            tokens: RATE_BURST,
            last: Instant::now(),
        }
    }
}

impl RateLimit {
    pub fn allow(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * RATE_PER_SEC;
        self.tokens = (self.tokens + refill).min(RATE_BURST);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One published log line, for subscribers.
#[derive(Debug)]
pub struct Published {
    pub kind: &'static str,
    pub pid: u32,
    pub ts_ns: u64,
    pub line: String,
}

/// What the main loop answers.
pub enum Reply {
    Done(Response),
    /// Subscribed: the files to replay (each up to a length) and the live feed.
    Subscribed {
        replay: Vec<(File, u64)>,
        /// Lines logged but not yet in the files (the log is not writable).
        held: Vec<String>,
        live: broadcast::Receiver<Arc<Published>>,
    },
}

/// A request for the main loop.
pub struct ControlMsg {
    pub id: Option<u64>,
    pub request: Request,
    pub peer: Peer,
    pub reply: oneshot::Sender<Reply>,
}

/// Bind the socket: refuse to replace anything but a stale socket, then
/// restrict it to root (0600) or root and `group` (0660).
pub fn bind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Some(dir) = path.parent()
        && dir.exists()
    {
        // Whoever can write the directory can replace the socket.
        super::trust::check_dir(dir, "socket directory")?;
    } else if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
        let mode = if group.is_some() { 0o750 } else { 0o700 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
        if let Some(g) = group {
            std::os::unix::fs::chown(dir, Some(0), Some(g))?;
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "another daemon is listening on {}: stop it or use --socket",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!(
                    "{} exists and is not a socket: remove it or use --socket",
                    path.display()
                ),
            ));
        }
        Err(_) => {}
    }
    // The daemon runs with umask 077, so the socket is born private.
    let listener = UnixListener::bind(path)?;
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    if let Some(g) = group {
        std::os::unix::fs::chown(path, Some(0), Some(g))?;
    }
    Ok(listener)
}

/// Device and inode of the socket file at `path` (not following a symlink).
pub fn socket_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    std::fs::symlink_metadata(path)
        .ok()
        .filter(|m| m.file_type().is_socket())
        .map(|m| (m.dev(), m.ino()))
}

/// Bind again after the socket file was removed or replaced: a socket
/// now at `path` is not ours (ours was removed), so it is removed first.
pub fn rebind(path: &Path, group: Option<u32>) -> std::io::Result<UnixListener> {
    if socket_id(path).is_some() {
        std::fs::remove_file(path)?;
    }
    bind(path, group)
}

async fn send(w: &mut OwnedWriteHalf, line: &str) -> std::io::Result<()> {
    w.write_all(line.as_bytes()).await
}

async fn refuse(mut stream: UnixStream, code: ErrorCode, message: String) {
    let line = Response::err(None, ProtocolError::new(code, message)).line();
    let _ = stream.write_all(line.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// Accept connections until the task is dropped.
pub async fn serve(listener: UnixListener, policy: AccessPolicy, tx: mpsc::Sender<ControlMsg>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // EMFILE and the like: back off instead of spinning.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let peer = match stream.peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid(),
            },
            Err(_) => continue,
        };
        if !policy.allows(&peer) {
            say!(
                Warn,
                "refused control connection from uid {} (pid {:?})",
                peer.uid,
                peer.pid
            );
            tokio::spawn(refuse(
                stream,
                ErrorCode::PermissionDenied,
                "only root or the daemon's socket_group may use the control socket".into(),
            ));
            continue;
        }
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(
                stream,
                ErrorCode::Busy,
                format!("{MAX_CONNECTIONS} connections open: retry later"),
            ));
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            connection(stream, peer, tx).await;
            drop(permit);
        });
    }
}

async fn connection(stream: UnixStream, peer: Peer, tx: mpsc::Sender<ControlMsg>) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut rate = RateLimit::default();
    let mut refusals = 0u32;
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let mut limited = (&mut rd).take(MAX_REQUEST_BYTES as u64 + 1);
        let read = limited.read_until(b'\n', &mut line);
        match tokio::time::timeout(IDLE, read).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
            Ok(Ok(_)) => {}
        }
        if line.len() > MAX_REQUEST_BYTES {
            // The rest of the line cannot be skipped safely: close.
            let e = ProtocolError::new(
                ErrorCode::TooLarge,
                format!(
                    "the request is longer than {MAX_REQUEST_BYTES} bytes, so the connection is closed: send a shorter one"
                ),
            );
            let _ = send(&mut wr, &Response::err(None, e).line()).await;
            return;
        }
        if !rate.allow() {
            refusals += 1;
            let e = ProtocolError::new(
                ErrorCode::RateLimited,
                format!("more than {RATE_PER_SEC} requests per second: slow down"),
            );
            if send(&mut wr, &Response::err(None, e).line()).await.is_err()
                || refusals > MAX_RATE_REFUSALS
            {
                return;
            }
            continue;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let (id, parsed) = parse_request(text);
        let request = match parsed {
            Ok(r) => r,
            Err(e) => {
                if send(&mut wr, &Response::err(id, e).line()).await.is_err() {
                    return;
                }
                continue;
            }
        };
        let filter = match &request {
            Request::Subscribe(f) => Some(f.clone()),
            _ => None,
        };
        let (reply_tx, reply_rx) = oneshot::channel();
        let msg = ControlMsg {
            id,
            request,
            peer,
            reply: reply_tx,
        };
        let shutting_down = || {
            Response::err(
                id,
                ProtocolError::new(ErrorCode::ShuttingDown, "the daemon is shutting down"),
            )
        };
        if tx.send(msg).await.is_err() {
            let _ = send(&mut wr, &shutting_down().line()).await;
            return;
        }
        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reply_rx).await {
            Ok(Ok(r)) => r,
            // The main loop dropped the request: it is stopping.
            Ok(Err(_)) => Reply::Done(shutting_down()),
            // Still running but slow: say so, do not pretend it stops.
            Err(_) => Reply::Done(Response::err(
                id,
                ProtocolError::new(
                    ErrorCode::Busy,
                    format!(
                        "the daemon did not answer within {} s (overloaded): retry, and check `ctl status`",
                        REQUEST_TIMEOUT.as_secs()
                    ),
                ),
            )),
        };
        match reply {
            Reply::Done(resp) => {
                if send(&mut wr, &resp.line()).await.is_err() {
                    return;
                }
            }
            Reply::Subscribed { replay, held, live } => {
                let filter = filter.unwrap_or_default();
                let ok = Response::ok(id, serde_json::json!({"subscribed": true}));
                if send(&mut wr, &ok.line()).await.is_ok() {
                    stream_events(wr, filter, replay, held, live).await;
                }
                return;
            }
        }
    }
}

/// Replay logged events, then (when following) live ones. A subscriber too
/// slow for the live feed is told how many it missed, as a `lost` event.
async fn stream_events(
    mut wr: OwnedWriteHalf,
    filter: EventFilter,
    replay: Vec<(File, u64)>,
    held: Vec<String>,
    mut live: broadcast::Receiver<Arc<Published>>,
) {
    if filter.since_ns.is_some() || !filter.follow {
        let (ltx, mut lrx) = mpsc::channel::<String>(1024);
        let f = filter.clone();
        let reader = tokio::task::spawn_blocking(move || {
            read_lines_bounded(replay, |line| {
                !line_matches(line, &f) || ltx.blocking_send(format!("{line}\n")).is_ok()
            });
        });
        while let Some(line) = lrx.recv().await {
            if send(&mut wr, &line).await.is_err() {
                reader.abort();
                return;
            }
        }
        let _ = reader.await;
        for line in held.iter().filter(|l| line_matches(l, &filter)) {
            if send(&mut wr, &format!("{line}\n")).await.is_err() {
                return;
            }
        }
    }
    if !filter.follow {
        let _ = wr.shutdown().await;
        return;
    }
    let mut missed_total = 0u64;
    loop {
        match live.recv().await {
            Ok(p) => {
                if filter.matches(p.kind, p.pid, p.ts_ns) {
                    let mut line = p.line.clone();
                    line.push('\n');
                    if send(&mut wr, &line).await.is_err() {
                        return;
                    }
                }
            }
            Err(broadcast::error::RecvError::Lagged(n)) => {
                missed_total += n;
                let lost = serde_json::json!({
                    "kind": "lost",
                    "ts_ns": crate::pipeline::clock::WallClock::new().now_unix_ns(),
                    "pid": 0,
                    "what": "subscriber",
                    "count": n,
                    "total": missed_total,
                });
                if send(&mut wr, &format!("{lost}\n")).await.is_err() {
                    return;
                }
            }
            Err(broadcast::error::RecvError::Closed) => {
                let _ = wr.shutdown().await;
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_root_or_the_configured_group_is_allowed() {
        let nobody = Peer {
            uid: 65534,
            gid: 65534,
            pid: None,
        };
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        assert!(AccessPolicy { group: None }.allows(&root));
        assert!(!AccessPolicy { group: None }.allows(&nobody));
        assert!(AccessPolicy { group: Some(65534) }.allows(&nobody));
        assert!(!AccessPolicy { group: Some(4) }.allows(&nobody));
    }

    #[test]
    fn rate_limit_allows_a_burst_then_refuses() {
        let mut r = RateLimit::default();
        let allowed = (0..100).filter(|_| r.allow()).count();
        assert!((40..=42).contains(&allowed), "{allowed}");
    }
}
