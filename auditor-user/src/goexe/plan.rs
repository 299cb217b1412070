//! Putting a probe plan together: open the executable, read what Go it is,
//! find the map functions, place their probes, and pick struct offsets.

use std::{
    collections::HashMap,
    io::ErrorKind,
    path::{Path, PathBuf},
};

use auditor_common::go_map::{MapArg, MapOp};

use super::{
    GoVersion, ProbePlan, ProbeSite, RuntimeOffsets, TargetError,
    buildinfo::{self, MAGIC},
    catalogue::MAP_FUNCTIONS,
    disasm::{self, Placement},
    elf::ExeImage,
    offsets,
    pclntab::PcLnTab,
    symbolize::Symbolizer,
    typename::{self, TypeNamer},
};

/// An exit probe site on a call site's return address, with the map
/// function called there.
#[derive(Clone, Debug)]
pub struct CallSite {
    /// Where the exit probe goes: the call's return address, or the first
    /// instruction after it the kernel emulates (see
    /// `disasm::call_exit_site`).
    pub site: ProbeSite,
    pub runtime_fn: String,
    /// The call's return address (as linked).
    pub ret_addr: u64,
}

/// Which code's map accesses are probed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    /// Every map access in the program: probes on the runtime's map
    /// functions (`--scope all`).
    #[default]
    All,
    /// Only accesses made by functions of these packages (a package and the
    /// packages below its path): probes on their call instructions to the
    /// runtime's map functions, which the kernel emulates. Maps only other
    /// packages touch cost nothing.
    Packages(Vec<String>),
    /// The packages of the main module named in the build info, and `main`.
    MainModule,
    /// The program's own code and its dependencies (`--scope user`, the
    /// default in entry mode): the main module, every dependency module in
    /// the build info, and the standard-library packages that reach into
    /// the caller's maps ([`USER_SCOPE_STD`]). Maps that only the rest of
    /// the standard library touches (net/http's per-request header maps,
    /// ...) cost nothing.
    User,
}

/// Standard-library packages that act on maps their caller hands them, so
/// the user scope probes them too: `reflect` (every map encoding/json,
/// fmt, text/template and encoding/gob read or fill goes through it) and
/// the generic `maps` helpers (`maps.Copy`, `maps.DeleteFunc`, `maps.All`
/// are compiled into the `maps` package's own instantiations).
pub const USER_SCOPE_STD: &[&str] = &["reflect", "maps"];

impl Scope {
    /// Parse `--scope`: `user`, `all`, `main-module`, or packages
    /// separated by commas.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s {
            "main-module" => return Ok(Self::MainModule),
            "user" => return Ok(Self::User),
            "all" => return Ok(Self::All),
            _ => {}
        }
        let pkgs: Vec<String> = s
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(str::to_owned)
            .collect();
        if pkgs.is_empty() {
            return Err(
                "--scope needs `user`, `all`, `main-module` or Go package paths separated by commas, e.g. main,example.com/app/cache"
                    .to_owned(),
            );
        }
        if let Some(bad) = pkgs.iter().find(|p| p.contains(char::is_whitespace)) {
            return Err(format!("--scope: {bad:?} is not a Go package path"));
        }
        Ok(Self::Packages(pkgs))
    }

    /// The scope a detection mode uses when none is asked for: entry mode
    /// probes the user's code (cheap enough for production); interval
    /// mode, which needs the map functions' RETs, probes every access.
    pub fn default_for(interval: bool) -> Self {
        if interval { Self::All } else { Self::User }
    }

    /// How `--scope` spells this scope (the attach report and banner).
    pub fn label(&self) -> String {
        match self {
            Self::All => "all".to_owned(),
            Self::User => "user".to_owned(),
            Self::MainModule => "main-module".to_owned(),
            Self::Packages(p) => p.join(","),
        }
    }

    /// The packages whose calls are probed, for a program with this main
    /// module and these dependencies (`None`: every access, at the map
    /// functions themselves).
    pub fn packages(&self, module: Option<&str>, deps: &[String]) -> Option<Vec<String>> {
        let own = || {
            let mut p = vec!["main".to_owned()];
            p.extend(module.map(str::to_owned));
            p
        };
        match self {
            Self::All => None,
            Self::Packages(p) => Some(p.clone()),
            Self::MainModule => Some(own()),
            Self::User => {
                let mut p = own();
                p.extend(deps.iter().cloned());
                for s in USER_SCOPE_STD {
                    if !p.iter().any(|x| x == s) {
                        p.push((*s).to_owned());
                    }
                }
                Some(p)
            }
        }
    }
}

/// The package of a Go function symbol: everything before the first `.`
/// after the last `/` (`net/http.(*conn).serve` is in `net/http`). Type
/// arguments of a generic instantiation (`maps.Copy[go.shape.map[string]int,...]`,
/// `main.Get[example.com/x.T]`) are not part of the path.
pub fn package_of(function: &str) -> &str {
    let head = function.find('[').map_or(function, |i| &function[..i]);
    let start = head.rfind('/').map_or(0, |i| i + 1);
    match head[start..].find('.') {
        Some(dot) => &head[..start + dot],
        None => head,
    }
}

