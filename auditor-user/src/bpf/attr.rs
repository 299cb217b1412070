//! Reading the `union bpf_attr` prefix the kernel copied at enter.
//!
//! Only the first `min(size, copied)` bytes are the caller's: the kernel
//! program copies a fixed 64 bytes, and whatever lies past the `size` the
//! caller passed is someone else's stack. The kernel treats missing bytes as
//! zero, so do we.

use auditor_common::bpf_syscall::cmd;

/// The fields of `union bpf_attr` that matter to the audit, per command.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttrView {
    /// The map fd the command works on (or pins).
    pub fd: Option<u32>,
    /// Command flags: `BPF_ANY/NOEXIST/EXIST/F_LOCK` for element ops,
    /// `elem_flags` for batches, `file_flags` for OBJ_PIN/OBJ_GET,
    /// `open_flags` for MAP_GET_FD_BY_ID, `map_flags` for MAP_CREATE.
    pub flags: u64,
    /// Batches: elements processed (written back by the kernel at exit).
    pub batch_count: Option<u32>,
    /// MAP_GET_FD_BY_ID: the id asked for.
    pub map_id: Option<u32>,
    /// MAP_CREATE: what was asked for (used when the create failed).
    pub create: Option<CreateAttr>,
}

/// The MAP_CREATE part of `union bpf_attr`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CreateAttr {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub map_flags: u32,
    pub name: String,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    if let Some(s) = b.get(at..at + 4) {
        w.copy_from_slice(s);
    }
    u32::from_ne_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        w.copy_from_slice(s);
    }
    u64::from_ne_bytes(w)
}

/// A NUL-terminated byte array as text (lossy, without the terminator).
pub fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parse the attr of command `c`. `attr` is the copied bytes, `size` the
/// size the caller passed to bpf(2).
pub fn parse_attr(c: u32, attr: &[u8], size: u32) -> AttrView {
    let b = &attr[..attr.len().min(size as usize)];
    let mut v = AttrView::default();
    match c {
        cmd::MAP_CREATE => {
            let name = b.get(28..44).map(c_str).unwrap_or_default();
            v.flags = u32_at(b, 16) as u64;
            v.create = Some(CreateAttr {
                map_type: u32_at(b, 0),
                key_size: u32_at(b, 4),
                value_size: u32_at(b, 8),
                max_entries: u32_at(b, 12),
                map_flags: u32_at(b, 16),
                name,
            });
        }
        cmd::MAP_LOOKUP_ELEM
        | cmd::MAP_UPDATE_ELEM
        | cmd::MAP_DELETE_ELEM
        | cmd::MAP_LOOKUP_AND_DELETE_ELEM => {
            v.fd = Some(u32_at(b, 0));
            v.flags = u64_at(b, 24);
        }
        cmd::MAP_GET_NEXT_KEY | cmd::MAP_FREEZE | cmd::OBJ_GET_INFO_BY_FD => {
            v.fd = Some(u32_at(b, 0));
        }
        cmd::MAP_LOOKUP_BATCH
        | cmd::MAP_LOOKUP_AND_DELETE_BATCH
        | cmd::MAP_UPDATE_BATCH
        | cmd::MAP_DELETE_BATCH => {
            v.batch_count = Some(u32_at(b, cmd::BATCH_COUNT_OFFSET));
            v.fd = Some(u32_at(b, 36));
            v.flags = u64_at(b, 40);
        }
        cmd::OBJ_PIN => {
            v.fd = Some(u32_at(b, 8));
            v.flags = u32_at(b, 12) as u64;
        }
        cmd::OBJ_GET => {
            v.flags = u32_at(b, 12) as u64;
        }
        cmd::MAP_GET_FD_BY_ID => {
            v.map_id = Some(u32_at(b, 0));
            v.flags = u32_at(b, 8) as u64;
        }
        _ => {}
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(words: &[(usize, &[u8])]) -> [u8; 64] {
        let mut a = [0xAAu8; 64];
        for (at, bytes) in words {
            a[*at..*at + bytes.len()].copy_from_slice(bytes);
        }
        a
    }

    #[test]
    fn update_elem_reads_fd_and_flags_within_size() {
        let a = attr(&[(0, &7u32.to_ne_bytes()), (24, &2u64.to_ne_bytes())]);
        let v = parse_attr(cmd::MAP_UPDATE_ELEM, &a, 32);
        assert_eq!(v.fd, Some(7));
        assert_eq!(v.flags, 2);
    }

    #[test]
    fn bytes_past_the_callers_size_count_as_zero() {
        // libbpf passes only up to `flags` for element ops; a shorter caller
        // leaves flags out and the 0xAA garbage must not be read as flags.
        let a = attr(&[(0, &7u32.to_ne_bytes())]);
        let v = parse_attr(cmd::MAP_UPDATE_ELEM, &a, 24);
        assert_eq!(v.fd, Some(7));
        assert_eq!(v.flags, 0);
    }

    #[test]
    fn batch_reads_count_fd_and_elem_flags() {
        let a = attr(&[
            (32, &5u32.to_ne_bytes()),
            (36, &9u32.to_ne_bytes()),
            (40, &1u64.to_ne_bytes()),
        ]);
        let v = parse_attr(cmd::MAP_UPDATE_BATCH, &a, 56);
        assert_eq!(v.batch_count, Some(5));
        assert_eq!(v.fd, Some(9));
        assert_eq!(v.flags, 1);
    }

    #[test]
    fn map_create_reads_type_sizes_and_name() {
        let mut name = [0u8; 16];
        name[..5].copy_from_slice(b"flows");
        let a = attr(&[
            (0, &1u32.to_ne_bytes()),
            (4, &4u32.to_ne_bytes()),
            (8, &8u32.to_ne_bytes()),
            (12, &64u32.to_ne_bytes()),
            (16, &1u32.to_ne_bytes()),
            (28, &name),
        ]);
        let c = parse_attr(cmd::MAP_CREATE, &a, 64).create.unwrap();
        assert_eq!(
            (
                c.map_type,
                c.key_size,
                c.value_size,
                c.max_entries,
                c.map_flags
            ),
            (1, 4, 8, 64, 1)
        );
        assert_eq!(c.name, "flows");
    }

    #[test]
    fn pin_and_get_fd_by_id_fields() {
        let a = attr(&[(8, &4u32.to_ne_bytes()), (12, &0u32.to_ne_bytes())]);
        assert_eq!(parse_attr(cmd::OBJ_PIN, &a, 20).fd, Some(4));
        let a = attr(&[(0, &321u32.to_ne_bytes()), (8, &0u32.to_ne_bytes())]);
        assert_eq!(parse_attr(cmd::MAP_GET_FD_BY_ID, &a, 12).map_id, Some(321));
    }
}
