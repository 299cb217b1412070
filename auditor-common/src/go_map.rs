//! Wire types for Go map auditing: probe cookies, per-target configuration
//! and the access/overlap records.

use crate::{EventHeader, Pod};

/// Deepest user stack a record carries.
pub const MAX_STACK: usize = 16;

/// Name of the per-target configuration array, indexed by the target's
/// slot ([`cookie::target_slot`]): every probe of a target carries its slot
/// in the attach cookie, so a hit finds its configuration without a hash
/// lookup.
pub const TARGETS_MAP: &str = "GO_TARGETS";
/// Slots of [`TARGETS_MAP`]: the most processes one loaded object audits
/// at once.
pub const TARGET_SLOTS: u32 = 1024;

/// Name of the per-goroutine "current access" array (value:
/// [`CurrentAccess`]), direct-mapped: a goroutine's record lives in the
/// slot its (process, `g` address) hashes to, overwritten in place.
pub const CURRENT_MAP: &str = "GO_CURRENT";
/// Slots of [`CURRENT_MAP`] (a power of two).
pub const CURRENT_SLOTS: u32 = 1 << 16;

/// The map access a goroutine entered last (value of [`CURRENT_MAP`]).
/// A goroutine is inside at most one map function at a time; an exit probe
/// only closes the access whose entry this record still describes.
///
/// Two goroutines whose `g` hash to the same slot overwrite each other's
/// record, possibly at the same moment on two CPUs. A record is therefore
/// trusted only when its tag (`pid`, `g`, `goid`) is the reader's own and
/// `check` is [`CurrentAccess::checksum`] of its other fields: a record
/// overwritten by another goroutine has another tag, a torn one (fields
/// of two writers) fails the check. Either way the exit or fatal-error
/// probe that wanted it makes no decision: a collision can lose a decision,
/// never produce one from someone else's entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CurrentAccess {
    /// Goroutine id (a recycled `g` carries another one).
    pub goid: u64,
    /// Address of the goroutine's `g`.
    pub g: u64,
    pub map: u64,
    /// Entry time; 0 once the access was closed by an exit probe.
    pub ts_ns: u64,
    /// Where the runtime call's return address is on the goroutine's
    /// stack (`rsp` at the map function's entry). An escalated exit probe
    /// on a call site closes this access only if its own `rsp - 8` is this
    /// slot and the slot still holds that call site's return address: the
    /// most recent call from that frame is then the call this access
    /// entered. Recorded instead of the return address itself, which costs
    /// a user-memory read at every entry.
    pub ret_slot: u64,
    /// The return address itself when the entry had it for free (a probed
    /// `call` instruction) or read it anyway; else 0.
    pub ret: u64,
    /// The map of the last iteration this goroutine started: the runtime's
    /// "concurrent map iteration" error is raised in the unprobed
    /// `mapiternext`, after other accesses may have replaced `map`.
    pub iter_map: u64,
    /// [`CurrentAccess::checksum`] of the fields above and below, XOR the
    /// target's [`GoTargetConfig::salt`]; written last.
    pub check: u64,
    pub pid: u32,
    pub probe_id: u16,
    pub op: u8,
    pub _pad: u8,
    /// The goroutine's stack bounds (`g.stack`), cached with `goid` so a
    /// hit need not read `g` from user memory (~150 ns here) every time;
    /// valid when `g_check` is [`CurrentAccess::g_checksum`] XOR
    /// [`GoTargetConfig::gcache`]. The cache lives in the same slot as the
    /// record because each array touched is one more page a hit may miss
    /// in the TLB.
    ///
    /// What is cached changes only when the goroutine exits (its `g` is
    /// then recycled for another goroutine) or its stack is copied (grown
    /// or shrunk): probes on the runtime's `goexit0` and `copystack`
    /// ([`cookie::G_CHANGE`]) clear `g_check` of the `g` they are given,
    /// and the cache is trusted only while those probes are placed
    /// (`gcache` non-zero, a fresh value each time they are placed). A
    /// colliding goroutine's entry, a torn one and one from before the
    /// probes were last placed all fail the check.
    pub stack_lo: u64,
    pub stack_hi: u64,
    pub g_check: u64,
}

