//! Client sessions: a bounded, journaled table that turns the idempotency
//! window into exactly-once per session, and tells a client when it cannot.
//!
//! A session is registered by a command of the engine-reserved type
//! [`SESSION_REGISTER`] (journaled, so it survives restart, replay and
//! failover). Its requests carry the record flag
//! [`crate::envelope::FLAG_SESSION`] and the key `scope << 64 | request`. For
//! each session the table keeps the highest request number applied and a
//! bitmap of which of the last [`SESSION_WINDOW`] numbers were applied; the
//! outcomes themselves stay in the node's idempotency window. A request is
//! then exactly one of:
//!
//! - in the window of outcomes: answered with its original outcome;
//! - of an unknown (never registered, or evicted) session:
//!   [`SESSION_UNKNOWN`], not executed;
//! - applied but its outcome already forgotten, or older than the session's
//!   window: [`REQUEST_EXPIRED`], not executed (look the ids up);
//! - otherwise new: executed and recorded.
//!
//! So a retry is never executed twice, however late it comes. Registering a
//! new session into a full table evicts the least recently used one (by the
//! sequence of its last registration or request: deterministic).
//!
//! The table is pre-allocated; register, check and record allocate nothing.
//! Registration scans the table for the least recently used session when it
//! is full (O(sessions), once per connection, not per request).

use crate::envelope::CommandRef;
use crate::outcome::{Outcome, ResultCode};
use crate::probe::ProbeMap;

/// The engine-reserved command type that registers a session. Command types
/// `0xFF00..=0xFFFF` are reserved for the engine; hosts' state machines
/// never see this one.
pub const SESSION_REGISTER: u16 = 0xFFFF;

/// The engine-reserved command type a replication leader writes first in
/// its epoch (ADR 0013: nothing commits below it until it does). It changes
/// no state: the BLP and replay answer it with an empty outcome, and hosts'
/// state machines never see it. Payload: `epoch u32, leader u16` (LE).
pub const EPOCH_START: u16 = 0xFFFE;

/// Request numbers of one session whose application the table tracks (a
/// session may have at most this many requests outstanding).
pub const SESSION_WINDOW: u64 = 1024;

const WORDS: usize = (SESSION_WINDOW / 64) as usize;

/// Result code: the session is not in the table (never registered, or
/// evicted). The command was not executed.
pub const SESSION_UNKNOWN: ResultCode = ResultCode(0xFFFF_0001);
/// Result code: the request was applied but its outcome is no longer held,
/// or it is older than the session's window. Not executed (again).
pub const REQUEST_EXPIRED: ResultCode = ResultCode(0xFFFF_0002);
/// Result code: a registration command whose payload does not decode.
pub const BAD_REGISTRATION: ResultCode = ResultCode(0xFFFF_0003);

/// Sessions held per idempotency-window entry: the table holds
/// `dedup_entries / 16` sessions (at least 16), so that a full table's
/// sessions each keep about 16 outcomes in the window. Fixed, because the
/// table's capacity decides evictions and so is part of what a replay must
/// repeat; `dedup_entries` is recorded with every journal.
pub const WINDOW_ENTRIES_PER_SESSION: usize = 16;

/// The session capacity that goes with an idempotency window of `dedup_entries`.
pub fn sessions_for(dedup_entries: usize) -> usize {
    (dedup_entries / WINDOW_ENTRIES_PER_SESSION).max(16)
}

/// The payload of a [`SESSION_REGISTER`] command: `scope u64, session u64,
/// resume u8, principal_len u8, principal[principal_len]` (LE). The scope is
/// the high half of the session's keys (the host derives it from tenant,
/// principal and session id); the session id and principal are recorded
/// for audit: every later record of the session names the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration<'a> {
    /// The high half of the session's idempotency keys (non-zero).
    pub scope: u64,
    /// The client's session id.
    pub session: u64,
    /// The session must already exist (a reconnect): an unknown one is
    /// answered [`SESSION_UNKNOWN`] rather than created afresh, so a client
    /// whose session was evicted learns it instead of having old request
    /// numbers executed again.
    pub resume: bool,
    /// The authenticated principal's name (≤ 255 bytes).
    pub principal: &'a [u8],
}

