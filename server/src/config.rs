//! The `[server]` section of a node's configuration: where to listen, the
//! limits, TLS, and the principals (bearer tokens stored only as BLAKE3
//! hashes, or client certificates by SHA-256 fingerprint; each acts for one
//! tenant).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
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
    /// Accept a `Hello` without credentials, as tenant 0. Development only.
    pub allow_anonymous: bool,
    /// Serve plain TCP (no encryption). Must be set explicitly; otherwise
    /// `tls` is required.
    pub plaintext: bool,
    /// TLS 1.3 (`[server.tls]`).
    pub tls: Option<TlsConfig>,
    /// Who may connect.
    pub principals: Vec<Principal>,
    /// Serve `GET /metrics` (Prometheus text format) on this address, on a
    /// thread of its own. Unset: no metrics endpoint.
    pub metrics_listen: Option<SocketAddr>,
}

/// `[server.tls]`: the node's certificate and, for mutual TLS, the CA that
/// client certificates must chain to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The node's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// The node's private key (PEM: PKCS#8, SEC1 or PKCS#1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates are verified against.
    /// Unset: no client certificates are asked for (tokens only).
    pub client_ca: Option<PathBuf>,
    /// With `client_ca`: refuse a TLS handshake without a valid client
    /// certificate (otherwise a certificate is optional and a token serves).
    #[serde(default)]
    pub client_cert_required: bool,
}

/// A principal: a name, the tenant it acts for, and how it proves who it is:
/// a bearer token's BLAKE3 hash (`keel token` makes a token and prints both)
/// or a client certificate's SHA-256 fingerprint (`keel cert` prints it;
/// `openssl x509 -noout -fingerprint -sha256` gives the same digits).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Principal {
    /// The principal's name (logged at connect).
    pub name: String,
    /// The tenant every command of this principal runs as.
    pub tenant: u32,
    /// BLAKE3 of the bearer token, 64 hex digits.
    #[serde(default)]
    pub token_blake3: Option<String>,
    /// SHA-256 of the client certificate (DER), 64 hex digits; colons allowed.
    #[serde(default)]
    pub cert_sha256: Option<String>,
    /// Commands per second this principal may submit over all its
    /// connections (one second of burst); more are answered `Throttled`.
    #[serde(default)]
    pub commands_per_second: Option<u32>,
    /// Requests this principal may have awaiting replies over all its
    /// connections; more are answered `Throttled`.
    #[serde(default)]
    pub in_flight_max: Option<u32>,
}

/// Who a credential names: the principal, with its limits.
pub(crate) type Identity = std::sync::Arc<crate::limit::PrincipalEntry>;

/// Credential digest → identity, for tokens and for certificates.
#[derive(Debug, Default)]
pub(crate) struct PrincipalTable {
    pub tokens: HashMap<[u8; 32], Identity>,
    pub certs: HashMap<[u8; 32], Identity>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            connections_max: 4096,
            in_flight_per_connection: 64,
            frame_timeout_ms: 10_000,
            allow_anonymous: false,
            plaintext: false,
            tls: None,
            principals: Vec::new(),
            metrics_listen: None,
        }
    }
}

impl ServerConfig {
    /// The `[server]` section of a node's TOML file (`keel serve`,
    /// `keel-cluster node`; the other sections are `NodeConfig`'s), or the
    /// defaults when there is none.
    pub fn from_node_toml(text: &str) -> Result<Self, String> {
        let mut table: toml::Table = text.parse().map_err(|e| format!("config: {e}"))?;
        match table.remove("server") {
            Some(section) => section
                .try_into()
                .map_err(|e| format!("config [server]: {e}")),
            None => Ok(Self::default()),
        }
    }

    /// [`ServerConfig::check`], and that somebody could connect at all.
    pub fn check_serving(&self) -> Result<(), String> {
        if self.principals.is_empty() && !self.allow_anonymous {
            return Err(
                "config [server]: no principals and allow_anonymous = false: nobody could connect"
                    .into(),
            );
        }
        self.check().map_err(|e| format!("config [server]: {e}"))
    }

