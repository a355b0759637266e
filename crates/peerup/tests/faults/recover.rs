//! Measuring recovery: new connections through a proxy until one is byte-exact, and commands run
//! inside a lab router's namespace (the faults themselves).

use std::path::Path;
use std::time::{Duration, Instant};

use super::lab::{COMMAND, Lab};
use super::node::{PathKind, Proxy};
use super::py::Client;

/// Bytes of each connection tried while recovering.
pub const PROBE: u64 = 256 << 10;
/// Socket inactivity timeout of those connections: a try on a dead path ends quickly.
const PROBE_IDLE: Duration = Duration::from_secs(3);

/// The first byte-exact connection after a fault.
#[derive(Debug)]
pub struct Recovered {
    /// From `since` to the end of the successful transfer.
    pub after: Duration,
    /// Connections tried, the successful one included.
    pub tries: usize,
    pub path: PathKind,
}

/// Opens connections through `proxy` in `host`, one after another, until one echoes `PROBE` bytes
/// exactly; fails if none has by `bound` after `since`.
#[track_caller]
pub fn first_exact(
    lab: &Lab,
    host: &str,
    proxy: &mut Proxy,
    since: Instant,
    bound: Duration,
    what: &str,
) -> Recovered {
    let mut tries = 0;
    loop {
        tries += 1;
        let mark = proxy.proc.mark();
        let mut client = Client::local(host, proxy.port, PROBE);
        client.idle = PROBE_IDLE;
        let name = format!("{host}-{}-{tries}", what.replace(' ', "-"));
        let t = client.run(lab, &name, Duration::from_secs(30));
        let after = since.elapsed();
        if t.is_exact(PROBE) {
            assert!(
                after <= bound,
                "{what}: first working connection only {after:?} after the fault (> {bound:?}, \
                 {tries} tries)"
            );
            let path = connection_path(proxy, mark);
            return Recovered { after, tries, path };
        }
        assert!(
            after < bound,
            "{what}: no working connection within {bound:?} ({tries} tries, last: {t:?})"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The path of the connection the proxy reported at or after line `mark` (error lines of failed
/// tries in between are skipped).
#[track_caller]
pub fn connection_path(proxy: &mut Proxy, mark: usize) -> PathKind {
    let (_, line) = proxy.proc.expect_line_from(
        "`Connection <n>: [DIRECT|RELAYED] …`",
        mark,
        None,
        Duration::from_secs(10),
        |l| l.starts_with("Connection ") && (l.contains("[DIRECT]") || l.contains("[RELAYED]")),
    );
    if line.text.contains("[DIRECT]") { PathKind::Direct } else { PathKind::Relayed }
}

/// Runs `args` inside `host`'s namespace and asserts success.
#[track_caller]
pub fn in_host(lab: &Lab, host: &str, args: &[&str]) -> String {
    let words = &args[..args.len().min(4)];
    let name = format!("{host}-{}", words.join("-").replace(['/', ' ', '.'], "_"));
    lab.run(Some(host), &name, Path::new(args[0]), &args[1..], &[], COMMAND).ok()
}
