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
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

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
/// It takes `level` and `target=level` directives (`info,libp2p_dcutr=debug`): a target filter
/// rather than tracing's `EnvFilter`, whose span and field-regex matching peerup does not need and
/// whose regex engine every process would otherwise load (`docs/performance.md`).
fn init_logging() {
    let filter = log_filter(std::env::var("RUST_LOG").ok().as_deref());
    let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(color)
        .without_time()
        .with_target(false)
        .finish()
        .with(filter)
        .init();
}

/// The filter `RUST_LOG` asks for; warnings when it is unset, empty or unreadable.
fn log_filter(spec: Option<&str>) -> Targets {
    let warn = || Targets::new().with_default(LevelFilter::WARN);
    match spec.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s.parse().unwrap_or_else(|_| warn()),
        None => warn(),
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use tracing::Level;

    use super::*;

    #[test]
    fn rust_log_directives_and_the_default() {
        let f = log_filter(Some("info,libp2p_dcutr=debug"));
        assert!(f.would_enable("peerup_core::node", &Level::INFO));
        assert!(!f.would_enable("peerup_core::node", &Level::DEBUG));
        assert!(f.would_enable("libp2p_dcutr::behaviour", &Level::DEBUG));
        for unset in [None, Some(""), Some("  "), Some("=nonsense=")] {
            let f = log_filter(unset);
            assert!(f.would_enable("peerup", &Level::WARN), "{unset:?}");
            assert!(!f.would_enable("peerup", &Level::INFO), "{unset:?}");
        }
    }
}