impl<'a> Registration<'a> {
    /// Bytes before the principal.
    pub const FIXED_BYTES: usize = 18;

    /// Appends the encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        assert!(self.principal.len() <= usize::from(u8::MAX));
        out.extend_from_slice(&self.scope.to_le_bytes());
        out.extend_from_slice(&self.session.to_le_bytes());
        out.push(u8::from(self.resume));
        out.push(self.principal.len() as u8);
        out.extend_from_slice(self.principal);
    }

    /// Decodes; `None` when malformed.
    pub fn decode(bytes: &'a [u8]) -> Option<Self> {
        let fixed = bytes.get(..Self::FIXED_BYTES)?;
        let principal = &bytes[Self::FIXED_BYTES..];
        let scope = u64::from_le_bytes(fixed[0..8].try_into().expect("8"));
        let resume = match fixed[16] {
            0 => false,
            1 => true,
            _ => return None,
        };
        if scope == 0 || usize::from(fixed[17]) != principal.len() {
            return None;
        }
        Some(Self {
            scope,
            session: u64::from_le_bytes(fixed[8..16].try_into().expect("8")),
            resume,
            principal,
        })
    }
}

/// What a successful registration answers (the outcome's data):
/// `status u8 (1 new, 2 resumed), 0 u8 ×7, highest u64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// A new session.
    New,
    /// The session existed; `highest` is its highest request number applied.
    Resumed {
        /// Highest request number applied.
        highest: u64,
    },
}

impl Registered {
    /// Reads a registration's outcome; `None` if it is not a success.
    pub fn from_outcome(outcome: &Outcome) -> Option<Self> {
        let data = outcome.data();
        if !outcome.code.is_ok() || data.len() != 16 {
            return None;
        }
        let highest = u64::from_le_bytes(data[8..16].try_into().expect("8"));
        match data[0] {
            1 => Some(Self::New),
            2 => Some(Self::Resumed { highest }),
            _ => None,
        }
    }

    fn outcome(self) -> Outcome {
        let (status, highest) = match self {
            Self::New => (1, 0),
            Self::Resumed { highest } => (2, highest),
        };
        let mut data = [0u8; 16];
        data[0] = status;
        data[8..].copy_from_slice(&highest.to_le_bytes());
        let mut outcome = Outcome::default();
        outcome.set(ResultCode::OK, &data);
        outcome
    }
}

/// One session's row, as a snapshot stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionRow {
    /// The high half of its keys.
    pub scope: u64,
    /// Highest request number applied (0: none yet).
    pub highest: u64,
    /// Sequence of its last registration or applied request.
    pub last_used: u64,
    /// Bit `r % SESSION_WINDOW` set: request `r` in `(highest - WINDOW, highest]` was applied.
    pub applied: [u64; WORDS],
}

const EMPTY_ROW: SessionRow = SessionRow {
    scope: 0,
    highest: 0,
    last_used: 0,
    applied: [0; WORDS],
};

impl SessionRow {
    fn bit(request: u64) -> (usize, u64) {
        let at = request % SESSION_WINDOW;
        ((at / 64) as usize, 1 << (at % 64))
    }

    fn is_applied(&self, request: u64) -> bool {
        let (word, mask) = Self::bit(request);
        self.applied[word] & mask != 0
    }

    fn record(&mut self, request: u64) {
        if request > self.highest {
            if request - self.highest >= SESSION_WINDOW {
                self.applied = [0; WORDS];
            } else {
                // Numbers skipped over are not applied (yet).
                for skipped in self.highest + 1..request {
                    let (word, mask) = Self::bit(skipped);
                    self.applied[word] &= !mask;
                }
            }
            self.highest = request;
        }
        let (word, mask) = Self::bit(request);
        self.applied[word] |= mask;
    }
}

