//! Findings over bpf(2) events: the process→map graph, concurrent writers
//! (decided in the kernel, reported here), maps written by more than one
//! process, and guarded maps. Knows nothing of BPF loading: events in,
//! alerts out, so it is tested with synthetic streams.
//!
//! Guarded maps and unknown creators: the creator of a map is the process
//! whose MAP_CREATE the auditor saw. A map created before the auditor
//! started has no known creator; then only executables given with
//! `--allow-exe` may write it and every other writer raises an alert.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::PathBuf,
};

use serde::Serialize;

use super::{Alert, AlertRule, BpfMapEvent};

/// How a `--guard` value names maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardSpec {
    Id(u32),
    /// A pin path (starts with `/`): resolved to an id at start and
    /// whenever a map is pinned there.
    Pin(PathBuf),
    Name(String),
}

impl GuardSpec {
    pub fn parse(s: &str) -> Self {
        if let Ok(id) = s.parse() {
            Self::Id(id)
        } else if s.starts_with('/') {
            Self::Pin(PathBuf::from(s))
        } else {
            Self::Name(s.to_string())
        }
    }
}

/// Who created a map, as seen by the auditor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Creator {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
}

/// One process→map edge with per-command counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MapEdge {
    pub pid: u32,
    pub comm: String,
    pub exe: String,
    pub map_id: u32,
    pub map_name: String,
    /// Command name → calls (failed calls included).
    pub counts: BTreeMap<String, u64>,
    pub failed: u64,
}

/// Which processes touched which maps, and the findings so far.
#[derive(Debug, Default)]
pub struct BpfMapGraph {
    pub edges: BTreeMap<(u32, u32), MapEdge>,
    creators: HashMap<u32, Creator>,
    writers: HashMap<u32, BTreeSet<u32>>,
    multi_reported: BTreeSet<u32>,
    /// (map, pid, other pid) pairs already alerted as concurrent writers.
    concurrent_reported: BTreeSet<(u32, u32, u32)>,
    /// Calls that entered while another writer was inside (all, reported
    /// or not).
    pub concurrent_calls: u64,
    comms: HashMap<u32, String>,
    guards: Vec<GuardSpec>,
    guarded_ids: BTreeSet<u32>,
    allow_exe: Vec<PathBuf>,
    pub alerts: u64,
}

impl BpfMapGraph {
    pub fn new(guards: Vec<GuardSpec>, allow_exe: Vec<PathBuf>) -> Self {
        Self {
            guards,
            allow_exe,
            ..Self::default()
        }
    }

    /// A guarded pin path resolved to this id (at start).
    pub fn guard_id(&mut self, id: u32) {
        self.guarded_ids.insert(id);
    }

    pub fn creator(&self, id: u32) -> Option<&Creator> {
        self.creators.get(&id)
    }

    fn is_guarded(&self, ev: &BpfMapEvent) -> bool {
        self.guarded_ids.contains(&ev.map_id)
            || self.guards.iter().any(|g| match g {
                GuardSpec::Id(id) => *id == ev.map_id,
                GuardSpec::Name(n) => !ev.map_name.is_empty() && *n == ev.map_name,
                GuardSpec::Pin(_) => false,
            })
    }

    fn allowed_exe(&self, exe: &str) -> bool {
        self.allow_exe.iter().any(|a| a.as_os_str() == exe)
    }

