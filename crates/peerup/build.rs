//! Link flags for the `peerup` binary.

use std::path::Path;
use std::process::Command;

/// The functions an idle daemon runs, from `scripts/startup-order`.
const STARTUP_ORDER: &str = "link/startup-order.txt";

/// A variable cargo sets for build scripts, or "".
fn var(key: &str) -> String {
    std::env::var(key).unwrap_or_default()
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={STARTUP_ORDER}");
    if var("CARGO_CFG_TARGET_OS") != "linux" || var("CARGO_CFG_TARGET_ENV") != "gnu" {
        return;
    }
    // Relative relocations packed as DT_RELR (glibc >= 2.36, GNU ld >= 2.38 or lld): the dynamic
    // loader reads a few KiB at start instead of ~0.5 MiB of `.rela.dyn`, which otherwise stays
    // resident in every process. The linker packs only when the C library supports it, and an
    // older GNU ld ignores the flag with a warning.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    // Start-up code first and together: an idle daemon then keeps ~5 MB of code resident rather
    // than the ~13 MB the kernel's fault-around maps in around functions spread over all of
    // `.text`. Only lld reads an ordering file; rustc links x86_64 Linux with its own lld from
    // 1.90 on, unless told otherwise.
    let order = Path::new(&var("CARGO_MANIFEST_DIR")).join(STARTUP_ORDER);
    if var("PROFILE") == "release" && order.exists() && links_with_lld() {
        println!("cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}", order.display());
        // Names the list has but this build does not (another toolchain or lock file) are fine.
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether rustc links this build with its bundled lld: x86_64 Linux, rustc 1.90 or newer, and no
/// other linker or linker flavour chosen in the flags or the environment.
fn links_with_lld() -> bool {
    if var("TARGET") != "x86_64-unknown-linux-gnu" {
        return false;
    }
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if ["linker=", "linker-flavor", "linker-features", "link-self-contained", "fuse-ld"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    if std::env::vars().any(|(k, _)| k.starts_with("CARGO_TARGET_") && k.ends_with("_LINKER")) {
        return false;
    }
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (…)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version.split_whitespace().nth(1).and_then(|v| v.split('.').nth(1));
    minor.and_then(|m| m.parse::<u32>().ok()).is_some_and(|m| m >= 90)
}
