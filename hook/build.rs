//! Links the two binaries as position-dependent executables (like Debian's runc and
//! containerd): every container lifecycle execs `dataplane-runtime` three times and the hook
//! twice, and a PIE pays for its relocations on each exec (about a hundred page faults, ~0.5 ms
//! per exec on a virtualized node; `make bench`). The library and tests are unchanged.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_FEATURE")
            .map(|f| !f.contains("crt-static"))
            .unwrap_or(true)
    {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
