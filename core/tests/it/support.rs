//! A small test state machine: signed balances per account, with a business
//! rejection when a withdrawal would go negative, and a command that panics.

use keel_core::{CommandRef, Outcome, ResultCode, StateMachine};

pub const DEPOSIT: u16 = 1;
pub const WITHDRAW: u16 = 2;
pub const PANIC: u16 = 3;

pub const INSUFFICIENT_FUNDS: ResultCode = ResultCode(1);

pub const ACCOUNTS: usize = 64;

/// Balances for `ACCOUNTS` accounts plus the order of applied sequences' hash.
#[derive(Debug, Clone)]
pub struct Balances {
    pub balances: [i64; ACCOUNTS],
    pub applied: u64,
    pub hash: u64,
    pub last_sequence: Option<u64>,
    pub sequences_in_order: bool,
}

impl Default for Balances {
    fn default() -> Self {
        Self {
            balances: [0; ACCOUNTS],
            applied: 0,
            hash: 0,
            last_sequence: None,
            sequences_in_order: true,
        }
    }
}

pub fn payload(account: u32, amount: i64) -> [u8; 12] {
    let mut p = [0u8; 12];
    p[..4].copy_from_slice(&account.to_le_bytes());
    p[4..].copy_from_slice(&amount.to_le_bytes());
    p
}

impl StateMachine for Balances {
    fn apply(&mut self, command: &CommandRef<'_>, outcome: &mut Outcome) {
        if let Some(last) = self.last_sequence {
            self.sequences_in_order &= command.sequence == last + 1;
        }
        self.last_sequence = Some(command.sequence);
        self.applied += 1;
        let account = u32::from_le_bytes(command.payload[..4].try_into().unwrap()) as usize;
        let amount = i64::from_le_bytes(command.payload[4..12].try_into().unwrap());
        let account = account % ACCOUNTS;
        match command.command_type() {
            DEPOSIT => self.balances[account] += amount,
            WITHDRAW if self.balances[account] < amount => {
                outcome.set(INSUFFICIENT_FUNDS, &self.balances[account].to_le_bytes());
                return;
            }
            WITHDRAW => self.balances[account] -= amount,
            PANIC => panic!("test state machine asked to panic"),
            _ => {}
        }
        self.hash = self
            .hash
            .rotate_left(5)
            .wrapping_add(command.sequence ^ amount as u64);
        outcome.set(ResultCode::OK, &self.balances[account].to_le_bytes());
    }

    fn state_hash(&self) -> u64 {
        self.hash
    }
}

/// Tests that saturate the ring on purpose may see a producer wait out its
/// back-pressure bound: `Busy` is retried, any other error fails the test.
pub fn retry_busy<T>(mut submit: impl FnMut() -> Result<T, keel_core::SubmitError>) -> T {
    loop {
        match submit() {
            Ok(value) => return value,
            Err(keel_core::SubmitError::Busy) => continue,
            Err(e) => panic!("{e}"),
        }
    }
}
