//! Map destruction. No tracepoint fires when a map is freed (Linux 6.18 has
//! none under events/bpf*, and kprobes/fentry are unavailable here), so the
//! auditor walks map ids (`BPF_MAP_GET_NEXT_ID`) periodically and reports
//! ids that vanished as `bpf_map` events with cmd `map_destroyed`.
//!
//! The kernel frees a map's id as soon as its last reference is dropped
//! (`bpf_map_put` → `bpf_map_free_id`, before the deferred free), so a
//! vanished id means the map is gone. Destruction is reported with the poll
//! period's delay and its time is the poll time, not the exact free time.

use std::collections::HashMap;

use super::{BpfMapEvent, MAP_DESTROYED, names, sys::MapInfo};

/// The maps alive at the last poll, as ready `map_destroyed` templates.
#[derive(Debug, Default)]
pub struct MapLifecycle {
    known: HashMap<u32, BpfMapEvent>,
}

impl MapLifecycle {
    /// Remember a map seen in a successful call, so one created and freed
    /// between two polls is still reported.
    pub fn note(&mut self, ev: &BpfMapEvent) {
        if ev.map_id == 0 || ev.cmd == MAP_DESTROYED || !ev.ok() {
            return;
        }
        self.known.entry(ev.map_id).or_insert_with(|| BpfMapEvent {
            cmd: MAP_DESTROYED.into(),
            map_id: ev.map_id,
            map_name: ev.map_name.clone(),
            map_type: ev.map_type.clone(),
            key_size: ev.key_size,
            value_size: ev.value_size,
            max_entries: ev.max_entries,
            map_flags: ev.map_flags,
            result: "ok".into(),
            ..BpfMapEvent::default()
        });
    }

    /// The name of a known map.
    pub fn name(&self, id: u32) -> Option<&str> {
        self.known.get(&id).map(|e| e.map_name.as_str())
    }

    /// Every map known alive at the last poll (or seen since), by id.
    pub fn maps(&self) -> impl Iterator<Item = (u32, &str)> {
        self.known.iter().map(|(id, e)| (*id, e.map_name.as_str()))
    }

    pub fn len(&self) -> usize {
        self.known.len()
    }

    pub fn is_empty(&self) -> bool {
        self.known.is_empty()
    }

    /// Compare with the ids alive now. New ids are looked up with `info`;
    /// returns `map_destroyed` events (time `ts_ns`) for the ids that
    /// vanished.
    pub fn poll(
        &mut self,
        alive: &[u32],
        ts_ns: u64,
        mut info: impl FnMut(u32) -> Option<MapInfo>,
    ) -> Vec<BpfMapEvent> {
        let alive_set: std::collections::HashSet<u32> = alive.iter().copied().collect();
        let gone: Vec<u32> = self
            .known
            .keys()
            .filter(|id| !alive_set.contains(id))
            .copied()
            .collect();
        let mut out: Vec<BpfMapEvent> = gone
            .into_iter()
            .filter_map(|id| self.known.remove(&id))
            .map(|mut e| {
                e.ts_ns = ts_ns;
                e
            })
            .collect();
        out.sort_by_key(|m| m.map_id);
        for id in alive {
            if !self.known.contains_key(id)
                && let Some(i) = info(*id)
            {
                self.known.insert(*id, template(&i));
            }
        }
        out
    }
}

fn template(m: &MapInfo) -> BpfMapEvent {
    BpfMapEvent {
        cmd: MAP_DESTROYED.into(),
        map_id: m.id,
        map_name: m.name.clone(),
        map_type: names::map_type_name(m.map_type),
        key_size: m.key_size,
        value_size: m.value_size,
        max_entries: m.max_entries,
        map_flags: m.map_flags,
        result: "ok".into(),
        ..BpfMapEvent::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u32) -> Option<MapInfo> {
        Some(MapInfo {
            id,
            map_type: 1,
            name: format!("m{id}"),
            ..MapInfo::default()
        })
    }

    #[test]
    fn vanished_ids_are_reported_once() {
        let mut l = MapLifecycle::default();
        assert!(l.poll(&[1, 2, 3], 1, info).is_empty());
        let gone = l.poll(&[1, 3], 2, info);
        assert_eq!(gone.iter().map(|m| m.map_id).collect::<Vec<_>>(), vec![2]);
        assert_eq!(
            (gone[0].map_name.as_str(), gone[0].map_type.as_str()),
            ("m2", "hash")
        );
        assert_eq!((gone[0].cmd.as_str(), gone[0].ts_ns), ("map_destroyed", 2));
        assert!(l.poll(&[1, 3], 3, info).is_empty());
    }

    #[test]
    fn map_created_and_freed_between_polls_is_reported() {
        let mut l = MapLifecycle::default();
        l.poll(&[1], 1, info);
        let created = BpfMapEvent {
            cmd: "map_create".into(),
            map_id: 9,
            map_name: "short".into(),
            result: "ok".into(),
            ..BpfMapEvent::default()
        };
        l.note(&created);
        let gone = l.poll(&[1], 2, info);
        assert_eq!(gone.len(), 1);
        assert_eq!((gone[0].map_id, gone[0].map_name.as_str()), (9, "short"));
    }
}