    /// Take one event into the graph; returns the alerts it raises.
    pub fn observe(&mut self, ev: &BpfMapEvent) -> Vec<Alert> {
        let mut out = Vec::new();
        if !ev.comm.is_empty() {
            self.comms.insert(ev.pid, ev.comm.clone());
        }
        if ev.cmd == super::MAP_DESTROYED {
            self.creators.remove(&ev.map_id);
            self.writers.remove(&ev.map_id);
            return out;
        }
        if ev.ok() && ev.cmd == "map_create" && ev.map_id != 0 {
            self.creators.insert(
                ev.map_id,
                Creator {
                    pid: ev.pid,
                    comm: ev.comm.clone(),
                    exe: ev.exe.clone(),
                },
            );
        }
        if ev.ok() && ev.cmd == "obj_pin" && ev.map_id != 0 {
            let pinned = ev.path.as_deref().unwrap_or_default();
            if self
                .guards
                .iter()
                .any(|g| matches!(g, GuardSpec::Pin(p) if p.as_os_str() == pinned))
            {
                self.guarded_ids.insert(ev.map_id);
            }
        }

        let edge = self
            .edges
            .entry((ev.pid, ev.map_id))
            .or_insert_with(|| MapEdge {
                pid: ev.pid,
                comm: ev.comm.clone(),
                exe: ev.exe.clone(),
                map_id: ev.map_id,
                ..MapEdge::default()
            });
        if edge.map_name.is_empty() {
            edge.map_name = ev.map_name.clone();
        }
        *edge.counts.entry(ev.cmd.clone()).or_default() += 1;
        if !ev.ok() {
            edge.failed += 1;
        }

        if ev.map_id == 0 {
            return out;
        }
        let base = |rule, message: String| Alert {
            ts_ns: ev.ts_ns,
            rule,
            map_id: ev.map_id,
            map_name: ev.map_name.clone(),
            pid: ev.pid,
            tid: ev.tid,
            comm: ev.comm.clone(),
            exe: ev.exe.clone(),
            cmd: ev.cmd.clone(),
            result: ev.result.clone(),
            other_pid: None,
            other_tid: None,
            other_comm: None,
            other_cmd: None,
            message,
        };

        if ev.concurrent_with.is_some() {
            self.concurrent_calls += 1;
        }
        let pair = ev
            .concurrent_with
            .as_ref()
            .map(|c| (ev.map_id, ev.pid.min(c.pid), ev.pid.max(c.pid)));
        if let (Some(c), Some(pair)) = (&ev.concurrent_with, pair)
            && self.concurrent_reported.insert(pair)
        {
            let mut a = base(
                AlertRule::ConcurrentWriters,
                format!(
                    "map {} ({}): {} by {}/{} entered while {} by {}/{} was inside for {} us",
                    ev.map_id,
                    ev.map_name,
                    ev.cmd,
                    ev.pid,
                    ev.tid,
                    c.cmd,
                    c.pid,
                    c.tid,
                    c.inside_ns / 1000
                ),
            );
            a.other_pid = Some(c.pid);
            a.other_tid = Some(c.tid);
            a.other_comm = self.comms.get(&c.pid).cloned();
            a.other_cmd = Some(c.cmd.clone());
            out.push(a);
        }

        if ev.is_write() && ev.ok() && ev.cmd != "map_freeze" {
            let w = self.writers.entry(ev.map_id).or_default();
            let first = w.iter().next().copied();
            w.insert(ev.pid);
            if w.len() > 1 && self.multi_reported.insert(ev.map_id) {
                let other = first.filter(|p| *p != ev.pid);
                let mut a = base(
                    AlertRule::MultiProcessWriters,
                    format!(
                        "map {} ({}) is written by more than one process: {} now, {} before",
                        ev.map_id,
                        ev.map_name,
                        ev.pid,
                        other.map_or_else(|| "?".into(), |p| p.to_string())
                    ),
                );
                a.other_pid = other;
                a.other_comm = other.and_then(|p| self.comms.get(&p).cloned());
                out.push(a);
            }
        }

        if ev.is_write() && self.is_guarded(ev) {
            let creator = self.creators.get(&ev.map_id);
            let allowed = creator.is_some_and(|c| c.pid == ev.pid) || self.allowed_exe(&ev.exe);
            if !allowed {
                let who = match creator {
                    Some(c) => format!("created by {} ({})", c.pid, c.comm),
                    None => "creator unknown (created before the audit started)".into(),
                };
                let mut a = base(
                    AlertRule::GuardedMapWrite,
                    format!(
                        "guarded map {} ({}), {}: {} by {} ({}, {}) -> {}",
                        ev.map_id, ev.map_name, who, ev.cmd, ev.pid, ev.comm, ev.exe, ev.result
                    ),
                );
                if let Some(c) = creator {
                    a.other_pid = Some(c.pid);
                    a.other_comm = Some(c.comm.clone());
                }
                out.push(a);
            }
        }
        self.alerts += out.len() as u64;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::ConcurrentWriter;

    fn ev(pid: u32, cmd: &str, map_id: u32) -> BpfMapEvent {
        BpfMapEvent {
            pid,
            tid: pid,
            comm: format!("p{pid}"),
            exe: format!("/bin/p{pid}"),
            cmd: cmd.into(),
            map_id,
            map_name: "m".into(),
            result: "ok".into(),
            ..BpfMapEvent::default()
        }
    }

    #[test]
    fn edges_count_commands_per_process_and_map() {
        let mut g = BpfMapGraph::default();
        g.observe(&ev(1, "map_lookup_elem", 7));
        g.observe(&ev(1, "map_lookup_elem", 7));
        g.observe(&ev(1, "map_update_elem", 7));
        let e = &g.edges[&(1, 7)];
        assert_eq!(e.counts["map_lookup_elem"], 2);
        assert_eq!(e.counts["map_update_elem"], 1);
    }

    #[test]
    fn second_writing_process_is_reported_once() {
        let mut g = BpfMapGraph::default();
        assert!(g.observe(&ev(1, "map_update_elem", 7)).is_empty());
        let a = g.observe(&ev(2, "map_delete_elem", 7));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, AlertRule::MultiProcessWriters);
        assert_eq!(a[0].other_pid, Some(1));
        assert!(g.observe(&ev(3, "map_update_elem", 7)).is_empty());
    }

