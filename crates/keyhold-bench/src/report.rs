//! Results: latency histograms and error counts gathered by each connection, and the report
//! built from them, as text for people or JSON for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::workload::Operation;

/// Largest latency the histograms hold, in microseconds; longer ones are recorded as this.
const MAX_LATENCY_US: u64 = 600_000_000;

/// Significant decimal digits the histograms keep, so values are within 0.1 %.
const SIGNIFICANT_DIGITS: u8 = 3;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .unwrap_or_else(|_| unreachable!("the bounds are constants that hdrhistogram accepts"))
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Latencies and outcomes of one operation.
#[derive(Debug, Clone)]
struct OperationStats {
    latency: Histogram<u64>,
    succeeded: u64,
    errors: BTreeMap<String, u64>,
}

/// Measurements of one connection, merged across connections at the end of a run.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    operations: [OperationStats; 4],
    send_delay: Histogram<u64>,
    not_sent: u64,
}

impl Default for Stats {
    fn default() -> Self {
        let operation = || OperationStats {
            latency: new_histogram(),
            succeeded: 0,
            errors: BTreeMap::new(),
        };
        Self {
            operations: [operation(), operation(), operation(), operation()],
            send_delay: new_histogram(),
            not_sent: 0,
        }
    }
}

impl Stats {
    /// Records a sent request: its latency and, if it failed, the error name.
    pub(crate) fn record(&mut self, op: Operation, latency: Duration, error: Option<&str>) {
        let stats = &mut self.operations[op.index()];
        stats.latency.saturating_record(micros(latency).max(1));
        match error {
            None => stats.succeeded += 1,
            Some(name) => *stats.errors.entry(name.to_owned()).or_insert(0) += 1,
        }
    }

    /// Records how long after its due time an open-loop request was sent.
    pub(crate) fn record_send_delay(&mut self, delay: Duration) {
        self.send_delay.saturating_record(micros(delay).max(1));
    }

    /// Counts an open-loop request that was due but never sent before the run ended.
    pub(crate) fn record_not_sent(&mut self) {
        self.not_sent += 1;
    }

    /// Adds another connection's results.
    pub(crate) fn merge(&mut self, other: &Stats) {
        for (mine, theirs) in self.operations.iter_mut().zip(&other.operations) {
            // Both histograms have the same bounds, so adding cannot fail.
            let _ = mine.latency.add(&theirs.latency);
            mine.succeeded += theirs.succeeded;
            for (name, count) in &theirs.errors {
                *mine.errors.entry(name.clone()).or_insert(0) += count;
            }
        }
        let _ = self.send_delay.add(&other.send_delay);
        self.not_sent += other.not_sent;
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub(crate) struct Percentiles {
    /// Median.
    pub(crate) p50: u64,
    /// 90th percentile.
    pub(crate) p90: u64,
    /// 99th percentile.
    pub(crate) p99: u64,
    /// 99.9th percentile.
    #[serde(rename = "p99.9")]
    pub(crate) p99_9: u64,
    /// Largest value.
    pub(crate) max: u64,
    /// Arithmetic mean.
    pub(crate) mean: f64,
}

impl Percentiles {
    fn of(histogram: &Histogram<u64>) -> Self {
        Self {
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p99_9: histogram.value_at_quantile(0.999),
            max: histogram.max(),
            mean: (histogram.mean() * 10.0).round() / 10.0,
        }
    }
}

/// The run's settings, repeated in the report so a saved JSON file explains itself.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RunSettings {
    /// First base URL, kept for readers of reports from before `urls`.
    pub(crate) url: String,
    /// Every base URL. Connection i went to URL i mod N.
    pub(crate) urls: Vec<String>,
    /// `XksProxyUriPath`.
    pub(crate) uri_path: String,
    /// Operations with weights.
    pub(crate) operations: String,
    /// Requests per second in open loop; `None` in closed loop.
    pub(crate) rate: Option<f64>,
    /// Number of connections.
    pub(crate) connections: usize,
    /// Encrypt plaintext size in bytes.
    pub(crate) plaintext_size: usize,
    /// AAD size in bytes.
    pub(crate) aad_size: usize,
    /// Whether encrypt requests the integrity value.
    pub(crate) integrity_value: bool,
    /// Unmeasured warm-up, seconds.
    pub(crate) warmup_seconds: f64,
    /// Requested measured duration, seconds.
    pub(crate) duration_seconds: f64,
}

/// Server CPU use during the measured part of the run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServerCpu {
    /// The first server process id, kept for readers of reports from before `pids`.
    pub(crate) pid: u32,
    /// Every server process id whose CPU time is counted.
    pub(crate) pids: Vec<u32>,
    /// utime + stime used by all of them, seconds.
    pub(crate) cpu_seconds: f64,
    /// CPU seconds per elapsed second, in percent of one CPU.
    pub(crate) percent_of_one_cpu: f64,
    /// CPU microseconds per request sent.
    pub(crate) us_per_request: f64,
}

