//! Link flags for the `peerup` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed as DT_RELR (glibc >= 2.36, GNU ld >= 2.38): the dynamic
        // loader reads a few KiB at start instead of ~0.5 MiB of `.rela.dyn`, which otherwise
        // stays resident in every process. ld packs only when the C library supports it, and an
        // older ld ignores the flag with a warning.
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
