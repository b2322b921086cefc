//! Reads an h2load run: its summary (for counts, bytes and duration) and its
//! per-request log (for latency percentiles), and counts only good responses.
//!
//! gRPC errors are HTTP 200 too, with the status in trailers and no DATA. A good
//! response of these unary RPCs always has the same size (`ref_bytes`, measured by a
//! probe request), so good responses = DATA bytes / ref_bytes. Connect and HTTP/JSON
//! errors do carry a body, but with a non-2xx status: the count is also capped at the
//! 2xx responses.

use std::path::Path;

use anyhow::{Context as _, bail};

use crate::stats::percentile;

/// `ok_per_s p50_us p99_us ok_pct` for raw.tsv.
#[derive(Debug, PartialEq)]
pub(crate) struct H2Stats {
    pub(crate) ok_per_s: f64,
    pub(crate) p50_us: u64,
    pub(crate) p99_us: u64,
    pub(crate) ok_pct: f64,
}

impl H2Stats {
    pub(crate) fn tsv(&self) -> String {
        format!("{:.1}\t{}\t{}\t{:.2}", self.ok_per_s, self.p50_us, self.p99_us, self.ok_pct)
    }
}

pub(crate) fn from_files(summary: &Path, log: &Path, ref_bytes: u64) -> anyhow::Result<H2Stats> {
    let summary = std::fs::read_to_string(summary).with_context(|| format!("reading {}", summary.display()))?;
    let log = std::fs::read_to_string(log).with_context(|| format!("reading {}", log.display()))?;
    parse(&summary, &log, ref_bytes)
}

pub(crate) fn parse(summary: &str, log: &str, ref_bytes: u64) -> anyhow::Result<H2Stats> {
    anyhow::ensure!(ref_bytes > 0, "the size of a good response must be > 0");
    let line = |prefix: &str| {
        summary
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .with_context(|| format!("h2load output has no '{prefix}' line"))
    };
    // "finished in 5.00s, 1234.00 req/s, 1.2MB/s"
    let finished = line("finished in ")?;
    let secs = finished["finished in ".len()..]
        .split(',')
        .next()
        .and_then(parse_duration_secs)
        .with_context(|| format!("cannot read the duration in '{finished}'"))?;
    // "requests: 10 total, 10 started, 10 done, 9 succeeded, 1 failed, 0 errored, 0 timeout"
    let succeeded = count_before(line("requests:")?, "succeeded")?;
    // "traffic: 1.2MB (1234) total, 300B (300) headers (space savings 90%), 900B (900) data"
    let data_bytes = line("traffic:")?
        .split(',')
        .find(|part| part.trim_end().ends_with("data"))
        .and_then(|part| {
            let open = part.find('(')?;
            let close = part.find(')')?;
            part[open + 1..close].parse::<u64>().ok()
        })
        .context("cannot read the DATA byte count in h2load's traffic line")?;
    // "status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx"
    let status_2xx = count_before(line("status codes:")?, "2xx")?;
    if secs <= 0.0 {
        bail!("h2load measured for {secs}s");
    }
    let ok = (data_bytes / ref_bytes).min(succeeded).min(status_2xx);
    let mut latencies: Vec<u64> = log
        .lines()
        .filter_map(|l| {
            let mut cols = l.split('\t');
            let _start = cols.next()?;
            let status = cols.next()?;
            let micros = cols.next()?.trim().parse().ok()?;
            (status == "200").then_some(micros)
        })
        .collect();
    latencies.sort_unstable();
    Ok(H2Stats {
        ok_per_s: ok as f64 / secs,
        p50_us: percentile(&latencies, 0.50),
        p99_us: percentile(&latencies, 0.99),
        ok_pct: if succeeded > 0 { 100.0 * ok as f64 / succeeded as f64 } else { 0.0 },
    })
}

/// "5.00s", "500.12ms", "1m" style h2load durations, in seconds.
fn parse_duration_secs(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        return None;
    };
    num.parse::<f64>().ok().map(|n| n * scale)
}

/// The number just before `word` in a comma-separated h2load line.
fn count_before(line: &str, word: &str) -> anyhow::Result<u64> {
    line.split([',', ':'])
        .map(str::trim)
        .find_map(|part| part.strip_suffix(word)?.trim().parse().ok())
        .with_context(|| format!("no '{word}' count in '{line}'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUMMARY: &str = "\
finished in 2.00s, 50.00 req/s, 1.00KB/s
requests: 100 total, 100 started, 100 done, 100 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 100 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 12.00KB (12288) total, 4.00KB (4096) headers (space savings 90.00%), 2.00KB (2000) data
";

    #[test]
    fn counts_only_full_responses() {
        let log = "1\t200\t100\n2\t200\t300\n3\t200\t200\n";
        // 2000 DATA bytes of 40-byte responses: 50 of the 100 were good.
        let s = parse(SUMMARY, log, 40).unwrap();
        assert_eq!(s.ok_per_s, 25.0);
        assert_eq!(s.ok_pct, 50.0);
        assert_eq!((s.p50_us, s.p99_us), (200, 300));
        // A response size that divides the bytes into more than succeeded is capped.
        assert_eq!(parse(SUMMARY, log, 1).unwrap().ok_pct, 100.0);
    }

    #[test]
    fn error_bodies_with_a_non_2xx_status_are_not_counted() {
        // A Connect/JSON run: 100 done, 30 of them 4xx error bodies.
        let summary = SUMMARY.replace("100 2xx, 0 3xx, 0 4xx", "70 2xx, 0 3xx, 30 4xx");
        let s = parse(&summary, "1\t200\t100\n", 1).unwrap();
        assert_eq!(s.ok_pct, 70.0);
        assert!(parse(&SUMMARY.replace("status codes", "codes"), "", 40).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_secs("5.00s"), Some(5.0));
        assert_eq!(parse_duration_secs("250.00ms"), Some(0.25));
        assert_eq!(parse_duration_secs("abc"), None);
    }
}
