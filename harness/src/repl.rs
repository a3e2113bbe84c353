//! `keel client`: a small command language for a running node, after
//! TigerBeetle's REPL. A statement is an operation and objects of
//! `field=value` pairs, separated by commas and ended by `;` (or the line):
//!
//! ```text
//! create_accounts id=1 ledger=700 code=10, id=2 ledger=700 code=10 flags=debits_must_not_exceed_credits;
//! create_transfers id=1 debit_account_id=1 credit_account_id=2 amount=10 ledger=700 code=10;
//! lookup_accounts id=1, id=2;
//! lookup_transfers id=1;
//! ```
//!
//! Flags are names joined by `|` (or a number). Each statement is sent as
//! one frame (batches larger than one command are split into commands, at
//! most 9 accounts or 7 transfers each) and its results print one line per
//! object.

use keel_client::{Client, ClientError, ReplyEntry, Request, Status};
use keel_core::{Outcome, ResultCode};
use keel_ledger::commands::{self, command_type, outcome_code};
use keel_ledger::results::{CreateAccountResult, CreateTransferResult};
use keel_ledger::types::{account_flags, transfer_flags, PendingState};
use keel_ledger::{Account, Transfer};

/// What a statement asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Statement {
    /// Create these accounts.
    CreateAccounts(Vec<Account>),
    /// Create these transfers.
    CreateTransfers(Vec<Transfer>),
    /// Look these accounts up.
    LookupAccounts(Vec<u128>),
    /// Look these transfers up.
    LookupTransfers(Vec<u128>),
    /// Print the syntax.
    Help,
    /// Leave the REPL.
    Exit,
}

/// The syntax, printed by `help`.
pub const HELP: &str = "\
statements (end each with ';' or the line; objects separated by ','):
  create_accounts  id=N ledger=N code=N [flags=a|b] [user_data_128=N user_data_64=N user_data_32=N], ...
  create_transfers id=N debit_account_id=N credit_account_id=N amount=N ledger=N code=N
                   [pending_id=N timeout=SECONDS flags=a|b user_data_128=N ...], ...
  lookup_accounts  id=N, ...
  lookup_transfers id=N, ...
  help | exit
account flags:  linked debits_must_not_exceed_credits credits_must_not_exceed_debits history closed
                imported (with timestamp=NS: migrating history)
transfer flags: linked pending post_pending_transfer void_pending_transfer balancing_debit
                balancing_credit closing_debit closing_credit imported (with timestamp=NS)
batches: any size; split into commands of 9 accounts / 7 transfers without cutting a linked chain
numbers: decimal, or hex with 0x";

/// Splits text into statements (`;`-separated) and parses each non-empty one.
pub fn parse(text: &str) -> Result<Vec<Statement>, String> {
    text.split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(parse_statement)
        .collect()
}

fn parse_statement(text: &str) -> Result<Statement, String> {
    let (op, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    let objects: Vec<Vec<(&str, &str)>> = match rest.trim().is_empty() {
        true => Vec::new(),
        false => rest
            .split(',')
            .map(|object| {
                object
                    .split_whitespace()
                    .map(|pair| {
                        pair.split_once('=')
                            .ok_or_else(|| format!("`{pair}`: expected field=value"))
                    })
                    .collect::<Result<Vec<_>, String>>()
            })
            .collect::<Result<_, String>>()?,
    };
    let needs_objects = |name: &str| match objects.is_empty() {
        true => Err(format!("{name}: give at least one object (see `help`)")),
        false => Ok(()),
    };
    match op {
        "create_accounts" => {
            needs_objects(op)?;
            let accounts: Vec<Account> = objects
                .iter()
                .map(|o| account(o))
                .collect::<Result<_, _>>()?;
            // A linked chain must fit one command (it is atomic).
            let linked = |i: usize| accounts[i].flags & account_flags::LINKED != 0;
            commands::split_batch(accounts.len(), commands::ACCOUNTS_PER_COMMAND_MAX, linked)
                .map_err(|e| e.to_string())?;
            Ok(Statement::CreateAccounts(accounts))
        }
        "create_transfers" => {
            needs_objects(op)?;
            let transfers: Vec<Transfer> = objects
                .iter()
                .map(|o| transfer(o))
                .collect::<Result<_, _>>()?;
            let linked = |i: usize| transfers[i].flags & transfer_flags::LINKED != 0;
            commands::split_batch(transfers.len(), commands::TRANSFERS_PER_COMMAND_MAX, linked)
                .map_err(|e| e.to_string())?;
            Ok(Statement::CreateTransfers(transfers))
        }
        "lookup_accounts" | "lookup_transfers" => {
            needs_objects(op)?;
            let ids = objects
                .iter()
                .map(|o| id_only(o))
                .collect::<Result<_, _>>()?;
            Ok(match op {
                "lookup_accounts" => Statement::LookupAccounts(ids),
                _ => Statement::LookupTransfers(ids),
            })
        }
        "help" => Ok(Statement::Help),
        "exit" | "quit" => Ok(Statement::Exit),
        other => Err(format!("unknown operation `{other}` (see `help`)")),
    }
}

fn number<T: TryFrom<u128>>(field: &str, value: &str) -> Result<T, String> {
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u128::from_str_radix(&hex.replace('_', ""), 16),
        None => value.replace('_', "").parse::<u128>(),
    }
    .map_err(|_| format!("{field}={value}: not a number"))?;
    T::try_from(parsed).map_err(|_| format!("{field}={value}: out of range"))
}

