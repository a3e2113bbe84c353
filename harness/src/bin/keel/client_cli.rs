//! `keel client`: create and look up accounts and transfers on a running
//! node (`keel_harness::repl`), from the command line or a prompt.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use keel_client::{Client, ClientConfig, ClientError, Tls};
use keel_harness::repl::{self, Statement};

use crate::exit;

#[derive(clap::Args)]
pub struct ClientArgs {
    /// The node's address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    connect: SocketAddr,
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
    /// Seconds a statement may take, retries included, before its outcome
    /// is reported unknown.
    #[arg(long, default_value_t = 10)]
    deadline: u64,
    /// Statements to run (then exit); none: read them from standard input,
    /// with a prompt on a terminal.
    #[arg(long = "command", short = 'c')]
    command: Option<String>,
}

pub fn client(args: &ClientArgs) -> ExitCode {
    let mut config = ClientConfig::new(args.connect);
    config.deadline = Duration::from_secs(args.deadline.max(1));
    config.tenant = args.tenant;
    if let Some(token) = &args.token {
        config.token = token.as_bytes().to_vec();
    }
    if let Some(ca) = &args.tls_ca {
        let identity = args.tls_cert.as_deref().zip(args.tls_key.as_deref());
        match Tls::from_pem_files(ca, &args.tls_name, identity) {
            Ok(tls) => config.tls = Some(tls),
            Err(e) => {
                eprintln!("keel client: {e}");
                return ExitCode::from(exit::CONFIG);
            }
        }
    }
    let mut client = match Client::connect(config) {
        Ok(client) => client,
        Err(e) => {
            eprintln!("keel client: cannot connect to {}: {e}", args.connect);
            return ExitCode::from(exit::CANNOT_START);
        }
    };
    match &args.command {
        Some(text) => match run_text(&mut client, text) {
            Ok(_) => ExitCode::from(exit::OK),
            Err(code) => code,
        },
        None => interactive(&mut client, args.connect),
    }
}

/// Runs every statement of `text`; `Ok(true)` when one was `exit`. A parse
/// error prints and fails the text; a client error is reported and, when
/// the outcome is unknown, says how to find out.
fn run_text(client: &mut Client, text: &str) -> Result<bool, ExitCode> {
    let statements = repl::parse(text).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(exit::USAGE)
    })?;
    for statement in &statements {
        if *statement == Statement::Exit {
            return Ok(true);
        }
        match repl::execute(client, statement) {
            Ok(out) => println!("{out}"),
            Err(e @ ClientError::Unknown { .. }) => {
                eprintln!("error: {e}");
                eprintln!("       the node may or may not have applied it: look the ids up, or retry the same statement on this session");
                return Err(ExitCode::from(exit::FAILED));
            }
            Err(e) => {
                eprintln!("error: {e}");
                return Err(ExitCode::from(exit::FAILED));
            }
        }
    }
    Ok(false)
}

fn interactive(client: &mut Client, addr: SocketAddr) -> ExitCode {
    let stdin = std::io::stdin();
    let prompt = stdin.is_terminal();
    if prompt {
        eprintln!(
            "connected to {addr} (session {:#x}); `help` for the syntax, `exit` or Ctrl-D to leave",
            client.session()
        );
    }
    let mut failed = false;
    let mut pending = String::new();
    loop {
        if prompt {
            eprint!(
                "{}",
                if pending.is_empty() {
                    "keel> "
                } else {
                    "  ... "
                }
            );
            let _ = std::io::stderr().flush();
        }
        let mut line = String::new();
        match stdin.lock().read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        // A statement may span lines: it ends at `;`, or at a line that
        // does not end with `,`.
        pending.push_str(&line);
        let trimmed = pending.trim_end();
        if trimmed.ends_with(',') {
            continue;
        }
        let text = std::mem::take(&mut pending);
        match run_text(client, &text) {
            Ok(true) => break,
            Ok(false) => {}
            // At a prompt a mistake is reported and the session goes on.
            Err(_) if prompt => {}
            Err(_) => failed = true,
        }
    }
    match failed {
        true => ExitCode::from(exit::FAILED),
        false => ExitCode::from(exit::OK),
    }
}
