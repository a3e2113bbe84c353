//! The network face end to end over real loopback sockets: `keel-server` in
//! front of a ledger node, `keel-client` and raw sockets in front of it.
//! Retries are exactly-once (same session and request number → the original
//! reply), bad input gets a typed refusal while others keep being served,
//! and a `kill -9` of `keel serve` loses nothing that was acknowledged.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use keel_client::{Client, ClientConfig, Request, Status};
use keel_core::{Outcome, ResultCode};
use keel_harness::config::NodeConfig;
use keel_harness::node::LedgerNode;
use keel_ledger::commands::{self, command_type};
use keel_protocol::*;
use keel_server::{Principal, Server, ServerConfig};

pub(crate) const TOKEN: &str = "a-test-token";

pub(crate) fn node_config(dir: &std::path::Path) -> NodeConfig {
    let mut config = NodeConfig::default();
    config.journal.data_dir = dir.to_path_buf();
    config.ledger.accounts_max = 64;
    config.ledger.transfers_max = 4096;
    config.engine.back_pressure_wait_ms = 0;
    config
}

pub(crate) fn server_config() -> ServerConfig {
    ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        frame_timeout_ms: 300,
        plaintext: true,
        principals: vec![Principal {
            name: "test".into(),
            tenant: 7,
            token_blake3: Some(keel_server::token_hash(TOKEN)),
            cert_sha256: None,
            commands_per_second: None,
            in_flight_max: None,
        }],
        ..ServerConfig::default()
    }
}

/// The test principal's settings (tenant 7) for `session` (0: a new one),
/// with a deadline that covers a node starting or restarting.
pub(crate) fn client_config(addr: SocketAddr, session: u64) -> ClientConfig {
    let mut config = ClientConfig::new(addr);
    config.token = TOKEN.as_bytes().to_vec();
    config.tenant = 7;
    config.session = session;
    config.deadline = Duration::from_secs(10);
    config
}

/// Connects (retrying while the node starts, as the client does).
pub(crate) fn client(addr: SocketAddr, session: u64) -> Client {
    Client::connect(client_config(addr, session)).unwrap()
}

pub(crate) fn payload_accounts() -> Vec<u8> {
    let mut buf = vec![0; 1024];
    let len = commands::encode_create_accounts(&crate::support::accounts(2), &mut buf).unwrap();
    buf.truncate(len);
    buf
}

pub(crate) fn payload_transfer(id: u128, amount: u64) -> Vec<u8> {
    let mut buf = vec![0; 1024];
    let len = commands::encode_create_transfers(&[crate::support::transfer(id, amount)], &mut buf)
        .unwrap();
    buf.truncate(len);
    buf
}

pub(crate) fn request(command_type: u16, payload: &[u8]) -> Request<'_> {
    Request {
        command_type,
        schema_version: keel_ledger::commands::schema_version(command_type),
        payload,
    }
}

/// Account 2's credits, through the log.
pub(crate) fn credits(client: &mut Client) -> u64 {
    let mut buf = [0u8; 64];
    let len = commands::encode_lookup(2, &mut buf).unwrap();
    let reply = client
        .call(&[request(command_type::LOOKUP_ACCOUNT, &buf[..len])])
        .unwrap()[0];
    assert_eq!(reply.status, Status::Applied);
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    commands::account_balance(&outcome)
        .unwrap()
        .unwrap()
        .credits_posted
}

/// Event results of an executed create-transfers reply (or create-accounts:
/// these tests read only zero, created, against non-zero).
fn event_codes(reply: &ReplyEntry) -> Vec<u8> {
    let mut outcome = Outcome::default();
    outcome.set(ResultCode(reply.code), reply.data());
    commands::event_results(command_type::CREATE_TRANSFERS, &outcome)
        .unwrap()
        .codes()
        .to_vec()
}

