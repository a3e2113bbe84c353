//! TLS 1.3 on the network face over real loopback sockets: a token over
//! TLS, mutual TLS with a client certificate mapped to a principal, and the
//! refusals: an unknown certificate, an untrusted node, a missing required
//! client certificate, plain TCP to a TLS port, and a node configured with
//! neither TLS nor an explicit `plaintext`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use keel_client::{Client, ClientConfig, ClientError, Status, Tls};
use keel_harness::devcert::{self, DevCerts};
use keel_harness::node::LedgerNode;
use keel_ledger::commands::command_type;
use keel_protocol::{decode_frame, RefusalCode};
use keel_server::{Principal, Server, ServerConfig, TlsConfig};

use super::network::{credits, node_config, payload_accounts, payload_transfer, request, TOKEN};

fn certs(dir: &Path) -> DevCerts {
    devcert::generate(
        dir,
        &["localhost".into(), "127.0.0.1".into()],
        &["alice".into(), "mallory".into()],
    )
    .unwrap()
}

/// A TLS server: the token principal (tenant 7) and `alice`'s certificate
/// (tenant 9); `mallory`'s certificate chains to the CA but names nobody.
fn tls_server_config(certs: &DevCerts, client_cert_required: bool) -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        frame_timeout_ms: 2_000,
        tls: Some(TlsConfig {
            cert: certs.node_cert.clone(),
            key: certs.node_key.clone(),
            client_ca: Some(certs.ca.clone()),
            client_cert_required,
        }),
        principals: vec![
            Principal {
                name: "token-user".into(),
                tenant: 7,
                token_blake3: Some(keel_server::token_hash(TOKEN)),
                cert_sha256: None,
                commands_per_second: None,
                in_flight_max: None,
            },
            Principal {
                name: "alice".into(),
                tenant: 9,
                token_blake3: None,
                cert_sha256: Some(certs.clients[0].3.clone()),
                commands_per_second: None,
                in_flight_max: None,
            },
        ],
        ..ServerConfig::default()
    }
}

fn tls_client_config(
    addr: std::net::SocketAddr,
    certs: &DevCerts,
    identity: Option<usize>,
) -> ClientConfig {
    let mut config = ClientConfig::new(addr);
    config.deadline = Duration::from_secs(3);
    let identity = identity.map(|i| (certs.clients[i].1.as_path(), certs.clients[i].2.as_path()));
    config.tls = Some(Tls::from_pem_files(&certs.ca, "localhost", identity).unwrap());
    config
}

