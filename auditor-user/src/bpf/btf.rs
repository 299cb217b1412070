//! Struct member offsets from the running kernel's BTF
//! (`/sys/kernel/btf/vmlinux`), for the kernel-side fd → map walk.
//!
//! A small reader of the BTF format (Documentation/bpf/btf.rst): only what
//! member lookup needs. Pure over its input bytes; every length is checked,
//! so a short or hostile blob is an error, never a panic.

use std::collections::HashMap;

use auditor_common::bpf_syscall::KernelOffsets;
use thiserror::Error;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum BtfError {
    #[error("cannot read kernel BTF at {path}: {reason}; the kernel needs CONFIG_DEBUG_INFO_BTF")]
    Read { path: String, reason: String },
    #[error("BTF blob is malformed: {0}")]
    Malformed(&'static str),
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
    #[error(
        "kernel BTF: {0}; the kernel programs read these fields in one go and cannot on this kernel (please report with `uname -r`)"
    )]
    Layout(&'static str),
}

/// The kernel programs read `fdtable.{max_fds, fd}` and
/// `bpf_map.{map_type .. id}` each with one read, in the layout Linux has
/// had since 5.16; refuse a kernel where it differs rather than misread.
fn check_layout(o: KernelOffsets) -> Result<KernelOffsets, BtfError> {
    if o.fdt_fd != o.fdt_max_fds + 8 {
        return Err(BtfError::Layout("fdtable.fd does not follow max_fds"));
    }
    let t = o.map_type;
    if (
        o.map_key_size,
        o.map_value_size,
        o.map_max_entries,
        o.map_flags,
        o.map_id,
    ) != (t + 4, t + 8, t + 12, t + 24, t + 28)
    {
        return Err(BtfError::Layout(
            "bpf_map fields map_type..id are not laid out as expected",
        ));
    }
    Ok(o)
}

/// Most composite types one member look-up visits; real kernels need a few.
const FIND_BUDGET: u32 = 4096;

#[derive(Clone, Debug)]
struct Member {
    name: String,
    type_id: u32,
    /// Bit offset in the enclosing struct.
    bit_offset: u32,
}

#[derive(Clone, Debug)]
enum Ty {
    Composite { name: String, members: Vec<Member> },
    Other,
}

/// The struct and union types of one BTF blob.
#[derive(Debug)]
pub struct KernelBtf {
    /// Type id 0 is `void`; `types[i]` is id `i + 1`.
    types: Vec<Ty>,
    by_name: HashMap<String, u32>,
}