impl CurrentAccess {
    /// A mix of the cached goroutine fields (`pid`, `g`, `goid`, stack
    /// bounds).
    #[inline(always)]
    pub const fn g_checksum(&self) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = self.g ^ K;
        h = (h ^ self.goid).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.stack_lo).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.stack_hi).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.pid as u64).wrapping_mul(K);
        h | 1
    }

    /// Whether the cached goroutine fields (a copy) are whole ones for `g`
    /// of `pid`, written under the cache generation `gcache` (0: off).
    #[inline(always)]
    pub const fn caches(&self, pid: u32, g: u64, gcache: u64) -> bool {
        gcache != 0 && self.pid == pid && self.g == g && self.g_check == self.g_checksum() ^ gcache
    }

    /// A mix of every field but `check`: a record assembled from two
    /// writers' fields matches it with probability about 2^-64.
    #[inline(always)]
    pub const fn checksum(&self) -> u64 {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let tail = (self.pid as u64) | ((self.probe_id as u64) << 32) | ((self.op as u64) << 48);
        let mut h = self.goid ^ K;
        h = (h ^ self.g).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.map).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.ts_ns).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.ret_slot).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.ret).wrapping_mul(K).rotate_left(29);
        h = (h ^ self.iter_map).wrapping_mul(K).rotate_left(29);
        h = (h ^ tail).wrapping_mul(K);
        // Never 0, so an all-zero slot is never a valid record.
        h | 1
    }

    /// Whether this record (a copy) is a whole one written by goroutine
    /// `goid` at `g` of process `pid`, attached with `salt`.
    #[inline(always)]
    pub const fn is_of(&self, pid: u32, g: u64, goid: u64, salt: u64) -> bool {
        self.pid == pid && self.g == g && self.goid == goid && self.check == self.checksum() ^ salt
    }
}

/// Slot of a goroutine in [`CURRENT_MAP`].
#[inline(always)]
pub const fn current_slot(pid: u32, g: u64) -> u32 {
    let h = (g ^ ((pid as u64) << 40)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 40) as u32 & (CURRENT_SLOTS - 1)
}

/// Name of the per-address owner table (an array indexed by a hash of
/// process and map address; value: [`MapOwner`]).
pub const OWNERS_MAP: &str = "GO_OWNERS";
/// Slots of [`OWNERS_MAP`] (a power of two).
pub const OWNER_SLOTS: u32 = 1 << 16;

/// The goroutine that has had a map to itself so far. Most maps (request
/// scoped, goroutine local) never see a second goroutine: they cost one
/// array slot, reused by whatever map hashes there next, and no per-map
/// state. The second goroutine to touch a map marks it `shared`, and only
/// then does the map get a [`MapState`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapOwner {
    pub map: u64,
    pub goid: u64,
    /// Entry time of the owner's last access; once shared, of the last
    /// mutation entered by `writer_goid`.
    pub ts_ns: u64,
    /// Call site (return address) of the owner's last access.
    pub ret: u64,
    /// For a mutating last access: the return address one frame further
    /// out (the call site's caller), so a writer handed over to a newly
    /// shared map is named with two frames.
    pub ret2: u64,
    pub pid: u32,
    /// The map's hash seed at the last access: a new map made at a freed
    /// map's address has another seed, so it starts unshared.
    pub seed: u32,
    pub tid: u32,
    pub probe_id: u16,
    /// [`MapOp`] of the owner's last access.
    pub op: u8,
    /// Whether a second goroutine touched the map ([`sharing`]).
    pub shared: u8,
    /// Once shared: the goroutine that last entered a mutation (0: none
    /// since the map became shared). A read of a shared map whose last
    /// writer is none or itself needs nothing from the per-map state.
    pub writer_goid: u64,
    /// Once shared: a call site (return address) whose reads of this map
    /// were already handed to userspace for an exit probe. Its next reads
    /// (entry mode, marker clear) need nothing from the per-map state or
    /// the escalation table. 0: none.
    pub escalated_ret: u64,
}

/// Values of [`MapOwner::shared`].
pub mod sharing {
    /// Only the owner has touched the map, and no shared map ever held
    /// this slot: a new map here cannot have per-map state.
    pub const NEVER: u8 = 0;
    /// A second goroutine touched the map.
    pub const SHARED: u8 = 1;
    /// The map is not shared, but a shared map held this slot before: a
    /// map taking the slot over may be one with per-map state already.
    pub const HELD_SHARED: u8 = 2;
}