fn flags(field: &str, value: &str, names: &[(&str, u16)]) -> Result<u16, String> {
    if value.starts_with(|c: char| c.is_ascii_digit()) {
        return number(field, value);
    }
    value.split('|').try_fold(0u16, |acc, name| {
        names
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, bit)| acc | bit)
            .ok_or_else(|| format!("{field}: unknown flag `{name}`"))
    })
}

const ACCOUNT_FLAGS: &[(&str, u16)] = &[
    ("linked", account_flags::LINKED),
    (
        "debits_must_not_exceed_credits",
        account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS,
    ),
    (
        "credits_must_not_exceed_debits",
        account_flags::CREDITS_MUST_NOT_EXCEED_DEBITS,
    ),
    ("history", account_flags::HISTORY),
    ("closed", account_flags::CLOSED),
    ("imported", account_flags::IMPORTED),
];

const TRANSFER_FLAGS: &[(&str, u16)] = &[
    ("linked", transfer_flags::LINKED),
    ("pending", transfer_flags::PENDING),
    (
        "post_pending_transfer",
        transfer_flags::POST_PENDING_TRANSFER,
    ),
    (
        "void_pending_transfer",
        transfer_flags::VOID_PENDING_TRANSFER,
    ),
    ("balancing_debit", transfer_flags::BALANCING_DEBIT),
    ("balancing_credit", transfer_flags::BALANCING_CREDIT),
    ("closing_debit", transfer_flags::CLOSING_DEBIT),
    ("closing_credit", transfer_flags::CLOSING_CREDIT),
    ("imported", transfer_flags::IMPORTED),
];

fn account(pairs: &[(&str, &str)]) -> Result<Account, String> {
    let mut a = Account::default();
    for &(field, value) in pairs {
        match field {
            "id" => a.id = number(field, value)?,
            "ledger" => a.ledger = number(field, value)?,
            "code" => a.code = number(field, value)?,
            "flags" => a.flags = flags(field, value, ACCOUNT_FLAGS)?,
            "user_data_128" => a.user_data_128 = number(field, value)?,
            "user_data_64" => a.user_data_64 = number(field, value)?,
            "user_data_32" => a.user_data_32 = number(field, value)?,
            "timestamp" => a.timestamp = number(field, value)?,
            other => return Err(format!("accounts have no field `{other}`")),
        }
    }
    Ok(a)
}

fn transfer(pairs: &[(&str, &str)]) -> Result<Transfer, String> {
    let mut t = Transfer::default();
    for &(field, value) in pairs {
        match field {
            "id" => t.id = number(field, value)?,
            "debit_account_id" => t.debit_account_id = number(field, value)?,
            "credit_account_id" => t.credit_account_id = number(field, value)?,
            "amount" => t.amount = number(field, value)?,
            "pending_id" => t.pending_id = number(field, value)?,
            "ledger" => t.ledger = number(field, value)?,
            "code" => t.code = number(field, value)?,
            "timeout" => t.timeout = number(field, value)?,
            "flags" => t.flags = flags(field, value, TRANSFER_FLAGS)?,
            "user_data_128" => t.user_data_128 = number(field, value)?,
            "user_data_64" => t.user_data_64 = number(field, value)?,
            "user_data_32" => t.user_data_32 = number(field, value)?,
            "timestamp" => t.timestamp = number(field, value)?,
            other => return Err(format!("transfers have no field `{other}`")),
        }
    }
    Ok(t)
}

fn id_only(pairs: &[(&str, &str)]) -> Result<u128, String> {
    match pairs {
        [("id", value)] => number("id", value),
        _ => Err("lookups take objects of exactly `id=N`".into()),
    }
}

