//! The control protocol, version 1 (docs/daemon.md): JSON lines over the
//! Unix socket, one request per line, one response line per request;
//! `subscribe` then turns the connection into a stream of event lines.
//! Parsing is pure: bytes in, a validated [`Request`] or a
//! [`ProtocolError`] out.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{validate_exe_path, validate_pid};
use crate::event::EventKind;

/// Version of this protocol; a request naming another is refused.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest request line, newline included.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// Event kinds a subscriber may ask for: every kind.
pub const EVENT_KINDS: [EventKind; EventKind::ALL.len()] = EventKind::ALL;

/// What to attach or detach.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    Pid(u32),
    /// Every current and future process running this executable.
    Exe(PathBuf),
}

/// Which events a subscriber receives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub pid: Option<u32>,
    /// Empty: every kind.
    pub kinds: Vec<EventKind>,
    /// Replay logged events from this time on (Unix ns) before live ones.
    pub since_ns: Option<u64>,
    /// Keep streaming live events (false: replay, then close).
    pub follow: bool,
}

impl EventFilter {
    pub fn matches(&self, kind: &str, pid: u32, ts_ns: u64) -> bool {
        (self.kinds.is_empty() || self.kinds.iter().any(|k| k.as_str() == kind))
            && self.pid.is_none_or(|p| p == pid)
            && self.since_ns.is_none_or(|s| ts_ns >= s)
    }
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Attach(TargetSpec),
    Detach(TargetSpec),
    List,
    Status,
    Subscribe(EventFilter),
}

/// The request line as sent.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    Attach {
        pid: Option<u32>,
        exe: Option<PathBuf>,
    },
    Detach {
        pid: Option<u32>,
        exe: Option<PathBuf>,
    },
    List {},
    Status {},
    Subscribe {
        pid: Option<u32>,
        #[serde(default)]
        kinds: Vec<String>,
        since_ns: Option<u64>,
        #[serde(default = "yes")]
        follow: bool,
    },
}

fn yes() -> bool {
    true
}

/// Machine-readable error codes (stable across versions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    UnsupportedVersion,
    TooLarge,
    RateLimited,
    PermissionDenied,
    Busy,
    NotFound,
    LimitReached,
    AttachFailed,
    ShuttingDown,
}

/// A refused request: the code and a one-line message saying what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct ProtocolError {
    pub code: ErrorCode,
    pub message: String,
}

impl ProtocolError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }
}

/// The response line.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Response {
    pub v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<u64>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ProtocolError>,
}

impl Response {
    pub fn ok(id: Option<u64>, result: Value) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    pub fn err(id: Option<u64>, error: ProtocolError) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            ok: false,
            result: None,
            error: Some(error),
        }
    }
    /// The response as one line, newline included.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"v":1,"ok":false,"error":{"code":"bad_request","message":"unencodable response"}}"#
                .into()
        });
        s.push('\n');
        s
    }
}

fn one_target(pid: Option<u32>, exe: Option<PathBuf>) -> Result<TargetSpec, ProtocolError> {
    match (pid, exe) {
        (Some(p), None) => {
            validate_pid(p).map_err(ProtocolError::bad)?;
            Ok(TargetSpec::Pid(p))
        }
        (None, Some(e)) => {
            validate_exe_path(&e).map_err(ProtocolError::bad)?;
            Ok(TargetSpec::Exe(e))
        }
        _ => Err(ProtocolError::bad("give exactly one of `pid` or `exe`")),
    }
}

/// Why a request's `v` was refused, as a sentence naming the version the
/// client sent (as it was written) and the one this daemon speaks.
fn version_error(v: &Value) -> ProtocolError {
    let message = match v.as_u64() {
        Some(n) => format!(
            "protocol version {n} is not supported: this daemon speaks version {PROTOCOL_VERSION}; use a client of the same map-auditor release"
        ),
        None => format!(
            "the protocol version must be a whole number, not {v}: send \"v\":{PROTOCOL_VERSION}"
        ),
    };
    ProtocolError::new(ErrorCode::UnsupportedVersion, message)
}

