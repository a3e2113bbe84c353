//! Per-principal throttling, enforced before the ring: a token bucket of
//! commands per second (one second of burst) and a cap on the principal's
//! requests awaiting replies across all its connections. Over either, an
//! entry is answered `Throttled` with `code` = milliseconds to wait, and is
//! not sequenced.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// An authenticated principal and its limits.
#[derive(Debug)]
pub(crate) struct PrincipalEntry {
    pub name: String,
    pub tenant: u32,
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

/// One admitted request's share of its principal's in-flight cap; released
/// when the reply is produced or the request is dropped with its connection.
#[derive(Debug)]
pub(crate) struct Permit(Option<Arc<PrincipalEntry>>);

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(entry) = &self.0 {
            entry.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl PrincipalEntry {
    pub(crate) fn new(
        name: String,
        tenant: u32,
        rate: Option<u32>,
        in_flight_max: Option<u32>,
    ) -> Self {
        Self {
            name,
            tenant,
            rate,
            in_flight_max,
            bucket: Mutex::new(Bucket {
                tokens: rate.map_or(0.0, f64::from),
                refilled: Instant::now(),
            }),
            in_flight: AtomicU32::new(0),
        }
    }

    /// Admits one request, or says how many milliseconds to wait.
    pub(crate) fn admit(self: &Arc<Self>) -> Result<Permit, u32> {
        if let Some(max) = self.in_flight_max {
            if self.in_flight.fetch_add(1, Ordering::Relaxed) >= max {
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                // A slot frees when one of its replies is written.
                return Err(1);
            }
        }
        let permit = Permit(self.in_flight_max.map(|_| Arc::clone(self)));
        if let Some(rate) = self.rate {
            let rate = f64::from(rate);
            let mut bucket = self.bucket.lock().unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(bucket.refilled).as_secs_f64() * rate;
            bucket.tokens = (bucket.tokens + refill).min(rate);
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                let wait_ms = ((1.0 - bucket.tokens) / rate * 1000.0).ceil();
                return Err(wait_ms.clamp(1.0, f64::from(u32::MAX)) as u32);
            }
            bucket.tokens -= 1.0;
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_admits_one_second_of_burst_then_says_how_long_to_wait() {
        let entry = Arc::new(PrincipalEntry::new("p".into(), 1, Some(100), None));
        let admitted = (0..150).filter(|_| entry.admit().is_ok()).count();
        assert!((100..=102).contains(&admitted), "{admitted}");
        let wait = entry.admit().unwrap_err();
        assert!((1..=10).contains(&wait), "{wait} ms");
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(entry.admit().is_ok(), "refilled");
    }

    #[test]
    fn the_in_flight_cap_frees_a_slot_when_a_permit_is_dropped() {
        let entry = Arc::new(PrincipalEntry::new("p".into(), 1, None, Some(2)));
        let a = entry.admit().unwrap();
        let _b = entry.admit().unwrap();
        assert_eq!(entry.admit().unwrap_err(), 1);
        drop(a);
        assert!(entry.admit().is_ok());
    }
}
