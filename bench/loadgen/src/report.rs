//! The results table: medians over rounds of raw.tsv, ratios to the baseline, goals.
//!
//! raw.tsv rows: `round target metric value p50_us p99_us ok_pct`, tab-separated, or
//! `round target metric FAIL`. Metrics: the throughput ones (value in ok/s) and
//! `cold-start-ms`, `rss-rest-kb`, `rss-fill-kb:N` (after N CreateUser).
//!
//! The web rows (`CreateUser/connect-json`, `CreateUser/http-json`: CreateUser over
//! Connect's and the plain HTTP/JSON protocol) have no baseline counterpart (the
//! codegen baseline speaks gRPC only): their ratios are to the same target's gRPC
//! `CreateUser` of the same round.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::Context as _;

use crate::stats::median;

#[derive(Clone, Debug)]
struct Sample {
    value: f64,
    p50_us: f64,
    p99_us: f64,
    ok_pct: f64,
}

/// Throughput metrics in table order, with their goal (minimum ratio to the
/// baseline, and whether p99 is held to <= 1.2x too).
const THROUGHPUT: [(&str, f64, bool); 5] = [
    ("GetUser", 0.90, true),
    ("GetUser-stub", 1.00, false),
    ("CreateUser", 0.90, true),
    ("ListUsers(100)", 0.85, false),
    ("BulkCreate(100)", 0.85, false),
];
/// Web-protocol rows: metric and label, each measured against the target's own gRPC row.
const WEB: [(&str, &str); 3] = [
    ("CreateUser/connect-json", "CreateUser Connect JSON"),
    ("CreateUser/http-json", "CreateUser HTTP/JSON"),
    ("CreateUser/rest", "CreateUser REST (google.api.http)"),
];
const WEB_REFERENCE: &str = "CreateUser";
/// Rows measured against another metric of the baseline: `GetUser-stub` (GetUser
/// answered by a declarative stub) against the codegen GetUser.
const AGAINST: [(&str, &str); 1] = [("GetUser-stub", "GetUser")];
const P99_GOAL: f64 = 1.2;
const COLD_START_GOAL_MS: f64 = 50.0;
const RSS_REST_GOAL_MB: f64 = 20.0;

type Key = (String, String); // (target, metric)

pub(crate) fn render(raw: &str, baseline: &str) -> anyhow::Result<String> {
    // (target, metric) -> round -> sample (None: the round failed)
    let mut data: BTreeMap<Key, BTreeMap<u32, Option<Sample>>> = BTreeMap::new();
    let mut targets: Vec<String> = Vec::new();
    for (n, line) in raw.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        let bad = || format!("raw.tsv line {}: cannot read '{line}'", n + 1);
        anyhow::ensure!(cols.len() >= 4, bad());
        let round: u32 = cols[0].parse().with_context(bad)?;
        let target = cols[1].to_owned();
        if !targets.contains(&target) {
            targets.push(target.clone());
        }
        let sample = if cols[3] == "FAIL" {
            None
        } else {
            let num = |i: usize| cols.get(i).map_or(Ok(f64::NAN), |s| s.parse::<f64>());
            Some(Sample {
                value: num(3).with_context(bad)?,
                p50_us: num(4).with_context(bad)?,
                p99_us: num(5).with_context(bad)?,
                ok_pct: num(6).with_context(bad)?,
            })
        };
        data.entry((target, cols[2].to_owned())).or_default().insert(round, sample);
    }
    // The baseline first, then the others in the order they ran.
    targets.sort_by_key(|t| t != baseline);

    let mut metrics: Vec<(String, Row)> =
        THROUGHPUT.iter().map(|&(m, min_ratio, p99)| (m.to_owned(), Row::Throughput { min_ratio, p99 })).collect();
    metrics.extend(WEB.iter().map(|&(m, label)| (m.to_owned(), Row::Web { label })));
    metrics.push(("cold-start-ms".into(), Row::ColdStart));
    metrics.push(("rss-rest-kb".into(), Row::RssRest));
    let mut fills: Vec<&String> = data.keys().map(|(_, m)| m).filter(|m| m.starts_with("rss-fill-kb:")).collect();
    fills.sort();
    fills.dedup();
    metrics.extend(fills.into_iter().map(|m| (m.clone(), Row::RssFill)));

    let mut out = String::new();
    writeln!(
        out,
        "{:<12} {:<34} {:>10} {:>8} {:>8} {:>6} {:>6} {:>6}  goal",
        "target", "rpc / measure (unit)", "value", "p50 ms", "p99 ms", "ok%", "ratio", "p99x"
    )?;
    for (metric, kind) in &metrics {
        for target in &targets {
            let key = (target.clone(), metric.clone());
            let Some(rounds) = data.get(&key) else { continue };
            let (base, is_baseline) = match kind {
                Row::Web { .. } => (data.get(&(target.clone(), WEB_REFERENCE.to_owned())), false),
                _ => {
                    let reference = AGAINST.iter().find(|(m, _)| m == metric).map_or(metric.as_str(), |(_, r)| r);
                    (data.get(&(baseline.to_owned(), reference.to_owned())), target == baseline)
                }
            };
            writeln!(out, "{}", line(target, metric, *kind, rounds, base, is_baseline))?;
        }
    }
    Ok(out)
}

