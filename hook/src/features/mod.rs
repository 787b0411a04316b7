//! One module per feature. Each owns its part of the plan and of the wrapper's spec edit;
//! adding a feature adds a module and one line in [`FEATURES`].

use crate::config::Config;
use crate::oci::Bundle;
use crate::plan::{NodeFacts, Plan, PlanError};
use crate::request::Request;

pub mod gpu;
pub mod group;
pub mod hugepages;
pub mod prefix;
pub mod rdma;
pub mod runtime_dir;
pub mod spdk;

/// Context the wrapper has when it edits a spec at `create`.
pub struct SpecContext<'a> {
    pub config: &'a Config,
    /// The host's hugetlb cgroup hierarchy, if any.
    pub hugetlb: Option<&'a crate::host::cgroup::Hierarchy>,
    /// The container id from the command line.
    pub container_id: Option<&'a str>,
    /// The hook binary (also runs group holders).
    pub hook_bin: Option<&'a std::path::Path>,
}

pub struct Feature {
    pub name: &'static str,
    /// Adds this feature's steps to the plan (pure).
    pub plan: fn(&str, &Request, &Config, &NodeFacts, &mut Plan) -> Result<(), PlanError>,
    /// Edits the spec in the wrapper (before the runtime sees it). Hooks.d has no such step.
    pub edit_spec: fn(&Request, &mut Bundle, &SpecContext) -> Result<(), PlanError>,
}

pub fn no_spec_edit(_: &Request, _: &mut Bundle, _: &SpecContext) -> Result<(), PlanError> {
    Ok(())
}

pub const FEATURES: &[Feature] = &[
    Feature { name: "hugepages", plan: hugepages::plan, edit_spec: hugepages::edit_spec },
    Feature { name: "runtime-dir", plan: runtime_dir::plan, edit_spec: no_spec_edit },
    Feature { name: "dpdk-group", plan: group::plan, edit_spec: group::edit_spec },
    Feature { name: "dpdk-file-prefix", plan: prefix::plan, edit_spec: prefix::edit_spec },
    Feature { name: "gpu-headroom", plan: gpu::plan, edit_spec: gpu::edit_spec },
    Feature { name: "rdma", plan: rdma::plan, edit_spec: rdma::edit_spec },
    Feature { name: "spdk-iobuf", plan: spdk::plan, edit_spec: spdk::edit_spec },
];
