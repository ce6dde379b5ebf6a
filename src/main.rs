//! The `tether` binary: parse the command line, start logging, run.

use std::process::ExitCode;

use std::io::{self, Write};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tether::cli::{self, ServeCommand};
use tether::client::ClientError;
use tether::listen::{self, ListenCommand};
use tether::publish::{self, PublishCommand};
use tether::sessions::{self, SessionsCommand};
use tether::{logging, notify, Error, Server};

const HELP: &str = "tether: WebSocket events that survive disconnects.

Usage: tether <COMMAND> [FLAGS]

Commands:
  serve      run the server (tether serve --help lists its flags)
  listen     print a session's events as JSON lines, resuming across disconnects
  publish    publish events through the admin API
  sessions   show the sessions of a server

Each command's --help lists its flags.

  --help     print this help
  --version  print the version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
        Some("listen") => listen(&args[1..]),
        Some("publish") => publish(&args[1..]),
        Some("sessions") => sessions(&args[1..]),
        Some("--help" | "-h" | "help") => {
            print!("{HELP}");
            ExitCode::SUCCESS
        }
        Some("--version" | "-V") => {
            println!("tether {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Some(other) => usage_error(&format!("unknown command '{other}' (see tether --help)")),
        None => {
            eprint!("{HELP}");
            ExitCode::from(2)
        }
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("tether: {message}");
    ExitCode::from(2)
}

fn serve(args: &[String]) -> ExitCode {
    let config = match cli::parse_serve(args, &env) {
        Ok(ServeCommand::Run(config)) => config,
        Ok(ServeCommand::Help) => {
            print!("{}", cli::serve_help());
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    logging::init(config.log_level);
    // Registered before the listeners open, so a signal during start-up
    // still means a clean stop.
    let mut signals = match Signals::new([SIGTERM, SIGINT]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("tether: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = match Server::start(*config) {
        Ok(server) => server,
        Err(Error::Config(message)) => return usage_error(&message),
        Err(e) => {
            eprintln!("tether: {e}");
            return ExitCode::FAILURE;
        }
    };
    notify::notify("READY=1");
    let _ = signals.forever().next();
    notify::notify("STOPPING=1");
    server.shutdown();
    ExitCode::SUCCESS
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn listen(args: &[String]) -> ExitCode {
    let config = match listen::parse(args) {
        Ok(ListenCommand::Run(config)) => config,
        Ok(ListenCommand::Help) => {
            print!("{}", listen::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, Arc::clone(&stop)) {
            eprintln!("tether: cannot handle signals: {e}");
            return ExitCode::FAILURE;
        }
    }
    ExitCode::from(listen::run(*config, &stop, &mut io::stdout().lock()))
}

fn publish(args: &[String]) -> ExitCode {
    let done = match publish::parse(args, &env) {
        Ok(PublishCommand::One { admin, event }) => {
            publish::publish_one(&admin, &event, &mut io::stdout().lock())
        }
        Ok(PublishCommand::Stdin { admin }) => {
            publish::publish_lines(&admin, &mut io::stdin().lock(), &mut io::stdout().lock())
        }
        Ok(PublishCommand::Help) => {
            print!("{}", publish::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    finish(done)
}

fn sessions(args: &[String]) -> ExitCode {
    let done = match sessions::parse(args, &env) {
        Ok(SessionsCommand::Show {
            admin,
            client_id,
            json,
        }) => sessions::show(&admin, client_id.as_deref(), json, &mut io::stdout().lock()),
        Ok(SessionsCommand::Help) => {
            print!("{}", sessions::help());
            return ExitCode::SUCCESS;
        }
        Err(e) => return usage_error(&e.to_string()),
    };
    finish(done)
}

/// Exit code 1 with the error on stderr.
fn finish(done: Result<(), ClientError>) -> ExitCode {
    let _ = io::stdout().flush();
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tether: {e}");
            ExitCode::FAILURE
        }
    }
}
