//! The `tether` binary: parse the command line, start logging, run.

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tether::cli::{self, ServeCommand};
use tether::{logging, notify, Error, Server};

const HELP: &str = "tether: WebSocket events that survive disconnects.

Usage: tether <COMMAND> [FLAGS]

Commands:
  serve      run the server (tether serve --help lists its flags)

  --help     print this help
  --version  print the version
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => serve(&args[1..]),
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
    let env = |name: &str| std::env::var(name).ok();
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
