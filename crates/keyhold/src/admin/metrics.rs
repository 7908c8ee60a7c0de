//! Prometheus metrics: counters and latency histograms the XKS listener updates, rendered in
//! the Prometheus text exposition format.
//!
//! Counters are atomics found through read-mostly maps keyed by borrowed or static strings, so
//! the request path takes shared locks, allocates nothing and does one atomic add; a new label
//! combination takes a write lock once.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

/// Upper bounds of the latency histogram buckets, in seconds.
const LATENCY_BUCKETS: [f64; 12] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Request counters of one domain by operation and result.
type DomainCounters = RwLock<BTreeMap<(&'static str, &'static str), Arc<AtomicU64>>>;

/// Metrics of one node.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: RwLock<BTreeMap<String, Arc<DomainCounters>>>,
    latency: RwLock<BTreeMap<&'static str, Arc<Histogram>>>,
    throttled: RwLock<BTreeMap<String, Arc<AtomicU64>>>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

/// Point-in-time values the renderer reads from the rest of the node.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// Seconds since the in-memory snapshot was last confirmed current.
    pub cache_age_secs: f64,
    /// Whether the store could be read at the last poll.
    pub storage_up: bool,
    /// Whether the HSM passed its last deep check; `None` without an HSM.
    pub hsm_up: Option<bool>,
    /// Whether the audit writer can write.
    pub audit_writable: bool,
    /// Audit records written.
    pub audit_written: u64,
    /// Audit records lost.
    pub audit_dropped: u64,
    /// Nodes known to be serving.
    pub nodes: u64,
}

impl Metrics {
    /// Counts one finished XKS request and its latency.
    pub fn observe_request(
        &self,
        domain: &str,
        operation: &'static str,
        result: &'static str,
        latency: Duration,
    ) {
        let found = read(&self.requests).get(domain).cloned();
        let domain_counters = found.unwrap_or_else(|| {
            let mut map = self
                .requests
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            map.entry(domain.to_owned()).or_default().clone()
        });
        counter(&domain_counters, (operation, result)).fetch_add(1, Ordering::Relaxed);
        let histogram = {
            let map = self.latency.read().unwrap_or_else(PoisonError::into_inner);
            map.get(operation).cloned()
        };
        let histogram = histogram.unwrap_or_else(|| {
            let mut map = self.latency.write().unwrap_or_else(PoisonError::into_inner);
            map.entry(operation).or_default().clone()
        });
        histogram.observe(latency);
    }

    /// Counts one request rejected with `ThrottlingException`.
    pub fn observe_throttled(&self, domain: &str) {
        let found = read(&self.throttled).get(domain).cloned();
        let value = found.unwrap_or_else(|| counter(&self.throttled, domain.to_owned()));
        value.fetch_add(1, Ordering::Relaxed);
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self, gauges: &Gauges) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str(
            "# HELP keyhold_xks_requests_total XKS requests by domain, operation and result.\n",
        );
        out.push_str("# TYPE keyhold_xks_requests_total counter\n");
        for (domain, counters) in read(&self.requests).iter() {
            for ((operation, result), value) in read(counters).iter() {
                let _ = writeln!(
                    out,
                    "keyhold_xks_requests_total{{domain=\"{}\",operation=\"{operation}\",result=\"{result}\"}} {}",
                    escape(domain),
                    value.load(Ordering::Relaxed)
                );
            }
        }

        out.push_str("# HELP keyhold_xks_request_duration_seconds Time to answer XKS requests.\n");
        out.push_str("# TYPE keyhold_xks_request_duration_seconds histogram\n");
        for (operation, histogram) in read(&self.latency).iter() {
            histogram.render(operation, &mut out);
        }

        out.push_str(
            "# HELP keyhold_xks_throttled_total Requests rejected with ThrottlingException.\n",
        );
        out.push_str("# TYPE keyhold_xks_throttled_total counter\n");
        for (domain, value) in read(&self.throttled).iter() {
            let _ = writeln!(
                out,
                "keyhold_xks_throttled_total{{domain=\"{}\"}} {}",
                escape(domain),
                value.load(Ordering::Relaxed)
            );
        }

        let flag = |up: bool| u8::from(up);
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            "keyhold_cache_age_seconds",
            "Seconds since the in-memory key cache was last confirmed current.",
            format!("{:.3}", gauges.cache_age_secs),
        );
        gauge(
            "keyhold_storage_up",
            "1 when the store can be read.",
            flag(gauges.storage_up).to_string(),
        );
        if let Some(hsm_up) = gauges.hsm_up {
            gauge(
                "keyhold_hsm_up",
                "1 when the HSM passed its last deep check.",
                flag(hsm_up).to_string(),
            );
        }
        gauge(
            "keyhold_audit_writable",
            "1 when the audit log can be written.",
            flag(gauges.audit_writable).to_string(),
        );
        gauge(
            "keyhold_audit_records_written",
            "Audit records written.",
            gauges.audit_written.to_string(),
        );
        gauge(
            "keyhold_audit_records_dropped",
            "Audit records lost.",
            gauges.audit_dropped.to_string(),
        );
        gauge(
            "keyhold_nodes",
            "Nodes serving the XKS API.",
            gauges.nodes.to_string(),
        );
        out
    }
}

impl Histogram {
    fn observe(&self, latency: Duration) {
        let seconds = latency.as_secs_f64();
        if let Some(index) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, operation: &str, out: &mut String) {
        let name = "keyhold_xks_request_duration_seconds";
        let mut cumulative = 0;
        for (bound, bucket) in LATENCY_BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "{name}_bucket{{operation=\"{operation}\",le=\"{bound}\"}} {cumulative}"
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "{name}_bucket{{operation=\"{operation}\",le=\"+Inf\"}} {count}"
        );
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{operation=\"{operation}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{operation=\"{operation}\"}} {count}");
    }
}

fn counter<K: Ord + Clone>(map: &RwLock<BTreeMap<K, Arc<AtomicU64>>>, key: K) -> Arc<AtomicU64> {
    if let Some(value) = map.read().unwrap_or_else(PoisonError::into_inner).get(&key) {
        return value.clone();
    }
    let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
    map.entry(key).or_default().clone()
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// Escapes a label value for the Prometheus text format.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_counts_requests_and_latency() {
        let metrics = Metrics::default();
        metrics.observe_request("acme", "Encrypt", "success", Duration::from_micros(300));
        metrics.observe_request("acme", "Encrypt", "success", Duration::from_millis(3));
        metrics.observe_throttled("acme");
        let text = metrics.render(&Gauges {
            storage_up: true,
            audit_writable: true,
            nodes: 1,
            ..Gauges::default()
        });
        assert!(text.contains(
            "keyhold_xks_requests_total{domain=\"acme\",operation=\"Encrypt\",result=\"success\"} 2"
        ));
        assert!(text.contains(
            "keyhold_xks_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"0.0005\"} 1"
        ));
        assert!(text.contains(
            "keyhold_xks_request_duration_seconds_bucket{operation=\"Encrypt\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("keyhold_xks_throttled_total{domain=\"acme\"} 1"));
        assert!(text.contains("keyhold_storage_up 1"));
        assert!(!text.contains("keyhold_hsm_up"), "no HSM, no HSM gauge");
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