#[test]
fn requests_run_once_and_a_resent_request_gets_its_original_reply() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let mut first = client(server.local_addr(), 0);
    let accounts = payload_accounts();
    let created = first
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    assert_eq!(created[0].status, Status::Applied);
    assert!(event_codes(&created[0]).iter().all(|&c| c == 0));

    // 40 transfers of 1..=40 in frames of 10 entries.
    let payloads: Vec<Vec<u8>> = (1..=40).map(|i| payload_transfer(i, i as u64)).collect();
    let mut replies = Vec::new();
    let from = first.next_request();
    for chunk in payloads.chunks(10) {
        let batch: Vec<Request<'_>> = chunk
            .iter()
            .map(|p| request(command_type::CREATE_TRANSFERS, p))
            .collect();
        replies.extend(first.call(&batch).unwrap());
    }
    assert!(replies.iter().all(|r| r.status == Status::Applied));
    assert_eq!(credits(&mut first), (1..=40).sum::<u64>());

    // Another connection resumes the session and resends the same numbers,
    // as a client does after a lost reply: the original answers, not re-run.
    let mut again = client(server.local_addr(), first.session());
    again.set_next_request(from);
    let batch: Vec<Request<'_>> = payloads[..10]
        .iter()
        .map(|p| request(command_type::CREATE_TRANSFERS, p))
        .collect();
    let resent = again.call(&batch).unwrap();
    for (new, old) in resent.iter().zip(&replies) {
        assert_eq!(new.status, Status::Duplicate);
        // The original outcome; the retry itself is a later journal record.
        assert_eq!((new.code, new.data()), (old.code, old.data()));
        assert!(new.sequence > old.sequence);
    }
    // Past the numbers the session already used (reusing one is a retry).
    again.set_next_request(first.next_request());
    assert_eq!(credits(&mut again), (1..=40).sum::<u64>());
    drop((first, again));
    server.shutdown();
    node.shutdown().unwrap();
}

/// Sends raw bytes, returns the refusal the node answers with.
fn refusal_for(addr: SocketAddr, bytes: &[u8]) -> (RefusalCode, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    let (frame, _) = decode_frame(&got)
        .unwrap()
        .expect("a whole Refused frame, then close");
    assert_eq!(frame.header.kind, Kind::Refused);
    let refusal = Refusal::decode(frame.body).unwrap();
    (refusal.code, refusal.message.to_string())
}

fn hello(version_min: u16, version_max: u16, token: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    Hello {
        version_min,
        version_max,
        token,
    }
    .encode(&mut body);
    let mut header = Header::new(Kind::Hello);
    header.session = 99;
    let mut out = Vec::new();
    encode_frame(&header, &body, &mut out);
    out
}

#[test]
fn bad_input_is_refused_with_a_type_and_others_keep_being_served() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let mut config = server_config();
    config.connections_max = 3;
    let server = Server::start(config, node.submitter()).unwrap();
    let addr = server.local_addr();
    let mut good = client(addr, 0);
    let accounts = payload_accounts();
    good.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();

    assert_eq!(
        refusal_for(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").0,
        RefusalCode::BadFrame
    );
    let (code, message) = refusal_for(addr, &hello(2, 3, TOKEN.as_bytes()));
    assert_eq!(code, RefusalCode::UnsupportedVersion);
    assert!(message.contains("version 1"), "{message}");
    assert_eq!(
        refusal_for(addr, &hello(1, 1, b"wrong")).0,
        RefusalCode::Unauthenticated
    );
    assert_eq!(
        refusal_for(addr, &hello(1, 1, b"")).0,
        RefusalCode::Unauthenticated
    );
    let mut damaged = hello(1, 1, TOKEN.as_bytes());
    *damaged.last_mut().unwrap() ^= 1;
    assert_eq!(refusal_for(addr, &damaged).0, RefusalCode::BadFrame);
    let mut oversized = hello(1, 1, TOKEN.as_bytes());
    oversized[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(
        refusal_for(addr, &oversized[..HEADER_BYTES]).0,
        RefusalCode::BadFrame
    );
    let mut ping = Vec::new();
    encode_frame(&Header::new(Kind::Ping), &[], &mut ping);
    assert_eq!(refusal_for(addr, &ping).0, RefusalCode::ProtocolViolation);
    // Slowloris: half a header, then nothing.
    assert_eq!(
        refusal_for(addr, &hello(1, 1, TOKEN.as_bytes())[..20]).0,
        RefusalCode::Timeout
    );
    // Silent after connecting: cut at the frame timeout too.
    assert_eq!(refusal_for(addr, &[]).0, RefusalCode::Timeout);

    // A flood past connections_max: the extra ones are refused.
    let _held: Vec<Client> = (0..2).map(|_| client(addr, 0)).collect();
    match Client::connect(client_config(addr, 0)) {
        Err(keel_client::ClientError::Refused { code, .. }) => {
            assert_eq!(code, RefusalCode::TooManyConnections)
        }
        other => panic!("expected a refusal, got {other:?}"),
    }

    // The good client is still served after all of the above.
    let payload = payload_transfer(1, 5);
    let reply = good
        .call(&[request(command_type::CREATE_TRANSFERS, &payload)])
        .unwrap();
    assert_eq!(reply[0].status, Status::Applied);
    assert_eq!(
        credits(&mut good),
        5,
        "the good client was served throughout"
    );
    drop(good);
    server.shutdown();
    node.shutdown().unwrap();
}

/// A port below the kernel's ephemeral range (32768 and up by default), so
/// no outgoing connection can be given it between this check and a child
/// `keel serve`'s bind, as a port from `bind(:0)` can be (the cluster tests
/// met it). 8000..20000 here; the cluster tests take 20000..32000.
pub(crate) fn free_port() -> SocketAddr {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id() % 600 * 20;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = 8_000 + (base + n) % 12_000;
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port as u16)) {
            return listener.local_addr().unwrap();
        }
    }
}

