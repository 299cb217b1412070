//! The names of the schema, kept once: every event kind (the JSON `kind`
//! tag) and every Go map operation (the JSON `op`). Parsers of user input
//! (`--kind`, `--ops`, the control protocol) and the daemon log read these
//! tables, so a new kind or operation is added in one place.

use std::{fmt, str::FromStr};

use auditor_common::go_map::MapOp;
use serde::{Deserialize, Serialize};

/// The JSON `kind` of an event (serialised as its name).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    Attach,
    Access,
    Overlap,
    BpfMap,
    Alert,
    Lost,
    Summary,
    /// The daemon's record of a target's life.
    Target,
    /// Exit tracking escalated at a call site.
    Escalation,
    /// Aggregated accesses of one (goroutine, map, call site, operation).
    AccessCounts,
    /// The overhead budget changed what is probed.
    Coverage,
}

impl EventKind {
    /// Every kind, in the order the schema documents them.
    pub const ALL: [Self; 11] = [
        Self::Attach,
        Self::Access,
        Self::Overlap,
        Self::BpfMap,
        Self::Alert,
        Self::Lost,
        Self::Summary,
        Self::Target,
        Self::Escalation,
        Self::AccessCounts,
        Self::Coverage,
    ];

    /// The JSON name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Attach => "attach",
            Self::Access => "access",
            Self::Overlap => "overlap",
            Self::BpfMap => "bpf_map",
            Self::Alert => "alert",
            Self::Lost => "lost",
            Self::Summary => "summary",
            Self::Target => "target",
            Self::Escalation => "escalation",
            Self::AccessCounts => "access_counts",
            Self::Coverage => "coverage",
        }
    }

    /// Findings, losses and the records of a target's life: what the daemon
    /// writes through to disk before anyone is told about it. Everything
    /// but the access streams.
    pub const fn is_durable(self) -> bool {
        !matches!(self, Self::Access | Self::AccessCounts | Self::BpfMap)
    }

    /// Every name, comma-separated, for messages.
    pub fn names() -> String {
        Self::ALL.map(Self::as_str).join(", ")
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown event kind {s:?}: use {}", Self::names()))
    }
}

/// Names of every Go map operation, in [`MapOp::ALL`] order.
pub const OP_NAMES: [&str; MapOp::ALL.len()] = {
    let mut names = [""; MapOp::ALL.len()];
    let mut i = 0;
    while i < names.len() {
        names[i] = MapOp::ALL[i].as_str();
        i += 1;
    }
    names
};

/// Parse an operation name as used in the JSON schema (surrounding blanks
/// ignored).
pub fn parse_op(s: &str) -> Result<MapOp, String> {
    MapOp::ALL
        .into_iter()
        .find(|op| op.as_str() == s.trim())
        .ok_or_else(|| {
            let (last, rest) = OP_NAMES.split_last().expect("operations exist");
            format!("unknown operation {s:?}: use {} or {last}", rest.join(", "))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AuditEvent;

    #[test]
    fn every_kind_name_parses_back() {
        for k in EventKind::ALL {
            assert_eq!(k.as_str().parse::<EventKind>(), Ok(k));
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        let err = "acess".parse::<EventKind>().unwrap_err();
        assert!(err.contains("use attach, access, overlap"), "{err}");
    }

    #[test]
    fn kind_names_match_the_serialised_tag() {
        let events = [
            AuditEvent::Summary(Default::default()),
            AuditEvent::BpfMap(Default::default()),
        ];
        for ev in events {
            let v = serde_json::to_value(&ev).unwrap();
            assert_eq!(v["kind"], ev.kind().as_str());
        }
        let target = serde_json::to_value(crate::event::TargetEvent {
            ts_ns: 1,
            pid: 2,
            state: "exited".into(),
            exe: None,
            reason: None,
        })
        .unwrap();
        assert_eq!(target["kind"], EventKind::Target.as_str());
    }

    #[test]
    fn only_access_streams_are_not_durable() {
        let buffered: Vec<_> = EventKind::ALL
            .into_iter()
            .filter(|k| !k.is_durable())
            .collect();
        assert_eq!(
            buffered,
            [
                EventKind::Access,
                EventKind::BpfMap,
                EventKind::AccessCounts
            ]
        );
    }

    #[test]
    fn op_names_parse_back_and_a_bad_one_lists_them() {
        for (op, name) in MapOp::ALL.into_iter().zip(OP_NAMES) {
            assert_eq!(parse_op(name), Ok(op));
        }
        assert_eq!(parse_op(" write "), Ok(MapOp::Write));
        assert_eq!(
            parse_op("upsert").unwrap_err(),
            "unknown operation \"upsert\": use read, write, delete, iterate, clear or make"
        );
    }
}