fn flag_names(flags: u16, names: &[(&str, u16)]) -> String {
    let set: Vec<&str> = names
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(name, _)| *name)
        .collect();
    match set.is_empty() {
        true => "none".into(),
        false => set.join("|"),
    }
}

/// Runs one statement (not `help`/`exit`) and returns what to print.
pub fn execute(client: &mut Client, statement: &Statement) -> Result<String, ClientError> {
    // One entry per command: its payload and the ids of its events.
    let mut payloads: Vec<(Vec<u8>, Vec<u128>)> = Vec::new();
    let mut buf = [0u8; keel_protocol::PAYLOAD_BYTES_MAX];
    let kind = match statement {
        Statement::CreateAccounts(accounts) => {
            let linked = |i: usize| accounts[i].flags & account_flags::LINKED != 0;
            let parts =
                commands::split_batch(accounts.len(), commands::ACCOUNTS_PER_COMMAND_MAX, linked)
                    .expect("parse checked the chains");
            for range in parts {
                let chunk = &accounts[range];
                let len = commands::encode_create_accounts(chunk, &mut buf).expect("fits");
                payloads.push((buf[..len].to_vec(), chunk.iter().map(|a| a.id).collect()));
            }
            command_type::CREATE_ACCOUNTS
        }
        Statement::CreateTransfers(transfers) => {
            let linked = |i: usize| transfers[i].flags & transfer_flags::LINKED != 0;
            let parts =
                commands::split_batch(transfers.len(), commands::TRANSFERS_PER_COMMAND_MAX, linked)
                    .expect("parse checked the chains");
            for range in parts {
                let chunk = &transfers[range];
                let len = commands::encode_create_transfers(chunk, &mut buf).expect("fits");
                payloads.push((buf[..len].to_vec(), chunk.iter().map(|t| t.id).collect()));
            }
            command_type::CREATE_TRANSFERS
        }
        Statement::LookupAccounts(ids) | Statement::LookupTransfers(ids) => {
            for &id in ids {
                let len = commands::encode_lookup(id, &mut buf).expect("fits");
                payloads.push((buf[..len].to_vec(), vec![id]));
            }
            match statement {
                Statement::LookupAccounts(_) => command_type::LOOKUP_ACCOUNT,
                _ => command_type::LOOKUP_TRANSFER,
            }
        }
        Statement::Help => return Ok(HELP.to_string()),
        Statement::Exit => return Ok(String::new()),
    };
    let mut out = String::new();
    for frame in payloads.chunks(keel_protocol::ENTRIES_PER_FRAME_MAX) {
        let requests: Vec<Request<'_>> = frame
            .iter()
            .map(|(payload, _)| Request {
                command_type: kind,
                schema_version: keel_ledger::commands::schema_version(kind),
                payload,
            })
            .collect();
        let replies = client.call(&requests)?;
        for (reply, (_, ids)) in replies.iter().zip(frame) {
            describe(&mut out, kind, reply, ids);
        }
    }
    Ok(out.trim_end().to_string())
}

