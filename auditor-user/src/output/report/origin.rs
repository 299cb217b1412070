//! Whose code a map belongs to: the program's own, the Go standard
//! library's, or package initialisation's. A real service's graph is full
//! of maps `net/http`, `mime` or `encoding/json` make and use (headers,
//! caches, registries filled at init); the HTML report folds those so the
//! picture shows the program's own maps first.

use rustc_hash::FxHashMap;

use crate::analysis::{MapId, ProcessGraph};

use super::view::writer_counts;

/// Where a map's accesses come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MapOrigin {
    /// Touched by the program's own code (or by code we cannot place), or
    /// part of a finding: always shown.
    User,
    /// Every call site touching it (and its make site) is in the standard library.
    StandardLibrary,
    /// Every call site touching it is package initialisation (`init`,
    /// `init.N`, their closures, the compiler's `map.init.N`).
    InitTime,
}

impl MapOrigin {
    /// Folded by default in the HTML report.
    pub fn is_folded(self) -> bool {
        self != Self::User
    }
}

/// The package path of a Go function symbol: `net/http` of
/// `net/http.(*conn).serve`, `main` of `main.main`, `github.com/a/b` of
/// `github.com/a/b.F[...]`.
pub(crate) fn package_of(function: &str) -> &str {
    // Type arguments of a generic instantiation may name other packages.
    let plain = function.split('[').next().unwrap_or(function);
    let last_slash = plain.rfind('/').map_or(0, |i| i + 1);
    match plain[last_slash..].find('.') {
        Some(dot) => &plain[..last_slash + dot],
        None => plain,
    }
}

/// True when `function` is in the Go standard library: its package path's
/// first element has no dot (`net/http`, `runtime`, `vendor/golang.org/x/...`),
/// it is not `main`, and it is not inside the program's own module (a
/// module may be called `example` without a dot).
pub(crate) fn is_standard_library(function: &str, main_module: Option<&str>) -> bool {
    if function.is_empty() || function.starts_with('?') {
        return false;
    }
    let pkg = package_of(function);
    if pkg == "main" || pkg.is_empty() {
        return false;
    }
    if let Some(module) = main_module.filter(|m| !m.is_empty())
        && (pkg == module || pkg.starts_with(&format!("{module}/")))
    {
        return false;
    }
    let first = pkg.split('/').next().unwrap_or(pkg);
    !first.contains('.')
}

/// True when `function` runs during package initialisation: `pkg.init`,
/// `pkg.init.0`, `pkg.init.func1`, `pkg.init.0.func2`, `pkg.map.init.0`.
pub(crate) fn is_init_function(function: &str) -> bool {
    let pkg = package_of(function);
    let Some(rest) = function.get(pkg.len()..).and_then(|r| r.strip_prefix('.')) else {
        return false;
    };
    rest == "init" || rest.starts_with("init.") || rest.starts_with("map.init.")
}

/// The origin of every map of `p`, by map index. Maps with an overlap or
/// with two or more writing goroutines are the program's business
/// whoever's code touched them, and are never folded.
pub(crate) fn map_origins(p: &ProcessGraph, main_module: Option<&str>) -> Vec<MapOrigin> {
    let writers = writer_counts(p);
    // Per map: (sites seen, all standard library, all init-time).
    let mut seen: FxHashMap<MapId, (bool, bool, bool)> = FxHashMap::default();
    let mut note = |m: MapId, function: &str| {
        let e = seen.entry(m).or_insert((false, true, true));
        e.0 = true;
        e.1 &= is_standard_library(function, main_module);
        e.2 &= is_init_function(function);
    };
    for (s, m, _) in p.site_edges() {
        note(m, &p.site(s).site.function);
    }
    for (i, info) in p.maps().iter().enumerate() {
        if let Some(make) = &info.make_site {
            note(MapId::from_index(i), &make.function);
        }
    }
    (0..p.maps().len())
        .map(|i| {
            let m = MapId::from_index(i);
            let info = p.map(m);
            if info.overlaps > 0 || writers.get(&m).copied().unwrap_or(0) >= 2 {
                return MapOrigin::User;
            }
            match seen.get(&m) {
                Some(&(true, true, _)) => MapOrigin::StandardLibrary,
                Some(&(true, _, true)) => MapOrigin::InitTime,
                _ => MapOrigin::User,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_paths_of_go_symbols() {
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(package_of("main.main"), "main");
        assert_eq!(
            package_of("github.com/a/b.F[github.com/c/d.T]"),
            "github.com/a/b"
        );
        assert_eq!(
            package_of("vendor/golang.org/x/net/http2/hpack.newStaticTable"),
            "vendor/golang.org/x/net/http2/hpack"
        );
    }

    #[test]
    fn standard_library_is_told_from_the_program() {
        assert!(is_standard_library("net/http.Header.Set", None));
        assert!(is_standard_library("runtime.doInit1", None));
        assert!(is_standard_library(
            "vendor/golang.org/x/net/idna.init",
            None
        ));
        assert!(!is_standard_library("main.(*Cache).Set", None));
        assert!(!is_standard_library("github.com/acme/svc.handle", None));
        // A module without a dot in its path is still the program's.
        assert!(is_standard_library("racer/store.Put", None));
        assert!(!is_standard_library("racer/store.Put", Some("racer")));
        assert!(!is_standard_library("", None));
    }

    #[test]
    fn init_functions_are_recognised() {
        assert!(is_init_function("main.init"));
        assert!(is_init_function("mime.init.0"));
        assert!(is_init_function("net/http.init.func1"));
        assert!(is_init_function("main.map.init.0"));
        assert!(!is_init_function("main.initCache"));
        assert!(!is_init_function("main.main"));
    }
}