/// Whether `function` (a symbol, or a call site `main.handler+0x4d`)
/// belongs to the main module `module` or package `main`: what an
/// overhead budget never narrows away.
pub fn in_main_module(function: &str, module: Option<&str>) -> bool {
    let function = function.split_once('+').map_or(function, |(f, _)| f);
    let own = Scope::MainModule.packages(module, &[]).unwrap_or_default();
    in_packages(package_of(function), &own)
}

fn in_packages(pkg: &str, pkgs: &[String]) -> bool {
    pkgs.iter().any(|p| {
        pkg == p
            || (pkg.len() > p.len()
                && pkg.starts_with(p.as_str())
                && pkg.as_bytes()[p.len()] == b'/')
    })
}

/// Choices that change which probe sites a plan contains.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PlanOptions {
    /// Whose map accesses to probe.
    pub scope: Scope,
    /// Also probe every RET of every non-creation map function (interval
    /// detection).
    pub exit_sites: bool,
    /// Probe the RETs of `makemap*` (the new map is the result). RETs are
    /// single-stepped and services make maps on every request, so only a
    /// session that streams accesses (and shows `make`) asks for them.
    pub make_exits: bool,
    /// Probe every step of an iteration (`mapiternext`/`mapIterNext`), not
    /// only its start. A step per element is the dearest probe of a
    /// service; the runtime's own check plus the fatal-error probe still
    /// catch a writer during the loop.
    pub iter_steps: bool,
    /// Probe each entry on the function's first instruction instead of the
    /// cheapest one (single-stepped: ~30x dearer here). For benchmarks.
    pub function_start: bool,
}

/// Oldest Go with the register ABI the kernel side relies on.
const MIN_MINOR: u32 = 17;
/// First Go release whose maps are Swiss tables by default.
const SWISS_MINOR: u32 = 24;

/// Permission denied: as root this is not a question of privileges.
fn denied(path: &Path) -> TargetError {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        TargetError::PermissionDeniedAsRoot(path.display().to_string())
    } else {
        TargetError::PermissionDenied(path.display().to_string())
    }
}

fn io_error(path: &Path, e: std::io::Error) -> TargetError {
    match e.kind() {
        ErrorKind::PermissionDenied => denied(path),
        _ => TargetError::Io {
            path: path.display().to_string(),
            source: e,
        },
    }
}

/// Read and parse an executable.
pub(crate) fn read_image(path: &Path) -> Result<ExeImage, TargetError> {
    let data = std::fs::read(path).map_err(|e| io_error(path, e))?;
    ExeImage::parse(data, &path.display().to_string())
}

/// Candidate pclntab headers: magic, two zero bytes, quantum 1, pointer 8.
fn pclntab_by_magic(img: &ExeImage) -> Option<(u64, usize)> {
    let d = img.data();
    (0..d.len().saturating_sub(8)).step_by(8).find_map(|o| {
        let m = u32::from_le_bytes(d[o..o + 4].try_into().ok()?);
        let ok = super::PclnVersion::from_magic(m).is_some() && d[o + 4..o + 8] == [0, 0, 1, 8];
        if !ok {
            return None;
        }
        let vaddr = img.vaddr_of_offset(o as u64)?;
        // Bound the table by its segment's file bytes.
        let seg = img
            .segments
            .iter()
            .find(|s| vaddr >= s.vaddr && vaddr - s.vaddr < s.filesz)?;
        // A segment may claim more bytes than the file holds.
        let len = (seg.filesz - (vaddr - seg.vaddr)).min((d.len() - o) as u64);
        PcLnTab::parse(
            d[o..o + len as usize].to_vec(),
            img.text_address().unwrap_or(0),
        )
        .ok()
        .map(|_| (vaddr, len as usize))
    })
}

/// Find and parse the pclntab: the section (named `.gopclntab`, or
/// `.data.rel.ro.gopclntab` in Go 1.16–1.20 PIE builds), else a header
/// found by its magic.
fn load_pclntab(img: &ExeImage, what: &str) -> Result<PcLnTab, TargetError> {
    load_pclntab_at(img, what).map(|(_, t)| t)
}

/// [`load_pclntab`], also giving the table's link-time address.
fn load_pclntab_at(img: &ExeImage, what: &str) -> Result<(u64, PcLnTab), TargetError> {
    let text = img.text_address().unwrap_or(0);
    let (addr, mut bytes) = match img.section_ending("gopclntab") {
        Some((addr, data)) if !data.is_empty() => (addr, data.into_owned()),
        _ => {
            let (addr, len) =
                pclntab_by_magic(img).ok_or_else(|| TargetError::NotGo(what.to_owned()))?;
            (
                addr,
                img.bytes_at(addr, len as u64).unwrap_or_default().to_vec(),
            )
        }
    };
    // Go 1.16-1.17 PIE tables hold absolute addresses patched by dynamic
    // relocations; apply them so entries are link-time addresses.
    img.apply_relocations(addr, &mut bytes);
    PcLnTab::parse(bytes, text)
        .map(|t| (addr, t))
        .map_err(|source| match source {
            super::PclnError::BadMagic(_) => TargetError::GoTooOld {
                what: what.to_owned(),
                version: "a Go older than 1.16 (old function table format)".to_owned(),
            },
            source => TargetError::BadPclntab {
                what: what.to_owned(),
                source,
            },
        })
}