/// A `keel serve` configuration in `dir`: plain TCP on `addr`, the test
/// principal (or anonymous clients), the journal in `dir/data`.
fn serve_config(
    dir: &std::path::Path,
    addr: SocketAddr,
    anonymous: bool,
    transfers_max: u32,
) -> std::path::PathBuf {
    let who = match anonymous {
        true => "allow_anonymous = true\n".to_string(),
        false => format!(
            "[[server.principals]]\nname = \"test\"\ntenant = 7\ntoken_blake3 = \"{}\"\n",
            keel_server::token_hash(TOKEN)
        ),
    };
    let path = dir.join("keel.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"{addr}\"\nplaintext = true\n{who}\
             [journal]\ndata_dir = \"{}\"\n[ledger]\naccounts_max = 64\ntransfers_max = {transfers_max}\n",
            dir.join("data").display()
        ),
    )
    .unwrap();
    path
}

/// `keel serve --config FILE`, its stderr kept for [`stop`].
fn spawn_serve(config: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["serve", "--config"])
        .arg(config)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// SIGTERM; asserts the clean exit 0 and returns what the server wrote to stderr.
fn stop(mut server: std::process::Child) -> Vec<String> {
    let status = std::process::Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut err = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(
        server.wait().unwrap().code(),
        Some(0),
        "SIGTERM drains and exits 0: {err}"
    );
    err.lines().map(str::to_string).collect()
}

#[test]
fn a_kill_9_of_keel_serve_loses_no_acknowledged_request_and_retries_get_original_replies() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let addr = free_port();
    let config = serve_config(dir.path(), addr, false, 4096);
    let mut child = spawn_serve(&config);
    let mut c = client(addr, 0);
    let accounts = payload_accounts();
    c.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let payloads: Vec<Vec<u8>> = (1..=60).map(|i| payload_transfer(i, 1)).collect();
    let from = c.next_request();
    let mut acked = Vec::new();
    for chunk in payloads.chunks(6) {
        let batch: Vec<Request<'_>> = chunk
            .iter()
            .map(|p| request(command_type::CREATE_TRANSFERS, p))
            .collect();
        acked.extend(c.call(&batch).unwrap());
    }
    assert!(acked.iter().all(|r| r.status == Status::Applied));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let child = spawn_serve(&config);
    let mut again = client(addr, c.session());
    again.set_next_request(from);
    for (chunk, old) in payloads.chunks(6).zip(acked.chunks(6)) {
        let batch: Vec<Request<'_>> = chunk
            .iter()
            .map(|p| request(command_type::CREATE_TRANSFERS, p))
            .collect();
        for (new, old) in again.call(&batch).unwrap().iter().zip(old) {
            assert_eq!(
                new.status,
                Status::Duplicate,
                "an acknowledged request ran again after kill -9"
            );
            assert_eq!((new.code, new.data()), (old.code, old.data()));
        }
    }
    assert_eq!(
        credits(&mut again),
        60,
        "every acknowledged transfer applied exactly once"
    );
    drop((c, again));
    stop(child);
}

