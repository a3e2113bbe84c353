//! Per-principal throttling, enforced before the ring: a token bucket of
//! commands per second (one second of burst) and a cap on the principal's
//! requests awaiting replies across all its connections. Over either, an
//! entry is answered `Throttled` with `code` = milliseconds to wait, and is
//! not sequenced.

use std::sync::Arc;

use keel_core::quota::{Quota, QuotaPermit};

/// An authenticated principal and its limits.
#[derive(Debug)]
pub(crate) struct PrincipalEntry {
    pub name: String,
    pub tenant: u32,
    quota: Arc<Quota>,
}

/// One admitted request's share of its principal's in-flight cap; released
/// when the reply is produced or the request is dropped with its connection.
pub(crate) type Permit = QuotaPermit;

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
            quota: Arc::new(Quota::new(rate, in_flight_max)),
        }
    }

    /// Admits one request, or says how many milliseconds to wait.
    pub(crate) fn admit(&self) -> Result<Permit, u32> {
        self.quota
            .admit(1)
            .map_err(|wait| wait.as_millis().clamp(1, u128::from(u32::MAX)) as u32)
    }
}