/// Parse one request line. Returns the request id (when the line had one,
/// so even a refusal can name it) and the request or why it was refused.
pub fn parse_request(line: &[u8]) -> (Option<u64>, Result<Request, ProtocolError>) {
    if line.len() > MAX_REQUEST_BYTES {
        return (
            None,
            Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("the request is longer than {MAX_REQUEST_BYTES} bytes: send a shorter one"),
            )),
        );
    }
    let mut v: Value = match serde_json::from_slice(line) {
        Ok(v) => v,
        Err(e) => {
            return (
                None,
                Err(ProtocolError::bad(format!("the request is not JSON ({e})"))),
            );
        }
    };
    let Some(obj) = v.as_object_mut() else {
        return (None, Err(ProtocolError::bad("a request is a JSON object")));
    };
    let id = obj.remove("id").and_then(|i| i.as_u64());
    match obj.remove("v") {
        None => {
            return (
                id,
                Err(ProtocolError::bad(format!(
                    "the request has no protocol version: add \"v\":{PROTOCOL_VERSION}"
                ))),
            );
        }
        Some(v) if v.as_u64() == Some(u64::from(PROTOCOL_VERSION)) => {}
        Some(v) => return (id, Err(version_error(&v))),
    }
    let wire: Wire = match serde_json::from_value(v) {
        Ok(w) => w,
        Err(e) => {
            return (
                id,
                Err(ProtocolError::bad(format!("the request is not valid: {e}"))),
            );
        }
    };
    let req = match wire {
        Wire::Attach { pid, exe } => one_target(pid, exe).map(Request::Attach),
        Wire::Detach { pid, exe } => one_target(pid, exe).map(Request::Detach),
        Wire::List {} => Ok(Request::List),
        Wire::Status {} => Ok(Request::Status),
        Wire::Subscribe {
            pid,
            kinds,
            since_ns,
            follow,
        } => (|| {
            if let Some(p) = pid {
                validate_pid(p).map_err(ProtocolError::bad)?;
            }
            if kinds.len() > EVENT_KINDS.len() {
                return Err(ProtocolError::bad("too many kinds"));
            }
            let kinds = kinds
                .iter()
                .map(|k| k.parse::<EventKind>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(ProtocolError::bad)?;
            Ok(Request::Subscribe(EventFilter {
                pid,
                kinds,
                since_ns,
                follow,
            }))
        })(),
    };
    (id, req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Request, ProtocolError> {
        parse_request(s.as_bytes()).1
    }

    #[test]
    fn attach_by_pid_and_by_exe() {
        assert_eq!(
            parse(r#"{"v":1,"op":"attach","pid":42}"#).unwrap(),
            Request::Attach(TargetSpec::Pid(42))
        );
        assert_eq!(
            parse(r#"{"v":1,"id":3,"op":"detach","exe":"/usr/bin/svc"}"#).unwrap(),
            Request::Detach(TargetSpec::Exe("/usr/bin/svc".into()))
        );
        assert_eq!(parse_request(br#"{"v":1,"id":3,"op":"list"}"#).0, Some(3));
    }

    #[test]
    fn malformed_requests_are_refused_with_a_reason() {
        for (line, needle) in [
            ("not json", "the request is not JSON ("),
            ("[1,2]", "JSON object"),
            (r#"{"op":"list"}"#, "has no protocol version"),
            (r#"{"v":1,"op":"attach"}"#, "exactly one"),
            (r#"{"v":1,"op":"attach","pid":1,"exe":"/x"}"#, "exactly one"),
            (r#"{"v":1,"op":"attach","pid":0}"#, "out of range"),
            (r#"{"v":1,"op":"attach","exe":"relative"}"#, "absolute"),
            (
                r#"{"v":1,"op":"run","cmd":"sh"}"#,
                "the request is not valid: unknown variant",
            ),
            (
                r#"{"v":1,"op":"list","path":"/etc/shadow"}"#,
                "unknown field",
            ),
            (
                r#"{"v":1,"op":"subscribe","kinds":["bogus"]}"#,
                "unknown event kind",
            ),
        ] {
            let e = parse(line).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadRequest, "{line}");
            assert!(e.message.contains(needle), "{line}: {}", e.message);
        }
        let e = parse(r#"{"v":2,"op":"list"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert_eq!(
            e.message,
            "protocol version 2 is not supported: this daemon speaks version 1; use a client of the same map-auditor release"
        );
        let e = parse(r#"{"v":"one","op":"list"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert_eq!(
            e.message,
            r#"the protocol version must be a whole number, not "one": send "v":1"#
        );
        let big = format!(
            r#"{{"v":1,"op":"list","x":"{}"}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        );
        assert_eq!(parse(&big).unwrap_err().code, ErrorCode::TooLarge);
    }

    #[test]
    fn subscribe_defaults_to_follow_every_kind() {
        let Request::Subscribe(f) = parse(r#"{"v":1,"op":"subscribe"}"#).unwrap() else {
            panic!()
        };
        assert!(f.follow && f.kinds.is_empty());
        assert!(f.matches("access", 1, 0));
        let f = EventFilter {
            pid: Some(7),
            kinds: vec![EventKind::Overlap],
            since_ns: Some(100),
            follow: true,
        };
        assert!(f.matches("overlap", 7, 100));
        assert!(!f.matches("access", 7, 100));
        assert!(!f.matches("overlap", 8, 100));
        assert!(!f.matches("overlap", 7, 99));
    }

    #[test]
    fn responses_are_single_lines() {
        let l = Response::err(Some(1), ProtocolError::bad("x\ny")).line();
        assert_eq!(l.matches('\n').count(), 1);
        assert!(l.contains(r#""code":"bad_request""#));
    }
}