fn describe(out: &mut String, kind: u16, reply: &ReplyEntry, ids: &[u128]) {
    use std::fmt::Write;
    let refused = match reply.status {
        Status::Applied | Status::Duplicate => None,
        Status::Rejected => Some(format!("rejected by the validator (code {})", reply.code)),
        Status::SessionEvicted => Some(
            "not executed: the node no longer holds this session's outcome (look the id up)"
                .to_string(),
        ),
        other => Some(format!("{other:?}")),
    };
    if let Some(why) = refused {
        for id in ids {
            let _ = writeln!(out, "  id={id}  {why}");
        }
        return;
    }
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    let retry = match reply.status {
        Status::Duplicate => "  (a retry: the original result)",
        _ => "",
    };
    match kind {
        command_type::CREATE_ACCOUNTS | command_type::CREATE_TRANSFERS => {
            let Ok(results) = commands::event_results(kind, &outcome) else {
                let _ = writeln!(out, "  malformed result (code {})", reply.code);
                return;
            };
            for (id, &code) in ids.iter().zip(results.codes()) {
                let name = match kind {
                    command_type::CREATE_ACCOUNTS => {
                        CreateAccountResult::from_u8(code).map_or("unknown", |r| r.name())
                    }
                    _ => CreateTransferResult::from_u8(code).map_or("unknown", |r| r.name()),
                };
                let _ = writeln!(out, "  id={id}  {name}{retry}");
            }
        }
        _ if outcome.code == outcome_code::NOT_FOUND => {
            let _ = writeln!(out, "  id={}  not found", ids[0]);
        }
        command_type::LOOKUP_ACCOUNT => match commands::account_balance(&outcome) {
            Ok(Some(b)) => {
                let _ = writeln!(
                    out,
                    "  id={}  debits_pending={} debits_posted={} credits_pending={} credits_posted={} flags={}",
                    ids[0],
                    b.debits_pending,
                    b.debits_posted,
                    b.credits_pending,
                    b.credits_posted,
                    flag_names(b.flags, ACCOUNT_FLAGS)
                );
            }
            _ => {
                let _ = writeln!(out, "  id={}  not found", ids[0]);
            }
        },
        _ => match commands::transfer_status(&outcome) {
            Ok(Some(t)) => {
                let state = match t.pending_state {
                    x if x == PendingState::Pending as u8 => "pending",
                    x if x == PendingState::Posted as u8 => "posted",
                    x if x == PendingState::Voided as u8 => "voided",
                    x if x == PendingState::Expired as u8 => "expired",
                    _ => "none",
                };
                let _ = writeln!(
                    out,
                    "  id={}  amount={} pending_state={state} flags={} timestamp={}",
                    ids[0],
                    t.amount,
                    flag_names(t.flags, TRANSFER_FLAGS),
                    t.timestamp
                );
            }
            _ => {
                let _ = writeln!(out, "  id={}  not found", ids[0]);
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_linked_chain_longer_than_one_command_does_not_parse() {
        let event = |id: u32, flags: &str| {
            format!(
                "id={id} debit_account_id=1 credit_account_id=2 amount=1 ledger=1 code=1{flags}"
            )
        };
        let chain = |n: u32| {
            let mut events: Vec<String> = (1..n).map(|id| event(id, " flags=linked")).collect();
            events.push(event(n, ""));
            format!("create_transfers {}", events.join(", "))
        };
        assert!(parse(&chain(7)).is_ok(), "a chain of 7 fits one command");
        let e = parse(&chain(8)).unwrap_err();
        assert!(e.contains("8 events"), "{e}");
        // Not linked, 20 transfers are fine: they are split.
        let many: Vec<String> = (1..=20).map(|id| event(id, "")).collect();
        assert!(parse(&format!("create_transfers {}", many.join(", "))).is_ok());
        // Imported events carry their timestamp.
        let imported =
            parse("create_accounts id=1 ledger=1 code=1 flags=imported timestamp=5").unwrap();
        let Statement::CreateAccounts(accounts) = &imported[0] else {
            panic!("{imported:?}")
        };
        assert_eq!(
            (accounts[0].flags, accounts[0].timestamp),
            (account_flags::IMPORTED, 5)
        );
    }

    #[test]
    fn statements_parse_with_flags_hex_and_several_per_line() {
        let parsed = parse(
            "create_accounts id=1 ledger=700 code=10, id=0x2 ledger=700 code=10 flags=debits_must_not_exceed_credits|history; lookup_accounts id=1",
        )
        .unwrap();
        assert_eq!(parsed.len(), 2);
        let Statement::CreateAccounts(accounts) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(accounts[1].id, 2);
        assert_eq!(
            accounts[1].flags,
            account_flags::DEBITS_MUST_NOT_EXCEED_CREDITS | account_flags::HISTORY
        );
        assert_eq!(parsed[1], Statement::LookupAccounts(vec![1]));
        let parsed = parse("create_transfers id=9 debit_account_id=1 credit_account_id=2 amount=1_000 ledger=1 code=1 flags=pending timeout=30").unwrap();
        let Statement::CreateTransfers(t) = &parsed[0] else {
            panic!("{parsed:?}")
        };
        assert_eq!(
            (t[0].amount, t[0].flags, t[0].timeout),
            (1000, transfer_flags::PENDING, 30)
        );
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            ("create_acounts id=1", "unknown operation `create_acounts`"),
            ("create_accounts id=1 colour=red", "no field `colour`"),
            ("create_accounts id=x", "id=x: not a number"),
            ("create_accounts ledger=99999999999", "out of range"),
            ("create_accounts id=1 flags=sticky", "unknown flag `sticky`"),
            ("create_accounts id", "expected field=value"),
            ("lookup_accounts", "at least one object"),
            ("lookup_transfers id=1 code=2", "exactly `id=N`"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(says), "{text}: {error}");
        }
        assert_eq!(parse(" ; ;").unwrap(), Vec::new());
        assert_eq!(
            parse("help; quit").unwrap(),
            vec![Statement::Help, Statement::Exit]
        );
    }
}