fn read_buildinfo(img: &ExeImage) -> Option<buildinfo::BuildInfo> {
    let reader = |addr: u64| img.read_go_string(addr);
    if let Some((_, data)) = img.section(".go.buildinfo")
        && let Ok(bi) = buildinfo::parse(&data, &reader)
    {
        return Some(bi);
    }
    let off = img.find_aligned(MAGIC, 16)?;
    buildinfo::parse(&img.data()[off..], &reader).ok()
}

/// Where the map functions are: `.symtab` when present, else the pclntab.
fn locate(
    symbols: &HashMap<String, (u64, u64)>,
    tab: &PcLnTab,
    name_index: &HashMap<&str, usize>,
    name: &str,
) -> Option<(u64, u64)> {
    let from_tab = name_index.get(name).map(|&i| {
        let f = tab.funcs()[i];
        (f.entry, f.end - f.entry)
    });
    if let Some(&(addr, size)) = symbols.get(name) {
        let size = if size == 0 {
            from_tab.map(|t| t.1).unwrap_or(0)
        } else {
            size
        };
        return Some((addr, size));
    }
    from_tab
}

/// Probe sites on the calls to runtime map functions made by functions of
/// `pkgs`: the `call` instruction is emulated by the kernel, and the
/// registers hold the map function's arguments there.
fn scoped_call_sites(
    img: &ExeImage,
    tab: &PcLnTab,
    pkgs: &[String],
    callees: &HashMap<u64, &'static super::MapFunction>,
    sites: &mut Vec<ProbeSite>,
    warnings: &mut Vec<String>,
) {
    for func in tab.funcs() {
        let Some(name) = tab.name(func) else {
            continue;
        };
        if !in_packages(package_of(name), pkgs) {
            continue;
        }
        let Some(code) = img.bytes_at(func.entry, func.end - func.entry) else {
            continue;
        };
        for (ret, target) in disasm::direct_call_sites(code, func.entry) {
            let Some(&f) = callees.get(&target) else {
                continue;
            };
            // `call rel32` is five bytes.
            let addr = ret - 5;
            let (p, exit, arg) = if f.is_make() {
                // The new map is the result: seen where the call returns
                // (only planned when accesses are streamed).
                let Some(p) = code
                    .get((ret - func.entry) as usize..)
                    .and_then(|c| disasm::function_start_site(c, ret))
                else {
                    continue;
                };
                (p, true, MapArg::Rax)
            } else {
                let p = Placement {
                    addr,
                    stackcheck: false,
                    instruction: format!("call {}", f.name),
                    emulated: true,
                };
                (p, false, f.map_arg)
            };
            let id = sites.len();
            // `func_addr` is the calling function's: offsets in the attach
            // report are from there.
            match site(id, f, func.entry, p, exit, arg, img) {
                Some(mut s) => {
                    s.call_site = Some(format!("{name}+{:#x}", addr - func.entry));
                    sites.push(s);
                }
                None => warnings.push(format!("{name}: call site {addr:#x} could not be placed")),
            }
        }
    }
}

fn site(
    id: usize,
    f: &super::MapFunction,
    func_addr: u64,
    p: Placement,
    exit: bool,
    map_arg: MapArg,
    img: &ExeImage,
) -> Option<ProbeSite> {
    Some(ProbeSite {
        id: u16::try_from(id).ok()?,
        function: f.name.to_owned(),
        op: f.op,
        map_arg,
        func_addr,
        addr: p.addr,
        file_offset: img.file_offset(p.addr)?,
        exit,
        fatal: false,
        g_change: false,
        stackcheck: p.stackcheck,
        instruction: p.instruction,
        emulated: p.emulated,
        nested_callee: false,
        call_site: None,
    })
}

impl ProbePlan {
    /// Plan entry probes for a running process (reads `/proc/PID/exe`).
    ///
    /// ```no_run
    /// # use map_auditor::goexe::ProbePlan;
    /// let plan = ProbePlan::for_pid(1234).unwrap();
    /// println!("{} sites, Go {}", plan.sites.len(), plan.go_version);
    /// ```
    pub fn for_pid(pid: u32) -> Result<Self, TargetError> {
        Self::for_pid_with(pid, PlanOptions::default())
    }