/// The bounded session table. Allocates only in [`SessionTable::with_capacity`].
#[derive(Debug, Clone)]
pub struct SessionTable {
    rows: Box<[SessionRow]>,
    len: usize,
    /// scope → row.
    index: ProbeMap,
}

impl SessionTable {
    /// A table for `capacity` sessions (`capacity >= 1`).
    pub fn with_capacity(capacity: usize) -> Self {
        assert!(capacity >= 1, "session capacity must be at least 1");
        Self {
            rows: vec![EMPTY_ROW; capacity].into_boxed_slice(),
            len: 0,
            index: ProbeMap::new(capacity),
        }
    }

    /// Sessions held at most.
    pub fn capacity(&self) -> usize {
        self.rows.len()
    }

    /// Sessions held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The row of the session with `scope`.
    pub fn get(&self, scope: u64) -> Option<&SessionRow> {
        self.index
            .get(u128::from(scope))
            .map(|row| &self.rows[row as usize])
    }

    /// Applies a [`SESSION_REGISTER`] command.
    pub fn register(&mut self, command: &CommandRef<'_>) -> Outcome {
        let Some(registration) = Registration::decode(command.payload) else {
            return Outcome::code(BAD_REGISTRATION);
        };
        let scope = registration.scope;
        if let Some(row) = self.index.get(u128::from(scope)) {
            let row = &mut self.rows[row as usize];
            row.last_used = command.sequence;
            return Registered::Resumed {
                highest: row.highest,
            }
            .outcome();
        }
        if registration.resume {
            return Outcome::code(SESSION_UNKNOWN);
        }
        let row = if self.len < self.rows.len() {
            self.len += 1;
            self.len - 1
        } else {
            let lru = (0..self.len)
                .min_by_key(|&i| self.rows[i].last_used)
                .expect("a full table holds sessions");
            self.index.remove(u128::from(self.rows[lru].scope));
            lru
        };
        self.rows[row] = SessionRow {
            scope,
            last_used: command.sequence,
            ..EMPTY_ROW
        };
        self.index.insert(u128::from(scope), row as u32);
        Registered::New.outcome()
    }

    /// Why request `request` of session `scope`, whose outcome is not in the
    /// idempotency window, must not be executed; `None`: it is new.
    pub fn refusal(&self, scope: u64, request: u64) -> Option<ResultCode> {
        let Some(row) = self.get(scope) else {
            return Some(SESSION_UNKNOWN);
        };
        let new = request > row.highest
            || (request.saturating_add(SESSION_WINDOW) > row.highest && !row.is_applied(request));
        (!new).then_some(REQUEST_EXPIRED)
    }

    /// Records that request `request` of session `scope` was applied at `sequence`.
    pub fn record(&mut self, scope: u64, request: u64, sequence: u64) {
        let row = self
            .index
            .get(u128::from(scope))
            .expect("a recorded session is held");
        let row = &mut self.rows[row as usize];
        row.record(request);
        row.last_used = sequence;
    }

    /// The rows, in table order. Restoring them in this order into an empty
    /// table of the same capacity rebuilds this table exactly.
    pub fn rows(&self) -> &[SessionRow] {
        &self.rows[..self.len]
    }

    /// Appends a row (snapshot restore); `false` (and nothing changed) when
    /// the table is full or the scope is zero or already held.
    #[must_use]
    pub fn restore(&mut self, row: SessionRow) -> bool {
        if self.len == self.rows.len() || row.scope == 0 || self.get(row.scope).is_some() {
            return false;
        }
        self.rows[self.len] = row;
        self.index.insert(u128::from(row.scope), self.len as u32);
        self.len += 1;
        true
    }

