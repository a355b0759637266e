//! Everything printed on stdout: plain text with optional color, or JSON of the same data.
//!
//! Colors come from `anstream`, which drops them when stdout is not a terminal or `NO_COLOR` is set.

use std::fmt::Display;
use std::io::Write;

use anstyle::{AnsiColor, Style};
use serde::Serialize;

/// Writes a line to stdout; a closed pipe surfaces as an error that `main` turns into exit 0.
#[macro_export]
macro_rules! outln {
    () => { $crate::output::write_line(format_args!("")) };
    ($($arg:tt)*) => { $crate::output::write_line(format_args!($($arg)*)) };
}

/// Writes one line to stdout.
pub fn write_line(args: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut out = anstream::stdout().lock();
    out.write_fmt(args)?;
    out.write_all(b"\n")
}

/// Prints a value as pretty JSON.
pub fn json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    write_line(format_args!("{text}"))?;
    Ok(())
}

fn paint(style: Style, text: impl Display) -> String {
    format!("{style}{text}{style:#}")
}

/// Green: success.
pub fn ok(text: impl Display) -> String {
    paint(AnsiColor::Green.on_default(), text)
}

/// Yellow: attention.
pub fn warn(text: impl Display) -> String {
    paint(AnsiColor::Yellow.on_default(), text)
}

/// Red: failure.
pub fn bad(text: impl Display) -> String {
    paint(AnsiColor::Red.on_default(), text)
}

/// Dim: details.
pub fn faint(text: impl Display) -> String {
    paint(Style::new().dimmed(), text)
}

/// A peer ID shortened for tables: the first 16 characters and `...`.
pub fn short_id(id: impl Display) -> String {
    let s = id.to_string();
    match s.get(..16) {
        Some(head) if s.len() > 16 => format!("{head}..."),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids() {
        assert_eq!(short_id("12D3KooWNq8c1fNjXwhRoWxSXT419b"), "12D3KooWNq8c1fNj...");
        assert_eq!(short_id("short"), "short");
    }
}
