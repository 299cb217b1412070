//! The Go runtime's map functions: what each does and where the map is.
//!
//! Names verified with `go tool nm` on binaries from Go 1.19 (classic
//! hashmap) and 1.24–1.27 (Swiss tables, whose functions live in
//! `internal/runtime/maps` but are linknamed to the old `runtime.*` names).
//! The linker drops functions a program never calls, so a plan lists the
//! ones it found and the ones of the family it did not.

use auditor_common::go_map::{MapArg, MapOp};

/// Which map implementation a function belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Present in both implementations.
    Both,
    /// Classic hashmap only (Go < 1.24, or `GOEXPERIMENT=noswissmap`).
    Classic,
    /// Swiss tables only (Go 1.24+).
    Swiss,
}

/// One runtime map function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapFunction {
    pub name: &'static str,
    pub op: MapOp,
    /// Where the map is at the entry site (at the RET site for `Make`).
    pub map_arg: MapArg,
    pub family: Family,
}

impl MapFunction {
    /// Creation functions are probed only at their RETs (the map is the
    /// result in RAX); every other function at its entry.
    pub fn is_make(&self) -> bool {
        self.op == MapOp::Make
    }

    /// Whether this function exists in the given implementation.
    pub fn in_family(&self, swiss: bool) -> bool {
        match self.family {
            Family::Both => true,
            Family::Classic => !swiss,
            Family::Swiss => swiss,
        }
    }
}

const fn f(name: &'static str, op: MapOp, map_arg: MapArg, family: Family) -> MapFunction {
    MapFunction {
        name,
        op,
        map_arg,
        family,
    }
}

use Family::{Both, Classic, Swiss};
use MapArg::{IterInRax, Rax, Rbx};
use MapOp::{Clear, Delete, Iterate, Make, Read, Write};

/// Every map function the auditor knows (amd64 register ABI: RAX is the map
/// type, RBX the map).
pub const MAP_FUNCTIONS: &[MapFunction] = &[
    f("runtime.mapaccess1", Read, Rbx, Both),
    f("runtime.mapaccess2", Read, Rbx, Both),
    f("runtime.mapaccess1_fast32", Read, Rbx, Both),
    f("runtime.mapaccess2_fast32", Read, Rbx, Both),
    f("runtime.mapaccess1_fast64", Read, Rbx, Both),
    f("runtime.mapaccess2_fast64", Read, Rbx, Both),
    f("runtime.mapaccess1_faststr", Read, Rbx, Both),
    f("runtime.mapaccess2_faststr", Read, Rbx, Both),
    f("runtime.mapaccess1_fat", Read, Rbx, Both),
    f("runtime.mapaccess2_fat", Read, Rbx, Both),
    // Used by the classic iterator's slow path and reflect; gone with Swiss.
    f("runtime.mapaccessK", Read, Rbx, Classic),
    f("runtime.mapassign", Write, Rbx, Both),
    f("runtime.mapassign_fast32", Write, Rbx, Both),
    f("runtime.mapassign_fast32ptr", Write, Rbx, Both),
    f("runtime.mapassign_fast64", Write, Rbx, Both),
    f("runtime.mapassign_fast64ptr", Write, Rbx, Both),
    f("runtime.mapassign_faststr", Write, Rbx, Both),
    f("runtime.mapdelete", Delete, Rbx, Both),
    f("runtime.mapdelete_fast32", Delete, Rbx, Both),
    f("runtime.mapdelete_fast64", Delete, Rbx, Both),
    f("runtime.mapdelete_faststr", Delete, Rbx, Both),
    f("runtime.mapclear", Clear, Rbx, Both),
    // Iteration: `(t, h, it)` to start, `(it)` to advance.
    f("runtime.mapiterinit", Iterate, Rbx, Classic),
    f("runtime.mapiternext", Iterate, IterInRax, Classic),
    f("runtime.mapIterStart", Iterate, Rbx, Swiss),
    f("runtime.mapIterNext", Iterate, IterInRax, Swiss),
    // With Swiss tables reflect iterates by itself (MapIter, MapKeys, and
    // so encoding/json, fmt, text/template), calling the iterator's
    // methods in internal/runtime/maps rather than the runtime's
    // functions; same arguments.
    f("reflect.mapIterStart", Iterate, Rbx, Swiss),
    f("reflect.mapIterNext", Iterate, IterInRax, Swiss),
    f("runtime.makemap", Make, Rax, Both),
    f("runtime.makemap_small", Make, Rax, Both),
    f("runtime.makemap64", Make, Rax, Both),
];

/// The catalogue entry for a runtime function name.
pub fn by_name(name: &str) -> Option<&'static MapFunction> {
    MAP_FUNCTIONS.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_split_iteration_functions() {
        let classic: Vec<_> = MAP_FUNCTIONS
            .iter()
            .filter(|m| m.in_family(false))
            .map(|m| m.name)
            .collect();
        let swiss: Vec<_> = MAP_FUNCTIONS
            .iter()
            .filter(|m| m.in_family(true))
            .map(|m| m.name)
            .collect();
        assert!(
            classic.contains(&"runtime.mapiterinit") && !classic.contains(&"runtime.mapIterStart")
        );
        assert!(swiss.contains(&"runtime.mapIterStart") && !swiss.contains(&"runtime.mapiternext"));
        assert!(!swiss.contains(&"runtime.mapaccessK"));
        assert!(
            swiss.contains(&"reflect.mapIterStart") && !classic.contains(&"reflect.mapIterStart")
        );
    }

    #[test]
    fn makes_return_the_map_in_rax_and_next_reads_the_iterator() {
        assert!(
            MAP_FUNCTIONS
                .iter()
                .filter(|m| m.is_make())
                .all(|m| m.map_arg == MapArg::Rax)
        );
        assert_eq!(
            by_name("runtime.mapIterNext").unwrap().map_arg,
            MapArg::IterInRax
        );
        assert_eq!(by_name("runtime.mapclear").unwrap().op, MapOp::Clear);
        assert!(by_name("runtime.mallocgc").is_none());
    }
}