    /// A deterministic hash of the rows, in table order.
    pub fn state_hash(&self) -> u64 {
        self.rows().iter().fold(0x5e55_1015, |h, row| {
            let words = row.applied.iter().fold(0, |a, w| crate::probe::mix(a ^ w));
            crate::probe::mix(
                h ^ row.scope ^ crate::probe::mix(row.highest ^ row.last_used) ^ words,
            )
        })
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::envelope::CommandHeader;

    fn register(table: &mut SessionTable, scope: u64, resume: bool, sequence: u64) -> Outcome {
        let mut payload = Vec::new();
        Registration {
            scope,
            session: 9,
            resume,
            principal: b"alice",
        }
        .encode(&mut payload);
        let header = CommandHeader {
            command_type: SESSION_REGISTER,
            payload_len: payload.len() as u32,
            ..CommandHeader::default()
        };
        table.register(&CommandRef {
            sequence,
            header: &header,
            payload: &payload,
        })
    }

    #[test]
    fn registration_creates_resumes_and_refuses_unknown_resumes() {
        let mut table = SessionTable::with_capacity(4);
        assert_eq!(
            Registered::from_outcome(&register(&mut table, 7, false, 1)),
            Some(Registered::New)
        );
        table.record(7, 3, 2);
        assert_eq!(
            Registered::from_outcome(&register(&mut table, 7, true, 3)),
            Some(Registered::Resumed { highest: 3 })
        );
        assert_eq!(register(&mut table, 8, true, 4).code, SESSION_UNKNOWN);
        assert_eq!(table.len(), 1);
        let header = CommandHeader {
            command_type: SESSION_REGISTER,
            ..CommandHeader::default()
        };
        let bad = CommandRef {
            sequence: 5,
            header: &header,
            payload: &[1, 2, 3],
        };
        assert_eq!(table.register(&bad).code, BAD_REGISTRATION);
    }

    #[test]
    fn a_full_table_evicts_the_least_recently_used_session() {
        let mut table = SessionTable::with_capacity(2);
        register(&mut table, 1, false, 1);
        register(&mut table, 2, false, 2);
        table.record(1, 1, 3); // session 1 used after session 2
        register(&mut table, 3, false, 4);
        assert!(table.get(2).is_none(), "session 2 was least recently used");
        assert_eq!(table.refusal(2, 1), Some(SESSION_UNKNOWN));
        assert_eq!(table.refusal(1, 2), None);
        assert_eq!(table.refusal(3, 1), None);
    }

    #[test]
    fn requests_are_new_once_and_expired_after() {
        let mut table = SessionTable::with_capacity(1);
        register(&mut table, 5, false, 0);
        // Out of order inside the window: 3 before 1 and 2.
        table.record(5, 3, 1);
        assert_eq!(table.refusal(5, 1), None);
        assert_eq!(table.refusal(5, 3), Some(REQUEST_EXPIRED));
        table.record(5, 1, 2);
        assert_eq!(table.refusal(5, 1), Some(REQUEST_EXPIRED));
        assert_eq!(table.refusal(5, 2), None);
        // A jump past the window: everything at or below highest - WINDOW is expired.
        table.record(5, 3 + SESSION_WINDOW, 3);
        assert_eq!(table.refusal(5, 2), Some(REQUEST_EXPIRED));
        assert_eq!(
            table.refusal(5, 4),
            None,
            "inside the new window, never applied"
        );
        assert_eq!(table.refusal(5, 3 + SESSION_WINDOW), Some(REQUEST_EXPIRED));
        assert_eq!(table.refusal(5, 4 + SESSION_WINDOW), None);
    }

    /// The table against a reference that keeps every applied number of
    /// every session (no bitmap, no window arithmetic) and the LRU order as
    /// a list: the same answers, and no request is ever new twice.
    mod model {
        use super::*;
        use proptest::prelude::*;
        use std::collections::{BTreeSet, HashMap};

        #[derive(Debug, Clone)]
        enum Op {
            Register { scope: u64, resume: bool },
            Request { scope: u64, request: u64 },
        }

        fn op() -> impl Strategy<Value = Op> {
            let scope = 1u64..=6;
            // Request numbers near each other, with jumps past the window.
            let request = prop_oneof![
                8 => 1u64..40,
                1 => (SESSION_WINDOW - 5)..(SESSION_WINDOW + 45),
                1 => (3 * SESSION_WINDOW)..(3 * SESSION_WINDOW + 10),
            ];
            prop_oneof![
                1 => (scope.clone(), any::<bool>()).prop_map(|(scope, resume)| Op::Register { scope, resume }),
                6 => (scope, request).prop_map(|(scope, request)| Op::Request { scope, request }),
            ]
        }

        #[derive(Default)]
        struct Reference {
            /// scope → every request number applied, in the current life.
            applied: HashMap<u64, BTreeSet<u64>>,
            /// Held scopes, least recently used first.
            lru: Vec<u64>,
        }

        impl Reference {
            fn touch(&mut self, scope: u64) {
                self.lru.retain(|&s| s != scope);
                self.lru.push(scope);
            }

            fn refusal(&self, scope: u64, request: u64) -> Option<ResultCode> {
                let applied = self.applied.get(&scope)?;
                let highest = applied.iter().next_back().copied().unwrap_or(0);
                let new = request > highest
                    || (request + SESSION_WINDOW > highest && !applied.contains(&request));
                (!new).then_some(REQUEST_EXPIRED)
            }
        }

        proptest! {
            #[test]
            fn the_table_answers_as_the_reference(ops in prop::collection::vec(op(), 1..200)) {
                const CAPACITY: usize = 3;
                let mut table = SessionTable::with_capacity(CAPACITY);
                let mut reference = Reference::default();
                // Everything ever run, across evictions: never twice.
                let mut ran: BTreeSet<(u64, u64, u64)> = BTreeSet::new();
                let mut lives: HashMap<u64, u64> = HashMap::new();
                for (sequence, op) in ops.into_iter().enumerate() {
                    let sequence = sequence as u64 + 1;
                    match op {
                        Op::Register { scope, resume } => {
                            let outcome = register(&mut table, scope, resume, sequence);
                            if reference.applied.contains_key(&scope) {
                                let highest = reference.applied[&scope].iter().next_back().copied().unwrap_or(0);
                                prop_assert_eq!(Registered::from_outcome(&outcome), Some(Registered::Resumed { highest }));
                                reference.touch(scope);
                            } else if resume {
                                prop_assert_eq!(outcome.code, SESSION_UNKNOWN);
                            } else {
                                prop_assert_eq!(Registered::from_outcome(&outcome), Some(Registered::New));
                                if reference.lru.len() == CAPACITY {
                                    let evicted = reference.lru.remove(0);
                                    reference.applied.remove(&evicted);
                                }
                                reference.applied.insert(scope, BTreeSet::new());
                                reference.touch(scope);
                                *lives.entry(scope).or_default() += 1;
                            }
                        }
                        Op::Request { scope, request } => {
                            let expected = match reference.applied.contains_key(&scope) {
                                false => Some(SESSION_UNKNOWN),
                                true => reference.refusal(scope, request),
                            };
                            prop_assert_eq!(table.refusal(scope, request), expected);
                            if expected.is_none() {
                                table.record(scope, request, sequence);
                                reference.applied.get_mut(&scope).unwrap().insert(request);
                                reference.touch(scope);
                                let life = lives[&scope];
                                prop_assert!(ran.insert((scope, life, request)), "run twice");
                            }
                        }
                    }
                    prop_assert_eq!(table.len(), reference.lru.len());
                }
            }
        }
    }

    #[test]
    fn rows_restore_to_the_same_table() {
        let mut table = SessionTable::with_capacity(3);
        for scope in 1..=4 {
            register(&mut table, scope, false, scope);
            table.record(scope, scope * 2, 10 + scope);
        }
        let mut copy = SessionTable::with_capacity(3);
        for row in table.rows() {
            assert!(copy.restore(*row));
        }
        assert_eq!(copy.state_hash(), table.state_hash());
        assert!(!copy.restore(table.rows()[0]));
        for scope in 1..=4 {
            assert_eq!(
                copy.refusal(scope, scope * 2),
                table.refusal(scope, scope * 2)
            );
        }
    }
}
