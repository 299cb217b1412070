//! Kernel timestamps are CLOCK_MONOTONIC; logs want wall-clock time.

/// Offset between CLOCK_REALTIME and CLOCK_MONOTONIC, taken once.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

fn now_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    pub fn new() -> Self {
        let mono = now_ns(libc::CLOCK_MONOTONIC);
        let real = now_ns(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// Unix-epoch nanoseconds for a kernel `bpf_ktime_get_ns()` value.
    pub fn to_unix_ns(&self, mono_ns: u64) -> u64 {
        (mono_ns as i128 + self.offset_ns).max(0) as u64
    }

    /// Unix-epoch nanoseconds now.
    pub fn now_unix_ns(&self) -> u64 {
        self.to_unix_ns(now_ns(libc::CLOCK_MONOTONIC) as u64)
    }
}

impl Default for WallClock {
    fn default() -> Self {
        Self::new()
    }
}
