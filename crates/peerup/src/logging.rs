//! The log filter: `RUST_LOG`'s target directives (see `main.rs`), plus the audit events
//! (`target: "audit"`), which `telemetry.audit.enabled` turns on at the default log level, as Go
//! peer-up's audit log is on when enabled whatever else is logged.

use std::sync::atomic::{AtomicBool, Ordering};

use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};

/// The target every audit event is logged under.
pub const AUDIT_TARGET: &str = "audit";

static AUDIT: AtomicBool = AtomicBool::new(false);

/// Writes the audit events (at INFO and above) from now on, whatever `RUST_LOG` says.
pub fn enable_audit() {
    AUDIT.store(true, Ordering::Relaxed);
}

/// `RUST_LOG`'s filter, and the audit events once [`enable_audit`] was called.
pub struct LogFilter(pub Targets);

fn is_audit(meta: &Metadata<'_>) -> bool {
    meta.target() == AUDIT_TARGET && *meta.level() <= Level::INFO
}

impl<S: Subscriber> Layer<S> for LogFilter {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if is_audit(meta) {
            // Asked each time: auditing may be turned on after the callsite was first seen.
            Interest::sometimes()
        } else if self.0.would_enable(meta.target(), meta.level()) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, _: Context<'_, S>) -> bool {
        self.0.would_enable(meta.target(), meta.level())
            || (is_audit(meta) && AUDIT.load(Ordering::Relaxed))
    }
}
