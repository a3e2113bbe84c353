//! `keel client`: create and look up accounts and transfers on a running
//! node (`keel_harness::repl`), from the command line or a prompt.

use std::io::{BufRead, IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use keel_client::{Client, ClientError};
use keel_harness::repl::{self, Statement};

use crate::connect_args::ConnectArgs;
use crate::exit;

#[derive(clap::Args)]
pub struct ClientArgs {
    /// The node's address.
    #[arg(long, default_value = "127.0.0.1:7878")]
    connect: SocketAddr,
    #[command(flatten)]
    connection: ConnectArgs,
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
    let mut config = match args.connection.client_config(args.connect) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("keel client: {e}");
            return ExitCode::from(exit::CONFIG);
        }
    };
    config.deadline = Duration::from_secs(args.deadline.max(1));
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
