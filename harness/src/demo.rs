//! The built-in demo state machine: balances of a fixed set of accounts,
//! moved by deposits, withdrawals and transfers, with business rejections
//! (insufficient funds, unknown account) as result codes.
//!
//! Payload layout (little-endian): `debit: u32, credit: u32, amount: u64` (16 bytes).

use keel_core::{CommandRef, Outcome, ResultCode, StateMachine};

/// Adds `amount` to `credit` (the debit field is ignored).
pub const DEPOSIT: u16 = 1;
/// Moves `amount` from `debit` to `credit`.
pub const TRANSFER: u16 = 2;

/// The debit account holds less than the amount.
pub const INSUFFICIENT_FUNDS: ResultCode = ResultCode(1);
/// An account id is out of range.
pub const UNKNOWN_ACCOUNT: ResultCode = ResultCode(2);
/// The payload is not 16 bytes or the command type is unknown.
pub const MALFORMED: ResultCode = ResultCode(3);
/// Debit and credit are the same account.
pub const SAME_ACCOUNT: ResultCode = ResultCode(4);

/// Bytes of a demo payload.
pub const PAYLOAD_BYTES: usize = 16;

/// Encodes a demo payload.
pub fn encode(debit: u32, credit: u32, amount: u64) -> [u8; PAYLOAD_BYTES] {
    let mut p = [0u8; PAYLOAD_BYTES];
    p[0..4].copy_from_slice(&debit.to_le_bytes());
    p[4..8].copy_from_slice(&credit.to_le_bytes());
    p[8..16].copy_from_slice(&amount.to_le_bytes());
    p
}

/// Balances of `accounts` accounts. Pre-allocated at construction.
#[derive(Debug, Clone)]
pub struct DemoAccounts {
    balances: Box<[u64]>,
    hash: u64,
    applied: u64,
    rejected: u64,
}

impl DemoAccounts {
    /// `accounts` accounts, all at zero.
    pub fn new(accounts: usize) -> Self {
        assert!(accounts > 0 && accounts <= u32::MAX as usize);
        Self {
            balances: vec![0; accounts].into_boxed_slice(),
            hash: 0,
            applied: 0,
            rejected: 0,
        }
    }

    /// Sum of all balances (deposits minus nothing: transfers conserve it).
    pub fn total(&self) -> u64 {
        self.balances.iter().sum()
    }

    /// Commands applied successfully.
    pub fn applied(&self) -> u64 {
        self.applied
    }

    /// Commands rejected with a business result code.
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    fn execute(&mut self, command: &CommandRef<'_>) -> Result<u64, ResultCode> {
        let p = command.payload;
        if p.len() != PAYLOAD_BYTES {
            return Err(MALFORMED);
        }
        let field = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        let (debit, credit) = (field(0) as usize, field(4) as usize);
        let amount = u64::from_le_bytes(p[8..16].try_into().expect("8 bytes"));
        if credit >= self.balances.len() {
            return Err(UNKNOWN_ACCOUNT);
        }
        match command.command_type() {
            DEPOSIT => {}
            TRANSFER if debit >= self.balances.len() => return Err(UNKNOWN_ACCOUNT),
            TRANSFER if debit == credit => return Err(SAME_ACCOUNT),
            TRANSFER if self.balances[debit] < amount => return Err(INSUFFICIENT_FUNDS),
            TRANSFER => self.balances[debit] -= amount,
            _ => return Err(MALFORMED),
        }
        self.balances[credit] += amount;
        Ok(self.balances[credit])
    }
}

impl StateMachine for DemoAccounts {
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        let result = self.execute(command);
        let code = match result {
            Ok(balance) => {
                self.applied += 1;
                outcome.set(ResultCode::OK, &balance.to_le_bytes());
                ResultCode::OK
            }
            Err(code) => {
                self.rejected += 1;
                *outcome = Outcome::code(code);
                code
            }
        };
        // Order-sensitive fold of (sequence, type, payload, result): replaying the
        // same commands gives the same hash, any reordering changes it.
        let mut h = self.hash ^ command.sequence.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        for chunk in command.payload.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            h = (h ^ u64::from_le_bytes(word)).wrapping_mul(0x100_0000_01b3);
        }
        self.hash =
            (h ^ u64::from(command.command_type()) ^ u64::from(code.0) << 16).rotate_left(23);
    }

    fn state_hash(&self) -> u64 {
        self.hash
    }
}
