//! Probe plans for real Go binaries: classic (Go 1.19) and Swiss (Go 1.24+)
//! maps, plain and stripped PIE builds, files and running processes.

mod common;

use std::{
    io::{Read, Seek, SeekFrom},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
};

use auditor_common::go_map::{MapArg, MapOp};
use common::{GoToolchain, Link, build_go};
use map_auditor::goexe::{PlanOptions, ProbePlan, TargetError};

const PROG: &str = r#"package main

import (
	"fmt"
	"os"
	"time"
)

var names = map[string]int{"a": 1}

type big struct{ a, b, c, d, e, f, g, h, i int64 }

func main() {
	m64 := make(map[int64]int)
	m32 := make(map[int32]int, 64)
	ms := map[string]string{}
	mp := map[*int]int{}
	mb := map[big]big{}
	for i := 0; i < 100; i++ {
		m64[int64(i)] = i
		m32[int32(i)] = i
		ms[fmt.Sprint(i)] = "x"
		mb[big{a: int64(i)}] = big{}
	}
	x := 1
	mp[&x] = 1
	put(m64, 500)
	delete(m64, 1)
	delete(m32, 1)
	delete(ms, "1")
	delete(mb, big{})
	v, ok := names["a"]
	_, ok2 := m64[3]
	_, ok3 := m32[3]
	_ = mb[big{a: 3}]
	s := 0
	for k, v := range m64 {
		s += int(k) + v
	}
	for k := range ms {
		delete(ms, k)
	}
	fmt.Println(v, ok, ok2, ok3, s, len(ms), mp[&x], m64[5], m32[5], ms["q"])
	if len(os.Args) > 1 && os.Args[1] == "wait" {
		time.Sleep(120 * time.Second)
	}
}

// Small enough to be inlined into main.
func put(m map[int64]int, k int64) {
	m[k] = int(k)
}
"#;

/// 1-based line of the first source line containing `needle`.
fn line_of(needle: &str) -> u32 {
    PROG.lines().position(|l| l.contains(needle)).expect(needle) as u32 + 1
}

const ALL: [(GoToolchain, Link); 4] = [
    (GoToolchain::Classic, Link::Plain),
    (GoToolchain::Classic, Link::StrippedPie),
    (GoToolchain::Swiss, Link::Plain),
    (GoToolchain::Swiss, Link::StrippedPie),
];

fn build(tc: GoToolchain, link: Link) -> PathBuf {
    build_go("mapprog", PROG, tc, link)
}

/// The plan of a session that streams accesses: `make` RETs and every
/// iteration step probed, and every RET too with `exit_sites`.
fn plan(tc: GoToolchain, link: Link, exit_sites: bool) -> ProbePlan {
    plan_with(
        tc,
        link,
        PlanOptions {
            exit_sites,
            make_exits: true,
            iter_steps: true,
            ..PlanOptions::default()
        },
    )
}

fn plan_with(tc: GoToolchain, link: Link, options: PlanOptions) -> ProbePlan {
    let exe = build(tc, link);
    ProbePlan::for_exe_with(&exe, options).unwrap_or_else(|e| panic!("{tc:?} {link:?}: {e}"))
}

#[test]
fn findings_only_plan_has_no_single_stepped_site_on_a_request_path() {
    for (tc, link) in ALL {
        let p = plan_with(tc, link, PlanOptions::default());
        let iter_next = if tc == GoToolchain::Swiss {
            "runtime.mapIterNext"
        } else {
            "runtime.mapiternext"
        };
        // No makemap RET (maps are learnt at their first access), no probe
        // per iteration step, and every site but the fatal-error one emulated.
        assert!(!p.sites.iter().any(|s| s.exit), "{tc:?} {link:?}");
        assert!(p.entry_site(iter_next).is_none(), "{tc:?} {link:?}");
        assert!(
            p.sites.iter().filter(|s| !s.fatal).all(|s| s.emulated),
            "{tc:?} {link:?}"
        );
    }
}

