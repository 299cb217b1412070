//! Reading the event ring buffer without blocking the runtime.

use std::time::Duration;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};
use bytes::Bytes;
use tokio::io::unix::AsyncFd;

use crate::probe::ProbeError;

/// The ring buffer, registered with tokio.
pub struct RingReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records read by `wait_readable`, delivered by the next read.
    pending: Vec<Bytes>,
}

impl std::os::fd::AsRawFd for RingReader {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.fd.get_ref().as_raw_fd()
    }
}

impl RingReader {
    /// Take the ring buffer map out of `ebpf`. Must run inside a tokio runtime.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let name = auditor_common::RING_MAP;
        let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap { name })?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map { name, source })?;
        // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring
        // buffer, so the fd stays open exactly as long as it is registered.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Map {
            name,
            source: aya::maps::MapError::IoError(std::io::Error::from(e)),
        })?;
        Ok(Self {
            fd,
            pending: Vec::new(),
        })
    }

    /// Wait until records are available (or `timeout` passes), then append
    /// every available record to `out`. Returns how many were read.
    pub async fn read_batch(&mut self, out: &mut Vec<Bytes>, timeout: Duration) -> usize {
        let before = out.len();
        // Drain first: records may be waiting from before we registered.
        self.drain(out);
        if out.len() > before {
            return out.len() - before;
        }
        if let Ok(Ok(mut guard)) = tokio::time::timeout(timeout, self.fd.readable_mut()).await {
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                out.push(Bytes::copy_from_slice(&item));
            }
            guard.clear_ready();
        }
        out.len() - before
    }

    /// Wait until the ring buffer has records (or `timeout` passes),
    /// without consuming them. Cancel-safe: records stay in the ring.
    pub async fn wait_readable(&mut self, timeout: Duration) {
        if !self.pending.is_empty() {
            return;
        }
        if let Ok(Ok(mut guard)) = tokio::time::timeout(timeout, self.fd.readable_mut()).await {
            // Readiness is cleared only after the ring was emptied (else the
            // next wait could sleep over waiting records), so the records
            // are moved aside here for the next read.
            let ring = guard.get_inner_mut();
            while let Some(item) = ring.next() {
                self.pending.push(Bytes::copy_from_slice(&item));
            }
            guard.clear_ready();
        }
    }

    /// Append every record available now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Bytes>) -> usize {
        let before = out.len();
        out.append(&mut self.pending);
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            out.push(Bytes::copy_from_slice(&item));
        }
        out.len() - before
    }
}