fn u16_at(b: &[u8], at: usize) -> Result<u16, BtfError> {
    b.get(at..at + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, BtfError> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn str_at(strings: &[u8], off: u32) -> String {
    let Some(tail) = strings.get(off as usize..) else {
        return String::new();
    };
    let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
    String::from_utf8_lossy(&tail[..end]).into_owned()
}

impl KernelBtf {
    /// Read the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        let data = std::fs::read(VMLINUX_BTF).map_err(|e| BtfError::Read {
            path: VMLINUX_BTF.into(),
            reason: e.to_string(),
        })?;
        Self::parse(&data)
    }

    /// Parse a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if u16_at(data, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let section = |off: usize, len: usize| {
            hdr_len
                .checked_add(off)
                .and_then(|s| Some((s, s.checked_add(len)?)))
                .and_then(|(s, e)| data.get(s..e))
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let types_b = section(type_off, type_len)?;
        let strings = section(str_off, str_len)?;

        let mut types = Vec::new();
        let mut by_name = HashMap::new();
        let mut at = 0usize;
        while at < types_b.len() {
            let name_off = u32_at(types_b, at)?;
            let info = u32_at(types_b, at + 4)?;
            at += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_ENUM | KIND_FUNC_PROTO => vlen * 8,
                0 | 2 | 7..=12 | 16 | 18 => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let body = types_b
                .get(at..at + extra)
                .ok_or(BtfError::Malformed("type body truncated"))?;
            let ty = if kind == KIND_STRUCT || kind == KIND_UNION {
                let mut members = Vec::with_capacity(vlen);
                for m in body.chunks_exact(12) {
                    let off = u32_at(m, 8)?;
                    members.push(Member {
                        name: str_at(strings, u32_at(m, 0)?),
                        type_id: u32_at(m, 4)?,
                        // With kind_flag the top 8 bits are a bitfield size.
                        bit_offset: if kind_flag { off & 0x00ff_ffff } else { off },
                    });
                }
                let name = str_at(strings, name_off);
                if kind == KIND_STRUCT && !name.is_empty() {
                    // First definition wins; later duplicates are rare.
                    by_name
                        .entry(name.clone())
                        .or_insert(types.len() as u32 + 1);
                }
                Ty::Composite { name, members }
            } else {
                Ty::Other
            };
            types.push(ty);
            at += extra;
        }
        Ok(Self { types, by_name })
    }

    fn composite(&self, id: u32) -> Option<(&str, &[Member])> {
        match self.types.get((id as usize).checked_sub(1)?)? {
            Ty::Composite { name, members } => Some((name, members)),
            Ty::Other => None,
        }
    }

    /// Byte offset of `member` in `struct strukt`, looking through anonymous
    /// struct and union members (e.g. `mm_struct` wraps its fields in one).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        let id = *self
            .by_name
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut budget = FIND_BUDGET;
        self.find(id, member, 0, &mut budget)
            .map(|bits| bits / 8)
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.into(),
                member: member.into(),
            })
    }

    /// `budget` bounds the composites visited: anonymous members that
    /// refer back to their own struct would otherwise make the walk
    /// exponential in the depth limit.
    fn find(&self, id: u32, member: &str, depth: u32, budget: &mut u32) -> Option<u32> {
        if depth > 8 || *budget == 0 {
            return None;
        }
        *budget -= 1;
        let (_, members) = self.composite(id)?;
        if let Some(m) = members.iter().find(|m| m.name == member) {
            return Some(m.bit_offset);
        }
        members.iter().filter(|m| m.name.is_empty()).find_map(|m| {
            m.bit_offset
                .checked_add(self.find(m.type_id, member, depth + 1, budget)?)
        })
    }

    /// Every offset the kernel-side walk needs.
    pub fn kernel_offsets(&self) -> Result<KernelOffsets, BtfError> {
        let o = |s: &str, m: &str| self.member_offset(s, m);
        Ok(KernelOffsets {
            task_files: o("task_struct", "files")?,
            task_mm: o("task_struct", "mm")?,
            files_fdt: o("files_struct", "fdt")?,
            fdt_max_fds: o("fdtable", "max_fds")?,
            fdt_fd: o("fdtable", "fd")?,
            file_f_op: o("file", "f_op")?,
            file_private_data: o("file", "private_data")?,
            file_f_path: o("file", "f_path")?,
            path_dentry: o("path", "dentry")?,
            dentry_d_inode: o("dentry", "d_inode")?,
            inode_i_ino: o("inode", "i_ino")?,
            inode_i_sb: o("inode", "i_sb")?,
            sb_s_dev: o("super_block", "s_dev")?,
            mm_exe_file: o("mm_struct", "exe_file")?,
            task_cred: o("task_struct", "cred")?,
            cred_euid: o("cred", "euid")?,
            cred_cap_effective: o("cred", "cap_effective")?,
            task_ti_status: o("task_struct", "thread_info")? + o("thread_info", "status")?,
            prog_aux: o("bpf_prog", "aux")?,
            aux_id: o("bpf_prog_aux", "id")?,
            aux_used_map_cnt: o("bpf_prog_aux", "used_map_cnt")?,
            aux_used_maps: o("bpf_prog_aux", "used_maps")?,
            map_type: o("bpf_map", "map_type")?,
            map_key_size: o("bpf_map", "key_size")?,
            map_value_size: o("bpf_map", "value_size")?,
            map_max_entries: o("bpf_map", "max_entries")?,
            map_flags: o("bpf_map", "map_flags")?,
            map_id: o("bpf_map", "id")?,
            map_name: o("bpf_map", "name")?,
            task_pid: o("task_struct", "pid")?,
            task_tgid: o("task_struct", "tgid")?,
            task_comm: o("task_struct", "comm")?,
            cred_uid: o("cred", "uid")?,
            _pad: 0,
        })
        .and_then(check_layout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob with `struct outer { int a; union { int b; int c; }; }` where
    /// the union sits at byte 8.
    fn sample() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0".to_vec();
        let s = |name: &str| {
            let pos = strings
                .windows(name.len() + 1)
                .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0);
            pos.unwrap() as u32
        };
        let mut t = Vec::new();
        let push = |t: &mut Vec<u8>, words: &[u32]| {
            for w in words {
                t.extend_from_slice(&w.to_le_bytes());
            }
        };
        // 1: int
        push(&mut t, &[s("int"), KIND_INT << 24, 4, 32]);
        // 2: union { int b; int c; }
        push(
            &mut t,
            &[0, (KIND_UNION << 24) | 2, 4, s("b"), 1, 0, s("c"), 1, 0],
        );
        // 3: struct outer { int a @0; <anon union> @64 bits }
        push(
            &mut t,
            &[
                s("outer"),
                (KIND_STRUCT << 24) | 2,
                12,
                s("a"),
                1,
                0,
                0,
                2,
                64,
            ],
        );
        with_header(&t, &strings)
    }

    /// A BTF header (version 1, 24 bytes) in front of types and strings.
    fn with_header(t: &[u8], strings: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b.extend_from_slice(t);
        b.extend_from_slice(strings);
        b
    }

    #[test]
    fn member_offsets_look_through_anonymous_unions() {
        let btf = KernelBtf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert!(matches!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
    }

    fn blob(words: &[u32], strings: &[u8]) -> Vec<u8> {
        let t: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
        with_header(&t, strings)
    }

    #[test]
    fn nested_offsets_that_overflow_are_no_member_not_a_panic() {
        // Found by fuzzing: bit offsets that overflow when added up the
        // anonymous nesting. 1: struct outer { <anon 2> @ 3 GiB bits };
        // 2: union { <anon 3> @ 3 GiB bits }; 3: union { x @ 0 }.
        let big = 0xc000_0000;
        let words = [
            1,
            (KIND_STRUCT << 24) | 1,
            4,
            0,
            2,
            big,
            0,
            (KIND_UNION << 24) | 1,
            4,
            0,
            3,
            big,
            0,
            (KIND_UNION << 24) | 1,
            4,
            7,
            0,
            0,
        ];
        let btf = KernelBtf::parse(&blob(&words, b"\0outer\0x\0")).unwrap();
        assert!(matches!(
            btf.member_offset("outer", "x"),
            Err(BtfError::NoMember { .. })
        ));
    }

    #[test]
    fn self_referencing_anonymous_members_do_not_hang() {
        // struct loop { <anon loop> x 40 }: 40^9 paths without a budget.
        let mut words = vec![1, (KIND_STRUCT << 24) | 40, 4];
        for _ in 0..40 {
            words.extend([0, 1, 0]);
        }
        let btf = KernelBtf::parse(&blob(&words, b"\0loop\0")).unwrap();
        assert!(btf.member_offset("loop", "x").is_err());
    }

    #[test]
    fn truncated_blob_is_an_error_not_a_panic() {
        let b = sample();
        for cut in [0, 3, 10, 24, 40, b.len() - 3] {
            assert!(KernelBtf::parse(&b[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = b.clone();
        bad[0] = 0;
        assert!(KernelBtf::parse(&bad).is_err());
    }

    #[test]
    fn running_kernel_has_every_offset_the_walk_needs() {
        if !std::path::Path::new(VMLINUX_BTF).exists() {
            eprintln!("SKIPPED: no {VMLINUX_BTF}");
            return;
        }
        let off = KernelBtf::from_sys_fs().unwrap().kernel_offsets().unwrap();
        assert_ne!(off.task_files, 0);
        assert_ne!(off.file_private_data, 0);
        assert_ne!(off.map_id, 0);
    }
}