fn file_bytes(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

fn go_tool(tc: GoToolchain, args: &[&str], stdin: &str) -> String {
    let go = tc.go();
    let goroot = go.parent().and_then(Path::parent).unwrap();
    let mut child = Command::new(&go)
        .env("GOROOT", goroot)
        .env("GOTOOLCHAIN", "local")
        .arg("tool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn version_and_module_path_come_from_build_info() {
    for (tc, link) in ALL {
        let p = plan(tc, link, false);
        assert_eq!(
            p.module_path.as_deref(),
            Some("example.com/mapprog"),
            "{tc:?} {link:?}"
        );
        match tc {
            GoToolchain::Classic => assert_eq!((p.go_version.major, p.go_version.minor), (1, 19)),
            GoToolchain::Swiss => assert!(p.go_version.minor >= 24, "{}", p.go_version),
        }
        assert!(p.go_version_raw.starts_with("go1."));
        assert_eq!(p.swiss_maps, tc == GoToolchain::Swiss);
        assert_eq!(
            (p.pie, p.stripped),
            (link == Link::StrippedPie, link == Link::StrippedPie)
        );
    }
}

#[test]
fn each_family_finds_its_map_functions() {
    for (tc, link) in ALL {
        let p = plan(tc, link, false);
        let has = |n: &str| p.found.iter().any(|f| f == n);
        for f in [
            "runtime.mapassign_fast64",
            "runtime.mapassign_fast32",
            "runtime.mapassign_faststr",
            "runtime.mapassign_fast64ptr",
            "runtime.mapassign",
            "runtime.mapaccess1_faststr",
            "runtime.mapaccess2_fast64",
            "runtime.mapdelete_fast64",
            "runtime.mapdelete",
            "runtime.makemap",
            "runtime.makemap_small",
        ] {
            assert!(
                has(f),
                "{tc:?} {link:?}: {f} not found; found {:?}",
                p.found
            );
        }
        match tc {
            GoToolchain::Classic => {
                assert!(has("runtime.mapiterinit") && has("runtime.mapiternext"));
                assert!(
                    !p.missing
                        .iter()
                        .chain(&p.found)
                        .any(|f| f == "runtime.mapIterStart")
                );
            }
            GoToolchain::Swiss => {
                assert!(has("runtime.mapIterStart") && has("runtime.mapIterNext"));
                assert!(
                    !p.missing
                        .iter()
                        .chain(&p.found)
                        .any(|f| f == "runtime.mapiterinit")
                );
            }
        }
        // Nothing is both found and missing; every site's function was found.
        assert!(p.found.iter().all(|f| !p.missing.contains(f)));
        assert!(
            p.sites
                .iter()
                .filter(|s| !s.fatal && !s.g_change)
                .all(|s| p.found.contains(&s.function))
        );
        // One probe on the runtime's fatal-error function, to name the other
        // side when the runtime itself catches a concurrent access.
        assert_eq!(
            p.sites.iter().filter(|s| s.fatal).count(),
            1,
            "{tc:?} {link:?}"
        );
        // Ids are indices.
        assert!(p.sites.iter().enumerate().all(|(i, s)| s.id as usize == i));
    }
}

#[test]
fn wrappers_that_call_other_map_functions_are_reported() {
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    for link in [Link::Plain, Link::StrippedPie] {
        let c = plan(GoToolchain::Classic, link, false);
        // The classic iterator starts by advancing, and re-reads keys of a
        // growing map through mapaccessK.
        assert!(
            c.nested
                .contains(&pair("runtime.mapiterinit", "runtime.mapiternext")),
            "{:?}",
            c.nested
        );
        assert!(
            c.nested
                .contains(&pair("runtime.mapiternext", "runtime.mapaccessK")),
            "{:?}",
            c.nested
        );
        let s = plan(GoToolchain::Swiss, link, false);
        let wrapped = s.nested.contains(&pair(
            "runtime.mapaccess1_faststr",
            "runtime.mapaccess2_faststr",
        ));
        // Go 1.27 turned mapaccess1* into calls of mapaccess2*; 1.24-1.26 did not.
        assert_eq!(
            wrapped,
            s.go_version.minor >= 27,
            "{} {:?}",
            s.go_version,
            s.nested
        );
        for (a, b) in c.nested.iter().chain(&s.nested) {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn plain_and_stripped_pie_builds_find_the_same_functions() {
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let a = plan(tc, Link::Plain, false);
        let b = plan(tc, Link::StrippedPie, false);
        assert_eq!(a.found, b.found, "{tc:?}");
        assert_eq!(a.missing, b.missing, "{tc:?}");
    }
}

#[test]
fn entry_sites_sit_on_the_emulated_stackcheck_jbe() {
    for (tc, link) in ALL {
        let p = plan(tc, link, false);
        let exe = build(tc, link);
        let s = p
            .entry_site("runtime.mapassign_fast64")
            .expect("entry site");
        assert!(s.stackcheck && s.emulated && !s.exit, "{s:?}");
        assert!(s.instruction.starts_with("jbe"), "{s:?}");
        assert_eq!(s.op, MapOp::Write);
        assert_eq!(s.map_arg, MapArg::Rbx);
        // The function starts with `cmp rsp,[r14+0x10]` (49 3b 66 10) and the
        // file offset really holds a jbe (0f 86 rel32 or 76 rel8).
        assert_eq!(s.addr - s.func_addr, 4, "{s:?}");
        let func_off = s.file_offset - 4;
        assert_eq!(file_bytes(&exe, func_off, 4), [0x49, 0x3b, 0x66, 0x10]);
        let b = file_bytes(&exe, s.file_offset, 2);
        assert!(b == [0x0f, 0x86] || b[0] == 0x76, "{b:x?}");
        // Every non-creation function gets exactly one entry site here, and
        // all of them are on a cheap instruction.
        // (The fatal-error probe fires once in a process's life; where it sits
        // does not matter for cost.)
        for site in p.sites.iter().filter(|s| !s.exit && !s.fatal) {
            assert!(site.emulated, "{tc:?} {link:?}: {site:?}");
            assert_ne!(site.op, MapOp::Make);
        }
        let iter_next = if tc == GoToolchain::Swiss {
            "runtime.mapIterNext"
        } else {
            "runtime.mapiternext"
        };
        assert_eq!(p.entry_site(iter_next).unwrap().map_arg, MapArg::IterInRax);
    }
}

#[test]
fn ret_sites_are_rets_inside_their_function() {
    for (tc, link) in ALL {
        let exe = build(tc, link);
        let entry_only = plan(tc, link, false);
        let p = plan(tc, link, true);
        // Without the option only creation functions have RET sites.
        assert!(
            entry_only
                .sites
                .iter()
                .filter(|s| s.exit)
                .all(|s| s.op == MapOp::Make)
        );
        assert!(
            entry_only
                .sites
                .iter()
                .any(|s| s.exit && s.function == "runtime.makemap")
        );
        assert!(
            !entry_only
                .sites
                .iter()
                .any(|s| !s.exit && s.op == MapOp::Make)
        );
        let exits: Vec<_> = p.sites.iter().filter(|s| s.exit).collect();
        assert!(
            exits
                .iter()
                .any(|s| s.function == "runtime.mapassign_fast64")
        );
        for s in exits {
            assert_eq!(s.instruction, "ret", "{s:?}");
            assert!(!s.stackcheck && !s.emulated);
            assert_eq!(file_bytes(&exe, s.file_offset, 1), [0xc3], "{s:?}");
            // The pclntab (independent of .symtab) puts the RET in the same function.
            let (entry, name) = p.symbolizer.function_at(s.addr).unwrap();
            assert_eq!((entry, name), (s.func_addr, s.function.as_str()), "{s:?}");
            let expected_arg = if s.op == MapOp::Make {
                MapArg::Rax
            } else {
                MapArg::None
            };
            assert_eq!(s.map_arg, expected_arg);
        }
    }
}

#[test]
fn dwarf_offsets_equal_the_version_table() {
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let with_dwarf = plan(tc, Link::Plain, false);
        let table = plan(tc, Link::StrippedPie, false);
        assert!(with_dwarf.offsets.from_dwarf, "{tc:?}");
        assert!(!table.offsets.from_dwarf, "{tc:?}");
        let strip =
            |o: map_auditor::goexe::RuntimeOffsets| (o.goid, o.writing, o.writing_mask, o.iter_map);
        assert_eq!(strip(with_dwarf.offsets), strip(table.offsets), "{tc:?}");
        assert!(with_dwarf.warnings.is_empty(), "{:?}", with_dwarf.warnings);
        let mask = if tc == GoToolchain::Swiss { 0xff } else { 4 };
        assert_eq!(with_dwarf.offsets.writing_mask, mask);
    }
}

#[test]
fn symbolizer_agrees_with_go_addr2line() {
    for (tc, link) in ALL {
        let exe = build(tc, link);
        let p = plan(tc, link, false);
        let sym = &p.symbolizer;
        let main = sym.function_address("main.main").expect("main.main");
        let map_fn = p.entry_site("runtime.mapassign_fast64").unwrap().func_addr;
        let pcs: Vec<u64> = (0..0x200)
            .step_by(0x13)
            .map(|d| main + d)
            .chain([map_fn, map_fn + 9])
            .collect();
        let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
        // Go 1.19's own addr2line cannot read its stripped PIE builds (it does
        // not look in `.data.rel.ro.gopclntab`); the newer tool reads both.
        let out = go_tool(
            GoToolchain::Swiss,
            &["addr2line", exe.to_str().unwrap()],
            &input,
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2 * pcs.len(), "{out}");
        for (i, pc) in pcs.iter().enumerate() {
            let f = sym
                .lookup(*pc)
                .unwrap_or_else(|| panic!("{tc:?} {link:?}: {pc:#x} unresolved"));
            assert_eq!(f.function, lines[2 * i], "{tc:?} {link:?} {pc:#x}");
            assert_eq!(
                format!("{}:{}", f.file, f.line),
                lines[2 * i + 1],
                "{tc:?} {link:?} {pc:#x}"
            );
        }
        // main.main's entry is the `func main()` line of the source.
        let f = sym.lookup(main).unwrap();
        assert!(
            f.file.ends_with("/main.go") && f.line == line_of("func main()"),
            "{f:?}"
        );
        // Return addresses resolve at pc-1: a call ending exactly at the
        // function's entry belongs to the function before it.
        let r = sym.lookup_return_address(main + 1).unwrap();
        assert_eq!((r.function.as_str(), r.pc), ("main.main", main + 1));
        assert_ne!(
            sym.lookup_return_address(main)
                .map(|f| f.function)
                .as_deref(),
            Some("main.main")
        );
    }
}

/// Return addresses of the direct calls from `main.main` to `callee`.
fn calls_from_main(p: &ProbePlan, exe: &Path, callee: u64) -> Vec<u64> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind};
    let main = p.symbolizer.function_address("main.main").unwrap();
    let code = file_bytes(exe, main - p.link_base, 0x800);
    Decoder::with_ip(64, &code, main, DecoderOptions::NONE)
        .into_iter()
        .filter(|i| {
            i.mnemonic() == Mnemonic::Call
                && i.op0_kind() == OpKind::NearBranch64
                && i.near_branch_target() == callee
        })
        .map(|i| i.next_ip())
        .collect()
}

#[test]
fn call_sites_in_inlined_code_name_the_inlined_function() {
    for (tc, link) in ALL {
        let exe = build(tc, link);
        let p = plan(tc, link, false);
        let callee = p.entry_site("runtime.mapassign_fast64").unwrap().func_addr;
        let stacks: Vec<Vec<_>> = calls_from_main(&p, &exe, callee)
            .into_iter()
            .map(|ra| p.symbolizer.lookup_frames(ra, true))
            .collect();
        let brief = |s: &Vec<map_auditor::event::Frame>| -> Vec<(String, u32)> {
            s.iter().map(|f| (f.function.clone(), f.line)).collect()
        };
        let all: Vec<_> = stacks.iter().map(brief).collect();
        // The loop's `m64[int64(i)] = i`: no inlining, one frame.
        let direct = vec![("main.main".to_owned(), line_of("m64[int64(i)] = i"))];
        assert!(all.contains(&direct), "{tc:?} {link:?}: {all:?}");
        // The inlined `put`: its own line, then the call in main.
        let inlined = vec![
            ("main.put".to_owned(), line_of("m[k] = int(k)")),
            ("main.main".to_owned(), line_of("put(m64, 500)")),
        ];
        assert!(all.contains(&inlined), "{tc:?} {link:?}: {all:?}");
        // `lookup_return_address` gives the innermost frame of the same stack.
        for (stack, ra) in stacks.iter().zip(calls_from_main(&p, &exe, callee)) {
            assert_eq!(
                p.symbolizer.lookup_return_address(ra).as_ref(),
                stack.first()
            );
            assert!(
                stack
                    .iter()
                    .all(|f| f.pc == ra && f.file.ends_with("/main.go"))
            );
        }
    }
}

#[test]
fn symbols_from_plain_build_match_the_symbol_table() {
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        let exe = build(tc, Link::Plain);
        let p = plan(tc, Link::Plain, false);
        let nm = go_tool(tc, &["nm", exe.to_str().unwrap()], "");
        for s in p.sites.iter().filter(|s| !s.exit) {
            let line = nm
                .lines()
                .find(|l| l.ends_with(&format!(" T {}", s.function)))
                .unwrap_or_else(|| panic!("{} not in nm", s.function));
            let addr = u64::from_str_radix(line.split_whitespace().next().unwrap(), 16).unwrap();
            assert_eq!(addr, s.func_addr, "{}", s.function);
            assert_eq!(p.symbolizer.function_address(&s.function), Some(addr));
        }
    }
}