    /// [`ProbePlan::for_pid`] with options.
    pub fn for_pid_with(pid: u32, opts: PlanOptions) -> Result<Self, TargetError> {
        let proc_dir = crate::proc::dir(pid);
        if pid == 0 || !proc_dir.exists() {
            return Err(TargetError::NoSuchProcess(pid));
        }
        let exe = crate::proc::exe_link(pid);
        // A zombie or exiting process has no exe link any more; a kernel
        // thread has none either.
        match std::fs::read_link(&exe) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::PermissionDenied => {
                return Err(denied(&exe));
            }
            Err(_) if !proc_dir.exists() => return Err(TargetError::NoSuchProcess(pid)),
            Err(_) if crate::proc::is_kernel_thread(pid) => {
                return Err(TargetError::KernelThread(pid));
            }
            Err(_) => return Err(TargetError::ProcessExited(pid)),
        }
        let img = match read_image(&exe) {
            Err(TargetError::Io { .. }) if !proc_dir.exists() => {
                return Err(TargetError::ProcessExited(pid));
            }
            other => other?,
        };
        Self::from_image(img, exe, opts)
    }

    /// Plan entry probes for an executable file.
    pub fn for_exe(path: impl AsRef<Path>) -> Result<Self, TargetError> {
        Self::for_exe_with(path, PlanOptions::default())
    }

    /// [`ProbePlan::for_exe`] with options.
    pub fn for_exe_with(path: impl AsRef<Path>, opts: PlanOptions) -> Result<Self, TargetError> {
        let path = path.as_ref();
        let img = read_image(path)?;
        Self::from_image(img, path.to_path_buf(), opts)
    }

    fn from_image(img: ExeImage, exe: PathBuf, opts: PlanOptions) -> Result<Self, TargetError> {
        let what = exe.display().to_string();
        let Some(bi) = read_buildinfo(&img) else {
            // A Go function table without build info: Go older than 1.13.
            return match load_pclntab(&img, &what) {
                Ok(_) | Err(TargetError::GoTooOld { .. }) => Err(TargetError::GoTooOld {
                    what,
                    version: "a Go without build info (older than 1.13)".to_owned(),
                }),
                Err(_) => Err(TargetError::NotGo(what)),
            };
        };
        let go_version = buildinfo::parse_go_version(&bi.go_version)
            .ok_or_else(|| TargetError::NotGo(what.clone()))?;
        if go_version.major != 1 || go_version.minor < MIN_MINOR {
            return Err(TargetError::GoTooOld {
                what,
                version: bi.go_version.clone(),
            });
        }
        let (tab_addr, tab) = load_pclntab_at(&img, &what)?;
        let name_index = tab.name_index();
        let mut warnings = Vec::new();

        let swiss = uses_swiss_maps(|n| name_index.contains_key(n), &bi.settings, go_version);

        let symbols = if img.stripped {
            HashMap::new()
        } else {
            img.function_symbols()
        };
        let mut sites = Vec::new();
        let mut found = Vec::new();
        let mut missing = Vec::new();
        let scoped = opts.scope != Scope::All;
        // Scoped plans probe calls to these instead of their entries.
        let mut callees: HashMap<u64, &'static super::MapFunction> = HashMap::new();
        for f in MAP_FUNCTIONS.iter().filter(|f| f.in_family(swiss)) {
            let Some((addr, size)) = locate(&symbols, &tab, &name_index, f.name) else {
                missing.push(f.name.to_owned());
                continue;
            };
            let Some(code) = img.bytes_at(addr, size).filter(|c| !c.is_empty()) else {
                warnings.push(format!(
                    "{}: code at {addr:#x} not in the file; not probed",
                    f.name
                ));
                continue;
            };
            found.push(f.name.to_owned());
            let mut add = |p: Placement, exit: bool, arg: MapArg| {
                let id = sites.len();
                match site(id, f, addr, p, exit, arg, &img) {
                    Some(s) => sites.push(s),
                    None => {
                        warnings.push(format!("{}: probe site {id} could not be placed", f.name))
                    }
                }
            };
            if f.is_make() {
                if opts.make_exits {
                    if scoped {
                        // Probed where the scope's own calls return.
                        callees.insert(addr, f);
                    } else {
                        for p in disasm::ret_sites(code, addr) {
                            add(p, true, MapArg::Rax);
                        }
                    }
                }
                continue;
            }
            if f.map_arg == MapArg::IterInRax && !opts.iter_steps {
                continue;
            }
            if scoped {
                callees.insert(addr, f);
                continue;
            }
            let entry = if opts.function_start {
                disasm::function_start_site(code, addr)
            } else {
                disasm::entry_site(code, addr)
            };
            if let Some(p) = entry {
                add(p, false, f.map_arg);
            }
            if opts.exit_sites {
                // At a RET the argument registers hold results or scratch:
                // the map is not known there; the kernel side closes the
                // access by goroutine.
                for p in disasm::ret_sites(code, addr) {
                    add(p, true, MapArg::None);
                }
            }
        }

        if let Some(pkgs) = opts.scope.packages(bi.module_path.as_deref(), &bi.deps) {
            scoped_call_sites(&img, &tab, &pkgs, &callees, &mut sites, &mut warnings);
        }

        // The runtime's own concurrent-map check runs after our entry probe;
        // when it fires, the process dies at once. A probe on the fatal-error
        // function lets the kernel name the other side first. Swiss maps
        // call a linknamed wrapper; classic maps call runtime.fatal since
        // Go 1.19 and runtime.throw before.
        for name in fatal_error_functions(swiss, go_version) {
            let Some((addr, size)) = locate(&symbols, &tab, &name_index, name) else {
                continue;
            };
            let Some(code) = img.bytes_at(addr, size).filter(|c| !c.is_empty()) else {
                continue;
            };
            let Some(p) = disasm::entry_site(code, addr) else {
                continue;
            };
            let fatal_fn = super::MapFunction {
                name,
                op: MapOp::Write,
                map_arg: MapArg::None,
                family: super::Family::Both,
            };
            if let Some(mut s) = site(sites.len(), &fatal_fn, addr, p, false, MapArg::None, &img) {
                s.fatal = true;
                sites.push(s);
            }
            break;
        }

        // What the kernel caches of each goroutine's `g` (its id and stack
        // bounds) changes only when the goroutine exits or its stack is
        // copied: probes there keep the cache true. Both, on instructions
        // the kernel emulates, or neither (then `g` is read at every hit).
        let mut hooks = Vec::new();
        for name in G_CHANGE_FUNCTIONS {
            let hook = locate(&symbols, &tab, &name_index, name).and_then(|(addr, size)| {
                let code = img.bytes_at(addr, size).filter(|c| !c.is_empty())?;
                let p = disasm::entry_site(code, addr).filter(|p| p.emulated)?;
                let f = super::MapFunction {
                    name,
                    op: MapOp::Write,
                    map_arg: MapArg::None,
                    family: super::Family::Both,
                };
                site(
                    sites.len() + hooks.len(),
                    &f,
                    addr,
                    p,
                    false,
                    MapArg::None,
                    &img,
                )
            });
            match hook {
                Some(mut s) => {
                    s.g_change = true;
                    hooks.push(s);
                }
                None => {
                    warnings.push(format!(
                        "no cheap probe site on {name}: each probe hit reads the goroutine from memory"
                    ));
                    hooks.clear();
                    break;
                }
            }
        }
        sites.extend(hooks);

        // Wrappers: an access through one of these also hits the probe of
        // the function it calls (Swiss `mapaccess1_faststr` calls
        // `mapaccess2_faststr`), so the pipeline can merge the pair.
        let (nested, nested_rets) = nested_calls(&sites, &found, |f| {
            let (addr, size) = locate(&symbols, &tab, &name_index, f)?;
            Some((addr, img.bytes_at(addr, size)?))
        });

        for s in &mut sites {
            s.nested_callee = !s.exit && nested.iter().any(|(_, callee)| *callee == s.function);
        }
        if nested_rets.len() > auditor_common::go_map::NESTED_RETS {
            warnings.push(format!(
                "{} calls between map functions, only {} can be told apart from direct calls",
                nested_rets.len(),
                auditor_common::go_map::NESTED_RETS
            ));
        }

        let table = offsets::from_table(go_version, swiss);
        let obj = object::File::Elf64(img.object());
        let dwarf_sections = offsets::load_dwarf(&obj);
        let dwarf = dwarf_sections
            .as_ref()
            .map(|d| d.borrow(|s| gimli::EndianSlice::new(s, gimli::LittleEndian)));
        let dwarf_offsets = dwarf
            .as_ref()
            .map(|d| offsets::from_dwarf(d).resolve(swiss));
        let Some(offsets) = choose_offsets(dwarf_offsets, table, go_version, &mut warnings) else {
            return Err(TargetError::GoTooOld {
                what,
                version: bi.go_version.clone(),
            });
        };

        let link_base = link_base(&img);
        let md = typename::find_moduledata(&img, tab_addr, &tab);
        let type_names = md.and_then(|m| TypeNamer::new(&exe, &img, m.types));
        if type_names.is_none() {
            warnings.push("Go type descriptors not found: map types will be unnamed".to_owned());
        }
        Ok(ProbePlan {
            exe,
            go_version,
            module_path: bi.module_path.clone(),
            scope: opts.scope.clone(),
            pie: img.pie,
            stripped: img.stripped,
            swiss_maps: swiss,
            offsets,
            sites,
            found,
            missing,
            go_version_raw: bi.go_version,
            link_base,
            warnings,
            symbolizer: Symbolizer::with_gofunc(tab, gofunc_bytes(&img, md)),
            type_names,
            globals: super::GlobalIndex::from_image(&img),
            watched_globals: super::WatchedGlobals::choose(
                dwarf.as_ref(),
                &img,
                bi.module_path.as_deref(),
            ),
            nested,
            nested_rets,
            segments: img.segments.clone(),
        })
    }

    /// A probe site on the return address of a call to a map function in
    /// the program's own code (`ret_addr` as linked): where an escalated
    /// access's exit is seen. `map_fn` is the probe id of the map function
    /// called there. Reads the instruction from the executable.
    pub fn call_site(&self, ret_addr: u64, map_fn: u16) -> Option<CallSite> {
        let seg = self
            .segments
            .iter()
            .find(|s| ret_addr >= s.vaddr && ret_addr - s.vaddr < s.filesz)?;
        let file_offset = seg.offset + (ret_addr - seg.vaddr);
        let mut code = [0u8; 128];
        let n = {
            use std::io::{Read, Seek, SeekFrom};
            let mut f = std::fs::File::open(&self.exe).ok()?;
            f.seek(SeekFrom::Start(file_offset)).ok()?;
            f.read(&mut code).ok()?
        };
        if n == 0 {
            return None;
        }
        let p = disasm::call_exit_site(&code[..n], ret_addr)?;
        let file_offset = file_offset + (p.addr - ret_addr);
        let callee = self.sites.get(map_fn as usize)?;
        let frame = self.symbolizer.lookup_return_address(ret_addr);
        Some(CallSite {
            site: ProbeSite {
                id: map_fn,
                function: frame
                    .as_ref()
                    .map(|f| f.function.clone())
                    .unwrap_or_else(|| format!("{ret_addr:#x}")),
                op: callee.op,
                map_arg: MapArg::None,
                func_addr: ret_addr,
                addr: p.addr,
                file_offset,
                exit: true,
                fatal: false,
                g_change: false,
                stackcheck: false,
                instruction: p.instruction,
                emulated: p.emulated,
                nested_callee: false,
                call_site: None,
            },
            runtime_fn: callee.function.clone(),
            ret_addr,
        })
    }

    /// Load bias of this plan's executable in process `pid` (0 unless PIE).
    pub fn load_bias(&self, pid: u32) -> Result<u64, TargetError> {
        bias_from_maps(pid, &self.exe, self.link_base)
    }

    /// Go type name of a map type descriptor (the `maptype` of an access
    /// event, converted to a link-time address), e.g. `map[string]int`.
    pub fn map_type_name(&self, maptype_addr: u64) -> Option<String> {
        self.type_names.as_ref()?.type_name(maptype_addr)
    }

    /// Entry (non-exit) site of a function, if planned.
    pub fn entry_site(&self, function: &str) -> Option<&ProbeSite> {
        self.sites
            .iter()
            .find(|s| !s.exit && s.function == function)
    }
}

