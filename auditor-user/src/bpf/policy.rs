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

use super::{
    Alert, AlertRule, BpfMapEvent,
    exe::{AllowList, ExeHash, ExeId},
};

/// How a `--guard` value names maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GuardSpec {
    Id(u32),
    /// A pin path (starts with `/`): resolved to an id at start and
    /// whenever a map is pinned there.
    Pin(PathBuf),
    Name(String),
}

/// Longest map name the kernel keeps (`BPF_OBJ_NAME_LEN` - 1).
pub const MAP_NAME_MAX: usize = 15;

impl GuardSpec {
    /// A map id, an absolute pin path, or a map name of at most 15 bytes
    /// (a longer name could never match what the kernel stores).
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Ok(id) = s.parse() {
            Ok(Self::Id(id))
        } else if s.starts_with('/') {
            Ok(Self::Pin(PathBuf::from(s)))
        } else if s.is_empty() {
            Err("--guard needs a map name, id or pin path".into())
        } else if s.len() > MAP_NAME_MAX {
            Err(format!(
                "--guard {s}: map names are at most {MAP_NAME_MAX} bytes in the kernel, so this name can never match; use `{}` (its first {MAP_NAME_MAX} bytes), the map id or its pin path",
                String::from_utf8_lossy(&s.as_bytes()[..MAP_NAME_MAX])
            ))
        } else {
            Ok(Self::Name(s.to_string()))
        }
    }

    /// Whether this guard names the map `id` called `name` (pin paths are
    /// resolved to ids by the engine).
    pub fn names(&self, id: u32, name: &str) -> bool {
        match self {
            Self::Id(g) => *g == id,
            Self::Name(n) => !name.is_empty() && n == name,
            Self::Pin(_) => false,
        }
    }
}

impl std::fmt::Display for GuardSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(id) => write!(f, "id {id}"),
            Self::Pin(p) => write!(f, "pin {}", p.display()),
            Self::Name(n) => write!(f, "name {n}"),
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
    /// Map names by id, for guards by name on programs' map references.
    names: HashMap<u32, String>,
    pub allow: AllowList,
    pub alerts: u64,
}

impl BpfMapGraph {
    pub fn new(guards: Vec<GuardSpec>, allow: AllowList) -> Self {
        Self {
            guards,
            allow,
            ..Self::default()
        }
    }

    /// A guarded pin path resolved to this id.
    pub fn guard_id(&mut self, id: u32) {
        self.guarded_ids.insert(id);
    }

    /// Whether the map `id` called `name` is guarded.
    pub fn guards_map(&self, id: u32, name: &str) -> bool {
        id != 0 && (self.guarded_ids.contains(&id) || self.guards.iter().any(|g| g.names(id, name)))
    }

    pub fn creator(&self, id: u32) -> Option<&Creator> {
        self.creators.get(&id)
    }

    fn is_guarded(&self, ev: &BpfMapEvent) -> bool {
        self.guards_map(ev.map_id, &ev.map_name)
    }

    /// May this caller write map `id`: its creator (same process), or an
    /// allowed executable by device and inode.
    fn may_write(&self, id: u32, ev: &BpfMapEvent) -> bool {
        let hash = ev.exe_sha256.as_deref().and_then(parse_sha256);
        self.creators.get(&id).is_some_and(|c| c.pid == ev.pid)
            || self
                .allow
                .allows(ExeId::of_event(ev.exe_dev.as_deref(), ev.exe_ino), hash)
    }

    /// The alert for a guarded pin path now naming another map.
    pub fn pin_changed(&mut self, ts_ns: u64, pin: &str, old: Option<u32>, new: u32) -> Alert {
        self.guarded_ids.insert(new);
        self.alerts += 1;
        let name = self.names.get(&new).cloned().unwrap_or_default();
        Alert {
            ts_ns,
            rule: AlertRule::GuardedPinChanged,
            map_id: new,
            map_name: name.clone(),
            pid: 0,
            tid: 0,
            comm: String::new(),
            exe: String::new(),
            uid: 0,
            euid: None,
            caps: None,
            exe_dev: None,
            exe_ino: None,
            cmd: "pin_changed".into(),
            result: "ok".into(),
            other_pid: None,
            other_tid: None,
            other_comm: None,
            other_cmd: None,
            message: match old {
                Some(o) => format!(
                    "guarded pin {pin} now names map {new} ({name}), was map {o}; both stay guarded"
                ),
                None => format!("guarded pin {pin} now names map {new} ({name})"),
            },
        }
    }

    /// Remember a map's name (from the lifecycle walk).
    pub fn note_name(&mut self, id: u32, name: &str) {
        if !name.is_empty() {
            self.names.insert(id, name.to_string());
        }
    }

