//! A replica's metrics (`GET /metrics`, Prometheus text; docs/operating.md
//! lists them): its role, epoch and positions, each follower's progress
//! while it leads, and, while it leads, the engine's and client server's
//! metrics plus how long batches wait for the commit point.
//!
//! The replica thread publishes into [`ReplicaMetrics`] once per tick
//! (stores of atomics and one short lock); a scrape reads them on the
//! endpoint's own thread, so it never delays the replica or the engine.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use keel_core::MetricsHandle;
use keel_journal::JournalStatus;
use keel_node::metrics::journal_gauges;
use keel_node::replicated::CommitPoint;
use keel_replication::{FollowerProgress, Replica, Role};
use keel_server::metrics::{header, render_engine, render_server, sample, summary};
use keel_server::ServerStats;

/// What a leading replica adds to its metrics.
pub(crate) struct LeaderMetrics {
    pub engine: MetricsHandle,
    pub server: Arc<ServerStats>,
    pub commit: Arc<CommitPoint>,
    pub journal: JournalStatus,
}

/// The replica's published state.
#[derive(Default)]
pub struct ReplicaMetrics {
    leading: AtomicBool,
    accepted_epoch: AtomicU64,
    log_last: AtomicU64,
    durable: AtomicU64,
    commit: AtomicU64,
    committed_next: AtomicU64,
    hot_applied_next: AtomicU64,
    isr: AtomicU64,
    promotions: AtomicU64,
    replayed: AtomicU64,
    /// Replication messages dropped because the replica thread's queue was
    /// full or they were not for this node (shared with the inbox).
    pub(crate) dropped: Arc<AtomicU64>,
    followers: Mutex<Vec<FollowerProgress>>,
    leader: Mutex<Option<LeaderMetrics>>,
}

impl std::fmt::Debug for ReplicaMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaMetrics")
            .field("leading", &self.leading.load(Ordering::Relaxed))
            .field("commit", &self.commit.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReplicaMetrics {
    /// Publishes the core's positions (once per tick).
    pub(crate) fn publish(&self, replica: &Replica, committed_next: u64, hot_applied: u64) {
        let leading = matches!(replica.role(), Role::Leader { .. });
        self.leading.store(leading, Ordering::Relaxed);
        self.accepted_epoch
            .store(u64::from(replica.accepted_epoch()), Ordering::Relaxed);
        self.log_last.store(replica.log().last(), Ordering::Relaxed);
        self.durable.store(replica.durable(), Ordering::Relaxed);
        self.commit.store(replica.commit(), Ordering::Relaxed);
        self.committed_next.store(committed_next, Ordering::Relaxed);
        self.hot_applied_next.store(hot_applied, Ordering::Relaxed);
        self.isr
            .store(replica.isr().len() as u64, Ordering::Relaxed);
        let followers = replica.followers();
        *self.followers.lock().unwrap_or_else(|e| e.into_inner()) = followers;
    }

    /// This node now leads: its engine and server join the metrics.
    pub(crate) fn promoted(&self, leader: LeaderMetrics, replayed: u64) {
        self.promotions.fetch_add(1, Ordering::Relaxed);
        self.replayed.fetch_add(replayed, Ordering::Relaxed);
        *self.leader.lock().unwrap_or_else(|e| e.into_inner()) = Some(leader);
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 << 10);
        let leading = self.leading.load(Ordering::Relaxed);
        let gauges = [
            (
                "keel_replication_leader",
                "1 while this replica leads its shard, 0 while it follows.",
                u8::from(leading) as f64,
            ),
            (
                "keel_replication_accepted_epoch",
                "The highest epoch this replica accepted.",
                self.accepted_epoch.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_replication_log_last_entry",
                "The last replication entry in this replica's log.",
                self.log_last.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_replication_durable_entry",
                "The last entry synced on this replica.",
                self.durable.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_replication_commit_entry",
                "The commit point this replica knows, in entries.",
                self.commit.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_replication_committed_next",
                "The commit point in journal sequences: every record below it is committed.",
                self.committed_next.load(Ordering::Relaxed) as f64,
            ),
            (
                "keel_replication_in_sync_replicas",
                "Replicas in the shard's in-sync set (the leader included).",
                self.isr.load(Ordering::Relaxed) as f64,
            ),
        ];
        for (name, help, value) in gauges {
            header(&mut out, name, "gauge", help);
            sample(&mut out, name, "", value);
        }
        if !leading {
            let applied = self.hot_applied_next.load(Ordering::Relaxed);
            let committed = self.committed_next.load(Ordering::Relaxed);
            let name = "keel_replication_hot_applied_next";
            header(
                &mut out,
                name,
                "gauge",
                "The follower's hot replica applied every record below this sequence.",
            );
            sample(&mut out, name, "", applied as f64);
            let name = "keel_replication_hot_lag_records";
            header(
                &mut out,
                name,
                "gauge",
                "Committed records the hot replica has not applied yet (the newest is \
                 held back until the next arrives, so an idle shard shows 1).",
            );
            sample(&mut out, name, "", committed.saturating_sub(applied) as f64);
        }
        let counters = [
            (
                "keel_replication_promotions_total",
                "Times this process became its shard's leader.",
                self.promotions.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_promotion_replayed_records_total",
                "Journal records replayed at promotions (past the hot replica).",
                self.replayed.load(Ordering::Relaxed),
            ),
            (
                "keel_replication_dropped_messages_total",
                "Replication messages dropped (replica queue full, or misaddressed).",
                self.dropped.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in counters {
            header(&mut out, name, "counter", help);
            sample(&mut out, name, "", value as f64);
        }
        let followers = self
            .followers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if !followers.is_empty() {
            let last = self.log_last.load(Ordering::Relaxed);
            type Value = fn(&FollowerProgress, u64) -> f64;
            let per_follower: [(&str, &str, Value); 3] = [
                (
                    "keel_replication_follower_lag_entries",
                    "Entries the leader holds that the follower has not acknowledged as synced.",
                    |f, last| last.saturating_sub(f.durable) as f64,
                ),
                (
                    "keel_replication_follower_durable_entry",
                    "The last entry the follower acknowledged as synced.",
                    |f, _| f.durable as f64,
                ),
                (
                    "keel_replication_follower_in_sync",
                    "1 while the follower is in the confirmed in-sync set.",
                    |f, _| u8::from(f.in_sync) as f64,
                ),
            ];
            for (name, help, value) in per_follower {
                header(&mut out, name, "gauge", help);
                for f in &followers {
                    let mut labels = String::new();
                    let _ = write!(labels, "follower=\"{}\"", f.id);
                    sample(&mut out, name, &labels, value(f, last));
                }
            }
        }
        if leading {
            if let Some(leader) = &*self.leader.lock().unwrap_or_else(|e| e.into_inner()) {
                let name = "keel_replication_commit_wait_seconds";
                header(
                    &mut out,
                    name,
                    "summary",
                    "Per batch: how long the replicator stage waited for the commit point (the local write and sync overlap it).",
                );
                summary(&mut out, name, "", &leader.commit.waits(), 1e-9);
                for (name, help, value) in journal_gauges(&leader.journal) {
                    header(&mut out, name, "gauge", help);
                    sample(&mut out, name, "", value);
                }
                render_engine(&mut out, &leader.engine);
                render_server(&mut out, &leader.server);
            }
        }
        out
    }
}