/// Slot of a map in [`OWNERS_MAP`].
#[inline(always)]
pub const fn owner_slot(pid: u32, map: u64) -> u32 {
    let h = (map ^ ((pid as u64) << 32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 48) as u32 & (OWNER_SLOTS - 1)
}

/// Name of the table of call sites already escalated (key: [`SiteKey`],
/// value: hits of its exit probe when that probe is single-stepped, a
/// `u64`; see [`cookie::STEPPED`]).
pub const ESCALATED_MAP: &str = "GO_ESCALATED";

/// A call site in one process (its return address).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiteKey {
    pub pid: u32,
    pub _pad: u32,
    pub ret: u64,
}

/// Name of the table that rate-limits identical overlaps (key: [`PairKey`]).
pub const PAIRS_MAP: &str = "GO_PAIRS";
/// An identical pair (same call sites, same operations) is reported at most
/// once per this many nanoseconds; the ones in between are counted.
pub const PAIR_REPORT_INTERVAL_NS: u64 = 1_000_000_000;

/// Two call sites and their operations in one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PairKey {
    pub pid: u32,
    /// First party's op in bits 0..8, second party's in bits 8..16.
    pub ops: u32,
    pub first_ret: u64,
    pub second_ret: u64,
}

/// When a pair was last reported and how many were held back since.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairSeen {
    pub reported_ns: u64,
    pub suppressed: u64,
}

/// Name of the per-process loss counters (key: tgid, value: [`PidLosses`]).
pub const PID_LOSSES_MAP: &str = "GO_PID_LOSSES";

/// Records of one process that could not be reserved in a ring buffer, so
/// a daemon with several targets can say whose events were lost.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PidLosses {
    pub access_dropped: u64,
    pub overlap_dropped: u64,
}

/// Name of the per-map state hash map (key: [`MapKey`]).
pub const MAP_STATE_MAP: &str = "GO_MAP_STATE";

/// What a Go runtime map function does to the map.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MapOp {
    Read = 1,
    Write = 2,
    Delete = 3,
    Iterate = 4,
    Clear = 5,
    Make = 6,
}

impl MapOp {
    /// Every operation, in the order reports list them.
    pub const ALL: [MapOp; 6] = [
        Self::Read,
        Self::Write,
        Self::Delete,
        Self::Iterate,
        Self::Clear,
        Self::Make,
    ];

    pub fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Read,
            2 => Self::Write,
            3 => Self::Delete,
            4 => Self::Iterate,
            5 => Self::Clear,
            6 => Self::Make,
            _ => return None,
        })
    }

    /// Operations that change the map (and set the runtime's writing marker).
    pub const fn mutates(self) -> bool {
        matches!(self, Self::Write | Self::Delete | Self::Clear)
    }

    /// Stable lower-case name used in logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Delete => "delete",
            Self::Iterate => "iterate",
            Self::Clear => "clear",
            Self::Make => "make",
        }
    }
}

/// Probe cookie layout (one BPF program, many attachments).
///
/// bits 0..8   [`MapOp`]
/// bits 8..24  probe id (index into the userspace probe plan)
/// bit  24     [`cookie::EXIT`]
/// bit  25     [`cookie::STACKCHECK`]
/// bit  26     [`cookie::FATAL`]
/// bit  27     [`cookie::CALLSITE`]
/// bit  28     [`cookie::NESTED`]
/// bit  29     [`cookie::CALL_INSN`]
/// bits 30..32 unused (zero)
/// bits 32..40 argument register holding the map (see [`MapArg`])
/// bits 40..50 the target's slot in [`super::TARGETS_MAP`]
/// bits 50..56 unused (zero)
/// bits 56..64 with [`cookie::CALLSITE`]: how many bytes past the call's
///             return address the exit probe sits ([`cookie::exit_delta`])
pub mod cookie {
    /// The probe sits on a RET instruction: the function is leaving.
    pub const EXIT: u64 = 1 << 24;
    /// The probe sits on the `jbe` of the stack-growth check: when the branch
    /// will be taken (CF or ZF set) the function restarts after `morestack`,
    /// so this hit is skipped.
    pub const STACKCHECK: u64 = 1 << 25;
    /// The probe sits on the runtime's fatal-error function (`runtime.fatal`,
    /// `internal/runtime/maps.fatal`, or `runtime.throw` before Go 1.19):
    /// if the message is a concurrent-map error, name the other side from
    /// the per-map state before the process dies.
    pub const FATAL: u64 = 1 << 26;