#[test]
fn keel_bench_holds_2000_sessions_applies_each_acknowledged_transfer_once_and_restarts_to_the_same_hash(
) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let addr = free_port();
    let config = dir.path().join("keel.toml");
    std::fs::write(
        &config,
        "[server]\nplaintext = true\nallow_anonymous = true\n[ledger]\naccounts_max = 512\ntransfers_max = 65536\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["bench", "--connect", &addr.to_string()])
        .args([
            "--connections",
            "2000",
            "--transfers",
            "20000",
            "--accounts",
            "200",
        ])
        .arg("--serve")
        .arg(dir.path().join("data"))
        .arg("--serve-config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("over 2000 connections"), "{stdout}");
    assert!(
        stdout.contains("= the amounts acknowledged as created: ok"),
        "{stdout}"
    );
    assert!(stdout.contains("= the server's at SIGTERM: ok"), "{stdout}");

    // An option out of range is refused by name before anything starts.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["bench", "--connect", &addr.to_string(), "--batch", "8"])
        .arg("--serve")
        .arg(dir.path().join("never"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`batch`"));
    assert!(!dir.path().join("never").exists(), "no server was started");
}

#[test]
fn keel_client_creates_and_looks_up_accounts_and_transfers_and_names_mistakes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let addr = free_port();
    let server = spawn_serve(&serve_config(dir.path(), addr, true, 4096));
    let mut up = ClientConfig::new(addr);
    up.deadline = Duration::from_secs(10);
    drop(Client::connect(up).unwrap());
    let keel = |statements: &str| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
            .args(["client", "--connect", &addr.to_string(), "-c", statements])
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).to_string(),
            String::from_utf8_lossy(&output.stderr).to_string(),
        )
    };
    let (code, out, err) = keel(
        "create_accounts id=1 ledger=700 code=10, id=2 ledger=700 code=10 flags=debits_must_not_exceed_credits;\
         create_transfers id=1 debit_account_id=1 credit_account_id=2 amount=10 ledger=700 code=10,\
           id=2 debit_account_id=2 credit_account_id=1 amount=50 ledger=700 code=10;\
         lookup_accounts id=1, id=2, id=3; lookup_transfers id=1, id=9",
    );
    assert_eq!(code, Some(0), "{out}{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "id=1  ok",
            "id=2  ok",
            "id=1  ok",
            "id=2  exceeds_credits",
            "id=1  debits_pending=0 debits_posted=10 credits_pending=0 credits_posted=0 flags=none",
            "id=2  debits_pending=0 debits_posted=0 credits_pending=0 credits_posted=10 flags=debits_must_not_exceed_credits",
            "id=3  not found",
            lines[7],
            "id=9  not found",
        ]
    );
    assert!(
        lines[7].starts_with("id=1  amount=10 pending_state=none"),
        "{out}"
    );
    let (code, _, err) = keel("create_accounts id=1 colour=red");
    assert_eq!(code, Some(64));
    assert!(err.contains("no field `colour`"), "{err}");
    stop(server);
}

#[test]
fn a_principal_over_its_rate_is_throttled_with_a_wait_and_nothing_throttled_runs() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let mut config = server_config();
    config.principals[0].commands_per_second = Some(20);
    let server = Server::start(config, node.submitter()).unwrap();
    let mut c = client(server.local_addr(), 0);
    let accounts = payload_accounts();
    assert_eq!(
        c.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
            .unwrap()[0]
            .status,
        Status::Applied
    );
    // 40 transfers of 1 in one frame: the 19 tokens left admit 19.
    let payloads: Vec<Vec<u8>> = (1..=40).map(|i| payload_transfer(i, 1)).collect();
    let batch: Vec<Request<'_>> = payloads
        .iter()
        .map(|p| request(command_type::CREATE_TRANSFERS, p))
        .collect();
    let replies = c.call(&batch).unwrap();
    let applied = replies
        .iter()
        .filter(|r| r.status == Status::Applied)
        .count();
    let throttled: Vec<_> = replies
        .iter()
        .filter(|r| r.status == Status::Throttled)
        .collect();
    assert_eq!(applied + throttled.len(), 40);
    // 19 tokens, plus what refills (20/s) while the frame is processed,
    // which a loaded machine may stretch: well short of all 40.
    assert!((19..=30).contains(&applied), "{applied}");
    assert!(
        throttled.iter().all(|r| (1..=100).contains(&r.code)),
        "retry_after in ms"
    );
    assert_eq!(
        server
            .stats()
            .throttled
            .load(std::sync::atomic::Ordering::Relaxed),
        throttled.len() as u64
    );
    // After the wait the node admits again, and only what was applied counts.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(credits(&mut c), applied as u64);
    drop(c);
    server.shutdown();
    node.shutdown().unwrap();
}

