//! Every compile-time limit of the core in one place, tied together by
//! compile-time assertions (TigerBeetle's "limits on everything").
//!
//! Runtime limits (ring size, in-flight completions, dedup capacity) live in
//! [`crate::EngineConfig`] and are validated against the bounds here.

/// Maximum bytes of command payload carried inline in a ring slot: room for a
/// batch of seven 120-byte ledger transfers (or nine accounts) with its codec
/// header, so one command (one journal record) carries a linked chain.
pub const PAYLOAD_BYTES_MAX: usize = 896;

/// Maximum bytes of state-machine result carried inline in a slot's result area.
pub const RESULT_BYTES_MAX: usize = 48;

/// Smallest ring the engine accepts (slots); the `disruptor` multi-producer barrier needs 64.
pub const RING_SLOTS_MIN: usize = 64;

/// Largest ring the engine accepts (slots): 1 Mi slots of 1 KiB is 1 GiB.
pub const RING_SLOTS_MAX: usize = 1 << 20;

/// Largest number of commands whose callers may wait for completion at once.
pub const IN_FLIGHT_MAX: usize = 1 << 20;

/// Largest idempotency window (entries in the dedup table).
pub const DEDUP_ENTRIES_MAX: usize = 1 << 24;

/// Iterations an idle stage or waiting caller spins before yielding. Short:
/// on a machine with fewer cores than threads, a spinning lane holds the core
/// the thread it waits for needs (measured: 256 spins multiplied p99 by 40 at
/// a paced 100k/s on 2 cores; 32 matched the raw ring).
pub const SPIN_ITERATIONS_DEFAULT: u32 = 32;

/// How long an idle thread yields before it parks (blocking strategy only).
/// Waking a parked thread costs tens to hundreds of µs on virtual machines,
/// so a lane parks only after a millisecond without work.
pub const YIELD_BEFORE_PARK_DEFAULT: std::time::Duration = std::time::Duration::from_millis(1);

/// Most commands the BLP or the publisher takes in one batch. The journaller
/// takes everything available (one group commit per batch); the later stages
/// release their cursor at least every this many commands, so on a paired
/// lane the publisher completes callers while the BLP still has work, and a
/// producer waiting for a full ring gets slots back sooner.
pub const STAGE_BATCH_MAX: u64 = 256;

/// Acknowledgement latencies the publisher buffers before it must hand them
/// to the shared histogram (it hands them over after every batch unless a
/// metrics reader holds the lock; it waits only when the buffer is full).
pub const ACK_BUFFER_VALUES: usize = 4 * STAGE_BATCH_MAX as usize;

const _: () = assert!(ACK_BUFFER_VALUES >= 2 * STAGE_BATCH_MAX as usize);

/// Number of pipeline stages (journaller, replicator, BLP, publisher).
pub const STAGE_COUNT: usize = 4;

/// Highest value recorded in a latency histogram (ns): 60 s. Larger values are clamped.
pub const LATENCY_NS_MAX: u64 = 60_000_000_000;

/// Significant figures kept by latency histograms.
pub const LATENCY_SIGNIFICANT_FIGURES: u8 = 3;

const _: () = assert!(RING_SLOTS_MIN.is_power_of_two());
const _: () = assert!(RING_SLOTS_MAX.is_power_of_two());
const _: () = assert!(RING_SLOTS_MIN <= RING_SLOTS_MAX);
const _: () = assert!(PAYLOAD_BYTES_MAX <= u16::MAX as usize);
const _: () = assert!(RESULT_BYTES_MAX <= u8::MAX as usize);
const _: () = assert!(IN_FLIGHT_MAX < u32::MAX as usize);
const _: () = assert!(PAYLOAD_BYTES_MAX.is_multiple_of(64));
