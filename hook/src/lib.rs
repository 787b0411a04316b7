//! dataplane-hook: an OCI hook and a runc-compatible runtime wrapper that let DPDK, SPDK, RDMA
//! and GPU containers share a node safely. The contract is shared/SPEC.md; the flow is
//! inputs → [`request`] → [`plan`] → [`apply`] (through [`ledger`] and [`host`]) → undo.

pub mod apply;
pub mod cli;
pub mod config;
pub mod configure;
pub mod deadline;
pub mod discovery;
pub mod doctor;
pub mod features;
pub mod gc;
pub mod group;
pub mod hook;
pub mod host;
pub mod ledger;
pub mod log;
pub mod metrics;
pub mod nri;
pub mod oci;
pub mod plan;
pub mod request;
pub mod runtime;
pub mod status;
pub mod support;
pub mod watch;

/// Unit tests' command lines: `&["create", "id"]` as the `Vec<String>` argv parsers take.
/// Whether a unit test that needs root may run. Without root it says SKIPPED on stderr and
/// returns false, unless `DPH_UNIT_TESTS_AS_ROOT=1` (what `make unit-test` sets, running the
/// tests as root): then a missing root is a failure, so those tests can never pass unrun.
#[cfg(test)]
pub(crate) fn test_has_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("DPH_UNIT_TESTS_AS_ROOT").is_none(),
        "{what} needs root, and DPH_UNIT_TESTS_AS_ROOT is set (make unit-test runs as root)"
    );
    eprintln!("SKIPPED: {what} needs root (make unit-test runs it as root)");
    false
}

#[cfg(test)]
pub(crate) fn test_args(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}
