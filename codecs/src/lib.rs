//! Keel's codecs: how commands, results and snapshots become bytes.
//!
//! Every encoded value starts with a 4-byte header — schema id (`u16` LE),
//! schema version (`u16` LE) — followed by the body. The header lets a reader
//! refuse a value of the wrong kind, and lets a newer build read an older
//! version through the type's [`Migrate`] hook instead of misreading it.
//!
//! [`Rkyv`] is the default [`Codec`]: the body is an rkyv archive with pinned
//! features (little-endian, unaligned, 32-bit relative pointers), so its
//! layout never depends on the platform and a reader can use the archived
//! value in place ([`Rkyv::access`]) — zero-copy straight out of a ring slot or
//! a journal record, at any byte offset. Encoding writes into a caller's
//! buffer and decoding validates before it reads; neither allocates, and
//! neither panics on arbitrary bytes (`fuzz/` and the property tests check it).
//!
//! The byte layout of each schema is documented in `docs/codecs.md` and pinned
//! by golden files in the crates that define schemas.

#![forbid(unsafe_code)]

use std::mem::MaybeUninit;

use rkyv::api::low::{LowDeserializer, LowSerializer, LowValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor::Failure;
use rkyv::ser::allocator::SubAllocator;
use rkyv::ser::writer::Buffer;
use rkyv::{Archive, Deserialize, Serialize};

/// Bytes of the codec header in front of every encoded value.
pub const HEADER_BYTES: usize = 4;

/// Scratch bytes the encoder may use (on the stack) while serializing.
pub const SCRATCH_BYTES: usize = 1024;

/// A type with a registered, versioned encoded form.
pub trait Schema {
    /// Identifies the kind of value (non-zero, unique among a domain's schemas).
    const SCHEMA_ID: u16;
    /// The version this build writes (non-zero). Readers accept it and, through
    /// [`Migrate`], older ones.
    const VERSION: u16;
    /// Human-readable name for errors.
    const NAME: &'static str;
}

/// The migration hook: how an older encoded version becomes the current type.
///
/// A type that changes its layout bumps [`Schema::VERSION`] and implements
/// `migrate` for every version it still reads (decode the old body with the
/// old type, then convert). The default reads no older version.
pub trait Migrate: Schema + Sized {
    /// Builds the current type from the body of an older `version`.
    fn migrate(version: u16, body: &[u8]) -> Result<Self, DecodeError> {
        let _ = body;
        Err(DecodeError::NoMigration {
            schema: Self::NAME,
            version,
            current: Self::VERSION,
        })
    }
}

/// Encodes and decodes values of type `T`.
pub trait Codec<T> {
    /// Writes the header and body of `value` into `out`; returns the bytes used.
    fn encode(&self, value: &T, out: &mut [u8]) -> Result<usize, EncodeError>;
    /// Reads a value (of the current or a migratable older version).
    fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError>;
}

/// A state machine's snapshot codec: its whole state as bytes (with the
/// codec header, so the schema version travels with it) and back. Restoring
/// an older version runs the migrations the state machine declares.
pub trait SnapshotCodec: Sized {
    /// What restoring needs besides the bytes (e.g. table capacities).
    type Config;
    /// Why a restore failed (typed; says what is wrong).
    type Error: std::error::Error + Send + Sync + 'static;
    /// The schema id of the encoded state.
    const SNAPSHOT_SCHEMA_ID: u16;
    /// The version this build writes.
    const SNAPSHOT_VERSION: u16;
    /// Encodes the whole state. Runs off the hot path; may allocate.
    fn encode_snapshot(&self) -> Vec<u8>;
    /// Rebuilds the state from `bytes` (current or older version).
    fn restore_snapshot(config: &Self::Config, bytes: &[u8]) -> Result<Self, Self::Error>;
}

/// The header of an encoded value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Schema id.
    pub schema_id: u16,
    /// Schema version.
    pub version: u16,
}

impl Header {
    /// Reads the header of `bytes`.
    pub fn read(bytes: &[u8]) -> Result<Header, DecodeError> {
        if bytes.len() < HEADER_BYTES {
            return Err(DecodeError::Short { len: bytes.len() });
        }
        Ok(Header {
            schema_id: u16::from_le_bytes([bytes[0], bytes[1]]),
            version: u16::from_le_bytes([bytes[2], bytes[3]]),
        })
    }

    fn write(self, out: &mut [u8]) {
        out[0..2].copy_from_slice(&self.schema_id.to_le_bytes());
        out[2..4].copy_from_slice(&self.version.to_le_bytes());
    }
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded value does not fit the output buffer.
    #[error("{schema} does not fit in {capacity} bytes")]
    TooLarge {
        /// The schema being encoded.
        schema: &'static str,
        /// The output buffer's size.
        capacity: usize,
    },
}

