//! The business-logic processor's step for one command, shared by the live
//! pipeline and by replay from the journal, so both run exactly the same code:
//! answer a repeated idempotency key from the window, otherwise run the
//! hooks and `apply`, and remember the outcome under the key.

use crate::envelope::CommandRef;
use crate::idempotency::DedupTable;
use crate::outcome::Outcome;
use crate::session::{EPOCH_START, SESSION_REGISTER};
use crate::slot::Applied;
use crate::state_machine::StateMachine;

/// Applies `command`, or answers it from the idempotency window or the
/// session table ([`crate::session`]): a session registration is the
/// engine's own command; a session request that is not new is refused,
/// never executed again.
#[inline]
pub fn apply<S: StateMachine>(
    state_machine: &mut S,
    dedup: &mut DedupTable,
    command: &CommandRef<'_>,
) -> Applied {
    let answered = |outcome| Applied {
        outcome,
        duplicate: false,
        executed: false,
    };
    if command.header.command_type == SESSION_REGISTER {
        return answered(dedup.sessions_mut().register(command));
    }
    if command.header.command_type == EPOCH_START {
        return answered(Outcome::default());
    }
    let key = command.header.idempotency_key;
    let session = command.header.is_session() && key != 0;
    let (scope, request) = ((key >> 64) as u64, key as u64);
    if key != 0 {
        if let Some(outcome) = dedup.get(key) {
            return Applied {
                outcome,
                duplicate: true,
                executed: false,
            };
        }
        if session {
            if let Some(code) = dedup.sessions().refusal(scope, request) {
                return answered(Outcome::code(code));
            }
        }
    }
    let mut outcome = Outcome::default();
    state_machine.before_apply(command);
    state_machine.apply(command, &mut outcome);
    state_machine.after_apply(command, &outcome);
    if key != 0 {
        dedup.insert(key, outcome);
    }
    if session {
        dedup
            .sessions_mut()
            .record(scope, request, command.sequence);
    }
    Applied {
        outcome,
        duplicate: false,
        executed: true,
    }
}
