//! Access counts instead of access records: the default way accesses are
//! streamed (`--format json` without `--all-accesses`).
//!
//! A record per access costs a ring-buffer reservation, a stack walk and
//! userspace work on every hit; a count costs one hash lookup and an atomic
//! add. Counts are kept per (process, goroutine, map, call site, operation)
//! in [`GO_ACCESS_COUNTS`], in one of two epochs: userspace flips
//! [`GO_ACCESS_EPOCH`], waits for programs still counting into the old
//! epoch, then reads and deletes that epoch's entries, so no count is lost
//! between its read and its deletion. A full table is counted
//! (`Counter::GoAccessCountsFull`), never silent.

use auditor_common::{
    Counter,
    go_map::{ACCESS_COUNT_SLOTS, AccessCount, AccessCountKey},
};
use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap},
};

use crate::shared::count;

/// `BPF_NOEXIST`: insert only if absent.
const BPF_NOEXIST: u64 = 1;
/// `-EEXIST`: another CPU inserted the key first.
const EEXIST: i32 = -17;

#[map(name = "GO_ACCESS_COUNTS")]
static GO_ACCESS_COUNTS: HashMap<AccessCountKey, AccessCount> =
    HashMap::with_max_entries(ACCESS_COUNT_SLOTS, 0);

/// Slot 0: the epoch (0 or 1) new counts go to.
#[map(name = "GO_ACCESS_EPOCH")]
static GO_ACCESS_EPOCH: Array<u32> = Array::with_max_entries(1, 0);

/// One access made by goroutine `goid` at call site `ret`, counted.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub fn count_access(
    pid: u32,
    tid: u32,
    goid: u64,
    map: u64,
    ret: u64,
    op: u8,
    probe_id: u16,
    maptype: u64,
    ts: u64,
) {
    let epoch = GO_ACCESS_EPOCH.get(0).copied().unwrap_or(0) & 1;
    let key = AccessCountKey {
        pid,
        op,
        epoch: epoch as u8,
        _pad: 0,
        goid,
        map,
        ret,
    };
    if add_one(&key, ts) {
        return;
    }
    let first = AccessCount {
        count: 1,
        first_ns: ts,
        last_ns: ts,
        maptype,
        tid,
        probe_id,
        _pad: 0,
    };
    match GO_ACCESS_COUNTS.insert(&key, &first, BPF_NOEXIST) {
        Ok(()) => {}
        // Another CPU made the entry between our lookup and insert.
        Err(e) if e == EEXIST => {
            if !add_one(&key, ts) {
                count(Counter::GoAccessCountsFull);
            }
        }
        Err(_) => count(Counter::GoAccessCountsFull),
    }
}

/// Add one access to an existing entry; false when there is none.
#[inline(always)]
fn add_one(key: &AccessCountKey, ts: u64) -> bool {
    let Some(c) = GO_ACCESS_COUNTS.get_ptr_mut(key) else {
        return false;
    };
    // One goroutine runs on one CPU at a time, but a recycled goroutine
    // id or a migrated thread can meet another CPU on the same entry: the
    // count is an atomic add. The BPF target's `core` offers no
    // `AtomicU64::fetch_add`, so the intrinsic is called; its result is
    // unused, so LLVM emits the plain `lock *(u64 *) += ` (BPF_XADD) that
    // every BPF ISA has. `last_ns` may be written by two CPUs at once;
    // either value is a recent access.
    unsafe {
        add_atomic(&raw mut (*c).count, 1);
        (*c).last_ns = ts;
    }
    true
}

#[inline(always)]
pub(crate) unsafe fn add_atomic(p: *mut u64, n: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, n) };
}
