//! The user's business logic: a deterministic [`StateMachine`] run by the
//! business-logic processor, and a stateless [`Validator`] run on the
//! submitting thread before a command is sequenced.

use crate::envelope::{Command, CommandRef};
use crate::outcome::Outcome;

/// Deterministic business logic, applied single-threaded in sequence order.
///
/// `apply` must depend only on `self` and the command (its timestamp is the
/// only clock): no I/O, no clock, no randomness, no allocation after start.
/// Replaying the same journal must give the same [`StateMachine::state_hash`].
pub trait StateMachine: Send + 'static {
    /// Applies one command and writes its outcome. Business rejections are
    /// result codes in `outcome`, never panics or errors.
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome);

    /// A hint that `command` is applied next (the BLP calls it for the
    /// following slot of its batch before applying the current one): start
    /// loading what it will touch, e.g. with a cache prefetch, so the misses
    /// overlap the current command's work. Must not change state.
    #[inline]
    fn prefetch(&self, _command: &CommandRef<'_>) {}

    /// Hook run before `apply` (and before the idempotency check).
    fn before_apply(&mut self, _command: &CommandRef<'_>) {}

    /// Hook run after `apply` with its outcome (not run for duplicates).
    fn after_apply(&mut self, _command: &CommandRef<'_>, _outcome: &Outcome) {}

    /// A hash of the whole state, cheap enough to call at the end of a run.
    fn state_hash(&self) -> u64;
}

/// Why the validator refused a command; carried in
/// [`crate::SubmitError::Rejected`]. The meaning of `code` is the validator's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationError {
    /// Validator-defined reason code.
    pub code: u32,
}

/// Stateless pre-validation on the submitting thread: size, shape and
/// authorization checks that need no engine state. A refused command never
/// enters the ring.
pub trait Validator: Send + Sync + 'static {
    /// Checks one command.
    fn validate(&self, command: &Command<'_>) -> Result<(), ValidationError>;
}

/// A validator that accepts every well-formed command.
#[derive(Debug, Default, Clone, Copy)]
pub struct AcceptAll;

impl Validator for AcceptAll {
    fn validate(&self, _command: &Command<'_>) -> Result<(), ValidationError> {
        Ok(())
    }
}