    #[test]
    fn concurrent_writer_alert_names_both_writers() {
        let mut g = BpfMapGraph::default();
        g.observe(&ev(1, "map_lookup_elem", 7));
        let mut e = ev(2, "map_update_elem", 7);
        e.concurrent_with = Some(ConcurrentWriter {
            pid: 1,
            tid: 11,
            cmd: "map_update_elem".into(),
            inside_ns: 5,
        });
        let a = g.observe(&e);
        assert_eq!(a[0].rule, AlertRule::ConcurrentWriters);
        assert_eq!(
            (a[0].pid, a[0].other_pid, a[0].other_tid),
            (2, Some(1), Some(11))
        );
        assert_eq!(a[0].other_comm.as_deref(), Some("p1"));
        // The same pair again is counted, not re-alerted.
        assert!(
            g.observe(&e)
                .iter()
                .all(|a| a.rule != AlertRule::ConcurrentWriters)
        );
        assert_eq!(g.concurrent_calls, 2);
    }

    #[test]
    fn guarded_map_allows_creator_and_allowed_exe_only() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::parse("m")], vec!["/bin/p3".into()]);
        g.observe(&ev(1, "map_create", 7));
        assert!(g.observe(&ev(1, "map_update_elem", 7)).is_empty());
        assert!(g.observe(&ev(2, "map_lookup_elem", 7)).is_empty());
        let a = g.observe(&ev(2, "map_freeze", 7));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].rule, AlertRule::GuardedMapWrite);
        assert_eq!(a[0].other_pid, Some(1));
        let a = g.observe(&ev(3, "map_update_elem", 7));
        assert!(a.iter().all(|a| a.rule != AlertRule::GuardedMapWrite));
    }

    #[test]
    fn guarded_map_with_unknown_creator_allows_only_the_allow_list() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::parse("7")], vec![]);
        let a = g.observe(&ev(1, "map_delete_elem", 7));
        assert_eq!(a[0].rule, AlertRule::GuardedMapWrite);
        assert!(a[0].message.contains("creator unknown"));
    }

    #[test]
    fn guard_by_pin_path_follows_obj_pin() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::parse("/sys/fs/bpf/x")], vec![]);
        g.observe(&ev(1, "map_create", 9));
        let mut pin = ev(1, "obj_pin", 9);
        pin.path = Some("/sys/fs/bpf/x".into());
        g.observe(&pin);
        let a = g.observe(&ev(2, "map_update_elem", 9));
        assert!(a.iter().any(|a| a.rule == AlertRule::GuardedMapWrite));
    }

    #[test]
    fn guard_specs_parse_id_path_and_name() {
        assert_eq!(GuardSpec::parse("12"), GuardSpec::Id(12));
        assert_eq!(
            GuardSpec::parse("/sys/fs/bpf/a"),
            GuardSpec::Pin("/sys/fs/bpf/a".into())
        );
        assert_eq!(GuardSpec::parse("flows"), GuardSpec::Name("flows".into()));
    }
}