    /// With [`EXIT`]: the probe sits on a call site's return address in
    /// the program's own code (the instruction after a call to a map
    /// function), placed when the kernel asked to escalate that site, or
    /// (for `make`) planned by a scoped plan to see the new map.
    pub const CALLSITE: u64 = 1 << 27;
    /// The function is also called by other map functions (Swiss
    /// `mapaccess1_*` call `mapaccess2_*`, the classic iterator calls
    /// `mapaccessK`): an entry whose return address is one of
    /// [`super::GoTargetConfig::nested_rets`] is part of the caller's
    /// access and is skipped.
    pub const NESTED: u64 = 1 << 28;
    /// The probe sits on a `call rel32` to the map function in the
    /// program's own code (`--scope`): the arguments are in registers, and
    /// the return address is the next instruction, five bytes on.
    pub const CALL_INSN: u64 = 1 << 29;
    /// The probe sits on the runtime's goroutine exit (`goexit0`) or
    /// stack copy (`copystack`), whose first argument (RAX) is the `g`
    /// concerned: its cached fields ([`super::CurrentAccess::g_check`])
    /// are dropped.
    pub const G_CHANGE: u64 = 1 << 30;
    /// With [`CALLSITE`]: an escalated exit probe on an instruction the
    /// kernel single-steps. Its hits are counted in the site's
    /// `GO_ESCALATED` entry, from which userspace chooses the share of the
    /// time the probe stays attached (`--stepped-exits sampled`).
    pub const STEPPED: u64 = 1 << 31;

    pub const fn encode(op: u8, probe_id: u16, flags: u64, map_arg: u8) -> u64 {
        (op as u64) | ((probe_id as u64) << 8) | flags | ((map_arg as u64) << 32)
    }
    /// `c` with the target's slot set.
    pub const fn with_target_slot(c: u64, slot: u32) -> u64 {
        (c & !(0x3ff << 40)) | (((slot & 0x3ff) as u64) << 40)
    }
    pub const fn target_slot(c: u64) -> u32 {
        ((c >> 40) & 0x3ff) as u32
    }
    /// `c` with the distance from the return address to the exit probe.
    pub const fn with_exit_delta(c: u64, delta: u8) -> u64 {
        (c & !(0xff << 56)) | ((delta as u64) << 56)
    }
    pub const fn exit_delta(c: u64) -> u64 {
        c >> 56
    }
    pub const fn op(c: u64) -> u8 {
        (c & 0xff) as u8
    }
    pub const fn probe_id(c: u64) -> u16 {
        ((c >> 8) & 0xffff) as u16
    }
    pub const fn map_arg(c: u64) -> u8 {
        ((c >> 32) & 0xff) as u8
    }
}

/// Where the probe finds the map pointer.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapArg {
    /// RBX: second register argument (`t *maptype, h *hmap, ...`).
    Rbx = 0,
    /// RAX: first argument (iterator functions take the iterator, makemap
    /// returns the map in RAX at its RET).
    Rax = 1,
    /// RCX: third register argument (`makemap(t, hint, h)` passes `h`).
    Rcx = 2,
    /// The map pointer is read from the iterator struct in RAX at
    /// [`GoTargetConfig::iter_map_off`].
    IterInRax = 3,
    /// No map argument known at this point (e.g. `makemap_small` entry).
    None = 4,
}

/// Overlap detection modes.
pub mod mode {
    /// Entry probes only; overlap when an access enters while the runtime's
    /// writing marker is set by another goroutine.
    pub const ENTRY: u32 = 0;
    /// Entry and RET probes; full intervals of every access are tracked.
    pub const INTERVAL: u32 = 1;
    /// Reported by the probe on the runtime's fatal error: the runtime saw
    /// the overlap itself (after our entry probe ran) and is about to exit.
    pub const RUNTIME_FATAL: u32 = 2;
    /// Decided at the exit of an escalated call site: a writer on another
    /// goroutine entered the map after this access entered and before it
    /// returned.
    pub const EXIT: u32 = 3;
}

/// What the kernel sends for each access ([`GoTargetConfig::emit_access`]).
pub mod emit {
    /// Nothing: only overlaps (quiet mode).
    pub const NONE: u32 = 0;
    /// One [`super::GoMapAccess`] record per access (`--all-accesses`).
    pub const RECORDS: u32 = 1;
    /// Counts per (goroutine, map, call site, operation) in
    /// [`super::ACCESS_COUNTS_MAP`], drained by userspace at an interval.
    pub const COUNTS: u32 = 2;
}