#[derive(Clone, Copy, Debug)]
enum Row {
    Throughput {
        min_ratio: f64,
        p99: bool,
    },
    /// Ratios to the target's own gRPC row, no goal.
    Web {
        label: &'static str,
    },
    ColdStart,
    RssRest,
    RssFill,
}

fn line(
    target: &str,
    metric: &str,
    kind: Row,
    rounds: &BTreeMap<u32, Option<Sample>>,
    base: Option<&BTreeMap<u32, Option<Sample>>>,
    is_baseline: bool,
) -> String {
    let ok: Vec<&Sample> = rounds.values().flatten().collect();
    let failed = rounds.values().filter(|s| s.is_none()).count();
    let med = |f: fn(&Sample) -> f64| median(&ok.iter().map(|s| f(s)).collect::<Vec<_>>());
    // Per-round ratios to the baseline (they ran back to back), then their median.
    let ratio_of = |f: fn(&Sample) -> f64| {
        let base = base?;
        let r: Vec<f64> =
            rounds.iter().filter_map(|(round, s)| Some(f(s.as_ref()?) / f(base.get(round)?.as_ref()?))).collect();
        median(&r)
    };
    let ratio = ratio_of(|s| s.value);
    let p99x = ratio_of(|s| s.p99_us);
    let (label, scale, decimals) = match kind {
        Row::Throughput { .. } if metric.contains('(') => (format!("{metric} (users/s)"), 1.0, 0),
        Row::Throughput { .. } => (format!("{metric} (req/s)"), 1.0, 0),
        Row::Web { label } => (format!("{label} (req/s)"), 1.0, 0),
        Row::ColdStart => ("cold start (ms)".to_owned(), 1.0, 1),
        Row::RssRest => ("RSS at rest (MB)".to_owned(), 1.0 / 1024.0, 1),
        Row::RssFill => {
            let n = metric.trim_start_matches("rss-fill-kb:");
            (format!("RSS after {n} CreateUser (MB)"), 1.0 / 1024.0, 1)
        }
    };
    let value = med(|s| s.value).map(|v| v * scale);
    let goal = if ok.is_empty() {
        "FAILED".to_owned()
    } else if is_baseline {
        String::new()
    } else {
        goal(kind, value, ratio, p99x)
    };
    let fmt = |v: Option<f64>, d: usize| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.d$}"));
    let is_throughput = matches!(kind, Row::Throughput { .. } | Row::Web { .. });
    let ms = |v: Option<f64>| if is_throughput { fmt(v.map(|us| us / 1e3), 2) } else { "-".into() };
    let mut s = format!(
        "{:<12} {:<34} {:>10} {:>8} {:>8} {:>6} {:>6} {:>6}  {}",
        target,
        label,
        fmt(value, decimals),
        ms(med(|s| s.p50_us)),
        ms(med(|s| s.p99_us)),
        if is_throughput { fmt(med(|s| s.ok_pct), 1) } else { "-".into() },
        fmt(ratio, 2),
        if is_throughput { fmt(p99x, 2) } else { "-".into() },
        goal
    );
    if failed > 0 && !ok.is_empty() {
        let _ = write!(s, " [{failed} of {} rounds FAILED]", rounds.len());
    }
    s.trim_end().to_owned()
}