/// Whether the program's maps are Swiss tables: from the functions actually
/// linked (`has`), else from the version and GOEXPERIMENT (1.24-1.25 could
/// opt out of Swiss maps).
fn uses_swiss_maps(
    has: impl Fn(&str) -> bool,
    settings: &[(String, String)],
    v: GoVersion,
) -> bool {
    if has("runtime.mapIterStart") || has("internal/runtime/maps.(*Map).putSlotSmall") {
        true
    } else if has("runtime.mapiterinit") || has("runtime.evacuate") {
        false
    } else {
        let opted_out = settings
            .iter()
            .any(|(k, v)| k == "GOEXPERIMENT" && v.split(',').any(|e| e == "noswissmap"));
        v.minor >= SWISS_MINOR && !opted_out
    }
}

/// The runtime function that reports a concurrent map access before the
/// process dies, most specific first: Swiss maps call a linknamed wrapper;
/// The runtime functions after which a goroutine's `g` says something else:
/// `goexit0(gp)` (the goroutine ended; `gp` is recycled for another one) and
/// `copystack(gp, newsize)` (its stack moved), `gp` in RAX in both, in every
/// Go release with the register ABI.
const G_CHANGE_FUNCTIONS: [&str; 2] = ["runtime.goexit0", "runtime.copystack"];

