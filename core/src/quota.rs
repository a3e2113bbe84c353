//! [`Quota`]: a rate (a token bucket of commands per second with one
//! second of burst) and a cap on commands in flight, checked before the
//! ring. Over either, [`Quota::admit`] says how long to wait and nothing is
//! sequenced. The server holds one per principal, a sharded node one per
//! tenant. Allocation-free after construction.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Limits of one principal or tenant; `None` is unlimited.
#[derive(Debug)]
pub struct Quota {
    rate: Option<u32>,
    in_flight_max: Option<u32>,
    bucket: Mutex<Bucket>,
    in_flight: AtomicU32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    refilled: Instant,
}

/// A share of the in-flight cap, released when dropped.
#[derive(Debug)]
#[must_use = "the in-flight share is released when the permit is dropped"]
pub struct QuotaPermit {
    quota: Option<Arc<Quota>>,
    cost: u32,
}

impl Drop for QuotaPermit {
    fn drop(&mut self) {
        if let Some(quota) = &self.quota {
            quota.in_flight.fetch_sub(self.cost, Ordering::Relaxed);
        }
    }
}

impl Quota {
    /// `rate` commands per second, `in_flight_max` commands at once.
    pub fn new(rate: Option<u32>, in_flight_max: Option<u32>) -> Self {
        Self {
            rate,
            in_flight_max,
            bucket: Mutex::new(Bucket {
                tokens: rate.map_or(0.0, f64::from),
                refilled: Instant::now(),
            }),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Admits `cost` commands, or says how long to wait (at least 1 ms; a
    /// full in-flight cap answers 1 ms: a share frees when a reply is made).
    pub fn admit(self: &Arc<Self>, cost: u32) -> Result<QuotaPermit, Duration> {
        if let Some(max) = self.in_flight_max {
            let before = self.in_flight.fetch_add(cost, Ordering::Relaxed);
            if before.saturating_add(cost) > max && before > 0 {
                self.in_flight.fetch_sub(cost, Ordering::Relaxed);
                return Err(Duration::from_millis(1));
            }
        }
        let permit = QuotaPermit {
            quota: self.in_flight_max.map(|_| Arc::clone(self)),
            cost,
        };
        if let Some(rate) = self.rate {
            let rate = f64::from(rate);
            let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(bucket.refilled).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + refill).min(rate);
            bucket.refilled = now;
            let cost = f64::from(cost);
            if bucket.tokens < cost.min(rate) {
                let wait_ms = ((cost.min(rate) - bucket.tokens) / rate * 1000.0).ceil();
                return Err(Duration::from_millis(wait_ms.clamp(1.0, 3.6e6) as u64));
            }
            bucket.tokens -= cost;
        }
        Ok(permit)
    }

    /// Commands in flight now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_admits_one_second_of_burst_then_says_how_long_to_wait() {
        let quota = Arc::new(Quota::new(Some(100), None));
        let admitted = (0..150).filter(|_| quota.admit(1).is_ok()).count();
        assert!((100..=102).contains(&admitted), "{admitted}");
        let wait = quota.admit(1).unwrap_err();
        assert!((1..=10).contains(&wait.as_millis()), "{wait:?}");
        std::thread::sleep(Duration::from_millis(50));
        assert!(quota.admit(1).is_ok(), "refilled");
    }

    #[test]
    fn the_in_flight_cap_frees_a_share_when_a_permit_is_dropped() {
        let quota = Arc::new(Quota::new(None, Some(2)));
        let a = quota.admit(1).unwrap();
        let _b = quota.admit(1).unwrap();
        assert_eq!(quota.admit(1).unwrap_err(), Duration::from_millis(1));
        drop(a);
        assert!(quota.admit(1).is_ok());
    }

    #[test]
    fn a_cost_above_the_cap_is_admitted_alone_never_starved() {
        let quota = Arc::new(Quota::new(Some(10), Some(4)));
        let big = quota.admit(9).unwrap();
        assert!(quota.admit(1).is_err(), "cap");
        drop(big);
        assert_eq!(quota.in_flight(), 0);
    }
}
