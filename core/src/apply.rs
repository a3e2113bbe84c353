//! The business-logic processor's step for one command, shared by the live
//! pipeline and by replay from the journal, so both run exactly the same code:
//! answer a repeated idempotency key from the window, otherwise run the
//! hooks and `apply`, and remember the outcome under the key.

use crate::envelope::CommandRef;
use crate::idempotency::DedupTable;
use crate::outcome::Outcome;
use crate::slot::Applied;
use crate::state_machine::StateMachine;

/// Applies `command`, or answers it from the idempotency window.
#[inline]
pub fn apply<S: StateMachine>(
    state_machine: &mut S,
    dedup: &mut DedupTable,
    command: &CommandRef<'_>,
) -> Applied {
    let key = command.header.idempotency_key;
    if key != 0 {
        if let Some(outcome) = dedup.get(key) {
            return Applied {
                outcome,
                duplicate: true,
            };
        }
    }
    let mut outcome = Outcome::default();
    state_machine.before_apply(command);
    state_machine.apply(command, &mut outcome);
    state_machine.after_apply(command, &outcome);
    if key != 0 {
        dedup.insert(key, outcome);
    }
    Applied {
        outcome,
        duplicate: false,
    }
}