/// classic maps call `runtime.fatal` since Go 1.19 and `runtime.throw` before.
fn fatal_error_functions(swiss: bool, v: GoVersion) -> &'static [&'static str] {
    if swiss {
        &["internal/runtime/maps.fatal", "runtime.fatal"]
    } else if v.minor >= 19 {
        &["runtime.fatal"]
    } else {
        &["runtime.throw"]
    }
}

/// Pairs (wrapper, callee) of probed functions where the wrapper calls the
/// callee directly. `code_of` gives a function's address and code.
fn nested_calls<'a>(
    sites: &[ProbeSite],
    found: &[String],
    code_of: impl Fn(&str) -> Option<(u64, &'a [u8])>,
) -> (Vec<(String, String)>, Vec<u64>) {
    let mut nested: Vec<(String, String)> = Vec::new();
    let mut rets = Vec::new();
    // Map functions only: the fatal-error function is called by every map
    // function but is not an access of its own.
    let entries: HashMap<u64, &str> = sites
        .iter()
        .filter(|s| !s.fatal && !s.g_change)
        .map(|s| (s.func_addr, s.function.as_str()))
        .collect();
    for f in found {
        let Some((addr, code)) = code_of(f) else {
            continue;
        };
        for (ret, target) in disasm::direct_call_sites(code, addr) {
            let Some(&callee) = entries.get(&target) else {
                continue;
            };
            if callee == f {
                continue;
            }
            rets.push(ret);
            if !nested.iter().any(|(a, b)| a == f && b == callee) {
                nested.push((f.clone(), callee.to_owned()));
            }
        }
    }
    (nested, rets)
}

/// Runtime struct offsets: DWARF when it has every member (warning when it
/// disagrees with the version table), else the version table (warning when
/// the version is newer than the table). `None` when neither is known.
fn choose_offsets(
    dwarf: Option<Option<RuntimeOffsets>>,
    table: Option<RuntimeOffsets>,
    go_version: GoVersion,
    warnings: &mut Vec<String>,
) -> Option<RuntimeOffsets> {
    match (dwarf, table) {
        (Some(Some(d)), t) => {
            if let Some(t) = t
                && (d.goid, d.writing, d.iter_map) != (t.goid, t.writing, t.iter_map)
            {
                warnings.push(format!(
                    "runtime offsets from DWARF (goid {}, writing {}, iterator {}) differ from the {go_version} table (goid {}, writing {}, iterator {}); using DWARF",
                    d.goid, d.writing, d.iter_map, t.goid, t.writing, t.iter_map
                ));
            }
            Some(d)
        }
        (dw, Some(t)) => {
            if dw.is_some() {
                warnings.push(
                    "DWARF lacks some runtime struct members; using the version table".to_owned(),
                );
            }
            if go_version.minor > offsets::TABLE_NEWEST_MINOR {
                warnings.push(format!(
                    "{go_version} is newer than the offset table (Go 1.{}); offsets are a guess: build the target with DWARF",
                    offsets::TABLE_NEWEST_MINOR
                ));
            }
            Some(t)
        }
        (_, None) => None,
    }
}

