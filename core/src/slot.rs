//! The ring slot: a fixed-size, pre-allocated record holding the command
//! header, the inline payload and the result area.
//!
//! # The result hand-off protocol
//!
//! The `disruptor` crate gives consumers `&Slot` only, yet the business-logic
//! processor (BLP) must hand its result to the publisher through the slot.
//! [`ResultCell`] is the interior-mutable result area; its safety rests on the
//! ring's sequence barriers, which give exactly one writer and one reader per
//! slot lap:
//!
//! 1. The producer owns the slot (`&mut Slot`) from claim to publish; it resets
//!    the result area. Publishing is a `Release` store of the sequence.
//! 2. The BLP is the only stage that writes the cell, and only for sequences
//!    inside its current batch (its barrier's `Acquire` load saw them
//!    published and journaled). Ending the batch is a `Release` store of the
//!    BLP cursor.
//! 3. The publisher is the only stage that reads the cell, and only for
//!    sequences at or below the BLP cursor it loaded with `Acquire`.
//! 4. The producer may claim the slot again only after the publisher's cursor
//!    (`Release` on batch end, `Acquire` by the claim) passed it.
//!
//! So every write happens-before the matching read and no two accesses
//! overlap. `tests/loom.rs` checks this protocol with the same `ResultCell`.

use crate::constants::PAYLOAD_BYTES_MAX;
use crate::envelope::{CommandHeader, CommandRef};
use crate::outcome::Outcome;
use crate::sync::UnsafeCell;

/// The BLP's result for one slot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Applied {
    /// The state machine's (or the dedup table's original) outcome.
    pub outcome: Outcome,
    /// True when the command was a duplicate and was not applied.
    pub duplicate: bool,
    /// True when the state machine ran the command (false for a duplicate,
    /// a session registration and a refused session request).
    pub executed: bool,
}

/// The slot's result area: written by the BLP, read by the publisher. See the
/// module docs for the protocol that makes the unsynchronised accesses sound.
#[derive(Debug)]
pub struct ResultCell(UnsafeCell<Applied>);

// SAFETY: the cell is accessed by one writer (the BLP) and later one reader
// (the publisher) per ring lap, ordered by the disruptor's Release/Acquire
// sequence barriers as described in the module docs; `Applied` is `Copy` and
// `Send`, holding no pointers.
unsafe impl Sync for ResultCell {}

impl ResultCell {
    /// An empty result cell.
    pub fn new() -> Self {
        Self(UnsafeCell::new(Applied::default()))
    }

    /// Writes the result.
    ///
    /// # Safety
    /// The caller is the slot's single writer for this lap (the BLP holding
    /// the slot's sequence in its current batch) and no reader may access the
    /// cell until the caller's cursor is released past this sequence.
    #[inline]
    pub unsafe fn write(&self, applied: Applied) {
        // SAFETY: exclusive access for this lap is the caller's contract above.
        self.0.with_mut(|p| unsafe { p.write(applied) });
    }

    /// Reads the result.
    ///
    /// # Safety
    /// The caller is the slot's single reader for this lap and has loaded,
    /// with `Acquire`, a writer cursor at or past this slot's sequence.
    #[inline]
    pub unsafe fn read(&self) -> Applied {
        // SAFETY: the write happened-before this read per the caller's contract.
        self.0.with(|p| unsafe { p.read() })
    }

    /// Resets the cell through exclusive access (producer side, no unsafe needed).
    #[inline]
    pub fn reset(&mut self) {
        self.0.with_mut(|p| {
            // SAFETY: `&mut self` proves exclusive access.
            unsafe { p.write(Applied::default()) }
        });
    }
}

impl Default for ResultCell {
    fn default() -> Self {
        Self::new()
    }
}

/// One pre-allocated ring slot.
#[derive(Debug)]
#[repr(C, align(64))]
pub struct Slot {
    /// Header, written by the producer.
    pub header: CommandHeader,
    /// Inline payload; the first `header.payload_len` bytes are valid.
    pub payload: [u8; PAYLOAD_BYTES_MAX],
    /// The BLP → publisher result area.
    pub result: ResultCell,
}

impl Default for Slot {
    fn default() -> Self {
        Self {
            header: CommandHeader::default(),
            payload: [0; PAYLOAD_BYTES_MAX],
            result: ResultCell::new(),
        }
    }
}

impl Slot {
    /// The command in this slot as stages see it.
    #[inline]
    pub fn command(&self, sequence: u64) -> CommandRef<'_> {
        let len = self.header.payload_len as usize;
        debug_assert!(len <= PAYLOAD_BYTES_MAX);
        CommandRef {
            sequence,
            header: &self.header,
            payload: &self.payload[..len],
        }
    }
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<Slot>() == 1024);