#[test]
fn a_pool_batches_many_callers_into_shared_frames_and_applies_each_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let pool =
        keel_client::BlockingPool::connect(client_config(server.local_addr(), 0), 2).unwrap();
    let owned = |command_type, payload: Vec<u8>| keel_client::OwnedRequest {
        command_type,
        schema_version: keel_ledger::commands::schema_version(command_type),
        payload,
    };
    let created = pool
        .call(owned(command_type::CREATE_ACCOUNTS, payload_accounts()))
        .unwrap();
    assert_eq!(created.status, Status::Applied);
    // 32 threads, each sending 25 transfers of 1 one at a time.
    std::thread::scope(|s| {
        for t in 0..32u128 {
            let pool = &pool;
            s.spawn(move || {
                for i in 0..25u128 {
                    let payload = payload_transfer(1 + t * 25 + i, 1);
                    let reply = pool
                        .call(owned(command_type::CREATE_TRANSFERS, payload))
                        .unwrap();
                    assert_eq!(reply.status, Status::Applied);
                    assert_eq!(event_codes(&reply), [0]);
                }
            });
        }
    });
    assert_eq!(pool.requests_sent(), 1 + 32 * 25);
    assert!(
        pool.frames_sent() < pool.requests_sent() / 2,
        "callers' requests share frames: {} frames for {} requests",
        pool.frames_sent(),
        pool.requests_sent()
    );
    let mut c = client(server.local_addr(), 0);
    assert_eq!(credits(&mut c), 32 * 25);
    drop((pool, c));
    server.shutdown();
    node.shutdown().unwrap();
}

/// A raw authenticated connection for `session` (tenant 7), past `Welcome`.
fn raw_session(addr: SocketAddr, session: u64) -> TcpStream {
    raw_session_as(addr, session, TOKEN.as_bytes())
}

/// [`raw_session`] with `token`'s principal.
fn raw_session_as(addr: SocketAddr, session: u64, token: &[u8]) -> TcpStream {
    let mut body = Vec::new();
    Hello {
        version_min: 1,
        version_max: 1,
        token,
    }
    .encode(&mut body);
    let mut header = Header::new(Kind::Hello);
    header.session = session;
    header.tenant = 7;
    let mut frame = Vec::new();
    encode_frame(&header, &body, &mut frame);
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&frame).unwrap();
    let mut got = vec![0u8; HEADER_BYTES + Welcome::BYTES];
    stream.read_exact(&mut got).unwrap();
    let (welcome, _) = decode_frame(&got).unwrap().unwrap();
    assert_eq!(welcome.header.kind, Kind::Welcome);
    stream
}