/// Results of one operation in a mix.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct OperationReport {
    /// Operation name.
    pub(crate) operation: &'static str,
    /// Successful requests.
    pub(crate) succeeded: u64,
    /// Failed requests.
    pub(crate) failed: u64,
    /// Latency of every sent request of this operation.
    pub(crate) latency_us: Percentiles,
}

/// The report of a run.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    /// The settings.
    pub(crate) settings: RunSettings,
    /// Measured time, from the end of the warm-up until the last response, seconds.
    pub(crate) elapsed_seconds: f64,
    /// Requests sent in the measured time.
    pub(crate) requests: u64,
    /// Requests that got HTTP 200.
    pub(crate) succeeded: u64,
    /// Requests that got an error response, timed out or lost their connection.
    pub(crate) failed: u64,
    /// Open loop: requests that were due but never sent because every connection stayed busy.
    pub(crate) not_sent: u64,
    /// Successful requests per second.
    pub(crate) throughput: f64,
    /// Latency of every sent request, from its due time in open loop and from its send time
    /// in closed loop.
    pub(crate) latency_us: Percentiles,
    /// Open loop: delay between the due time and the actual send.
    pub(crate) send_delay_us: Option<Percentiles>,
    /// Failed requests by XKS `errorName`, or `HTTP <status>`, `Timeout`, `ConnectionError`.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Per-operation results when more than one operation was sent.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) operations: Vec<OperationReport>,
    /// Server CPU use, with `--server-pid`.
    pub(crate) server_cpu: Option<ServerCpu>,
    /// Load generator CPU use, in percent of one CPU.
    pub(crate) generator_cpu_percent: Option<f64>,
}

/// Everything a run measured, before it is turned into a report.
#[derive(Debug)]
pub(crate) struct Measurement {
    /// Merged results of every connection.
    pub(crate) stats: Stats,
    /// Measured time.
    pub(crate) elapsed: Duration,
    /// Server pids and their total CPU time over the measured time.
    pub(crate) server_cpu: Option<(Vec<u32>, Duration)>,
    /// The generator's CPU time over the measured time.
    pub(crate) generator_cpu: Option<Duration>,
}

impl Report {
    /// Builds the report; per-operation rows are included when `mixed` is set.
    pub(crate) fn new(settings: RunSettings, measurement: &Measurement, mixed: bool) -> Self {
        let stats = &measurement.stats;
        let mut latency = new_histogram();
        let mut errors = BTreeMap::new();
        let mut operations = Vec::new();
        let mut succeeded = 0;
        for op in Operation::ALL {
            let op_stats = &stats.operations[op.index()];
            let _ = latency.add(&op_stats.latency);
            succeeded += op_stats.succeeded;
            for (name, count) in &op_stats.errors {
                *errors.entry(name.clone()).or_insert(0) += count;
            }
            if mixed && !op_stats.latency.is_empty() {
                operations.push(OperationReport {
                    operation: op.as_str(),
                    succeeded: op_stats.succeeded,
                    failed: op_stats.errors.values().sum(),
                    latency_us: Percentiles::of(&op_stats.latency),
                });
            }
        }
        let requests = latency.len();
        let elapsed = measurement.elapsed.as_secs_f64().max(f64::MIN_POSITIVE);
        #[allow(clippy::cast_precision_loss)]
        let per_second = |count: u64| count as f64 / elapsed;
        #[allow(clippy::cast_precision_loss)]
        let sent = requests.max(1) as f64;
        let server_cpu = measurement
            .server_cpu
            .as_ref()
            .map(|(pids, cpu)| ServerCpu {
                pid: pids.first().copied().unwrap_or_default(),
                pids: pids.clone(),
                cpu_seconds: round(cpu.as_secs_f64(), 3),
                percent_of_one_cpu: round(cpu.as_secs_f64() / elapsed * 100.0, 1),
                us_per_request: round(cpu.as_secs_f64() * 1e6 / sent, 2),
            });
        Self {
            send_delay_us: settings
                .rate
                .is_some()
                .then(|| Percentiles::of(&stats.send_delay)),
            settings,
            elapsed_seconds: round(elapsed, 3),
            requests,
            succeeded,
            failed: requests - succeeded,
            not_sent: stats.not_sent,
            throughput: round(per_second(succeeded), 1),
            latency_us: Percentiles::of(&latency),
            errors,
            operations,
            server_cpu,
            generator_cpu_percent: measurement
                .generator_cpu
                .map(|cpu| round(cpu.as_secs_f64() / elapsed * 100.0, 1)),
        }
    }

