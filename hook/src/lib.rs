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
pub mod oci;
pub mod plan;
pub mod request;
pub mod runtime;
pub mod status;
pub mod support;
pub mod watch;

/// Unit tests' command lines: `&["create", "id"]` as the `Vec<String>` argv parsers take.
#[cfg(test)]
pub(crate) fn test_args(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| x.to_string()).collect()
}