/// One `Request` frame of one entry.
fn request_frame(session: u64, request: u64, command_type: u16, payload: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    Requests::begin(&mut body);
    Requests::push(
        &mut body,
        &RequestEntry {
            request,
            correlation: request,
            command_type,
            schema_version: keel_ledger::commands::schema_version(command_type),
            payload,
        },
    );
    let mut header = Header::new(Kind::Request);
    header.session = session;
    header.tenant = 7;
    header.request = request;
    let mut frame = Vec::new();
    encode_frame(&header, &body, &mut frame);
    frame
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn a_client_that_never_reads_is_cut_and_one_that_leaves_mid_request_loses_nothing() {
    use std::sync::atomic::Ordering::Relaxed;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let addr = server.local_addr();
    let mut good = client(addr, 0);
    let accounts = payload_accounts();
    good.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let stats = server.stats();
    let open_before = stats.connections_open.load(Relaxed);

    // Never reads its replies: requests pile replies into the socket until
    // a reply write cannot finish within the frame timeout; then it is cut.
    let deaf = raw_session(addr, 0xdeaf);
    let mut lookup = [0u8; 64];
    let len = commands::encode_lookup(1, &mut lookup).unwrap();
    let writer = {
        let mut deaf = deaf.try_clone().unwrap();
        deaf.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let lookup = lookup[..len].to_vec();
        std::thread::spawn(move || {
            let mut frames = Vec::new();
            for request in 1..=256u64 {
                frames.extend(request_frame(
                    0xdeaf,
                    request,
                    command_type::LOOKUP_ACCOUNT,
                    &lookup,
                ));
            }
            // Resending the same numbers is fine (they are duplicates):
            // only the volume of replies matters.
            for _ in 0..400 {
                if deaf.write_all(&frames).is_err() {
                    return;
                }
            }
        })
    };
    wait_for("the server to cut the client that does not read", || {
        stats.connections_open.load(Relaxed) == open_before && stats.requests.load(Relaxed) > 256
    });
    drop(deaf.shutdown(std::net::Shutdown::Both));
    writer.join().unwrap();
    let payload = payload_transfer(1, 3);
    let reply = good
        .call(&[request(command_type::CREATE_TRANSFERS, &payload)])
        .unwrap();
    assert_eq!(reply[0].status, Status::Applied, "others are served");

    // Leaves in the middle of a frame: the half frame is dropped, nothing runs.
    let mut half = raw_session(addr, 0x4a1f);
    let frame = request_frame(
        0x4a1f,
        1,
        command_type::CREATE_TRANSFERS,
        &payload_transfer(2, 1000),
    );
    half.write_all(&frame[..frame.len() / 2]).unwrap();
    drop(half);

    // Leaves right after a whole request, before its reply: the request was
    // admitted, so it runs once, and a retry on the same session gets it.
    let requests_before = stats.requests.load(Relaxed);
    let mut gone = raw_session(addr, 0x90e);
    gone.write_all(&request_frame(
        0x90e,
        1,
        command_type::CREATE_TRANSFERS,
        &payload_transfer(3, 5),
    ))
    .unwrap();
    drop(gone);
    wait_for("the server to take the request", || {
        stats.requests.load(Relaxed) > requests_before
    });
    let mut again = client(addr, 0x90e);
    again.set_next_request(1);
    let payload = payload_transfer(3, 5);
    let retry = again
        .call(&[request(command_type::CREATE_TRANSFERS, &payload)])
        .unwrap();
    assert_eq!(
        retry[0].status,
        Status::Duplicate,
        "the admitted request ran before the retry"
    );
    assert_eq!(event_codes(&retry[0]), [0], "its original result: created");
    assert_eq!(
        credits(&mut good),
        3 + 5,
        "the half frame did not run; the other ran once"
    );
    drop((good, again));
    server.shutdown();
    node.shutdown().unwrap();
}

#[test]
fn many_clients_ride_through_a_kill_9_mid_load_and_the_journal_replays_to_the_servers_hash() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    const CLIENTS: u128 = 8;
    const FRAMES: u128 = 100;
    const PER_FRAME: u128 = 5;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let addr = free_port();
    let config = serve_config(dir.path(), addr, false, 16384);
    let mut server = spawn_serve(&config);
    let accounts = payload_accounts();
    client(addr, 0)
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let acked = AtomicU64::new(0);
    let total: u64 = std::thread::scope(|s| {
        let workers: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let acked = &acked;
                s.spawn(move || {
                    // A deadline that outlasts the restart, however slow
                    // the machine: no call may end Unknown here.
                    let mut config = client_config(addr, 0);
                    config.deadline = Duration::from_secs(60);
                    let mut client = Client::connect(config).unwrap();
                    let mut amount_sum = 0u64;
                    for f in 0..FRAMES {
                        let payloads: Vec<Vec<u8>> = (0..PER_FRAME)
                            .map(|i| {
                                let id = 1 + (c * FRAMES + f) * PER_FRAME + i;
                                payload_transfer(id, 1 + (id % 7) as u64)
                            })
                            .collect();
                        let batch: Vec<Request<'_>> = payloads
                            .iter()
                            .map(|p| request(command_type::CREATE_TRANSFERS, p))
                            .collect();
                        // Through the kill and the restart: the client
                        // reconnects and resends with the same numbers.
                        for (i, reply) in client.call(&batch).unwrap().iter().enumerate() {
                            assert!(
                                matches!(reply.status, Status::Applied | Status::Duplicate),
                                "{reply:?}"
                            );
                            assert_eq!(event_codes(reply), [0], "created exactly once");
                            let id = 1 + (c * FRAMES + f) * PER_FRAME + i as u128;
                            amount_sum += 1 + (id % 7) as u64;
                        }
                        acked.fetch_add(1, Relaxed);
                    }
                    amount_sum
                })
            })
            .collect();
        // kill -9 mid-load, then restart on the same journal.
        wait_for("some load", || acked.load(Relaxed) >= 20);
        server.kill().unwrap();
        server.wait().unwrap();
        let at_kill = acked.load(Relaxed);
        eprintln!("killed after {at_kill} of {} frames", CLIENTS * FRAMES);
        assert!(at_kill < (CLIENTS * FRAMES) as u64, "killed mid-load");
        server = spawn_serve(&config);
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    let mut c = client(addr, 0);
    assert_eq!(
        credits(&mut c),
        total,
        "every acknowledged transfer applied once"
    );
    drop(c);
    let lines = stop(server);
    let stopped_at = lines
        .iter()
        .find_map(|l| l.split("stopped cleanly at state hash ").nth(1))
        .expect("the server reports its final state hash")
        .to_string();
    let mut node_config = NodeConfig::from_file(&config).unwrap();
    node_config.journal.data_dir = dir.path().join("data");
    let node = LedgerNode::start_ledger(&node_config).unwrap();
    assert_eq!(
        format!("{:016x}", node.recovery().state_hash),
        stopped_at,
        "a replay of the journal reaches the server's state"
    );
    node.shutdown().unwrap();
}

