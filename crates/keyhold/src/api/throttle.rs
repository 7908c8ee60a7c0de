//! Per-domain request quotas: a token bucket per domain, refilled at the domain's rate with a
//! burst of one second's worth of requests.
//!
//! Buckets live outside the snapshot, so a snapshot swap does not refill them; a changed quota
//! takes effect at the next request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

/// Token buckets by domain id.
#[derive(Debug, Default)]
pub struct DomainQuotas {
    buckets: RwLock<HashMap<String, Arc<Mutex<Bucket>>>>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled_at: Instant,
}

impl DomainQuotas {
    /// Takes one token from the domain's bucket; false when the quota is used up.
    pub fn try_acquire(&self, domain_id: &str, rate_per_second: u32, now: Instant) -> bool {
        let bucket = self.bucket(domain_id, rate_per_second, now);
        // A poisoned lock only means another request panicked mid-update; the counts are
        // still usable numbers.
        let mut bucket = bucket
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let capacity = f64::from(rate_per_second);
        let elapsed = now
            .saturating_duration_since(bucket.refilled_at)
            .as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * capacity).min(capacity);
        bucket.refilled_at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn bucket(&self, domain_id: &str, rate_per_second: u32, now: Instant) -> Arc<Mutex<Bucket>> {
        let read = self
            .buckets
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bucket) = read.get(domain_id) {
            return bucket.clone();
        }
        drop(read);
        let mut write = self
            .buckets
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        write
            .entry(domain_id.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Bucket {
                    tokens: f64::from(rate_per_second),
                    refilled_at: now,
                }))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_then_refill_at_rate() {
        let quotas = DomainQuotas::default();
        let start = Instant::now();
        for request in 0..5 {
            assert!(
                quotas.try_acquire("a", 5, start),
                "request {request} within burst"
            );
        }
        assert!(
            !quotas.try_acquire("a", 5, start),
            "sixth request exceeds burst"
        );
        assert!(
            quotas.try_acquire("a", 5, start + Duration::from_millis(200)),
            "one token refilled"
        );
        assert!(!quotas.try_acquire("a", 5, start + Duration::from_millis(200)));
    }

    #[test]
    fn domains_do_not_share_buckets() {
        let quotas = DomainQuotas::default();
        let now = Instant::now();
        assert!(quotas.try_acquire("a", 1, now));
        assert!(!quotas.try_acquire("a", 1, now));
        assert!(
            quotas.try_acquire("b", 1, now),
            "domain b has its own bucket"
        );
    }
}
