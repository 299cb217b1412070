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
}

impl RingReader {
    /// Take the ring buffer map out of `ebpf`. Must run inside a tokio runtime.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, ProbeError> {
        let name = auditor_common::RING_MAP;
        let map = ebpf.take_map(name).ok_or(ProbeError::MissingMap { name })?;
        let ring = RingBuf::try_from(map).map_err(|source| ProbeError::Map {
            name,
            source: Box::new(source),
        })?;
        // SAFETY: the ring buffer owns its fd and AsyncFd owns the ring
        // buffer, so the fd stays open exactly as long as it is registered.
        let fd = unsafe { AsyncFd::register(ring) }.map_err(|e| ProbeError::Map {
            name,
            source: Box::new(aya::maps::MapError::IoError(std::io::Error::from(e))),
        })?;
        Ok(Self { fd })
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

    /// Append every record available now, without waiting.
    pub fn drain(&mut self, out: &mut Vec<Bytes>) -> usize {
        let before = out.len();
        let ring = self.fd.get_mut();
        while let Some(item) = ring.next() {
            out.push(Bytes::copy_from_slice(&item));
        }
        out.len() - before
    }
}
