//! Client sessions over the network: the node's session table is bounded,
//! journaled and snapshotted. A client whose session was evicted is told
//! (`SessionEvicted`), a retry whose outcome the node forgot is refused
//! rather than run again, and a restart (journal replay or snapshot)
//! brings the same table back.

use keel_client::{Client, ClientError, Status};
use keel_harness::node::LedgerNode;
use keel_ledger::commands::command_type;
use keel_server::Server;

use crate::network::{
    client, client_config, credits, node_config, payload_accounts, payload_transfer, request,
    server_config,
};

/// A window of 64 outcomes holds 16 sessions (`sessions_for`).
const DEDUP_ENTRIES: usize = 64;
const SESSIONS: usize = 16;

fn config(dir: &std::path::Path) -> keel_harness::config::NodeConfig {
    let mut config = node_config(dir);
    config.engine.dedup_entries = DEDUP_ENTRIES;
    config
}

fn transfer(c: &mut Client, id: u128, amount: u64) -> keel_client::ReplyEntry {
    let payload = payload_transfer(id, amount);
    c.call(&[request(command_type::CREATE_TRANSFERS, &payload)])
        .unwrap()[0]
}

#[test]
fn an_evicted_session_is_reported_and_nothing_runs_twice_across_restarts() {
    assert_eq!(keel_core::session::sessions_for(DEDUP_ENTRIES), SESSIONS);
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let config = config(dir.path());
    let node = LedgerNode::start_ledger(&config).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let addr = server.local_addr();

    let mut a = client(addr, 0);
    assert_eq!(a.resumed(), None, "a new session");
    let accounts = payload_accounts();
    a.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    assert_eq!(transfer(&mut a, 1, 5).status, Status::Applied);
    // Another connection resumes it and learns how far it got.
    let resumed = client(addr, a.session());
    assert_eq!(resumed.resumed(), Some(2));
    drop(resumed);

    // 16 newer sessions: `a` is the least recently used of 17, so evicted.
    let mut others: Vec<Client> = (0..SESSIONS).map(|_| client(addr, 0)).collect();
    let evicted = transfer(&mut a, 2, 1000);
    assert_eq!(
        (evicted.status, evicted.code),
        (Status::SessionEvicted, 1),
        "a request of an evicted session on its open connection"
    );
    match Client::connect(client_config(addr, a.session())) {
        Err(ClientError::SessionEvicted {
            session,
            first_request,
        }) => assert_eq!((session, first_request), (a.session(), 1)),
        other => panic!("resuming an evicted session: {other:?}"),
    }
    // Starting afresh works (evicting the next least recently used,
    // `others[0]`); nothing of the refused request ran.
    a.new_session();
    assert_eq!(credits(&mut a), 5);
    assert_eq!(transfer(&mut a, 2, 10).status, Status::Applied);
    assert_eq!(credits(others.last_mut().unwrap()), 15);
    assert_eq!(
        transfer(&mut others[0], 3, 1).status,
        Status::SessionEvicted
    );

    server.shutdown();
    let stopped = node.shutdown().unwrap();
    let table = stopped.dedup.sessions();
    assert_eq!(table.len(), SESSIONS, "the table stays full");
    let hash = stopped.dedup.state_hash();
    drop(stopped);

    // Journal replay rebuilds the same table; then a snapshot carries it.
    let node = LedgerNode::start_ledger(&config).unwrap();
    let (stopped, snapshot) = node.shutdown_with_snapshot(&config).unwrap();
    assert_eq!(stopped.dedup.state_hash(), hash, "replayed session table");
    assert!(snapshot.is_some());
    drop(stopped);
    let node = LedgerNode::start_ledger(&config).unwrap();
    assert_eq!(
        node.recovery().records,
        0,
        "restored from the snapshot alone"
    );
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let addr = server.local_addr();
    let last = others.last().unwrap().session();
    assert_eq!(
        client(addr, last).resumed(),
        Some(1),
        "a held session resumes"
    );
    let mut resumed_a = client(addr, a.session());
    assert_eq!(resumed_a.resumed(), Some(2), "the new `a` made 2 requests");
    assert_eq!(credits(&mut resumed_a), 15);
    drop((others, resumed_a, a));
    server.shutdown();
    let stopped = node.shutdown().unwrap();
    // Two more registrations (resumes) since: the same sessions.
    assert_eq!(stopped.dedup.sessions().len(), SESSIONS);
}

#[test]
fn a_retry_whose_outcome_left_the_window_is_refused_not_run_again() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let node = LedgerNode::start_ledger(&config(dir.path())).unwrap();
    let server = Server::start(server_config(), node.submitter()).unwrap();
    let mut c = client(server.local_addr(), 0);
    let accounts = payload_accounts();
    c.call(&[request(command_type::CREATE_ACCOUNTS, &accounts)])
        .unwrap();
    let sent_at = c.next_request();
    assert_eq!(transfer(&mut c, 1, 5).status, Status::Applied);
    // Inside the window: the original answer.
    let later = c.next_request();
    c.set_next_request(sent_at);
    assert_eq!(transfer(&mut c, 1, 5).status, Status::Duplicate);
    c.set_next_request(later);
    // 64 more keyed commands push the outcome out of the window.
    for _ in 0..DEDUP_ENTRIES {
        credits(&mut c);
    }
    let later = c.next_request();
    c.set_next_request(sent_at);
    let late = transfer(&mut c, 99, 1000);
    assert_eq!(
        (late.status, late.code),
        (Status::SessionEvicted, 2),
        "a late retry is refused, not executed"
    );
    c.set_next_request(later);
    assert_eq!(credits(&mut c), 5, "the late retry did not run");
    let session = c.session();
    drop(c);
    server.shutdown();
    node.shutdown().unwrap();

    // Audit: the journal names the principal of every session request.
    let dump = std::process::Command::new(env!("CARGO_BIN_EXE_keel"))
        .args(["journal", "dump"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(dump.status.success());
    let dump = String::from_utf8(dump.stdout).unwrap();
    let registered = format!("session-register principal \"test\" session {session:#x}");
    assert!(dump.contains(&registered), "{dump}");
    let request = format!("principal \"test\" session {session:#x} request 2 ");
    assert_eq!(
        dump.lines().filter(|l| l.contains(&request)).count(),
        3,
        "request 2: applied, its Duplicate retry and the late retry, each named"
    );
}