/// Name of the table of access counts (key: [`AccessCountKey`], value:
/// [`AccessCount`]).
pub const ACCESS_COUNTS_MAP: &str = "GO_ACCESS_COUNTS";
/// Entries of [`ACCESS_COUNTS_MAP`]: both epochs together.
pub const ACCESS_COUNT_SLOTS: u32 = 1 << 16;
/// Name of the one-slot array holding the epoch (0 or 1) new counts go to.
/// Userspace flips it, waits for programs still counting into the old
/// epoch to finish, then reads and deletes the old epoch's entries: no
/// count is read while a program can still add to it.
pub const ACCESS_EPOCH_MAP: &str = "GO_ACCESS_EPOCH";

/// What an aggregated access count is kept per.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AccessCountKey {
    pub pid: u32,
    /// [`MapOp`].
    pub op: u8,
    /// The epoch (0 or 1) the count belongs to.
    pub epoch: u8,
    pub _pad: u16,
    pub goid: u64,
    pub map: u64,
    /// Return address of the runtime call: the call site.
    pub ret: u64,
}

/// Accesses of one key within an epoch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccessCount {
    pub count: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// The map's type descriptor at the first access (0 when the function
    /// takes none).
    pub maptype: u64,
    /// Thread of the first access.
    pub tid: u32,
    pub probe_id: u16,
    pub _pad: u16,
}

/// Per-target configuration, written by userspace before attaching.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoTargetConfig {
    /// Offset of `goid` in `runtime.g`.
    pub goid_off: u32,
    /// Offset of the byte holding the writing marker in the map header.
    pub writing_off: u32,
    /// Mask applied to that byte (classic `hashWriting` = 4; Swiss: 0xff).
    pub writing_mask: u32,
    /// Offset of the map pointer in the iterator struct.
    pub iter_map_off: u32,
    /// A [`mode`] value.
    pub mode: u32,
    /// User stack frames to record (0..=[`MAX_STACK`]).
    pub stack_depth: u32,
    /// What accesses produce besides overlaps: an [`emit`] value.
    pub emit_access: u32,
    /// Offset of the map's hash seed (low 32 bits) in the map header.
    pub seed_off: u32,
    /// Non-zero: ask userspace to probe the exits of call sites that read
    /// maps another goroutine writes ([`GoEscalate`] records).
    pub escalate: u32,
    /// Non-zero: a sampling window is closed (`--max-overhead`); the probe
    /// returns right after reading this configuration, so a hit costs the
    /// trap and one hash lookup.
    pub paused: u32,
    /// Run-time return addresses of calls from one map function to another,
    /// ascending, the first [`GoTargetConfig::nested_len`] used.
    pub nested_rets: [u64; NESTED_RETS],
    /// The process this slot of [`TARGETS_MAP`] configures (0: free).
    pub pid: u32,
    /// Used entries of `nested_rets`.
    pub nested_len: u32,
    /// Mixed into every [`CurrentAccess::check`] this target writes, new
    /// at each attach: records a previous process with the same pid left
    /// behind never pass the check, without clearing the table.
    pub salt: u64,
    /// Non-zero while the goroutine-change probes ([`cookie::G_CHANGE`])
    /// are placed: the generation of cached goroutine fields in
    /// [`CURRENT_MAP`] to trust, new each time they are placed. 0: read
    /// `g` at every hit.
    pub gcache: u64,
    /// Run-time addresses of the package-level map variables of the
    /// program's own packages, the first [`GoTargetConfig::map_globals_len`]
    /// used. A finding reads them (never an access): the one holding the
    /// finding's map is named in [`GoMapOverlap::map_global`], read while
    /// the process still lives — the runtime's fatal error ends it within
    /// microseconds, before userspace could look.
    pub map_globals: [u64; MAP_GLOBALS],
    /// Used entries of `map_globals`.
    pub map_globals_len: u32,
    pub _pad_globals: u32,
}

/// Slots of [`GoTargetConfig::map_globals`]: the most package-level map
/// variables a finding looks at (one user read each). Userspace fills
/// them with the main module's first and counts the rest in the attach
/// report; a map held by one of those is still named from userspace when
/// the process is alive to be read.
pub const MAP_GLOBALS: usize = 32;

/// [`GoMapOverlap::map_global`] when no watched variable held the map.
pub const NO_MAP_GLOBAL: u32 = 0;

/// Slots of [`GoTargetConfig::nested_rets`]. Go 1.19's classic maps have
/// 30 calls from one map function to another; the rest is headroom.
pub const NESTED_RETS: usize = 48;

impl Default for GoTargetConfig {
    fn default() -> Self {
        // Written out: `Default` is not derived for arrays this long.
        // SAFETY: every field is an integer or an array of integers, for
        // which all-zero bytes are the default value.
        unsafe { core::mem::zeroed() }
    }
}

