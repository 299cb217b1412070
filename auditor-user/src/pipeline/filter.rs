//! Live-log filters (`--ops`, `--map`, `--function`, `--package`).

use auditor_common::go_map::MapOp;

use crate::event::{AccessCounts, AuditEvent};

/// What the user asked to see. Findings (overlaps) pass unless `--map`
/// excludes their map; losses and summaries always pass.
#[derive(Clone, Debug, Default)]
pub struct AccessFilter {
    pub ops: Option<Vec<MapOp>>,
    pub map: Option<u64>,
    pub function: Option<String>,
    pub package: Option<String>,
    /// Only findings, losses and summaries.
    pub quiet: bool,
}

pub use crate::event::kinds::parse_op;

/// Parse `0xc000012000` (or without `0x`).
pub fn parse_addr(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let t = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .unwrap_or(t);
    u64::from_str_radix(t, 16)
        .map_err(|_| format!("invalid map address {s:?}: use hex, e.g. 0xc000012000"))
}

/// The Go package of a symbol name: `net/http.(*Server).Serve` → `net/http`,
/// `main.worker.func1` → `main`.
pub fn package_of(function: &str) -> &str {
    let after_slash = function.rfind('/').map_or(0, |i| i + 1);
    match function[after_slash..].find('.') {
        Some(dot) => &function[..after_slash + dot],
        None => function,
    }
}

impl AccessFilter {
    fn access_passes(&self, op: MapOp, map: u64, function: &str) -> bool {
        if self.quiet {
            return false;
        }
        self.ops.as_ref().is_none_or(|ops| ops.contains(&op))
            && self.map.is_none_or(|m| m == map)
            && self
                .function
                .as_ref()
                .is_none_or(|f| function.contains(f.as_str()))
            && self
                .package
                .as_ref()
                .is_none_or(|p| package_of(function) == p)
    }

    /// Whether `ev` goes to the live log.
    pub fn passes(&self, ev: &AuditEvent) -> bool {
        match ev {
            AuditEvent::Access(a) => self.access_passes(a.op, a.map, &a.function),
            AuditEvent::AccessCounts(AccessCounts {
                op, map, function, ..
            }) => self.access_passes(*op, *map, function),
            AuditEvent::Overlap(o) => self.map.is_none_or(|m| m == o.map),
            AuditEvent::Attach(_) => !self.quiet,
            AuditEvent::BpfMap(_) => !self.quiet,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_is_path_up_to_first_dot_after_last_slash() {
        assert_eq!(package_of("net/http.(*Server).Serve"), "net/http");
        assert_eq!(package_of("main.worker.func1"), "main");
        assert_eq!(
            package_of("example.com/app/cache.(*LRU).Get"),
            "example.com/app/cache"
        );
    }

    #[test]
    fn bad_op_and_address_explain_themselves() {
        assert!(parse_op("upsert").unwrap_err().contains("use read, write"));
        assert_eq!(parse_addr("0xC000").unwrap(), 0xc000);
        assert!(parse_addr("zz").unwrap_err().contains("hex"));
    }
}