#[test]
fn a_principal_reusing_anothers_session_id_gets_its_own_keys_not_its_replies() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let mut config = server_config();
    config.principals.push(Principal {
        name: "other".into(),
        tenant: 7,
        token_blake3: Some(keel_server::token_hash("another-token")),
        cert_sha256: None,
        commands_per_second: None,
        in_flight_max: None,
    });
    let server = Server::start(config, node.submitter()).unwrap();
    let addr = server.local_addr();
    let mut owner = client(addr, 0);
    let accounts = payload_accounts();
    owner
        .call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let first = payload_transfer(1, 10);
    let mine = owner
        .call(&[request(command_type::CREATE_TRANSFERS, &first)])
        .unwrap();
    assert_eq!(mine[0].status, Status::Applied);

    // Same session id, another principal: not the owner's session (the
    // node scopes sessions by principal), so there is nothing to resume.
    let mut config = client_config(addr, owner.session());
    config.token = b"another-token".to_vec();
    assert!(matches!(
        Client::connect(config),
        Err(keel_client::ClientError::SessionEvicted { .. })
    ));
    // Creating it (a raw Hello without RESUME) gives the other principal a
    // session of its own: the same request number is its own command (the
    // same transfer id, so `exists`), not a retry answered with the
    // owner's reply.
    let mut theirs = raw_session_as(addr, owner.session(), b"another-token");
    theirs
        .write_all(&request_frame(
            owner.session(),
            2,
            command_type::CREATE_TRANSFERS,
            &first,
        ))
        .unwrap();
    let mut got = vec![0u8; HEADER_BYTES + 4 + REPLY_ENTRY_BYTES];
    theirs.read_exact(&mut got).unwrap();
    let (frame, _) = decode_frame(&got).unwrap().unwrap();
    let reply = Replies::decode(frame.body).unwrap().iter().next().unwrap();
    assert_eq!(reply.status, Status::Applied, "not the owner's Duplicate");
    assert_ne!(event_codes(&reply), [0], "answered exists, not created");

    // The owner's own retry still gets its original reply.
    let mut again = client(addr, owner.session());
    again.set_next_request(2);
    let retry = again
        .call(&[request(command_type::CREATE_TRANSFERS, &first)])
        .unwrap();
    assert_eq!(retry[0].status, Status::Duplicate);
    assert_eq!(event_codes(&retry[0]), [0]);
    again.set_next_request(owner.next_request());
    assert_eq!(credits(&mut again), 10);
    drop((owner, theirs, again));
    server.shutdown();
    node.shutdown().unwrap();
}

#[test]
fn at_shutdown_an_idle_connection_is_told_the_node_is_shutting_down() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&node_config(dir.path())).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let mut idle = raw_session(server.local_addr(), 0x1d1e);
    server.shutdown();
    let mut got = Vec::new();
    let _ = idle.read_to_end(&mut got);
    let (frame, _) = decode_frame(&got).unwrap().expect("a Refused frame");
    assert_eq!(frame.header.kind, Kind::Refused);
    let refusal = Refusal::decode(frame.body).unwrap();
    assert_eq!(
        refusal.code,
        RefusalCode::ShuttingDown,
        "{}",
        refusal.message
    );
    node.shutdown().unwrap();
}

/// `GET` over a fresh connection; returns (status line, body).
fn http_get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("a complete HTTP response");
    (
        head.lines().next().unwrap_or_default().to_string(),
        body.to_string(),
    )
}

