//! Running `wrk` and reading its report.

use std::process::Command;

use anyhow::{Context as _, Result, bail};

use crate::process;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrkResult {
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p99_ms: f64,
    /// Connect/read/write/timeout errors and non-2xx answers (reported in
    /// the table: a slow answer under load is a result, not a failure).
    pub errors: u64,
}

/// Load `url` for `seconds` from `cpu` with `connections` connections.
pub fn run(url: &str, seconds: u32, connections: u32, cpu: usize) -> Result<WrkResult> {
    let out = process::output(
        Command::new("taskset")
            .arg("-c")
            .arg(cpu.to_string())
            // A loaded machine answers slowly: count a request as failed
            // only after 10 s, not wrk's default 2 s.
            .args(["wrk", "-t1", "--latency", "--timeout", "10s"])
            .arg(format!("-c{connections}"))
            .arg(format!("-d{seconds}s"))
            .arg(url),
    )?;
    parse(&out).with_context(|| format!("unexpected wrk output:\n{out}"))
}

fn parse(out: &str) -> Result<WrkResult> {
    let mut requests = None;
    let mut rps = None;
    let mut p99 = None;
    let mut errors = 0;
    let mut in_distribution = false;
    for line in out.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
        } else if in_distribution && let Some(v) = line.strip_prefix("99%") {
            p99 = Some(duration_ms(v.trim())?);
            in_distribution = false;
        } else if let Some(v) = line.strip_prefix("Requests/sec:") {
            rps = Some(v.trim().parse::<f64>()?);
        } else if line.contains(" requests in ") {
            requests = Some(
                line.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .parse::<u64>()?,
            );
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            errors += v
                .split(',')
                .filter_map(|p| p.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>()?;
        }
    }
    let (Some(requests), Some(requests_per_sec), Some(p99_ms)) = (requests, rps, p99) else {
        bail!("no request count, rate or 99th percentile");
    };
    Ok(WrkResult {
        requests,
        requests_per_sec,
        p99_ms,
        errors,
    })
}

/// wrk prints durations as `812.00us`, `4.61ms` or `1.02s`.
fn duration_ms(v: &str) -> Result<f64> {
    let (num, scale) = if let Some(n) = v.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = v.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = v.strip_suffix('m') {
        (n, 60_000.0)
    } else if let Some(n) = v.strip_suffix('s') {
        (n, 1000.0)
    } else {
        bail!("duration without unit: {v}");
    };
    Ok(num
        .parse::<f64>()
        .with_context(|| format!("duration {v}"))?
        * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 3s test @ http://127.0.0.1:42123/item
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     9.67ms   11.99ms  67.07ms   84.37%
    Req/Sec     2.98k     2.69k    8.86k    79.31%
  Latency Distribution
     50%    4.61ms
     75%   14.36ms
     90%   27.74ms
     99%  950.33us
  8946 requests in 3.10s, 2.36MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 4
Requests/sec:   2882.18
Transfer/sec:    779.30KB
";

    #[test]
    fn report_parses_rate_tail_latency_and_errors() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests, 8946);
        assert_eq!(r.requests_per_sec, 2882.18);
        assert!((r.p99_ms - 0.95033).abs() < 1e-9);
        assert_eq!(r.errors, 7);
    }

    #[test]
    fn report_without_distribution_is_an_error() {
        assert!(parse("Requests/sec: 5\n").is_err());
    }
}