fn goal(kind: Row, value: Option<f64>, ratio: Option<f64>, p99x: Option<f64>) -> String {
    let verdict = |pass: Option<bool>| match pass {
        Some(true) => "ok",
        Some(false) => "MISS",
        None => "?",
    };
    match kind {
        Row::Throughput { min_ratio, p99 } => {
            let mut pass = ratio.map(|r| r >= min_ratio);
            let mut text = format!(">= {min_ratio:.2}");
            if p99 {
                pass = pass.zip(p99x).map(|(a, x)| a && x <= P99_GOAL);
                text.push_str(&format!(", p99 <= {P99_GOAL}x"));
            }
            format!("{} ({text})", verdict(pass))
        }
        Row::ColdStart => format!("{} (< {COLD_START_GOAL_MS} ms)", verdict(value.map(|v| v < COLD_START_GOAL_MS))),
        Row::RssRest => format!("{} (< {RSS_REST_GOAL_MB} MB)", verdict(value.map(|v| v < RSS_REST_GOAL_MB))),
        Row::Web { .. } => format!("(ratios to its gRPC {WEB_REFERENCE})"),
        Row::RssFill => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_ratios_and_goals() {
        let raw = "\
1\tbaseline\tGetUser\t100\t500\t1000\t100
1\tdyn\tGetUser\t95\t500\t1100\t100
2\tbaseline\tGetUser\t200\t500\t1000\t100
2\tdyn\tGetUser\t160\t500\t1300\t100
3\tbaseline\tGetUser\t100\t500\t1000\t100
3\tdyn\tGetUser\tFAIL
1\tdyn\tcold-start-ms\t12.5
1\tbaseline\trss-rest-kb\t4096
1\tdyn\trss-rest-kb\t30720
";
        let table = render(raw, "baseline").unwrap();
        let dyn_get = table.lines().find(|l| l.starts_with("dyn") && l.contains("GetUser")).unwrap();
        // Ratios 0.95 and 0.80: median 0.875 < 0.90; p99x 1.1 and 1.3: median 1.2.
        assert!(dyn_get.contains("0.88"), "{dyn_get}");
        assert!(dyn_get.contains("MISS"), "{dyn_get}");
        assert!(dyn_get.contains("[1 of 3 rounds FAILED]"), "{dyn_get}");
        let cold = table.lines().find(|l| l.contains("cold start")).unwrap();
        assert!(cold.contains("12.5") && cold.contains("ok (< 50 ms)"), "{cold}");
        let rss = table.lines().find(|l| l.starts_with("dyn") && l.contains("RSS")).unwrap();
        assert!(rss.contains("30.0") && rss.contains("MISS"), "{rss}");
        // The baseline row comes first and carries no goal.
        let first = table.lines().nth(1).unwrap();
        assert!(first.starts_with("baseline") && !first.contains("ok ("), "{first}");
    }

    #[test]
    fn the_stub_row_is_a_ratio_to_the_baselines_get_user() {
        let raw = "\
1\tbaseline\tGetUser\t100\t500\t1000\t100
1\tps-stub\tGetUser-stub\t104\t500\t1000\t100
2\tbaseline\tGetUser\t200\t500\t1000\t100
2\tps-stub\tGetUser-stub\t180\t500\t1000\t100
";
        let table = render(raw, "baseline").unwrap();
        let stub = table.lines().find(|l| l.contains("GetUser-stub")).unwrap();
        // Ratios 1.04 and 0.90 to the baseline's GetUser: median 0.97 < 1.00.
        assert!(stub.starts_with("ps-stub") && stub.contains(" 0.97 ") && stub.contains("MISS (>= 1.00)"), "{stub}");
    }

    #[test]
    fn web_rows_are_ratios_to_the_targets_own_grpc_row() {
        let raw = "\
1\tbaseline\tCreateUser\t1000\t500\t1000\t100
1\tdyn\tCreateUser\t800\t500\t1000\t100
1\tdyn\tCreateUser/connect-json\t600\t500\t1500\t100
2\tbaseline\tCreateUser\t1000\t500\t1000\t100
2\tdyn\tCreateUser\t400\t500\t1000\t100
2\tdyn\tCreateUser/connect-json\t200\t500\t2000\t100
1\tdyn\tCreateUser/http-json\tFAIL
";
        let table = render(raw, "baseline").unwrap();
        let connect = table.lines().find(|l| l.contains("Connect JSON")).unwrap();
        // Per-round ratios to dyn's own CreateUser: 0.75 and 0.50, median 0.625; p99x 1.5 and 2.0.
        assert!(connect.starts_with("dyn") && connect.contains("0.62") && connect.contains("1.75"), "{connect}");
        assert!(connect.contains("ratios to its gRPC CreateUser") && !connect.contains("MISS"), "{connect}");
        let json = table.lines().find(|l| l.contains("HTTP/JSON")).unwrap();
        assert!(json.contains("FAILED"), "{json}");
        // The baseline has no web rows.
        assert!(!table.lines().any(|l| l.starts_with("baseline") && l.contains("JSON")), "{table}");
    }
}