/// The sample `name` (with `labels` exactly, `""` for none) in an exposition.
fn metric(body: &str, name: &str, labels: &str) -> f64 {
    let key = match labels.is_empty() {
        true => name.to_string(),
        false => format!("{name}{{{labels}}}"),
    };
    body.lines()
        .find_map(|l| l.strip_prefix(&key).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {key} in:\n{body}"))
        .parse()
        .unwrap()
}

#[test]
fn keel_serve_exports_engine_server_and_journal_metrics_for_prometheus() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let (addr, metrics_addr) = (free_port(), free_port());
    let config = serve_config(dir.path(), addr, false, 4096);
    let text = std::fs::read_to_string(&config).unwrap();
    let text = text.replacen(
        "[server]\n",
        &format!("[server]\nmetrics_listen = \"{metrics_addr}\"\n"),
        1,
    ) + "[snapshot]\nevery_commands = 5\n";
    std::fs::write(&config, text).unwrap();
    let child = spawn_serve(&config);
    let mut c = client(addr, 0);
    let accounts = payload_accounts();
    c.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let payloads: Vec<Vec<u8>> = (1..=20).map(|i| payload_transfer(i, 1)).collect();
    for p in &payloads {
        c.call(&[request(command_type::CREATE_TRANSFERS, p)])
            .unwrap();
    }
    // The endpoint starts just after the client listener.
    wait_for("the metrics endpoint", || {
        TcpStream::connect(metrics_addr).is_ok()
    });
    // A caller is answered before the publisher counts its command, so the
    // last reply may outrun the counters: scrape until every stage has seen
    // the 22 commands (21 requests plus the session's registration).
    let counted = |body: &str| {
        ["journaller", "replicator", "blp", "publisher"]
            .iter()
            .all(|stage| {
                metric(
                    body,
                    "keel_stage_commands_total",
                    &format!("stage=\"{stage}\""),
                ) >= 22.0
            })
            && metric(body, "keel_ack_latency_seconds_count", "") >= 22.0
    };
    let mut scraped = http_get(metrics_addr, "/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !counted(&scraped.1) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
        scraped = http_get(metrics_addr, "/metrics");
    }
    let (status, body) = scraped;
    assert!(status.contains("200"), "{status}");
    // Every line is a comment or `name[{labels}] value` with a number.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(name.starts_with("keel_"), "{line}");
        assert!(value.parse::<f64>().is_ok(), "{line}");
    }
    assert!(metric(&body, "keel_server_requests_total", "") >= 21.0);
    assert!(metric(&body, "keel_server_connections_open", "") >= 1.0);
    // 21 requests plus the session's registration, through every stage.
    for stage in ["journaller", "replicator", "blp", "publisher"] {
        let released = metric(
            &body,
            "keel_stage_commands_total",
            &format!("stage=\"{stage}\""),
        );
        assert!(released >= 22.0, "{stage}: {released}");
    }
    assert!(metric(&body, "keel_ack_latency_seconds_count", "") >= 22.0);
    let p99 = metric(&body, "keel_ack_latency_seconds", "quantile=\"0.99\"");
    assert!(p99 > 0.0 && p99 < 60.0, "{p99}");
    // The journal times every batch: one per synchronous request at least.
    let batches = metric(
        &body,
        "keel_stage_batch_seconds_count",
        "stage=\"journaller\"",
    );
    assert!(batches >= 22.0, "{batches}");
    assert!(metric(&body, "keel_journal_durable_next", "") >= 22.0);
    // Every metric the dashboard in docs/ plots is one the node exports.
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/dashboards/keel-node.json"
    ))
    .unwrap();
    let exported: std::collections::BTreeSet<&str> = body
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let mut rest = dashboard.as_str();
    while let Some(at) = rest.find("keel_") {
        let name: String = rest[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name != "keel_" {
            assert!(
                exported.contains(name.as_str()),
                "the dashboard plots {name}, which is not exported"
            );
        }
        rest = &rest[at + name.len().max(5)..];
    }
    // The shadow replica snapshots every 5 commands; its progress shows.
    wait_for("a snapshot in the metrics", || {
        let (_, body) = http_get(metrics_addr, "/metrics");
        body.contains("keel_snapshot_age_seconds ")
            && metric(&body, "keel_snapshots_written_total", "") >= 1.0
            && metric(&body, "keel_snapshot_covered_sequence", "") >= 5.0
    });
    let (status, _) = http_get(metrics_addr, "/admin");
    assert!(status.contains("404"), "{status}");
    drop(c);
    let stderr = stop(child);
    assert!(
        stderr
            .iter()
            .any(|l| l.contains(&format!("metrics on http://{metrics_addr}/metrics"))),
        "{stderr:?}"
    );
}
