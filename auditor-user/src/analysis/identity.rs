//! Identities of the things an access graph is made of: maps, call sites and
//! per-operation counters. Small value types, shared by graph and findings.

use std::fmt;

use auditor_common::go_map::MapOp;
use serde::Serialize;

/// Every operation, in the order reports list them.
pub const ALL_OPS: [MapOp; 6] = MapOp::ALL;

/// One Go map over its lifetime.
///
/// The Go runtime reuses the memory of a freed map, so the address alone is
/// not an identity: the kernel side bumps `map_gen` whenever a map is made at
/// an address it has seen before, and the pair tells the two maps apart.
///
/// ```
/// use map_auditor::analysis::MapIdentity;
/// let m = MapIdentity { pid: 42, address: 0xc000012000, map_gen: 1 };
/// assert_eq!(m.to_string(), "0xc000012000#1");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct MapIdentity {
    pub pid: u32,
    #[serde(serialize_with = "crate::event::hex")]
    pub address: u64,
    pub map_gen: u32,
}

impl fmt::Display for MapIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}#{}", self.address, self.map_gen)
    }
}

/// A place in the user's code that calls a runtime map function.
///
/// ```
/// use map_auditor::analysis::CallSite;
/// let s = CallSite { function: "main.(*Cache).Set".into(), file: "/src/app/cache.go".into(), line: 30 };
/// assert_eq!(s.to_string(), "main.(*Cache).Set (cache.go:30)");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct CallSite {
    pub function: String,
    pub file: String,
    pub line: u32,
}

impl CallSite {
    /// The file name without its directories: what a developer scans for.
    pub fn short_file(&self) -> &str {
        self.file.rsplit('/').next().unwrap_or(&self.file)
    }
}

impl fmt::Display for CallSite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let func = if self.function.is_empty() {
            "?"
        } else {
            &self.function
        };
        if self.file.is_empty() {
            write!(f, "{func}")
        } else {
            write!(f, "{func} ({}:{})", self.short_file(), self.line)
        }
    }
}

/// Counts per [`MapOp`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpCounts([u64; 6]);

impl OpCounts {
    fn slot(op: MapOp) -> usize {
        op as usize - 1
    }

    /// Count one more `op`.
    pub fn add(&mut self, op: MapOp) {
        self.add_n(op, 1);
    }

    /// `n` accesses of `op` (an `access_counts` event).
    pub fn add_n(&mut self, op: MapOp, n: u64) {
        self.0[Self::slot(op)] += n;
    }

    /// Add every count of `other`.
    pub fn merge(&mut self, other: &OpCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a += b;
        }
    }

    /// Count of `op`.
    pub fn get(&self, op: MapOp) -> u64 {
        self.0[Self::slot(op)]
    }

    /// Count of every operation.
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Writes, deletes and clears: the operations that change the map.
    pub fn mutations(&self) -> u64 {
        ALL_OPS
            .iter()
            .filter(|op| op.mutates())
            .map(|&op| self.get(op))
            .sum()
    }

    /// Compact form for graph labels: `w12 r3` (non-zero counts only).
    pub fn short(&self) -> String {
        let mut out = String::new();
        for op in ALL_OPS {
            let n = self.get(op);
            if n > 0 {
                if !out.is_empty() {
                    out.push(' ');
                }
                let letter = match op {
                    MapOp::Read => "r",
                    MapOp::Write => "w",
                    MapOp::Delete => "d",
                    MapOp::Iterate => "i",
                    MapOp::Clear => "c",
                    MapOp::Make => "m",
                };
                out.push_str(letter);
                out.push_str(&n.to_string());
            }
        }
        out
    }
}

impl Serialize for OpCounts {
    /// An object with one field per operation name, zeros included, so the
    /// shape never changes.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(ALL_OPS.len()))?;
        for op in ALL_OPS {
            m.serialize_entry(op.as_str(), &self.get(op))?;
        }
        m.end()
    }
}

/// A small set of operations (bit per [`MapOp`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpSet(u8);

impl OpSet {
    /// Add `op` to the set.
    pub fn insert(&mut self, op: MapOp) {
        self.0 |= 1 << (op as u8);
    }

    /// Is `op` in the set?
    pub fn contains(&self, op: MapOp) -> bool {
        self.0 & (1 << (op as u8)) != 0
    }

    /// The operations in the set, in report order.
    pub fn iter(&self) -> impl Iterator<Item = MapOp> + '_ {
        ALL_OPS.into_iter().filter(|&op| self.contains(op))
    }

    /// `write`, or `read/write` when several.
    pub fn names(&self) -> String {
        self.iter()
            .map(|op| op.as_str())
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl Serialize for OpSet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter().map(|op| op.as_str()))
    }
}
