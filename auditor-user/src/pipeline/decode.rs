//! Ring-buffer records to typed kernel records. Pure: bytes in, value or a
//! reason out; the kernel is trusted to write whole records, but a version
//! skew or a truncated record must not crash the reader.

use auditor_common::{
    EventHeader, EventKind, Pod,
    bpf_syscall::{BpfSyscallEvent, BpfSyscallExit},
    go_map::{GoMapAccess, GoMapOverlap},
};

/// One record as the kernel wrote it.
// Records are decoded and consumed one at a time; boxing the larger ones
// would add an allocation per event for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug)]
pub enum RawRecord {
    GoAccess(GoMapAccess),
    GoOverlap(GoMapOverlap),
    BpfSyscall(BpfSyscallEvent),
    BpfSyscallExit(BpfSyscallExit),
}

/// Why a record could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than its header")]
    ShortHeader { len: usize },
    #[error("unknown record kind {kind}")]
    UnknownKind { kind: u32 },
    #[error("record of kind {kind:?} has {len} bytes, expected at least {need}")]
    Truncated {
        kind: EventKind,
        len: usize,
        need: usize,
    },
}

fn read_pod<T: Pod>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: T is Pod (every bit pattern valid) and the length was checked;
    // read_unaligned copes with the ring buffer's 8-byte alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
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
        EventKind::BpfSyscall => RawRecord::BpfSyscall(need(kind, bytes)?),
        EventKind::BpfSyscallExit => RawRecord::BpfSyscallExit(need(kind, bytes)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use auditor_common::go_map::Party;

    fn access_bytes() -> Vec<u8> {
        let ev = GoMapAccess {
            header: EventHeader {
                kind: EventKind::GoMapAccess as u32,
                cpu: 1,
                ts_ns: 99,
                pid: 7,
                tid: 8,
            },
            map: 0xc000100000,
            maptype: 0x4a0000,
            party: Party {
                goid: 42,
                op: 2,
                stack_len: 1,
                ..Party::default()
            },
            exit: 0,
            writing_seen: 0,
            _pad: [0; 6],
        };
        // SAFETY: GoMapAccess is Pod.
        unsafe {
            std::slice::from_raw_parts(
                (&ev as *const GoMapAccess).cast::<u8>(),
                size_of::<GoMapAccess>(),
            )
        }
        .to_vec()
    }

    #[test]
    fn access_record_round_trips() {
        match decode(&access_bytes()).unwrap() {
            RawRecord::GoAccess(a) => {
                assert_eq!(a.header.pid, 7);
                assert_eq!(a.map, 0xc000100000);
                assert_eq!(a.party.goid, 42);
            }
            other => panic!("decoded as {other:?}"),
        }
    }

    #[test]
    fn truncated_record_is_an_error_not_a_crash() {
        let b = access_bytes();
        assert!(matches!(
            decode(&b[..40]),
            Err(DecodeError::Truncated { .. })
        ));
        assert!(matches!(
            decode(&b[..3]),
            Err(DecodeError::ShortHeader { len: 3 })
        ));
    }

    #[test]
    fn unknown_kind_is_reported() {
        let mut b = access_bytes();
        b[0] = 200;
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::UnknownKind { kind: 200 }
        );
    }
}
