//! The `peerup` binary: parses the command line, sets up logging, runs a command and turns its
//! result into an exit code: 0 on success, 1 on error (one `Error: …` line on stderr), 2 on a usage
//! error (clap's own message).

mod cli;
mod cmd;
mod daemon;
mod net;
mod output;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
// The config module lives in the library (src/lib.rs) so the fuzz targets reach it; this keeps
// `crate::config` paths working in the binary's modules.
use peerup::config;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    init_logging();
    // Every proxied connection holds two sockets (three on the serving side's bulk path); the
    // usual soft limit of 1,024 descriptors would cap a proxy at a few hundred connections.
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::debug!(error = %e, "cannot raise the open-file limit");
    }
    match cmd::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            anstream::eprintln!("{} {msg}", output::bad("Error:"));
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (warnings for one-shot commands).
fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .with_target(false)
        .init();
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