#[test]
fn tokens_and_client_certificates_authenticate_over_tls_and_bad_credentials_are_refused() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let certs = certs(&dir.path().join("certs"));
    let node = LedgerNode::start_ledger(&node_config(&dir.path().join("data"))).unwrap();
    let server = Server::start(tls_server_config(&certs, false), node.submitter()).unwrap();
    let addr = server.local_addr();

    // A bearer token over TLS (no client certificate).
    let mut config = tls_client_config(addr, &certs, None);
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 7;
    let mut by_token = Client::connect(config).unwrap();
    let accounts = payload_accounts();
    let created = by_token
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    assert_eq!(created[0].status, Status::Applied);
    let transfer = payload_transfer(1, 25);
    let applied = by_token
        .call(&[request(command_type::CREATE_TRANSFERS, &transfer)])
        .unwrap();
    assert_eq!(applied[0].status, Status::Applied);

    // Mutual TLS: alice's certificate alone names her principal (tenant 9).
    let mut config = tls_client_config(addr, &certs, Some(0));
    config.tenant = 9;
    let mut alice = Client::connect(config).unwrap();
    assert_eq!(credits(&mut alice), 25);

    // A token that names another principal than the certificate: refused.
    let mut config = tls_client_config(addr, &certs, Some(0));
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 9;
    match Client::connect(config) {
        Err(ClientError::Refused { code, message }) => {
            assert_eq!(code, RefusalCode::Unauthenticated);
            assert!(message.contains("different principals"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // mallory's certificate is valid for the CA but names no principal.
    let mut config = tls_client_config(addr, &certs, Some(1));
    config.tenant = 9;
    match Client::connect(config) {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, RefusalCode::Unauthenticated),
        other => panic!("expected a refusal, got {other:?}"),
    }

    // A client that trusts another CA refuses the node, at once (not retried).
    let other = certs_in_other_dir(dir.path());
    let mut config = ClientConfig::new(addr);
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 7;
    config.deadline = Duration::from_secs(30);
    config.tls = Some(Tls::from_pem_files(&other.ca, "localhost", None).unwrap());
    let started = std::time::Instant::now();
    match Client::connect(config) {
        Err(ClientError::Tls(message)) => assert!(message.contains("certificate"), "{message}"),
        other => panic!("expected a TLS error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "not retried");

    // Plain Keel frames to the TLS port: no Keel frame ever comes back.
    let mut raw = TcpStream::connect(addr).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"KEEL\x01\x00\x01\x00 plain bytes where a TLS ClientHello belongs")
        .unwrap();
    let mut got = Vec::new();
    let _ = raw.read_to_end(&mut got);
    assert!(
        !matches!(decode_frame(&got), Ok(Some(_))),
        "a plain client got a Keel frame from a TLS port"
    );

    // Everyone good is still served.
    assert_eq!(credits(&mut by_token), 25);
    drop((by_token, alice));
    server.shutdown();
    node.shutdown().unwrap();
}

fn certs_in_other_dir(dir: &Path) -> DevCerts {
    devcert::generate(&dir.join("other-ca"), &["localhost".into()], &[]).unwrap()
}

#[test]
fn a_required_client_certificate_is_enforced_in_the_tls_handshake() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let certs = certs(&dir.path().join("certs"));
    let node = LedgerNode::start_ledger(&node_config(&dir.path().join("data"))).unwrap();
    let server = Server::start(tls_server_config(&certs, true), node.submitter()).unwrap();
    let addr = server.local_addr();

    let mut config = tls_client_config(addr, &certs, None);
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 7;
    match Client::connect(config) {
        Err(ClientError::Tls(message)) => {
            assert!(message.to_lowercase().contains("certificate"), "{message}")
        }
        other => panic!("expected a TLS refusal, got {other:?}"),
    }
    let mut config = tls_client_config(addr, &certs, Some(0));
    config.tenant = 9;
    let mut alice = Client::connect(config).unwrap();
    let accounts = payload_accounts();
    let created = alice
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    assert_eq!(created[0].status, Status::Applied);
    assert!(
        server
            .stats()
            .connections_refused
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    );
    drop(alice);
    server.shutdown();
    node.shutdown().unwrap();
}

#[test]
fn a_node_without_tls_or_an_explicit_plaintext_does_not_start() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args([
            "serve",
            "--allow-anonymous",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("plaintext = true"), "{stderr}");

    let config = ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        plaintext: true,
        principals: vec![Principal {
            name: "half".into(),
            tenant: 1,
            token_blake3: None,
            cert_sha256: Some("00".repeat(32)),
            commands_per_second: None,
            in_flight_max: None,
        }],
        ..ServerConfig::default()
    };
    let node = LedgerNode::start_ledger(&node_config(&dir.path().join("data"))).unwrap();
    match Server::start(config, node.submitter()) {
        Err(keel_server::ServerError::Principal { what, .. }) => {
            assert!(what.contains("client_ca"), "{what}")
        }
        other => panic!("expected a principal error, got {other:?}"),
    }
    node.shutdown().unwrap();

    // A principal's name is journaled whole with each session registration.
    let mut long = config_with_token("x".repeat(256));
    assert!(matches!(
        long.check(),
        Err(keel_server::ServerError::Principal { what, .. }) if what.contains("1..=255")
    ));
    long.principals[0].name = "x".repeat(255);
    long.check().unwrap();
    // A connection's window must fit a session's window of request numbers.
    long.in_flight_per_connection = 1025;
    assert!(matches!(
        long.check(),
        Err(keel_server::ServerError::Limit(what)) if what.contains("1..=1024")
    ));
}

fn config_with_token(name: String) -> ServerConfig {
    ServerConfig {
        plaintext: true,
        principals: vec![Principal {
            name,
            tenant: 1,
            token_blake3: Some(keel_server::token_hash("t")),
            cert_sha256: None,
            commands_per_second: None,
            in_flight_max: None,
        }],
        ..ServerConfig::default()
    }
}

#[test]
fn connections_that_never_finish_the_tls_handshake_count_against_the_limit() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let certs = certs(&dir.path().join("certs"));
    let node = LedgerNode::start_ledger(&node_config(&dir.path().join("data"))).unwrap();
    let mut config = tls_server_config(&certs, false);
    config.connections_max = 3;
    let server = Server::start(config, node.submitter()).unwrap();
    let addr = server.local_addr();
    let silent: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(addr).unwrap()).collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while server.stats().connections_open.load(Relaxed) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the silent connections were accepted"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut config = tls_client_config(addr, &certs, None);
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 7;
    match Client::connect(config.clone()) {
        Err(ClientError::Refused { code, .. }) => assert_eq!(code, RefusalCode::TooManyConnections),
        other => panic!("expected TooManyConnections, got {other:?}"),
    }
    drop(silent);
    while server.stats().connections_open.load(Relaxed) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "closed connections are released"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut client = Client::connect(config).unwrap();
    let accounts = payload_accounts();
    let created = client
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    assert_eq!(created[0].status, Status::Applied);
    drop(client);
    server.shutdown();
    node.shutdown().unwrap();
}
