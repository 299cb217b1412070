//! Ring-buffer records back to typed kernel records (userspace side, the
//! `user` feature). Pure: bytes in, a record or a reason out. The kernel is
//! trusted to write whole records, but a version skew or a truncated record
//! must not crash the reader.

use core::{fmt, mem::size_of};

use crate::{
    EventHeader, EventKind, Pod,
    bpf_syscall::{BpfCall, BpfCallJudged, BpfCallPath, BpfSyscallEvent},
    go_map::{GoEscalate, GoMapAccess, GoMapOverlap},
};

/// One record as the kernel wrote it.
// Records are decoded and consumed one at a time; boxing the larger ones
// would add an allocation per event for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum RawRecord {
    GoAccess(GoMapAccess),
    GoOverlap(GoMapOverlap),
    /// Any of the three bpf(2) call records, assembled.
    BpfSyscall(BpfSyscallEvent),
    GoEscalate(GoEscalate),
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    ShortHeader {
        len: usize,
    },
    UnknownKind {
        kind: u32,
    },
    Truncated {
        kind: EventKind,
        len: usize,
        need: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShortHeader { len } => {
                write!(f, "record of {len} bytes is shorter than its header")
            }
            Self::UnknownKind { kind } => write!(f, "unknown record kind {kind}"),
            Self::Truncated { kind, len, need } => write!(
                f,
                "record of kind {kind:?} has {len} bytes, expected at least {need}"
            ),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Read a record's bytes as `T` (`None` when there are too few).
pub fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod (every bit pattern valid) and the length was checked;
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of a record, as the kernel writes them (for tests and tools).
pub fn pod_bytes<T: Pod>(v: &T) -> &[u8] {
    // SAFETY: T is Pod: `#[repr(C)]` with explicit padding, so every byte
    // is initialised.
    unsafe { core::slice::from_raw_parts((v as *const T).cast::<u8>(), size_of::<T>()) }
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<RawRecord, DecodeError> {
    let header: EventHeader =
        read_pod(bytes).ok_or(DecodeError::ShortHeader { len: bytes.len() })?;
    let kind =
        EventKind::from_u32(header.kind).ok_or(DecodeError::UnknownKind { kind: header.kind })?;
    fn need<T: Pod>(kind: EventKind, bytes: &[u8]) -> Result<T, DecodeError> {
        read_pod(bytes).ok_or(DecodeError::Truncated {
            kind,
            len: bytes.len(),
            need: size_of::<T>(),
        })
    }
    Ok(match kind {
        EventKind::GoMapAccess => RawRecord::GoAccess(need(kind, bytes)?),
        EventKind::GoMapOverlap => RawRecord::GoOverlap(need(kind, bytes)?),
        EventKind::BpfSyscall => {
            let c: BpfCall = need(kind, bytes)?;
            RawRecord::BpfSyscall(BpfSyscallEvent::assemble(&c, None, None))
        }
        EventKind::BpfSyscallJudged => {
            let j: BpfCallJudged = need(kind, bytes)?;
            RawRecord::BpfSyscall(BpfSyscallEvent::assemble(&j.call, Some(&j.detail), None))
        }
        EventKind::BpfSyscallPath => {
            let p: BpfCallPath = need(kind, bytes)?;
            RawRecord::BpfSyscall(BpfSyscallEvent::assemble(&p.call, None, Some(&p.path)))
        }
        EventKind::GoEscalate => RawRecord::GoEscalate(need(kind, bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bpf_syscall::MapIdentity,
        go_map::{MAX_STACK, Party},
    };

    fn header(kind: EventKind) -> EventHeader {
        EventHeader {
            kind: kind as u32,
            cpu: 1,
            ts_ns: 99,
            pid: 7,
            tid: 8,
        }
    }

    fn party(goid: u64, op: u8) -> Party {
        let mut stack = [0u64; MAX_STACK];
        stack[0] = 0x401000;
        Party {
            goid,
            op,
            stack_len: 1,
            stack,
            ..Party::default()
        }
    }

    fn access() -> GoMapAccess {
        GoMapAccess {
            header: header(EventKind::GoMapAccess),
            map: 0xc000100000,
            maptype: 0x4a0000,
            party: party(42, 2),
            exit: 0,
            writing_seen: 0,
            _pad: [0; 6],
        }
    }

    #[test]
    fn access_record_round_trips() {
        let ev = access();
        match decode(pod_bytes(&ev)).unwrap() {
            RawRecord::GoAccess(a) => {
                assert_eq!(a.header, ev.header);
                assert_eq!((a.map, a.maptype), (ev.map, ev.maptype));
                assert_eq!(a.party, ev.party);
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn overlap_record_round_trips_with_both_parties() {
        let mut ev: GoMapOverlap = read_pod(&[0u8; size_of::<GoMapOverlap>()]).unwrap();
        ev.header = header(EventKind::GoMapOverlap);
        ev.map = 0xc000200000;
        ev.first = party(1, 1);
        ev.second = party(2, 2);
        match decode(pod_bytes(&ev)).unwrap() {
            RawRecord::GoOverlap(o) => {
                assert_eq!(o.header, ev.header);
                assert_eq!(o.map, ev.map);
                assert_eq!((o.first, o.second), (ev.first, ev.second));
                assert_eq!(pod_bytes(&o), pod_bytes(&ev));
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    fn call(kind: EventKind) -> BpfCall {
        let mut c: BpfCall = read_pod(&[0u8; size_of::<BpfCall>()]).unwrap();
        c.header = header(kind);
        c.cmd = 2;
        c.ret = -9;
        c.fd = -1;
        c.map = MapIdentity {
            id: 17,
            key_size: 4,
            value_size: 8,
            max_entries: 1024,
            ..MapIdentity::default()
        };
        c.attr[47] = 5;
        c.comm[0] = b'x';
        c
    }

    fn assembled(bytes: &[u8]) -> BpfSyscallEvent {
        match decode(bytes).unwrap() {
            RawRecord::BpfSyscall(b) => b,
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn compact_bpf_call_record_decodes_with_no_optional_parts() {
        let c = call(EventKind::BpfSyscall);
        let b = assembled(pod_bytes(&c));
        assert_eq!(b.header, c.header);
        assert_eq!((b.cmd, b.ret, b.fd, b.map), (c.cmd, c.ret, -1, c.map));
        assert_eq!((b.attr, b.comm), (c.attr, c.comm));
        assert_eq!((b.exe_ino, b.prog.prog_id, b.path[0]), (0, 0, 0));
    }

    #[test]
    fn judged_and_path_records_carry_their_parts() {
        let mut j: BpfCallJudged = read_pod(&[0u8; size_of::<BpfCallJudged>()]).unwrap();
        j.call = call(EventKind::BpfSyscallJudged);
        j.detail.euid = 1000;
        j.detail.exe_ino = 77;
        j.detail.other.tid = 9;
        j.detail.prog.map_ids[7] = 3;
        let b = assembled(pod_bytes(&j));
        assert_eq!((b.euid, b.exe_ino, b.other.tid), (1000, 77, 9));
        assert_eq!(b.prog.map_ids[7], 3);
        assert_eq!(b.map, j.call.map);

        let mut p: BpfCallPath = read_pod(&[0u8; size_of::<BpfCallPath>()]).unwrap();
        p.call = call(EventKind::BpfSyscallPath);
        p.path[..5].copy_from_slice(b"/x/y\0");
        let b = assembled(pod_bytes(&p));
        assert_eq!(&b.path[..5], b"/x/y\0");
        assert_eq!(b.euid, 0);
        // A path record cut to the fixed part is refused, not misread.
        assert!(decode(&pod_bytes(&p)[..size_of::<BpfCall>()]).is_err());
    }

    #[test]
    fn truncated_record_is_an_error_not_a_crash() {
        let ev = access();
        let b = pod_bytes(&ev);
        assert_eq!(
            decode(&b[..40]).unwrap_err(),
            DecodeError::Truncated {
                kind: EventKind::GoMapAccess,
                len: 40,
                need: size_of::<GoMapAccess>()
            }
        );
        assert_eq!(
            decode(&b[..3]).unwrap_err(),
            DecodeError::ShortHeader { len: 3 }
        );
    }

    #[test]
    fn unknown_kind_is_reported() {
        let mut ev = access();
        ev.header.kind = 200;
        assert_eq!(
            decode(pod_bytes(&ev)).unwrap_err(),
            DecodeError::UnknownKind { kind: 200 }
        );
    }
}
