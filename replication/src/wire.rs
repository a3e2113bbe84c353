//! The bytes of a replication [`Message`]: the body of a `Replication`
//! frame in Keel's shared framing (docs/protocol.md, "Replication
//! frames"). Little-endian, fixed-width; decoding borrows nothing, never
//! panics and names what is wrong and where.

use crate::message::{Entry, Message};

/// Most entries one `Append` may carry.
pub const ENTRIES_PER_APPEND_MAX: usize = 4096;
/// Most bytes one entry may carry (a journal record is far smaller).
pub const ENTRY_BYTES_MAX: usize = 1 << 20;

const TAG_APPEND: u8 = 1;
const TAG_ACK: u8 = 2;
const TAG_MISMATCH: u8 = 3;
const TAG_FENCED: u8 = 4;
const TAG_SEAL: u8 = 5;
const TAG_SEALED: u8 = 6;

/// A body that is not a replication message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The body ends before a field.
    #[error(
        "replication message truncated: {need} bytes needed at offset {at}, {len} in the body"
    )]
    Truncated {
        /// Where the field starts.
        at: usize,
        /// Bytes the field needs.
        need: usize,
        /// The body's length.
        len: usize,
    },
    /// The first byte names no message.
    #[error("unknown replication message tag {0}")]
    UnknownTag(u8),
    /// An `Append` claims more entries than allowed.
    #[error("append of {count} entries (at most {ENTRIES_PER_APPEND_MAX})")]
    TooManyEntries {
        /// The claimed count.
        count: u32,
    },
    /// An entry claims more bytes than allowed.
    #[error("entry {index} of {len} bytes (at most {ENTRY_BYTES_MAX})")]
    EntryTooLarge {
        /// The entry's index in the append.
        index: usize,
        /// Its claimed length.
        len: u32,
    },
    /// Bytes after the message.
    #[error("{extra} bytes after the replication message")]
    Trailing {
        /// How many.
        extra: usize,
    },
}

/// Appends `message`'s bytes to `out`.
pub fn encode(message: &Message, out: &mut Vec<u8>) {
    match message {
        Message::Append {
            epoch,
            prev_seq,
            prev_epoch,
            entries,
            commit,
        } => {
            assert!(
                entries.len() <= ENTRIES_PER_APPEND_MAX,
                "append too long to encode"
            );
            out.push(TAG_APPEND);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&prev_seq.to_le_bytes());
            out.extend_from_slice(&prev_epoch.to_le_bytes());
            out.extend_from_slice(&commit.to_le_bytes());
            out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
            for e in entries {
                assert!(e.data.len() <= ENTRY_BYTES_MAX, "entry too large to encode");
                out.extend_from_slice(&e.seq.to_le_bytes());
                out.extend_from_slice(&e.epoch.to_le_bytes());
                out.extend_from_slice(&(e.data.len() as u32).to_le_bytes());
                out.extend_from_slice(&e.data);
            }
        }
        Message::Ack {
            epoch,
            incarnation,
            received,
            durable,
        } => {
            out.push(TAG_ACK);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&incarnation.to_le_bytes());
            out.extend_from_slice(&received.to_le_bytes());
            out.extend_from_slice(&durable.to_le_bytes());
        }
        Message::Mismatch {
            epoch,
            last_seq,
            last_epoch,
        } => {
            out.push(TAG_MISMATCH);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&last_seq.to_le_bytes());
            out.extend_from_slice(&last_epoch.to_le_bytes());
        }
        Message::Fenced { epoch } => {
            out.push(TAG_FENCED);
            out.extend_from_slice(&epoch.to_le_bytes());
        }
        Message::Seal { epoch } => {
            out.push(TAG_SEAL);
            out.extend_from_slice(&epoch.to_le_bytes());
        }
        Message::Sealed {
            epoch,
            incarnation,
            last_seq,
            last_epoch,
        } => {
            out.push(TAG_SEALED);
            out.extend_from_slice(&epoch.to_le_bytes());
            out.extend_from_slice(&incarnation.to_le_bytes());
            out.extend_from_slice(&last_seq.to_le_bytes());
            out.extend_from_slice(&last_epoch.to_le_bytes());
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, need: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(need)
            .filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(WireError::Truncated {
                at: self.at,
                need,
                len: self.bytes.len(),
            });
        };
        let field = &self.bytes[self.at..end];
        self.at = end;
        Ok(field)
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
}

/// Decodes one message that fills `bytes` exactly.
pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let mut r = Reader { bytes, at: 0 };
    let message = match r.u8()? {
        TAG_APPEND => {
            let epoch = r.u32()?;
            let prev_seq = r.u64()?;
            let prev_epoch = r.u32()?;
            let commit = r.u64()?;
            let count = r.u32()?;
            if count as usize > ENTRIES_PER_APPEND_MAX {
                return Err(WireError::TooManyEntries { count });
            }
            let mut entries = Vec::with_capacity(count as usize);
            for index in 0..count as usize {
                let seq = r.u64()?;
                let entry_epoch = r.u32()?;
                let len = r.u32()?;
                if len as usize > ENTRY_BYTES_MAX {
                    return Err(WireError::EntryTooLarge { index, len });
                }
                let data = r.take(len as usize)?.to_vec();
                entries.push(Entry {
                    seq,
                    epoch: entry_epoch,
                    data,
                });
            }
            Message::Append {
                epoch,
                prev_seq,
                prev_epoch,
                entries,
                commit,
            }
        }
        TAG_ACK => Message::Ack {
            epoch: r.u32()?,
            incarnation: r.u64()?,
            received: r.u64()?,
            durable: r.u64()?,
        },
        TAG_MISMATCH => Message::Mismatch {
            epoch: r.u32()?,
            last_seq: r.u64()?,
            last_epoch: r.u32()?,
        },
        TAG_FENCED => Message::Fenced { epoch: r.u32()? },
        TAG_SEAL => Message::Seal { epoch: r.u32()? },
        TAG_SEALED => Message::Sealed {
            epoch: r.u32()?,
            incarnation: r.u64()?,
            last_seq: r.u64()?,
            last_epoch: r.u32()?,
        },
        tag => return Err(WireError::UnknownTag(tag)),
    };
    match bytes.len() - r.at {
        0 => Ok(message),
        extra => Err(WireError::Trailing { extra }),
    }
}