/// The `gofunc` area: from its base to the end of its segment's file bytes.
fn gofunc_bytes(img: &ExeImage, md: Option<typename::ModuleData>) -> Vec<u8> {
    md.and_then(|m| m.gofunc)
        .and_then(|g| img.bytes_at(g, u64::MAX))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

/// A symbolizer for an image, with inline information when available.
pub(crate) fn symbolizer_for(img: &ExeImage, what: &str) -> Result<Symbolizer, TargetError> {
    let (addr, tab) = load_pclntab_at(img, what)?;
    let md = typename::find_moduledata(img, addr, &tab);
    Ok(Symbolizer::with_gofunc(tab, gofunc_bytes(img, md)))
}

fn link_base(img: &ExeImage) -> u64 {
    img.segments
        .iter()
        .find(|s| s.offset == 0)
        .or_else(|| img.segments.first())
        // Malformed when vaddr and offset disagree modulo the page size.
        .map(|s| s.vaddr.saturating_sub(s.offset % 4096) & !0xfff)
        .unwrap_or(0)
}

/// Difference between where `exe` is mapped in process `pid` and where it
/// was linked: runtime address = link-time address + bias. 0 for non-PIE.
pub fn load_bias(pid: u32, exe: &Path) -> Result<u64, TargetError> {
    let img = read_image(exe)?;
    bias_from_maps(pid, exe, link_base(&img))
}

fn bias_from_maps(pid: u32, exe: &Path, link_base: u64) -> Result<u64, TargetError> {
    let maps_path = crate::proc::maps_path(pid);
    let maps = std::fs::read_to_string(&maps_path).map_err(|e| match e.kind() {
        ErrorKind::NotFound => TargetError::NoSuchProcess(pid),
        _ => io_error(&maps_path, e),
    })?;
    let start = crate::proc::exe_start_in_maps(&maps, exe)
        .map_err(|e| io_error(exe, e))?
        .ok_or_else(|| TargetError::Io {
            path: maps_path.display().to_string(),
            source: std::io::Error::new(
                ErrorKind::NotFound,
                format!("{} is not mapped in process {pid}", exe.display()),
            ),
        })?;
    Ok(start.wrapping_sub(link_base))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An x86-64 ELF header and one PT_LOAD, in 256 bytes.
    fn one_segment_elf(vaddr: u64, offset: u64, filesz: u64) -> Vec<u8> {
        let mut f = vec![0u8; 256];
        f[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
        f[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        f[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        f[20..24].copy_from_slice(&1u32.to_le_bytes());
        f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        for (at, v) in [(52, 64u16), (54, 56), (56, 1), (58, 64)] {
            f[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        f[64..68].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
        for (at, v) in [(72, offset), (80, vaddr), (88, vaddr), (96, filesz)] {
            f[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
        f
    }

    #[test]
    fn main_module_call_sites_are_told_from_dependencies_and_the_std() {
        let m = Some("example.com/app");
        assert!(in_main_module("main.handler+0x4d", m));
        assert!(in_main_module("example.com/app/cache.(*Cache).Get+0x10", m));
        assert!(!in_main_module("example.com/appx.F+0x1", m));
        assert!(!in_main_module("github.com/x/y.(*T).Put+0x8", m));
        assert!(!in_main_module("reflect.mapiterinit+0x20", m));
        assert!(in_main_module("main.main", None));
        assert!(!in_main_module(
            "maps.Copy[go.shape.map[string]int]+0x3",
            None
        ));
    }

    #[test]
    fn segment_larger_than_the_file_is_not_a_panic() {
        // Found by fuzzing: a PT_LOAD whose p_filesz runs past the end of
        // the file, and a pclntab header found by its magic inside it.
        let mut f = one_segment_elf(0x40_0000, 0, 0xffff_0000);
        f[128..136].copy_from_slice(&[0xf1, 0xff, 0xff, 0xff, 0, 0, 1, 8]);
        let img = ExeImage::parse(f, "x").unwrap();
        // The header is all zeros past the magic: an empty but valid table,
        // read from the file's 128 remaining bytes.
        let tab = load_pclntab(&img, "x").unwrap();
        assert!(tab.funcs().is_empty());
    }

    #[test]
    fn segment_below_its_page_offset_is_not_a_panic() {
        // Found by fuzzing: p_vaddr smaller than p_offset modulo the page.
        let img = ExeImage::parse(one_segment_elf(0x10, 0x20, 0x80), "x").unwrap();
        assert_eq!(link_base(&img), 0);
    }

    fn go(minor: u32) -> GoVersion {
        GoVersion {
            major: 1,
            minor,
            patch: 0,
        }
    }

    fn offs(goid: u32, from_dwarf: bool) -> RuntimeOffsets {
        RuntimeOffsets {
            goid,
            writing: 18,
            writing_mask: 4,
            iter_map: 24,
            from_dwarf,
        }
    }

    #[test]
    fn linked_functions_decide_the_map_family_before_the_version() {
        let none = |_: &str| false;
        assert!(uses_swiss_maps(
            |n| n == "runtime.mapIterStart",
            &[],
            go(21)
        ));
        assert!(!uses_swiss_maps(|n| n == "runtime.evacuate", &[], go(24)));
        assert!(uses_swiss_maps(none, &[], go(24)));
        assert!(!uses_swiss_maps(none, &[], go(23)));
        let opted_out = [(
            "GOEXPERIMENT".to_owned(),
            "aliastypeparams,noswissmap".to_owned(),
        )];
        assert!(!uses_swiss_maps(none, &opted_out, go(24)));
    }

    #[test]
    fn fatal_error_function_follows_the_map_family_and_version() {
        assert_eq!(
            fatal_error_functions(true, go(24)),
            ["internal/runtime/maps.fatal", "runtime.fatal"]
        );
        assert_eq!(fatal_error_functions(false, go(19)), ["runtime.fatal"]);
        assert_eq!(fatal_error_functions(false, go(18)), ["runtime.throw"]);
    }

    #[test]
    fn dwarf_offsets_win_and_a_disagreement_is_a_warning() {
        let mut w = Vec::new();
        let d = offs(152, true);
        assert_eq!(
            choose_offsets(Some(Some(d)), Some(offs(152, false)), go(21), &mut w),
            Some(d)
        );
        assert!(w.is_empty());
        assert_eq!(
            choose_offsets(Some(Some(d)), Some(offs(160, false)), go(21), &mut w),
            Some(d)
        );
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("differ"), "{w:?}");
    }

    #[test]
    fn version_table_fills_in_and_says_when_it_is_a_guess() {
        let t = offs(152, false);
        let mut w = Vec::new();
        assert_eq!(choose_offsets(None, Some(t), go(21), &mut w), Some(t));
        assert!(w.is_empty());
        assert_eq!(choose_offsets(Some(None), Some(t), go(21), &mut w), Some(t));
        assert!(w[0].contains("DWARF lacks"), "{w:?}");
        let newest = offsets::TABLE_NEWEST_MINOR + 1;
        let mut w = Vec::new();
        assert_eq!(choose_offsets(None, Some(t), go(newest), &mut w), Some(t));
        assert!(w[0].contains("newer than the offset table"), "{w:?}");
        assert_eq!(choose_offsets(None, None, go(newest), &mut w), None);
    }

    #[test]
    fn a_wrapper_calling_a_probed_function_is_nested_once() {
        // call rel32 from 0x1000 to 0x2000: e8 + (0x2000 - 0x1005).
        let rel = (0x2000i64 - 0x1005) as i32;
        let mut code = vec![0xe8];
        code.extend_from_slice(&rel.to_le_bytes());
        code.extend_from_slice(&[0xe8]);
        code.extend_from_slice(&((0x2000i64 - 0x100a) as i32).to_le_bytes());
        let site = |function: &str, func_addr: u64| ProbeSite {
            id: 0,
            function: function.into(),
            op: MapOp::Read,
            map_arg: MapArg::Rbx,
            func_addr,
            addr: func_addr + 4,
            file_offset: func_addr + 4,
            exit: false,
            fatal: false,
            g_change: false,
            stackcheck: true,
            instruction: "jbe".into(),
            emulated: true,
            nested_callee: false,
            call_site: None,
        };
        let sites = [site("outer", 0x1000), site("inner", 0x2000)];
        let found = ["outer".to_owned(), "inner".to_owned()];
        let (nested, rets) = nested_calls(&sites, &found, |f| {
            (f == "outer").then_some((0x1000, &code[..]))
        });
        assert!(!rets.is_empty());
        assert_eq!(nested, [("outer".to_owned(), "inner".to_owned())]);
    }

    #[test]
    fn scope_names_packages_or_the_main_module() {
        assert_eq!(Scope::parse("main-module").unwrap(), Scope::MainModule);
        assert_eq!(
            Scope::parse("main, example.com/app/cache").unwrap(),
            Scope::Packages(vec!["main".into(), "example.com/app/cache".into()])
        );
        let err = Scope::parse(" , ").unwrap_err();
        assert!(err.contains("main-module"), "{err}");
    }

    #[test]
    fn a_function_belongs_to_the_package_before_its_first_dot() {
        assert_eq!(package_of("main.main"), "main");
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(
            package_of("example.com/app/cache.(*Cache).Get"),
            "example.com/app/cache"
        );
        assert_eq!(package_of("main.main.func1"), "main");
        let pkgs = ["example.com/app".to_owned()];
        assert!(in_packages("example.com/app", &pkgs));
        assert!(in_packages("example.com/app/cache", &pkgs));
        assert!(!in_packages("example.com/apple", &pkgs));
        assert!(!in_packages("net/http", &pkgs));
    }
}
