//! Reading the ring buffers without blocking the runtime.
//!
//! Two rings: EVENTS (every record) and FINDINGS (overlaps only, so they
//! still get through when EVENTS overflows with accesses). The reader waits
//! on both and always drains findings first. [`RingGauge`] reads how full
//! EVENTS is (for `status` and metrics) without consuming anything.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::probe::ProbeError;

/// The ring buffers, registered with tokio.
pub struct RingReader {
    events: AsyncFd<RingBuf<MapData>>,
    findings: Option<AsyncFd<RingBuf<MapData>>>,
}

fn register(ebpf: &mut Ebpf, name: &'static str) -> Result<AsyncFd<RingBuf<MapData>>, ProbeError> {
    let ring: RingBuf<MapData> = crate::probe::take_map(ebpf, name)?;
    // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring
    // buffer, so the fd stays open exactly as long as it is registered.
    unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Map {
        name,
        source: Box::new(aya::maps::MapError::IoError(std::io::Error::from(e))),
    })
}

fn drain_one(ring: &mut RingBuf<MapData>, out: &mut Vec<Bytes>, max: usize) {
    let mut n = 0;
    while n < max
        && let Some(item) = ring.next()
    {
        out.push(Bytes::copy_from_slice(&item));
        n += 1;
    }
}

/// Most access records one [`RingReader::read_batch`] hands over: a caller
/// gets back to its deadline, signals and output between batches even
/// when the ring is full and enrichment is slow.
pub const READ_BATCH_MAX: usize = 4096;

impl std::os::fd::AsRawFd for RingReader {
    /// The EVENTS ring's fd.
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.events.get_ref().as_raw_fd()
    }
}

impl RingReader {
    /// Take the ring buffer maps out of `ebpf`. Must run inside a tokio runtime.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let events = register(ebpf, auditor_common::RING_MAP)?;
        let findings = match ebpf.map(auditor_common::FINDINGS_MAP) {
            Some(_) => Some(register(ebpf, auditor_common::FINDINGS_MAP)?),
            None => None,
        };
        Ok(Self { events, findings })
    }

    /// Wait until records are available (or `timeout` passes), then append
    /// every available record to `out`, findings first. Returns how many
    /// were read.
    pub async fn read_batch(&mut self, out: &mut Vec<Bytes>, timeout: Duration) -> usize {
        let before = out.len();
        // Drain first: records may be waiting from before we registered.
        self.drain_at_most(out, READ_BATCH_MAX);
        if out.len() > before {
            return out.len() - before;
        }
        self.wait_readable(timeout).await;
        self.drain_at_most(out, READ_BATCH_MAX);
        out.len() - before
    }

    /// Wait until either ring signals records (or `timeout` passes),
    /// without reading them. Readiness is cleared before the caller drains,
    /// so a record written meanwhile wakes the next wait. Cancel-safe.
    pub async fn wait_readable(&mut self, timeout: Duration) {
        let wait = async {
            match &mut self.findings {
                Some(findings) => {
                    tokio::select! {
                        g = self.events.readable_mut() => { if let Ok(mut g) = g { g.clear_ready(); } }
                        g = findings.readable_mut() => { if let Ok(mut g) = g { g.clear_ready(); } }
                    }
                }
                None => {
                    if let Ok(mut g) = self.events.readable_mut().await {
                        g.clear_ready();
                    }
                }
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
    }

    /// Append every record available now, without waiting (findings first).
    pub fn drain(&mut self, out: &mut Vec<Bytes>) -> usize {
        self.drain_at_most(out, usize::MAX)
    }

    /// Every finding available now, and at most `max` other records.
    fn drain_at_most(&mut self, out: &mut Vec<Bytes>, max: usize) -> usize {
        let before = out.len();
        if let Some(f) = &mut self.findings {
            drain_one(f.get_mut(), out, usize::MAX);
        }
        drain_one(self.events.get_mut(), out, max);
        out.len() - before
    }
}

/// Producer and consumer positions of the ring buffer, mapped read-only.
/// aya's `RingBuf` does not expose them; the kernel allows any read-only
/// mapping of a ring buffer map (page 0: consumer, page 1: producer).
pub struct RingGauge {
    base: *mut libc::c_void,
    page: usize,
}

// SAFETY: the mapping is read-only shared memory owned by this value.
unsafe impl Send for RingGauge {}

impl RingGauge {
    pub fn map(fd: i32) -> Option<Self> {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        // SAFETY: a fresh read-only shared mapping of a BPF ring buffer fd;
        // checked for MAP_FAILED.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                2 * page,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        (base != libc::MAP_FAILED).then_some(Self { base, page })
    }

    /// Bytes written by the kernel and not yet consumed.
    pub fn used(&self) -> u64 {
        // SAFETY: both positions are naturally aligned u64s inside the
        // mapping; the kernel updates them atomically.
        unsafe {
            let cons = std::ptr::read_volatile(self.base as *const u64);
            let prod =
                std::ptr::read_volatile((self.base as *const u8).add(self.page) as *const u64);
            prod.saturating_sub(cons)
        }
    }
}

impl Drop for RingGauge {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly what `map` mapped.
        unsafe { libc::munmap(self.base, 2 * self.page) };
    }
}
