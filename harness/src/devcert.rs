//! Development certificates for TLS (`keel cert`, and the tests): a fresh
//! CA, a node certificate for the given names, and client certificates for
//! mutual TLS, written as PEM files (keys owner-only). Production nodes use
//! certificates from the operator's own PKI; these are for trying TLS out.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// What [`generate`] wrote.
#[derive(Debug, Clone)]
pub struct DevCerts {
    /// The CA certificate (trust it in clients; `client_ca` on the node).
    pub ca: PathBuf,
    /// The node's certificate (`[server.tls] cert`).
    pub node_cert: PathBuf,
    /// The node's key (`[server.tls] key`).
    pub node_key: PathBuf,
    /// Per client: (name, certificate, key, SHA-256 fingerprint for `cert_sha256`).
    pub clients: Vec<(String, PathBuf, PathBuf, String)>,
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    if private {
        options.mode(0o600);
    }
    options
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Writes `ca.pem`, `node.pem`, `node.key` and `<client>.pem` /
/// `<client>.key` into `dir` (created if missing). `names` are the DNS
/// names and IP addresses the node's certificate is valid for.
pub fn generate(dir: &Path, names: &[String], clients: &[String]) -> Result<DevCerts, String> {
    let rcgen_error = |e: rcgen::Error| format!("certificate generation: {e}");
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(rcgen_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Keel development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().map_err(rcgen_error)?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(rcgen_error)?;
    let issuer = Issuer::new(ca_params, ca_key);
    let ca = dir.join("ca.pem");
    write(&ca, &ca_cert.pem(), false)?;

    let leaf = |names: Vec<String>, common_name: &str, usages: Vec<ExtendedKeyUsagePurpose>| {
        let mut params = CertificateParams::new(names).map_err(rcgen_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = usages;
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(rcgen_error)?;
        let cert = params.signed_by(&key, &issuer).map_err(rcgen_error)?;
        Ok::<_, String>((cert, key))
    };
    let (node, node_key_pair) = leaf(
        names.to_vec(),
        "keel node",
        // Client auth too: replicas present it to each other (peer TLS).
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )?;
    let node_cert = dir.join("node.pem");
    let node_key = dir.join("node.key");
    write(&node_cert, &node.pem(), false)?;
    write(&node_key, &node_key_pair.serialize_pem(), true)?;

    let mut written = Vec::new();
    for name in clients {
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_".contains(c))
        {
            return Err(format!(
                "client name `{name}`: letters, digits, - and _ only (it names the files)"
            ));
        }
        let (cert, key) = leaf(Vec::new(), name, vec![ExtendedKeyUsagePurpose::ClientAuth])?;
        let cert_path = dir.join(format!("{name}.pem"));
        let key_path = dir.join(format!("{name}.key"));
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        let fingerprint = keel_server::cert_fingerprint(cert.der());
        written.push((name.clone(), cert_path, key_path, fingerprint));
    }
    Ok(DevCerts {
        ca,
        node_cert,
        node_key,
        clients: written,
    })
}
