//! The `[server]` section of a node's configuration: where to listen, the
//! limits, and the principals (bearer tokens, stored only as BLAKE3 hashes,
//! each acting for one tenant).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::ServerError;

/// The server's configuration (`[server]` in the node's TOML).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections held at once; more are refused `TooManyConnections`.
    pub connections_max: usize,
    /// Requests one connection may have awaiting replies; past it the server
    /// stops reading the connection, and the extra entries of a frame are `Busy`.
    pub in_flight_per_connection: usize,
    /// Milliseconds a started frame (or the `Hello`) may take to arrive, and a
    /// reply write may take, before the connection is cut.
    pub frame_timeout_ms: u64,
    /// Accept a `Hello` without a token, as tenant 0. Development only.
    pub allow_anonymous: bool,
    /// Who may connect.
    pub principals: Vec<Principal>,
}

/// A principal: a name, the tenant it acts for, and its token's BLAKE3
/// hash (`keel token` makes a token and prints both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The principal's name (logged at connect).
    pub name: String,
    /// The tenant every command of this principal runs as.
    pub tenant: u32,
    /// BLAKE3 of the bearer token, 64 hex digits.
    pub token_blake3: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            connections_max: 4096,
            in_flight_per_connection: 64,
            frame_timeout_ms: 10_000,
            allow_anonymous: false,
            principals: Vec::new(),
        }
    }
}

impl ServerConfig {
    pub(crate) fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms.max(1))
    }

    /// Token hash → (name, tenant), checking every hash's form.
    pub(crate) fn principal_table(&self) -> Result<HashMap<[u8; 32], (String, u32)>, ServerError> {
        self.principals
            .iter()
            .map(|p| {
                let hash = parse_hash(&p.token_blake3).ok_or_else(|| ServerError::TokenHash {
                    name: p.name.clone(),
                })?;
                Ok((hash, (p.name.clone(), p.tenant)))
            })
            .collect()
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The BLAKE3 hash (hex) of a bearer token, as `token_blake3` wants it.
pub fn token_hash(token: &str) -> String {
    blake3::hash(token.as_bytes()).to_hex().to_string()
}
