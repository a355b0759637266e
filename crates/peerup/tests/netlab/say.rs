//! `say!`: `eprintln!` that the test harness does not capture, so that skips and measurements show
//! in every run. Shared by the NAT-lab test targets (`netlab`, `faults`, `stress`).

macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}
