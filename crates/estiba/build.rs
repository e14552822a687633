//! Links the binaries with packed relative relocations (`-z pack-relative-relocs`, DT_RELR) on
//! GNU/Linux: the server is a position-independent executable with ~100,000 relative
//! relocations, which as RELA entries are 2.3 MB that the dynamic loader reads at every start
//! (and that stay in the process's resident set); packed, they are a few kilobytes. Needs GNU
//! ld 2.38+ to link and glibc 2.36+ to run (Debian 12 has both).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