/// Key of the per-map state: a map is identified by its process and address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct MapKey {
    pub pid: u32,
    pub _pad: u32,
    pub map: u64,
}

/// One side of an access, as remembered in the kernel.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Party {
    pub ts_ns: u64,
    pub goid: u64,
    pub tid: u32,
    pub probe_id: u16,
    pub op: u8,
    pub stack_len: u8,
    /// Return addresses, innermost first; `stack[0]` is the map function's
    /// caller (the return address of the runtime call).
    pub stack: [u64; MAX_STACK],
}

impl Default for Party {
    fn default() -> Self {
        Self {
            ts_ns: 0,
            goid: 0,
            tid: 0,
            probe_id: 0,
            op: 0,
            stack_len: 0,
            stack: [0; MAX_STACK],
        }
    }
}

/// Per-map state kept in the kernel, for shared maps only.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct MapState {
    /// The last goroutine that entered a mutating operation.
    pub last_writer: Party,
    /// The last writer before `last_writer` that was another goroutine: when
    /// two writers enter in turn, the one that detects the clash is usually
    /// the later one, and the other side is this one.
    pub prev_writer: Party,
    /// Interval mode: the last goroutine that entered a non-mutating
    /// operation (a writer's exit checks whether one entered meanwhile).
    pub last_reader: Party,
    /// Hash seed the state belongs to (0: not known, e.g. after a clear,
    /// which draws a new seed).
    pub seed: u32,
    pub _pad: u32,
}

/// A call site that reads a map another goroutine writes: userspace places
/// an exit probe on its return address ([`cookie::CALLSITE`]).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoEscalate {
    pub header: EventHeader,
    pub map: u64,
    /// Return address of the runtime call (run-time address).
    pub ret: u64,
    /// Probe id of the map function called there.
    pub probe_id: u16,
    pub op: u8,
    pub _pad: [u8; 5],
}

/// A probe hit on a Go map function.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoMapAccess {
    pub header: EventHeader,
    pub map: u64,
    /// RAX at entry: the map's type descriptor (`*maptype`) for functions
    /// that take one, else 0.
    pub maptype: u64,
    pub party: Party,
    /// 1 when the hit is an exit (RET) probe.
    pub exit: u8,
    /// Raw writing-marker byte seen at entry (diagnostics).
    pub writing_seen: u8,
    pub _pad: [u8; 6],
}

/// Two goroutines inside the same map at once, at least one mutating.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct GoMapOverlap {
    pub header: EventHeader,
    pub map: u64,
    /// The party that was already inside (or last entered a write).
    pub first: Party,
    /// The party whose entry revealed the overlap.
    pub second: Party,
    /// [`mode`] in which it was detected.
    pub mode: u32,
    /// Non-zero when the runtime's writing marker was seen set.
    pub writing_seen: u32,
    /// Identical overlaps (same call sites and operations) held back in
    /// the kernel since this pair was last reported.
    pub suppressed: u32,
    /// 1 + the index in [`GoTargetConfig::map_globals`] of the variable
    /// that held `map` when the overlap was found; [`NO_MAP_GLOBAL`] when
    /// none of them did.
    pub map_global: u32,
}

unsafe impl Pod for GoMapAccess {}
unsafe impl Pod for GoMapOverlap {}
unsafe impl Pod for GoTargetConfig {}
unsafe impl Pod for MapKey {}
unsafe impl Pod for Party {}
unsafe impl Pod for CurrentAccess {}
unsafe impl Pod for PidLosses {}
unsafe impl Pod for GoEscalate {}
unsafe impl Pod for MapOwner {}
unsafe impl Pod for AccessCountKey {}
unsafe impl Pod for AccessCount {}

#[cfg(feature = "user")]
mod user {
    use super::*;
    unsafe impl aya::Pod for GoTargetConfig {}
    unsafe impl aya::Pod for MapKey {}
    unsafe impl aya::Pod for MapState {}
    unsafe impl aya::Pod for Party {}
    unsafe impl aya::Pod for CurrentAccess {}
    unsafe impl aya::Pod for PidLosses {}
    unsafe impl aya::Pod for MapOwner {}
    unsafe impl aya::Pod for SiteKey {}
    unsafe impl aya::Pod for PairKey {}
    unsafe impl aya::Pod for PairSeen {}
    unsafe impl aya::Pod for AccessCountKey {}
    unsafe impl aya::Pod for AccessCount {}
}
