//! Seed inputs for the fuzz targets: small, well-formed examples of each
//! untrusted format, built from the format descriptions rather than copied
//! from a real binary (a real Go pclntab is hundreds of KiB; these are a few
//! hundred bytes and reach the same code). `tests/seeds.rs` checks that each
//! seed parses and writes them to `seeds/<target>/`.

use auditor_common::{
    EventKind,
    bpf_syscall::{BpfCallJudged, BpfCallPath, cmd},
    decode::read_pod,
    go_map::{GoMapAccess, GoMapOverlap},
};

/// Link-time address of `.text` in the ELF seeds and the pclntab seeds.
pub const TEXT: u64 = 0x40_1000;

/// Bytes of machine code per seed function.
const FUNC_SIZE: u32 = 0x20;

/// A typical Go function: stack-growth check (`cmp rsp, [r14+0x10]; jbe`),
/// frame set-up, RET, then the `morestack` call and the jump back; padded
/// with INT3 as the Go linker does.
fn go_function_code() -> Vec<u8> {
    let mut c = vec![
        0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
        0x76, 0x08, // jbe morestack
        0x55, // push rbp
        0x48, 0x89, 0xe5, // mov rbp, rsp
        0x48, 0x89, 0xd8, // mov rax, rbx
        0x5d, // pop rbp
        0xc3, // ret
        0xe8, 0, 0, 0, 0, // call runtime.morestack_noctxt
        0xeb, 0xe9, // jmp to the start
    ];
    c.resize(FUNC_SIZE as usize, 0xcc);
    c
}

/// pclntab layout generations the seeds come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Go116,
    Go118,
    Go120,
}

fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    loop {
        let b = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// A pc-value table from `(value, pc bytes)` runs (zig-zag value deltas).
fn pc_table(runs: &[(i64, u64)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev = -1i64;
    for &(v, len) in runs {
        let d = v - prev;
        let z = if d < 0 {
            (((-d - 1) as u64) << 1) | 1
        } else {
            (d as u64) << 1
        };
        put_uvarint(&mut out, z);
        put_uvarint(&mut out, len);
        prev = v;
    }
    out.push(0);
    out
}

fn push_u32(out: &mut Vec<u8>, v: u32) {
    out.extend(v.to_le_bytes());
}

/// A pclntab for `names`, one [`FUNC_SIZE`]-byte function each from
/// [`TEXT`], with file and line tables. The first function has an inlined
/// call (`main.inlined`) whose inline tree is appended to the table and
/// named by its funcdata offset, so a fuzz target that passes the table
/// itself as the `gofunc` area reaches the inline-tree walk.
pub fn pclntab(layout: Layout, names: &[&str]) -> Vec<u8> {
    let n = names.len();
    let mut funcnames = Vec::new();
    let mut name_off = Vec::new();
    for name in names.iter().chain(["main.inlined"].iter()) {
        name_off.push(funcnames.len() as u32);
        funcnames.extend(name.as_bytes());
        funcnames.push(0);
    }
    let inlined_name = name_off[n];
    let filetab = b"/src/main.go\0/go/src/runtime/map.go\0".to_vec();
    // One compilation unit per function, with one file each.
    let mut cutab = Vec::new();
    for i in 0..n {
        push_u32(&mut cutab, if i == 0 { 0 } else { 13 });
    }
    let mut pctab = vec![0u8]; // offset 0 means "no table"
    let mut tables = Vec::new();
    for i in 0..n {
        let file = pctab.len() as u32;
        pctab.extend(pc_table(&[(0, u64::from(FUNC_SIZE))]));
        let line = pctab.len() as u32;
        let l = 10 + 10 * i as i64;
        pctab.extend(pc_table(&[(l, 0x10), (l + 1, u64::from(FUNC_SIZE) - 0x10)]));
        let inl = pctab.len() as u32;
        pctab.extend(pc_table(&[(-1, 6), (0, u64::from(FUNC_SIZE) - 6)]));
        tables.push((file, line, inl));
    }

    let ptr = 8usize;
    let header_words = if layout == Layout::Go116 { 7 } else { 8 };
    let header_len = 8 + header_words * ptr;
    let funcname_off = header_len;
    let cu_off = funcname_off + funcnames.len();
    let filetab_off = cu_off + cutab.len();
    let pctab_off = filetab_off + filetab.len();
    let functab_off = pctab_off + pctab.len();
    let entry_size = if layout == Layout::Go116 { 2 * ptr } else { 8 };
    let functab_len = (n + 1) * entry_size;

    // _func records: fixed part, pcdata offsets, funcdata offsets.
    let fixed = match layout {
        Layout::Go116 => ptr + 36,
        Layout::Go118 => 40,
        Layout::Go120 => 44,
    };
    let npcdata = 3u32;
    let nfuncdata = if layout == Layout::Go116 { 0 } else { 4u8 };
    let rec_len = fixed + 4 * npcdata as usize + 4 * nfuncdata as usize;
    let funcs_start = functab_off + functab_len;
    let tree_off = (funcs_start + n * rec_len) as u32;

    let mut functab = Vec::new();
    let mut records = Vec::new();
    for i in 0..=n {
        let entryoff = i as u32 * FUNC_SIZE;
        let funcoff = (functab_len + i * rec_len) as u32;
        let funcoff = if i == n { 0 } else { funcoff };
        if layout == Layout::Go116 {
            functab.extend((TEXT + u64::from(entryoff)).to_le_bytes());
            functab.extend(u64::from(funcoff).to_le_bytes());
        } else {
            push_u32(&mut functab, entryoff);
            push_u32(&mut functab, funcoff);
        }
        if i == n {
            break;
        }
        let (file, line, inl) = tables[i];
        let mut r = Vec::new();
        if layout == Layout::Go116 {
            r.extend((TEXT + u64::from(entryoff)).to_le_bytes());
        } else {
            push_u32(&mut r, entryoff);
        }
        // nameoff, args, deferreturn, pcsp, pcfile, pcln, npcdata, cuOffset
        for v in [name_off[i], 0, 0, 0, file, line, npcdata, i as u32] {
            push_u32(&mut r, v);
        }
        if layout == Layout::Go120 {
            push_u32(&mut r, 1); // startLine
        }
        r.extend([0, 0, 0, nfuncdata]); // funcID, flag/pad, pad, nfuncdata
        assert_eq!(r.len(), fixed);
        for pcdata in [0, 0, inl] {
            push_u32(&mut r, pcdata);
        }
        for k in 0..nfuncdata {
            let off = if k == 3 && i == 0 { tree_off } else { u32::MAX };
            push_u32(&mut r, off);
        }
        records.extend(r);
    }
    // One inlined call, at byte 4 of the first function.
    let mut tree = Vec::new();
    if layout == Layout::Go120 {
        tree.extend([0, 0, 0, 0]);
        push_u32(&mut tree, inlined_name);
        push_u32(&mut tree, 4); // parentPc
        push_u32(&mut tree, 1); // startLine
    } else if layout == Layout::Go118 {
        tree.extend([0xff, 0xff, 0, 0]); // parent -1, funcID, pad
        push_u32(&mut tree, 0); // file
        push_u32(&mut tree, 3); // line
        push_u32(&mut tree, inlined_name);
        push_u32(&mut tree, 4); // parentPc
    }

    let magic: u32 = match layout {
        Layout::Go116 => 0xffff_fffa,
        Layout::Go118 => 0xffff_fff0,
        Layout::Go120 => 0xffff_fff1,
    };
    let mut d = Vec::new();
    push_u32(&mut d, magic);
    d.extend([0, 0, 1, ptr as u8]);
    let mut words = vec![n as u64, 2];
    if layout != Layout::Go116 {
        words.push(TEXT);
    }
    words.extend([funcname_off, cu_off, filetab_off, pctab_off, functab_off].map(|o| o as u64));
    for w in words {
        d.extend(w.to_le_bytes());
    }
    assert_eq!(d.len(), header_len);
    d.extend(funcnames);
    d.extend(cutab);
    d.extend(filetab);
    d.extend(pctab);
    d.extend(functab);
    d.extend(records);
    assert_eq!(d.len(), tree_off as usize);
    d.extend(tree);
    d
}

/// The Go 1.18+ inline build-info blob (`.go.buildinfo`).
pub fn buildinfo(go_version: &str, modinfo: &str) -> Vec<u8> {
    let mut b = b"\xff Go buildinf:".to_vec();
    b.push(8); // pointer size
    b.push(2); // flags: inline strings, little-endian
    b.resize(32, 0);
    put_uvarint(&mut b, go_version.len() as u64);
    b.extend(go_version.as_bytes());
    // The linker frames the module info with 16 sentinel bytes each side.
    let mut m = b"\x30\x77\xaf\x0c\x92\x74\x08\x02\x41\xe1\xc1\x07\xe6\xd6\x18\xe6".to_vec();
    m.extend(modinfo.as_bytes());
    m.extend(b"\xf9\x32\x43\x31\x86\x18\x20\x72\x00\x82\x42\x10\x41\x16\xd8\xf2");
    put_uvarint(&mut b, m.len() as u64);
    b.extend(m);
    b
}

/// The pre-1.18 build-info blob: two pointers to Go string headers.
pub fn buildinfo_pointers() -> Vec<u8> {
    let mut b = b"\xff Go buildinf:".to_vec();
    b.extend([8, 0]);
    b.extend(0x1000u64.to_le_bytes());
    b.extend(0x2000u64.to_le_bytes());
    b
}

/// Module info text as the Go linker writes it.
pub const MODINFO: &str = "path\texample.com/seed\nmod\texample.com/seed\t(devel)\t\nbuild\t-buildmode=exe\nbuild\tCGO_ENABLED=0\nbuild\tGOEXPERIMENT=noswissmap\n";

/// Map functions in the seed executables, by map family.
pub const CLASSIC_FUNCS: &[&str] = &[
    "main.main",
    "runtime.makemap_small",
    "runtime.mapaccess1_fast64",
    "runtime.mapassign_fast64",
    "runtime.mapdelete_fast64",
    "runtime.mapiterinit",
    "runtime.mapiternext",
    "runtime.fatal",
];
pub const SWISS_FUNCS: &[&str] = &[
    "main.main",
    "runtime.makemap",
    "runtime.mapaccess2_faststr",
    "runtime.mapassign_faststr",
    "runtime.mapclear",
    "runtime.mapIterStart",
    "runtime.mapIterNext",
];

/// A stripped, non-PIE x86-64 Go executable in miniature: one PT_LOAD
/// segment holding `.text`, `.gopclntab` and `.go.buildinfo`.
pub fn go_exe(go_version: &str, funcs: &[&str]) -> Vec<u8> {
    const BASE: u64 = TEXT - 0x1000;
    let text: Vec<u8> = funcs.iter().flat_map(|_| go_function_code()).collect();
    let tab = pclntab(Layout::Go120, funcs);
    let bi = buildinfo(go_version, MODINFO);
    let shstrtab = b"\0.text\0.gopclntab\0.go.buildinfo\0.shstrtab\0".to_vec();

    let align = |v: usize, a: usize| v.div_ceil(a) * a;
    // Text at file offset 0x1000 so that its address is BASE + offset.
    let text_off = 0x1000usize;
    let tab_off = align(text_off + text.len(), 32);
    let bi_off = align(tab_off + tab.len(), 32);
    let str_off = bi_off + bi.len();
    let sh_off = align(str_off + shstrtab.len(), 8);
    let shnum = 5u16;

    let mut f = Vec::new();
    f.extend(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    f.extend(2u16.to_le_bytes()); // ET_EXEC
    f.extend(62u16.to_le_bytes()); // EM_X86_64
    f.extend(1u32.to_le_bytes());
    f.extend(TEXT.to_le_bytes()); // e_entry
    f.extend(64u64.to_le_bytes()); // e_phoff
    f.extend((sh_off as u64).to_le_bytes());
    f.extend(0u32.to_le_bytes());
    for v in [64u16, 56, 1, 64, shnum, 4] {
        f.extend(v.to_le_bytes());
    }
    // PT_LOAD, R+X, everything before the section headers.
    f.extend(1u32.to_le_bytes());
    f.extend(5u32.to_le_bytes());
    for v in [0, BASE, BASE, sh_off as u64, sh_off as u64, 0x1000] {
        f.extend(v.to_le_bytes());
    }
    f.resize(text_off, 0);
    f.extend(&text);
    f.resize(tab_off, 0);
    f.extend(&tab);
    f.resize(bi_off, 0);
    f.extend(&bi);
    f.extend(&shstrtab);
    f.resize(sh_off, 0);

    let section = |f: &mut Vec<u8>, name: u32, ty: u32, flags: u64, off: usize, len: usize| {
        f.extend(name.to_le_bytes());
        f.extend(ty.to_le_bytes());
        f.extend(flags.to_le_bytes());
        let addr = if flags & 2 != 0 { BASE + off as u64 } else { 0 };
        for v in [addr, off as u64, len as u64] {
            f.extend(v.to_le_bytes());
        }
        f.extend([0u8; 8]); // link, info
        f.extend(1u64.to_le_bytes()); // addralign
        f.extend(0u64.to_le_bytes()); // entsize
    };
    const PROGBITS: u32 = 1;
    const STRTAB: u32 = 3;
    const ALLOC: u64 = 2;
    const EXEC: u64 = 4;
    section(&mut f, 0, 0, 0, 0, 0);
    section(&mut f, 1, PROGBITS, ALLOC | EXEC, text_off, text.len());
    section(&mut f, 7, PROGBITS, ALLOC, tab_off, tab.len());
    section(&mut f, 18, PROGBITS, ALLOC, bi_off, bi.len());
    section(&mut f, 32, STRTAB, 0, str_off, shstrtab.len());
    f
}

fn zeroed_record<T>(kind: EventKind) -> Vec<u8> {
    let mut b = vec![0u8; size_of::<T>()];
    b[..4].copy_from_slice(&(kind as u32).to_ne_bytes());
    b
}

fn as_bytes<T: Copy>(v: &T) -> Vec<u8> {
    // SAFETY: only used on the #[repr(C)] Pod records of auditor-common,
    // whose padding is explicit fields.
    unsafe { std::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }.to_vec()
}

/// Ring-buffer records of each kind, as the kernel side writes them.
pub fn ring_records() -> Vec<(&'static str, Vec<u8>)> {
    let mut access = zeroed_record::<GoMapAccess>(EventKind::GoMapAccess);
    let mut overlap = zeroed_record::<GoMapOverlap>(EventKind::GoMapOverlap);
    // Fill the stacks and ops with something non-zero, keeping the header.
    for b in access[24..].iter_mut().chain(overlap[24..].iter_mut()) {
        *b = 1;
    }
    // A judged call (an update: the guard's part follows the call) and a
    // pin with its path: the two larger of the three call records.
    let mut judged: BpfCallJudged =
        read_pod(&zeroed_record::<BpfCallJudged>(EventKind::BpfSyscallJudged)).unwrap();
    judged.call.cmd = cmd::MAP_UPDATE_ELEM;
    judged.call.attr_len = 64;
    judged.call.attr_size = 32;
    judged.call.map.id = 7;
    judged.call.comm[..4].copy_from_slice(b"tool");
    judged.detail.exe_ino = 1;
    let mut path: BpfCallPath =
        read_pod(&zeroed_record::<BpfCallPath>(EventKind::BpfSyscallPath)).unwrap();
    path.call.cmd = cmd::OBJ_PIN;
    path.call.map.id = 7;
    path.path[..12].copy_from_slice(b"/sys/fs/bpf/");
    vec![
        ("go_map_access", access),
        ("go_map_overlap", overlap),
        ("bpf_syscall", as_bytes(&judged)),
        ("bpf_syscall_path", as_bytes(&path)),
    ]
}

/// `union bpf_attr` prefixes: a command number (4 bytes), the size the
/// caller passed (4 bytes), then the attr bytes.
pub fn bpf_attrs() -> Vec<(&'static str, Vec<u8>)> {
    let attr = |c: u32, size: u32, words: &[(usize, u32)]| {
        let mut b = Vec::new();
        b.extend(c.to_le_bytes());
        b.extend(size.to_le_bytes());
        let mut a = [0u8; 64];
        for &(at, v) in words {
            a[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        }
        b.extend(a);
        b
    };
    let mut create = attr(cmd::MAP_CREATE, 72, &[(0, 1), (4, 4), (8, 8), (12, 64)]);
    create[8 + 28..8 + 33].copy_from_slice(b"flows");
    vec![
        ("map_create", create),
        (
            "update_elem",
            attr(cmd::MAP_UPDATE_ELEM, 32, &[(0, 3), (24, 2)]),
        ),
        (
            "update_batch",
            attr(cmd::MAP_UPDATE_BATCH, 56, &[(32, 5), (36, 3), (40, 1)]),
        ),
        ("obj_pin", attr(cmd::OBJ_PIN, 16, &[(8, 3)])),
        ("get_fd_by_id", attr(cmd::MAP_GET_FD_BY_ID, 12, &[(0, 42)])),
    ]
}

/// A BTF blob with the structs and members the kernel-side walk needs
/// (task_struct's `files` and `mm` behind an anonymous union), plus an int,
/// an array, an enum and a function prototype.
pub fn btf() -> Vec<u8> {
    const INT: u32 = 1;
    const ARRAY: u32 = 3;
    const STRUCT: u32 = 4;
    const UNION: u32 = 5;
    const ENUM: u32 = 6;
    const FUNC_PROTO: u32 = 13;
    let mut strings = vec![0u8];
    let mut s = |name: &str| {
        let at = strings.len() as u32;
        strings.extend(name.as_bytes());
        strings.push(0);
        at
    };
    let mut t: Vec<u32> = Vec::new();
    // 1: int; 2: int[4]; 3: enum { A = 1 }; 4: int (*)(int)
    t.extend([s("int"), INT << 24, 4, 32]);
    t.extend([0, ARRAY << 24, 0, 1, 1, 4]);
    t.extend([s("e"), (ENUM << 24) | 1, 4, s("A"), 1]);
    t.extend([0, (FUNC_PROTO << 24) | 1, 1, 0, 1]);
    // 5: union { int files; int mm; }
    let (files, mm) = (s("files"), s("mm"));
    t.extend([0, (UNION << 24) | 2, 4, files, 1, 0, mm, 1, 0]);
    // 6: struct task_struct { int pad; <anon union 5> @ 8; int cred @ 16;
    // int thread_info @ 24; int pid @ 32; int tgid @ 40; int comm @ 48 }
    // (byte offsets)
    t.extend([
        s("task_struct"),
        (STRUCT << 24) | 7,
        56,
        s("pad"),
        1,
        0,
        0,
        5,
        64,
        s("cred"),
        1,
        128,
        s("thread_info"),
        1,
        192,
        s("pid"),
        1,
        256,
        s("tgid"),
        1,
        320,
        s("comm"),
        1,
        384,
    ]);
    // Byte offsets, laid out as the walk's layout checks expect (fdtable.fd
    // right after max_fds, bpf_map's type..id as in the kernel).
    let members: &[(&str, &[(&str, u32)])] = &[
        ("files_struct", &[("fdt", 8)]),
        ("fdtable", &[("max_fds", 8), ("fd", 16)]),
        ("file", &[("f_op", 8), ("private_data", 16), ("f_path", 24)]),
        ("path", &[("dentry", 8)]),
        (
            "dentry",
            &[("d_parent", 8), ("d_name", 16), ("d_inode", 24)],
        ),
        ("qstr", &[("name", 8)]),
        ("inode", &[("i_ino", 8), ("i_sb", 16)]),
        ("super_block", &[("s_dev", 8)]),
        ("mm_struct", &[("exe_file", 8)]),
        ("cred", &[("euid", 8), ("cap_effective", 16), ("uid", 24)]),
        ("thread_info", &[("status", 8)]),
        ("bpf_prog", &[("aux", 8)]),
        (
            "bpf_prog_aux",
            &[("id", 8), ("used_map_cnt", 16), ("used_maps", 24)],
        ),
        (
            "bpf_map",
            &[
                ("map_type", 8),
                ("key_size", 12),
                ("value_size", 16),
                ("max_entries", 20),
                ("map_flags", 32),
                ("id", 36),
                ("name", 40),
            ],
        ),
    ];
    for (strukt, fields) in members {
        let name = s(strukt);
        let size = fields.iter().map(|(_, at)| at + 8).max().unwrap_or(0);
        t.extend([name, (STRUCT << 24) | fields.len() as u32, size]);
        for (field, at) in fields.iter() {
            let m = s(field);
            t.extend([m, 1, 8 * at]);
        }
    }
    let types: Vec<u8> = t.iter().flat_map(|w| w.to_le_bytes()).collect();
    let mut b = Vec::new();
    b.extend(0xeb9fu16.to_le_bytes());
    b.extend([1, 0]);
    for w in [
        24u32,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        b.extend(w.to_le_bytes());
    }
    b.extend(types);
    b.extend(strings);
    b
}

/// A JSON-lines recording with one event of each kind the reader knows,
/// one of a kind it does not, and a blank line.
pub const RECORDING: &str = concat!(
    r#"{"kind":"access","ts_ns":1,"pid":7,"tid":7,"goid":1,"map":"0xc0000a0000","map_gen":0,"op":"write","runtime_fn":"runtime.mapassign_fast64","function":"main.main","file":"/src/main.go","line":9}"#,
    "\n",
    r#"{"kind":"access","ts_ns":2,"pid":7,"tid":8,"goid":2,"map":"0xc0000a0000","map_gen":0,"op":"read","map_type":"map[int]int","runtime_fn":"runtime.mapaccess1_fast64","function":"main.reader","file":"/src/main.go","line":14,"stack":[{"pc":4198400,"function":"main.reader","file":"/src/main.go","line":14}]}"#,
    "\n\n",
    r#"{"kind":"future_kind","ts_ns":3}"#,
    "\n",
);