    /// Take one event into the graph; returns the alerts it raises.
    pub fn observe(&mut self, ev: &BpfMapEvent) -> Vec<Alert> {
        let mut out = Vec::new();
        if !ev.comm.is_empty() {
            self.comms.insert(ev.pid, ev.comm.clone());
        }
        if ev.map_id != 0 && !ev.map_name.is_empty() && !self.names.contains_key(&ev.map_id) {
            self.names.insert(ev.map_id, ev.map_name.clone());
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

        let base_for = |rule, map_id: u32, map_name: &str, message: String| Alert {
            ts_ns: ev.ts_ns,
            rule,
            map_id,
            map_name: map_name.to_string(),
            pid: ev.pid,
            tid: ev.tid,
            comm: ev.comm.clone(),
            exe: ev.exe.clone(),
            uid: ev.uid,
            euid: ev.euid,
            caps: ev.caps.clone(),
            exe_dev: ev.exe_dev.clone(),
            exe_ino: ev.exe_ino,
            cmd: ev.cmd.clone(),
            result: ev.result.clone(),
            other_pid: None,
            other_tid: None,
            other_comm: None,
            other_cmd: None,
            message,
        };
        for m in &ev.prog_maps {
            let name = if m.name.is_empty() {
                self.names.get(&m.id).cloned().unwrap_or_default()
            } else {
                m.name.clone()
            };
            if self.guards_map(m.id, &name) && !self.may_write(m.id, ev) {
                let mut a = base_for(
                    AlertRule::GuardedMapProgram,
                    m.id,
                    &name,
                    format!(
                        "guarded map {} ({}) is referenced by program {} in {} by {} ({}, {}, euid {}) -> {}",
                        m.id,
                        name,
                        ev.prog_id.unwrap_or(0),
                        ev.cmd,
                        ev.pid,
                        ev.comm,
                        display_exe(ev),
                        ev.euid.map_or_else(|| "?".into(), |u| u.to_string()),
                        ev.result
                    ),
                );
                if let Some(c) = self.creators.get(&m.id) {
                    a.other_pid = Some(c.pid);
                    a.other_comm = Some(c.comm.clone());
                }
                out.push(a);
            }
        }
        if ev.map_id == 0 {
            self.alerts += out.len() as u64;
            return out;
        }
        let base = |rule, message: String| base_for(rule, ev.map_id, &ev.map_name, message);

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
            if !self.may_write(ev.map_id, ev) {
                let who = match creator {
                    Some(c) => format!("created by {} ({})", c.pid, c.comm),
                    None => "creator unknown (created before the audit started)".into(),
                };
                let mut a = base(
                    AlertRule::GuardedMapWrite,
                    format!(
                        "guarded map {} ({}), {}: {}{} by {} ({}, {}, euid {}) -> {}",
                        ev.map_id,
                        ev.map_name,
                        who,
                        ev.cmd,
                        if ev.compat { " (32-bit call)" } else { "" },
                        ev.pid,
                        ev.comm,
                        display_exe(ev),
                        ev.euid.map_or_else(|| "?".into(), |u| u.to_string()),
                        ev.result
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

fn parse_sha256(hex: &str) -> Option<ExeHash> {
    let b = hex.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?;
    }
    Some(ExeHash(out))
}

/// The executable for a message: its path, or its identity when the path
/// could not be read; with `--verify-hash`, the content hash it was judged by.
fn display_exe(ev: &BpfMapEvent) -> String {
    let exe = display_exe_file(ev);
    match &ev.exe_sha256 {
        Some(h) => format!("{exe} sha256 {h}"),
        None => exe,
    }
}

fn display_exe_file(ev: &BpfMapEvent) -> String {
    match (&ev.exe, ev.exe_unread) {
        (p, false) if !p.is_empty() => p.clone(),
        (p, _) => format!(
            "{}exe {} inode {}",
            if p.is_empty() {
                String::new()
            } else {
                format!("{p}? ")
            },
            ev.exe_dev.as_deref().unwrap_or("?"),
            ev.exe_ino.map_or_else(|| "?".into(), |i| i.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bpf::{ConcurrentWriter, ProgMap, exe::AllowedExe};

    fn ev(pid: u32, cmd: &str, map_id: u32) -> BpfMapEvent {
        BpfMapEvent {
            pid,
            tid: pid,
            comm: format!("p{pid}"),
            exe: format!("/bin/p{pid}"),
            exe_dev: Some("8:1".into()),
            exe_ino: Some(pid as u64),
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
        let mut g = BpfMapGraph::new(vec![GuardSpec::parse("m").unwrap()], allow_ino(3));
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
        let mut g = BpfMapGraph::new(vec![GuardSpec::parse("7").unwrap()], AllowList::default());
        let a = g.observe(&ev(1, "map_delete_elem", 7));
        assert_eq!(a[0].rule, AlertRule::GuardedMapWrite);
        assert!(a[0].message.contains("creator unknown"));
    }

    #[test]
    fn guard_by_pin_path_follows_obj_pin() {
        let mut g = BpfMapGraph::new(
            vec![GuardSpec::parse("/sys/fs/bpf/x").unwrap()],
            AllowList::default(),
        );
        g.observe(&ev(1, "map_create", 9));
        let mut pin = ev(1, "obj_pin", 9);
        pin.path = Some("/sys/fs/bpf/x".into());
        g.observe(&pin);
        let a = g.observe(&ev(2, "map_update_elem", 9));
        assert!(a.iter().any(|a| a.rule == AlertRule::GuardedMapWrite));
    }

    fn allow_ino(ino: u64) -> AllowList {
        AllowList {
            exes: vec![AllowedExe {
                path: "/bin/allowed".into(),
                id: Some(ExeId {
                    major: 8,
                    minor: 1,
                    ino,
                }),
                sha256: None,
            }],
            verify_hash: false,
        }
    }

    #[test]
    fn guard_specs_parse_id_path_and_name() {
        assert_eq!(GuardSpec::parse("12"), Ok(GuardSpec::Id(12)));
        assert_eq!(
            GuardSpec::parse("/sys/fs/bpf/a"),
            Ok(GuardSpec::Pin("/sys/fs/bpf/a".into()))
        );
        assert_eq!(
            GuardSpec::parse("flows"),
            Ok(GuardSpec::Name("flows".into()))
        );
    }

    #[test]
    fn guard_names_past_the_kernels_limit_are_refused_with_the_prefix() {
        let e = GuardSpec::parse("a_very_long_map_name").unwrap_err();
        assert!(
            e.contains("at most 15") && e.contains("`a_very_long_map`"),
            "{e}"
        );
        assert!(GuardSpec::parse("exactly_15_char").is_ok());
    }

    #[test]
    fn allowed_exe_is_matched_by_identity_not_by_path_text() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::Id(7)], allow_ino(3));
        // Same path text, other inode: a copy elsewhere is not allowed.
        let mut copy = ev(4, "map_update_elem", 7);
        copy.exe = "/bin/allowed".into();
        assert_eq!(g.observe(&copy)[0].rule, AlertRule::GuardedMapWrite);
        // Other path text, the allowed inode: allowed.
        let mut real = ev(3, "map_update_elem", 7);
        real.exe = "/elsewhere/x".into();
        assert!(
            g.observe(&real)
                .iter()
                .all(|a| a.rule != AlertRule::GuardedMapWrite)
        );
        // No identity read: not allowed.
        let mut unknown = ev(3, "map_delete_elem", 7);
        unknown.exe_ino = None;
        assert!(
            g.observe(&unknown)
                .iter()
                .any(|a| a.rule == AlertRule::GuardedMapWrite)
        );
    }

    #[test]
    fn writable_mmap_of_a_guarded_map_is_a_write() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::Id(7)], AllowList::default());
        let a = g.observe(&ev(2, "mmap", 7));
        assert_eq!(a[0].rule, AlertRule::GuardedMapWrite);
        assert_eq!(a[0].euid, None);
    }

    #[test]
    fn program_referencing_a_guarded_map_raises_an_alert_per_map() {
        let mut g = BpfMapGraph::new(vec![GuardSpec::Name("flows".into())], AllowList::default());
        g.note_name(5, "flows");
        let mut e = ev(2, "prog_test_run", 0);
        e.prog_id = Some(40);
        e.prog_maps = vec![
            ProgMap {
                id: 5,
                name: String::new(),
            },
            ProgMap {
                id: 6,
                name: "other".into(),
            },
        ];
        let a = g.observe(&e);
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(
            (a[0].rule, a[0].map_id, a[0].map_name.as_str()),
            (AlertRule::GuardedMapProgram, 5, "flows")
        );
        assert!(a[0].message.contains("program 40"), "{}", a[0].message);
    }

    #[test]
    fn changed_pin_guards_the_new_map_and_says_so() {
        let mut g = BpfMapGraph::new(
            vec![GuardSpec::Pin("/sys/fs/bpf/p".into())],
            AllowList::default(),
        );
        let a = g.pin_changed(1, "/sys/fs/bpf/p", Some(3), 9);
        assert_eq!(a.rule, AlertRule::GuardedPinChanged);
        assert!(a.message.contains("was map 3"));
        assert!(g.guards_map(9, ""));
    }
}
