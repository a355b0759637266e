//! The `peerup` binary: parses the command line, sets up logging, runs a command and turns its
//! result into an exit code: 0 on success, 1 on error (one `Error: …` line on stderr), 2 on a usage
//! error (clap's own message).

mod cli;
mod cmd;
mod core_config;
mod daemon;
mod diag;
mod logging;
mod output;
mod peers;
mod proxy;
mod runtime;

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
    subscriber(filter, std::io::stderr, color).init();
}

/// Log lines without times or targets, to `writer`, as `filter` allows.
fn subscriber<W>(filter: Targets, writer: W, color: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_writer(writer)
        .with_ansi(color)
        .without_time()
        .with_target(false)
        // The fmt builder's own default stops at INFO; `filter` decides.
        .with_max_level(LevelFilter::TRACE)
        .finish()
        .with(logging::LogFilter(filter))
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

    #[derive(Clone, Default)]
    struct Buf(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn debug_lines_are_written_when_rust_log_asks_for_them() {
        for (spec, shown) in [("debug", true), ("info,peerup=debug", true), ("info", false)] {
            let buf = Buf::default();
            let writer = buf.clone();
            let sub = subscriber(log_filter(Some(spec)), move || writer.clone(), false);
            tracing::subscriber::with_default(sub, || tracing::debug!("a debug line"));
            let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
            assert_eq!(text.contains("a debug line"), shown, "RUST_LOG={spec}: {text:?}");
        }
    }

    /// Audit events are written once `telemetry.audit.enabled` asks for them, at the default
    /// level too; other info lines are not.
    #[test]
    fn audit_events_are_written_once_enabled() {
        let buf = Buf::default();
        let writer = buf.clone();
        let sub = subscriber(log_filter(None), move || writer.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "audit", "auth_change: before");
            logging::enable_audit();
            tracing::info!(target: "audit", "auth_change: after");
            tracing::info!("an info line");
            tracing::debug!(target: "audit", "an audit debug line");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(!text.contains("before") && text.contains("auth_change: after"), "{text:?}");
        assert!(!text.contains("an info line") && !text.contains("debug line"), "{text:?}");
    }

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