/// Why bytes could not be decoded. Never a panic: arbitrary bytes give one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the codec header.
    #[error("{len} bytes is shorter than the {HEADER_BYTES}-byte codec header")]
    Short {
        /// Bytes given.
        len: usize,
    },
    /// The header names another schema.
    #[error("schema id {found} where {schema} (id {expected}) was expected")]
    WrongSchema {
        /// The expected schema.
        schema: &'static str,
        /// Its id.
        expected: u16,
        /// The id found.
        found: u16,
    },
    /// Written by a newer build than this one.
    #[error("{schema} version {version} is newer than this build's {current}")]
    NewerVersion {
        /// The schema.
        schema: &'static str,
        /// The version found.
        version: u16,
        /// The newest version this build reads.
        current: u16,
    },
    /// An older version this build has no migration for (or version 0).
    #[error("{schema} version {version} has no migration to version {current}")]
    NoMigration {
        /// The schema.
        schema: &'static str,
        /// The version found.
        version: u16,
        /// The version this build reads.
        current: u16,
    },
    /// The body does not validate as the schema's archived layout.
    #[error("{schema} version {version}: the {len}-byte body is not a valid encoding")]
    Invalid {
        /// The schema.
        schema: &'static str,
        /// The version.
        version: u16,
        /// Bytes of body.
        len: usize,
    },
    /// The body is valid but a field value is out of the type's domain.
    #[error("{schema}: field {field} holds a value outside its domain")]
    OutOfDomain {
        /// The schema.
        schema: &'static str,
        /// The field.
        field: &'static str,
    },
}

/// The rkyv codec: zero-copy, allocation-free, validating.
#[derive(Debug, Default, Clone, Copy)]
pub struct Rkyv;

/// The rkyv serializer the encoder uses (a caller's buffer, stack scratch).
pub type Serializer<'a> = LowSerializer<Buffer<'a>, SubAllocator<'a>, Failure>;

/// The validator the decoder uses (no allocation, no shared pointers).
pub type Validator<'a> = LowValidator<'a, Failure>;

impl Rkyv {
    /// Encodes `value` under its own schema: header, then the archive.
    pub fn encode<T>(value: &T, out: &mut [u8]) -> Result<usize, EncodeError>
    where
        T: Schema + for<'a> Serialize<Serializer<'a>>,
    {
        let too_large = EncodeError::TooLarge {
            schema: T::NAME,
            capacity: out.len(),
        };
        if out.len() < HEADER_BYTES {
            return Err(too_large);
        }
        let (head, body) = out.split_at_mut(HEADER_BYTES);
        let mut scratch = [MaybeUninit::<u8>::uninit(); SCRATCH_BYTES];
        let written = rkyv::api::low::to_bytes_in_with_alloc::<_, _, Failure>(
            value,
            Buffer::from(body),
            SubAllocator::new(&mut scratch),
        )
        .map_err(|_| too_large)?
        .len();
        Header {
            schema_id: T::SCHEMA_ID,
            version: T::VERSION,
        }
        .write(head);
        Ok(HEADER_BYTES + written)
    }

    /// The archived value in place, after validating header and body. Only the
    /// current version can be accessed in place; older ones go through
    /// [`Rkyv::decode`] (which migrates).
    pub fn access<T>(bytes: &[u8]) -> Result<&T::Archived, DecodeError>
    where
        T: Schema + Archive,
        T::Archived: for<'a> CheckBytes<Validator<'a>>,
    {
        let header = Self::check_header::<T>(bytes)?;
        if header.version != T::VERSION {
            return Err(DecodeError::NoMigration {
                schema: T::NAME,
                version: header.version,
                current: T::VERSION,
            });
        }
        Self::access_body::<T>(header.version, &bytes[HEADER_BYTES..])
    }

    /// Validates `body` as `T`'s archived layout (no header). For migration
    /// hooks that read an older version's body with the older type.
    pub fn access_body<T>(version: u16, body: &[u8]) -> Result<&T::Archived, DecodeError>
    where
        T: Schema + Archive,
        T::Archived: for<'a> CheckBytes<Validator<'a>>,
    {
        rkyv::api::low::access::<T::Archived, Failure>(body).map_err(|_| DecodeError::Invalid {
            schema: T::NAME,
            version,
            len: body.len(),
        })
    }

    /// Decodes an owned value, migrating an older version through [`Migrate`].
    pub fn decode<T>(bytes: &[u8]) -> Result<T, DecodeError>
    where
        T: Migrate + Archive,
        T::Archived: for<'a> CheckBytes<Validator<'a>> + Deserialize<T, LowDeserializer<Failure>>,
    {
        let header = Self::check_header::<T>(bytes)?;
        if header.version != T::VERSION {
            return T::migrate(header.version, &bytes[HEADER_BYTES..]);
        }
        let archived = Self::access_body::<T>(header.version, &bytes[HEADER_BYTES..])?;
        rkyv::api::low::deserialize::<T, Failure>(archived).map_err(|_| DecodeError::Invalid {
            schema: T::NAME,
            version: header.version,
            len: bytes.len() - HEADER_BYTES,
        })
    }

    fn check_header<T: Schema>(bytes: &[u8]) -> Result<Header, DecodeError> {
        let header = Header::read(bytes)?;
        if header.schema_id != T::SCHEMA_ID {
            return Err(DecodeError::WrongSchema {
                schema: T::NAME,
                expected: T::SCHEMA_ID,
                found: header.schema_id,
            });
        }
        if header.version > T::VERSION {
            return Err(DecodeError::NewerVersion {
                schema: T::NAME,
                version: header.version,
                current: T::VERSION,
            });
        }
        if header.version == 0 {
            return Err(DecodeError::NoMigration {
                schema: T::NAME,
                version: 0,
                current: T::VERSION,
            });
        }
        Ok(header)
    }
}

impl<T> Codec<T> for Rkyv
where
    T: Migrate + Archive + for<'a> Serialize<Serializer<'a>>,
    T::Archived: for<'a> CheckBytes<Validator<'a>> + Deserialize<T, LowDeserializer<Failure>>,
{
    fn encode(&self, value: &T, out: &mut [u8]) -> Result<usize, EncodeError> {
        Rkyv::encode(value, out)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        Rkyv::decode(bytes)
    }
}

#[cfg(test)]
mod tests;
