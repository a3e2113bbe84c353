//! TLS 1.3 for the network face (rustls with the ring provider): the
//! acceptor built from `[server.tls]`, and the client-certificate identity
//! a handshake yields.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::RootCertStore;
use tokio_rustls::TlsAcceptor;

use crate::config::{cert_digest, Identity, PrincipalTable, TlsConfig};
use crate::ServerError;

fn tls_error(path: &Path, what: impl std::fmt::Display) -> ServerError {
    ServerError::Tls(format!("{}: {what}", path.display()))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ServerError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_error(path, e))?;
    match certs.is_empty() {
        true => Err(tls_error(path, "no certificate in the file")),
        false => Ok(certs),
    }
}

/// The acceptor for `config`: TLS 1.3 only; client certificates asked for
/// (and verified against `client_ca`) when one is set.
pub(crate) fn acceptor(config: &TlsConfig) -> Result<TlsAcceptor, ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = certs(&config.cert)?;
    let key = PrivateKeyDer::from_pem_file(&config.key).map_err(|e| tls_error(&config.key, e))?;
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?;
    let builder = match &config.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for cert in certs(ca)? {
                roots.add(cert).map_err(|e| tls_error(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match config.client_cert_required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| tls_error(ca, e))?)
        }
    };
    let server = builder
        .with_single_cert(chain, key)
        .map_err(|e| tls_error(&config.key, e))?;
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// The principal a verified client certificate names, if any.
pub(crate) fn cert_identity(
    principals: &PrincipalTable,
    peer_certs: Option<&[CertificateDer<'_>]>,
) -> Option<Identity> {
    let leaf = peer_certs?.first()?;
    principals.certs.get(&cert_digest(leaf)).cloned()
}

/// Mutual TLS 1.3 between a shard's replicas (as etcd's peer TLS): each
/// replica presents `cert` (with `key`) both when it accepts and when it
/// connects, and accepts a peer only if the peer's certificate chains to
/// `ca`. Whoever holds a certificate from that CA is a member: name the
/// CA for the cluster's peers alone. Returns the acceptor and connector.
pub fn peer_tls(
    ca: &Path,
    cert: &Path,
    key: &Path,
) -> Result<(TlsAcceptor, tokio_rustls::TlsConnector), ServerError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for c in certs(ca)? {
        roots.add(c).map_err(|e| tls_error(ca, e))?;
    }
    let roots = Arc::new(roots);
    let chain = certs(cert)?;
    let private = || PrivateKeyDer::from_pem_file(key).map_err(|e| tls_error(key, e));
    let verifier =
        WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), Arc::clone(&provider))
            .build()
            .map_err(|e| tls_error(ca, e))?;
    let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain.clone(), private()?)
        .map_err(|e| tls_error(key, e))?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| ServerError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, private()?)
        .map_err(|e| tls_error(key, e))?;
    Ok((
        TlsAcceptor::from(Arc::new(server)),
        tokio_rustls::TlsConnector::from(Arc::new(client)),
    ))
}