#[test]
fn non_go_elf_is_not_go() {
    let err = ProbePlan::for_exe("/bin/true").unwrap_err();
    assert!(matches!(err, TargetError::NotGo(_)), "{err}");
}

#[test]
fn non_elf_file_is_not_elf() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("script.sh");
    std::fs::write(&f, "#!/bin/sh\necho hi\n").unwrap();
    let err = ProbePlan::for_exe(&f).unwrap_err();
    assert!(matches!(err, TargetError::NotElf(_)), "{err}");
}

#[test]
fn missing_pid_is_no_such_process() {
    let pid = 0x3fff_fff0;
    let err = ProbePlan::for_pid(pid).unwrap_err();
    assert!(
        matches!(err, TargetError::NoSuchProcess(p) if p == pid),
        "{err}"
    );
    assert!(err.to_string().contains(&pid.to_string()));
}

#[test]
fn a_rust_process_is_not_go() {
    let err = ProbePlan::for_pid(std::process::id()).unwrap_err();
    assert!(matches!(err, TargetError::NotGo(_)), "{err}");
}

#[test]
fn a_zombie_process_has_exited() {
    let mut child = Command::new("/bin/true").spawn().unwrap();
    let pid = child.id();
    // Not reaped yet: /proc/PID stays, but the executable link is gone.
    let stat = format!("/proc/{pid}/stat");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !std::fs::read_to_string(&stat).unwrap().contains(") Z ") {
        assert!(
            std::time::Instant::now() < deadline,
            "child never became a zombie"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let err = ProbePlan::for_pid(pid).unwrap_err();
    child.wait().unwrap();
    assert!(
        matches!(err, TargetError::ProcessExited(p) if p == pid),
        "{err}"
    );
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_waiting(exe: &Path) -> Running {
    let mut child = Command::new(exe)
        .arg("wait")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The program prints one line before it sleeps: the runtime is up.
    let mut buf = [0u8; 1];
    child.stdout.as_mut().unwrap().read_exact(&mut buf).unwrap();
    Running(child)
}

fn read_mem(pid: u32, addr: u64, len: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    f.seek(SeekFrom::Start(addr)).unwrap();
    let mut b = vec![0; len];
    f.read_exact(&mut b).unwrap();
    b
}

#[test]
fn running_deleted_pie_is_planned_through_proc_exe() {
    let built = build(GoToolchain::Swiss, Link::StrippedPie);
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("mapprog");
    std::fs::copy(&built, &exe).unwrap();
    let running = start_waiting(&exe);
    // Replace the file under the process: the plan must still describe
    // the executable the process runs.
    std::fs::remove_file(&exe).unwrap();
    let pid = running.0.id();
    let p = ProbePlan::for_pid(pid).unwrap();
    assert_eq!(p.exe, PathBuf::from(format!("/proc/{pid}/exe")));
    assert!(p.pie && p.swiss_maps);
    let bias = p.load_bias(pid).unwrap();
    assert_ne!(bias, 0, "a PIE is never loaded at its link address");
    assert_eq!(bias % 4096, 0);
    assert_eq!(map_auditor::goexe::load_bias(pid, &p.exe).unwrap(), bias);
    // Code at the runtime address equals the file bytes at the site offset.
    let s = p.entry_site("runtime.mapassign_fast64").unwrap();
    let live = read_mem(pid, s.func_addr.wrapping_add(bias), 16);
    assert_eq!(live, file_bytes(&built, s.file_offset - 4, 16));
}

#[test]
fn running_non_pie_has_zero_bias() {
    let exe = build(GoToolchain::Classic, Link::Plain);
    let running = start_waiting(&exe);
    let pid = running.0.id();
    let p = ProbePlan::for_pid(pid).unwrap();
    assert!(!p.pie);
    assert_eq!(p.load_bias(pid).unwrap(), 0);
    assert_eq!(p.go_version.minor, 19);
}

/// Map type descriptors passed in RAX to the map functions `main.main`
/// calls: `lea rax,[rip+X]` shortly before `call runtime.mapassign*`.
fn maptypes_passed_in_main(p: &ProbePlan, exe: &Path) -> Vec<u64> {
    use iced_x86::{Decoder, DecoderOptions, Mnemonic, OpKind, Register};
    let main = p.symbolizer.function_address("main.main").unwrap();
    // Text is in the first loadable segment, mapped from file offset 0.
    let code = file_bytes(exe, main - p.link_base, 0x800);
    let assigns: Vec<u64> = p
        .sites
        .iter()
        .filter(|s| s.op == MapOp::Write && !s.exit)
        .map(|s| s.func_addr)
        .collect();
    let mut last_lea_rax = None;
    let mut out = Vec::new();
    for i in Decoder::with_ip(64, &code, main, DecoderOptions::NONE) {
        if i.mnemonic() == Mnemonic::Lea
            && i.op0_register() == Register::RAX
            && i.is_ip_rel_memory_operand()
        {
            last_lea_rax = Some(i.ip_rel_memory_address());
        } else if i.mnemonic() == Mnemonic::Call && i.op0_kind() == OpKind::NearBranch64 {
            if assigns.contains(&i.near_branch_target()) {
                out.extend(last_lea_rax.take());
            }
            last_lea_rax = None;
        }
    }
    out
}

#[test]
fn map_type_descriptors_are_named() {
    for (tc, link) in ALL {
        let exe = build(tc, link);
        let p = plan(tc, link, false);
        let names: Vec<String> = maptypes_passed_in_main(&p, &exe)
            .into_iter()
            .map(|a| {
                p.map_type_name(a)
                    .unwrap_or_else(|| format!("unnamed {a:#x}"))
            })
            .collect();
        for want in [
            "map[int64]int",
            "map[int32]int",
            "map[string]string",
            "map[*int]int",
            "map[main.big]main.big",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{tc:?} {link:?}: {want} not in {names:?}"
            );
        }
        // Addresses outside the type area are not guessed at.
        assert_eq!(
            p.map_type_name(p.symbolizer.function_address("main.main").unwrap()),
            None
        );
    }
}

const GLOBALRACE: &str = include_str!("go/globalrace.go");

#[test]
fn package_level_maps_are_watched_by_the_kernel_main_first() {
    for tc in [GoToolchain::Classic, GoToolchain::Swiss] {
        for link in [Link::Plain, Link::Pie, Link::NoDwarf, Link::StrippedPie] {
            let exe = build_go("globalrace", GLOBALRACE, tc, link);
            let p = ProbePlan::for_exe(&exe).unwrap();
            let w = &p.watched_globals;
            let names: Vec<&str> = w.vars.iter().map(|(_, n)| n.as_str()).collect();
            let ctx = format!("{tc:?}/{link:?}: {names:?}");
            if link == Link::StrippedPie {
                assert!(names.is_empty(), "{ctx}");
                continue;
            }
            // The main package's first, by address; named map types too.
            let mut main: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.starts_with("main."))
                .collect();
            assert!(names[..main.len()] == main[..], "{ctx}");
            main.sort();
            if link == Link::NoDwarf {
                // No types: every pointer-sized variable, the int too.
                assert!(!w.map_typed, "{ctx}");
                for v in ["main.users", "main.plugins", "main.sessions", "main.hits"] {
                    assert!(main.contains(&v), "{v} {ctx}");
                }
            } else {
                assert!(w.map_typed, "{ctx}");
                assert_eq!(w.not_watched, 0, "{ctx}");
                assert_eq!(
                    main,
                    ["main.limits", "main.plugins", "main.sessions", "main.users"],
                    "{ctx}"
                );
            }
        }
    }
}
