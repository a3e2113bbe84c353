//! The connection options `keel bench` and `keel client` share: credentials
//! and TLS, turned into a `keel_client::ClientConfig`.

use std::net::SocketAddr;
use std::path::PathBuf;

use keel_client::{ClientConfig, ClientError, Tls};

#[derive(clap::Args)]
pub struct ConnectArgs {
    /// Bearer token (default: none, for a node that allows anonymous clients).
    #[arg(long)]
    token: Option<String>,
    /// The tenant the credentials act for.
    #[arg(long, default_value_t = 0)]
    tenant: u32,
    /// TLS: the CA (PEM) the node's certificate must chain to. Without it: plain TCP.
    #[arg(long)]
    tls_ca: Option<PathBuf>,
    /// TLS: the name the node's certificate must carry.
    #[arg(long, default_value = "localhost")]
    tls_name: String,
    /// Mutual TLS: this client's certificate chain (PEM, with --tls-key).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// Mutual TLS: this client's private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

impl ConnectArgs {
    /// `base` with these credentials and TLS settings.
    pub fn apply(&self, mut base: ClientConfig) -> Result<ClientConfig, ClientError> {
        if let Some(token) = &self.token {
            base.token = token.as_bytes().to_vec();
        }
        base.tenant = self.tenant;
        if let Some(ca) = &self.tls_ca {
            let identity = self.tls_cert.as_deref().zip(self.tls_key.as_deref());
            base.tls = Some(Tls::from_pem_files(ca, &self.tls_name, identity)?);
        }
        Ok(base)
    }

    /// A default client configuration for `addr` with these settings.
    pub fn client_config(&self, addr: SocketAddr) -> Result<ClientConfig, ClientError> {
        self.apply(ClientConfig::new(addr))
    }
}