    /// Renders the report for people.
    pub(crate) fn to_text(&self) -> String {
        let settings = &self.settings;
        let mut text = String::new();
        let mode = match settings.rate {
            Some(rate) => format!("open loop at {rate} requests/s"),
            None => "closed loop".to_owned(),
        };
        let aad = match settings.aad_size {
            0 => "no AAD".to_owned(),
            size => format!("{size}-byte AAD"),
        };
        let integrity = if settings.integrity_value {
            "integrity value"
        } else {
            "no integrity value"
        };
        let target = if settings.urls.len() > 1 {
            format!("{} on {} URLs", settings.uri_path, settings.urls.len())
        } else {
            format!("{}{}", settings.url, settings.uri_path)
        };
        let _ = writeln!(
            text,
            "{target}: {mode}, {} connections, {} ({}-byte plaintext, {aad}, {integrity})",
            settings.connections, settings.operations, settings.plaintext_size,
        );
        if settings.urls.len() > 1 {
            let _ = writeln!(
                text,
                "URLs         {}; connection i goes to URL i mod {}",
                settings.urls.join(", "),
                settings.urls.len()
            );
        }
        let _ = writeln!(
            text,
            "measured     {:.2} s after a {:.2} s warm-up",
            self.elapsed_seconds, settings.warmup_seconds
        );
        let _ = writeln!(
            text,
            "requests     {} sent, {} succeeded, {} failed",
            self.requests, self.succeeded, self.failed
        );
        let _ = writeln!(text, "throughput   {:.1} requests/s", self.throughput);
        let origin = if settings.rate.is_some() {
            "from due time"
        } else {
            "from send time"
        };
        let _ = writeln!(
            text,
            "latency      {} ({origin})",
            percentiles_line(&self.latency_us)
        );
        if let Some(delay) = &self.send_delay_us {
            let _ = writeln!(text, "send delay   {}", percentiles_line(delay));
        }
        for op in &self.operations {
            let _ = writeln!(
                text,
                "  {:<10} {} succeeded, {} failed, {}",
                op.operation,
                op.succeeded,
                op.failed,
                percentiles_line(&op.latency_us)
            );
        }
        if let Some(cpu) = &self.server_cpu {
            let pids: Vec<String> = cpu.pids.iter().map(u32::to_string).collect();
            let label = if pids.len() == 1 { "PID" } else { "PIDs" };
            let _ = writeln!(
                text,
                "server CPU   {:.1} µs per request ({label} {}: {:.2} s CPU, {:.1} % of one CPU)",
                cpu.us_per_request,
                pids.join(", "),
                cpu.cpu_seconds,
                cpu.percent_of_one_cpu
            );
        }
        if let Some(percent) = self.generator_cpu_percent {
            let _ = writeln!(text, "generator    {percent:.1} % of one CPU");
        }
        if self.not_sent > 0 {
            let _ = writeln!(
                text,
                "not sent     {} requests were due but every connection stayed busy",
                self.not_sent
            );
        }
        if self.errors.is_empty() {
            let _ = writeln!(text, "errors       none");
        } else {
            let list: Vec<String> = self
                .errors
                .iter()
                .map(|(name, count)| format!("{name} {count}"))
                .collect();
            let _ = writeln!(text, "errors       {}", list.join(", "));
        }
        text
    }
}

fn percentiles_line(p: &Percentiles) -> String {
    format!(
        "p50 {} µs  p90 {} µs  p99 {} µs  p99.9 {} µs  max {} µs  mean {:.1} µs",
        p.p50, p.p90, p.p99, p.p99_9, p.max, p.mean
    )
}

fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(rate: Option<f64>) -> RunSettings {
        RunSettings {
            url: "https://localhost:8443".to_owned(),
            urls: vec!["https://localhost:8443".to_owned()],
            uri_path: "/domains/acme/kms/xks/v1".to_owned(),
            operations: "encrypt".to_owned(),
            rate,
            connections: 16,
            plaintext_size: 32,
            aad_size: 0,
            integrity_value: true,
            warmup_seconds: 1.0,
            duration_seconds: 2.0,
        }
    }

    /// Stats with encrypt latencies of 1 to 1,000 µs, the last ten of them failed.
    fn stats_one_to_thousand() -> Stats {
        let mut stats = Stats::default();
        for us in 1..=1000 {
            let error = (us > 990).then_some("ThrottlingException");
            stats.record(Operation::Encrypt, Duration::from_micros(us), error);
        }
        stats
    }

    fn measurement(stats: Stats) -> Measurement {
        Measurement {
            stats,
            elapsed: Duration::from_secs(2),
            server_cpu: Some((vec![4242], Duration::from_millis(50))),
            generator_cpu: Some(Duration::from_millis(500)),
        }
    }

    #[test]
    fn percentiles_of_known_latencies() {
        let report = Report::new(settings(None), &measurement(stats_one_to_thousand()), false);
        let expected = Percentiles {
            p50: 500,
            p90: 900,
            p99: 990,
            p99_9: 999,
            max: 1000,
            mean: 500.5,
        };
        assert_eq!(report.latency_us, expected);
    }

    #[test]
    fn report_counts_throughput_and_cpu() {
        let report = Report::new(settings(None), &measurement(stats_one_to_thousand()), false);
        assert_eq!(report.requests, 1000);
        assert_eq!(report.succeeded, 990);
        assert_eq!(report.failed, 10);
        assert!((report.throughput - 495.0).abs() < 1e-9);
        assert_eq!(report.errors.get("ThrottlingException"), Some(&10));
        let cpu = report.server_cpu.expect("server CPU");
        assert!(
            (cpu.us_per_request - 50.0).abs() < 1e-9,
            "{}",
            cpu.us_per_request
        );
        assert!((cpu.percent_of_one_cpu - 2.5).abs() < 1e-9);
        assert_eq!(report.generator_cpu_percent, Some(25.0));
        assert!(report.send_delay_us.is_none());
    }

    #[test]
    fn text_report_lists_percentiles_and_errors() {
        let report = Report::new(settings(None), &measurement(stats_one_to_thousand()), false);
        let text = report.to_text();
        assert!(
            text.contains("p50 500 µs  p90 900 µs  p99 990 µs  p99.9 999 µs  max 1000 µs"),
            "{text}"
        );
        assert!(text.contains("throughput   495.0 requests/s"), "{text}");
        assert!(
            text.contains("errors       ThrottlingException 10"),
            "{text}"
        );
        assert!(text.contains("50.0 µs per request (PID 4242"), "{text}");
        assert!(
            text.contains("closed loop, 16 connections, encrypt"),
            "{text}"
        );
    }

    #[test]
    fn json_report_uses_stable_names() {
        let report = Report::new(
            settings(Some(1800.0)),
            &measurement(stats_one_to_thousand()),
            false,
        );
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["latency_us"]["p99.9"], 999);
        assert_eq!(json["errors"]["ThrottlingException"], 10);
        assert_eq!(json["settings"]["rate"], 1800.0);
        assert!(json["send_delay_us"].is_object());
        assert!(json.get("operations").is_none());
    }

    #[test]
    fn report_lists_every_url_and_pid() {
        let mut settings = settings(None);
        settings.urls = vec![
            "https://localhost:8443".to_owned(),
            "https://localhost:8444".to_owned(),
        ];
        let mut measurement = measurement(stats_one_to_thousand());
        measurement.server_cpu = Some((vec![4242, 4243], Duration::from_millis(80)));
        let report = Report::new(settings, &measurement, false);

        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["settings"]["url"], "https://localhost:8443");
        assert_eq!(
            json["settings"]["urls"],
            serde_json::json!(["https://localhost:8443", "https://localhost:8444"])
        );
        assert_eq!(json["server_cpu"]["pid"], 4242);
        assert_eq!(json["server_cpu"]["pids"], serde_json::json!([4242, 4243]));
        assert_eq!(json["server_cpu"]["us_per_request"], 80.0);

        let text = report.to_text();
        assert!(
            text.contains("/domains/acme/kms/xks/v1 on 2 URLs: closed loop"),
            "{text}"
        );
        assert!(
            text.contains(
                "URLs         https://localhost:8443, https://localhost:8444; connection i goes \
                 to URL i mod 2"
            ),
            "{text}"
        );
        assert!(text.contains("(PIDs 4242, 4243: 0.08 s CPU"), "{text}");
    }

    #[test]
    fn merge_adds_connections() {
        let mut total = stats_one_to_thousand();
        let mut other = Stats::default();
        other.record(Operation::Health, Duration::from_micros(5000), None);
        other.record(Operation::Health, Duration::from_secs(1), Some("Timeout"));
        other.record_not_sent();
        total.merge(&other);
        let report = Report::new(settings(None), &measurement(total), true);
        assert_eq!(report.requests, 1002);
        assert_eq!(report.not_sent, 1);
        // hdrhistogram keeps three significant digits, so 1 s reads back within 0.1 %.
        assert!((1_000_000..1_001_000).contains(&report.latency_us.max));
        let names: Vec<&str> = report.operations.iter().map(|op| op.operation).collect();
        assert_eq!(names, ["health", "encrypt"]);
        assert_eq!(report.operations[0].failed, 1);
    }
}
