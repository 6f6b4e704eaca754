//! Links the `marvel` binary as a position-dependent executable: every
//! pane runs a copy of it as its shim, and a position-independent one makes
//! each copy relocate (and so privately hold) about 300 KB of read-only
//! tables that a fixed-address binary shares with all the others.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
