//! [`LedgerValidator`]: refuses what is not a ledger command on the submitting
//! thread, before it is sequenced or journaled.

use keel_codecs::Rkyv;
use keel_core::{Command, ValidationError, Validator};

use crate::commands::{self, command_type, Lookup, SagaRecord};
use crate::routing::Ownership;

/// Validation codes (`ValidationError::code`).
pub mod validation_code {
    /// The command type is not a ledger command.
    pub const UNKNOWN_COMMAND_TYPE: u32 = 1;
    /// The payload does not decode as the command type's schema.
    pub const MALFORMED_PAYLOAD: u32 = 2;
    /// The command's schema version is not one this build knows for its
    /// type (`commands::schema_versions`).
    pub const UNKNOWN_SCHEMA_VERSION: u32 = 3;
}

/// Checks command type and payload shape (the same zero-copy access the
/// business-logic processor uses, so a command it accepts decodes there too).
#[derive(Debug, Default, Clone, Copy)]
pub struct LedgerValidator;

impl Validator for LedgerValidator {
    fn validate(&self, command: &Command<'_>) -> Result<(), ValidationError> {
        let p = command.payload;
        if let Some(versions) = commands::schema_versions(command.command_type) {
            if !versions.contains(&command.schema_version) {
                return Err(ValidationError {
                    code: validation_code::UNKNOWN_SCHEMA_VERSION,
                });
            }
        }
        let decodes = match command.command_type {
            command_type::CREATE_ACCOUNTS => commands::access_create_accounts(p).is_some(),
            command_type::CREATE_TRANSFERS => commands::access_create_transfers(p).is_some(),
            command_type::LOOKUP_ACCOUNT | command_type::LOOKUP_TRANSFER => {
                Rkyv::access::<Lookup>(p).is_ok()
            }
            command_type::SET_OWNERSHIP => Rkyv::access::<Ownership>(p).is_ok(),
            command_type::SAGA_RECORD => Rkyv::access::<SagaRecord>(p).is_ok(),
            _ => {
                return Err(ValidationError {
                    code: validation_code::UNKNOWN_COMMAND_TYPE,
                })
            }
        };
        match decodes {
            true => Ok(()),
            false => Err(ValidationError {
                code: validation_code::MALFORMED_PAYLOAD,
            }),
        }
    }
}