    /// Checks everything [`crate::Server::start`] would, short of binding:
    /// the transport (TLS, or plain TCP set explicitly), the certificate and
    /// key files, and every principal's credential. A node checks this
    /// before recovering, so a bad `[server]` costs no start-up time.
    pub fn check(&self) -> Result<(), ServerError> {
        self.prepare().map(drop)
    }

    /// The principal tables and the TLS acceptor (`None`: plain TCP).
    pub(crate) fn prepare(
        &self,
    ) -> Result<(PrincipalTable, Option<tokio_rustls::TlsAcceptor>), ServerError> {
        let window = keel_core::session::SESSION_WINDOW as usize;
        if !(1..=window).contains(&self.in_flight_per_connection) {
            return Err(ServerError::Limit(format!(
                "in_flight_per_connection = {} is outside 1..={window} (a session's window of request numbers)",
                self.in_flight_per_connection
            )));
        }
        let principals = self.principal_table()?;
        let tls = match (&self.tls, self.plaintext) {
            (Some(tls), false) => Some(crate::tls::acceptor(tls)?),
            (None, true) => None,
            (None, false) => {
                return Err(ServerError::Transport(
                    "no [server.tls] configured: set cert and key, or plaintext = true to serve unencrypted TCP",
                ))
            }
            (Some(_), true) => {
                return Err(ServerError::Transport(
                    "both [server.tls] and plaintext = true: choose one",
                ))
            }
        };
        Ok((principals, tls))
    }

    pub(crate) fn frame_timeout(&self) -> Duration {
        Duration::from_millis(self.frame_timeout_ms.max(1))
    }

    /// The credential tables, checking that every principal has exactly one
    /// well-formed credential, that no credential names two principals, and
    /// that certificates are only named where client certificates are asked for.
    pub(crate) fn principal_table(&self) -> Result<PrincipalTable, ServerError> {
        let mut table = PrincipalTable::default();
        let asks_for_certs = self.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
        for p in &self.principals {
            let bad = |what: &str| ServerError::Principal {
                name: p.name.clone(),
                what: what.to_string(),
            };
            let (map, digest) = match (&p.token_blake3, &p.cert_sha256) {
                (Some(hex), None) => (
                    &mut table.tokens,
                    parse_hash(hex).ok_or_else(|| bad("token_blake3 must be 64 hex digits"))?,
                ),
                (None, Some(hex)) if asks_for_certs => (
                    &mut table.certs,
                    parse_hash(&hex.replace(':', ""))
                        .ok_or_else(|| bad("cert_sha256 must be 64 hex digits"))?,
                ),
                (None, Some(_)) => {
                    return Err(bad(
                        "cert_sha256 needs [server.tls] client_ca (client certificates are not asked for)",
                    ))
                }
                _ => return Err(bad("needs exactly one of token_blake3 and cert_sha256")),
            };
            // Journaled with every session registration (audit): whole.
            if p.name.is_empty() || p.name.len() > usize::from(u8::MAX) {
                return Err(bad("the name must be 1..=255 bytes"));
            }
            if p.commands_per_second == Some(0) || p.in_flight_max == Some(0) {
                return Err(bad(
                    "commands_per_second and in_flight_max must be at least 1",
                ));
            }
            let entry = crate::limit::PrincipalEntry::new(
                p.name.clone(),
                p.tenant,
                p.commands_per_second,
                p.in_flight_max,
            );
            if map.insert(digest, std::sync::Arc::new(entry)).is_some() {
                return Err(bad("its credential is also another principal's"));
            }
        }
        Ok(table)
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

/// The SHA-256 of a certificate's DER bytes, as `cert_sha256` wants it.
pub fn cert_fingerprint(der: &[u8]) -> String {
    cert_digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub(crate) fn cert_digest(der: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, der);
    digest.as_ref().try_into().expect("SHA-256 is 32 bytes")
}
