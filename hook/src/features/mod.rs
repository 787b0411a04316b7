//! One module per feature. Each owns its facts, its steps of the plan, its part of the
//! wrapper's spec edit and the undo of the record entries it asks for; adding a feature adds a
//! module and one line in [`FEATURES`]. `plan` and `apply` know no feature by name.

use crate::config::Config;
use crate::ledger::{ContainerRecord, Effect, Ledger};
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

/// What the hook has when it gathers node facts at create (after gc, under the container's
/// lock).
pub struct FactsContext<'a> {
    pub config: &'a Config,
    pub bundle: &'a Bundle,
    pub request: &'a Request,
    pub container_id: &'a str,
    /// The container's init.
    pub pid: i32,
    /// The records of the live containers (from the create's gc).
    pub live: &'a [ContainerRecord],
}

pub struct Feature {
    pub name: &'static str,
    /// Reads what this feature's plan needs from the node into the facts (its own type).
    pub facts: fn(&FactsContext, &mut NodeFacts) -> Result<(), PlanError>,
    /// Adds this feature's steps to the plan (pure).
    pub plan: fn(&str, &Request, &Config, &NodeFacts, &mut Plan) -> Result<(), PlanError>,
    /// Edits the spec in the wrapper (before the runtime sees it). Hooks.d has no such step.
    pub edit_spec: fn(&Request, &mut Bundle, &SpecContext) -> Result<(), PlanError>,
    /// The entry a [`crate::plan::Step::Record`] of this feature writes, completed with what
    /// the create knows only when it writes it (container id, init pid); `None`: not this
    /// feature's entry.
    pub at_create: fn(&Effect, &str, i32) -> Option<Effect>,
    /// Undoes an entry this feature recorded (tolerating "already gone"); `None`: not this
    /// feature's entry. Teardown (poststop, gc, a failed create) asks every feature in turn.
    pub undo: fn(&Ledger, &str, &Effect) -> Option<Result<(), String>>,
}

impl Feature {
    /// A feature that needs no facts, edits no spec and records nothing of its own.
    const BASE: Feature = Feature {
        name: "",
        facts: no_facts,
        plan: |_, _, _, _, _| Ok(()),
        edit_spec: no_spec_edit,
        at_create: |_, _, _| None,
        undo: |_, _, _| None,
    };
}

pub fn no_facts(_: &FactsContext, _: &mut NodeFacts) -> Result<(), PlanError> {
    Ok(())
}

pub fn no_spec_edit(_: &Request, _: &mut Bundle, _: &SpecContext) -> Result<(), PlanError> {
    Ok(())
}

pub const FEATURES: &[Feature] = &[
    Feature {
        name: "hugepages",
        facts: hugepages::facts,
        plan: hugepages::plan,
        edit_spec: hugepages::edit_spec,
        ..Feature::BASE
    },
    Feature { name: "runtime-dir", plan: runtime_dir::plan, ..Feature::BASE },
    // Its facts (the group, admitted) come from `hook::create_runtime`: admission starts the
    // group's holder and is undone there when the plan fails.
    Feature { name: "dpdk-group", plan: group::plan, edit_spec: group::edit_spec, ..Feature::BASE },
    Feature {
        name: "dpdk-file-prefix",
        facts: prefix::facts,
        plan: prefix::plan,
        edit_spec: prefix::edit_spec,
        undo: prefix::undo_recorded,
        ..Feature::BASE
    },
    Feature {
        name: "gpu-headroom",
        facts: gpu::facts,
        plan: gpu::plan,
        edit_spec: gpu::edit_spec,
        at_create: gpu::at_create,
        undo: gpu::undo_recorded,
    },
    Feature {
        name: "rdma",
        facts: rdma::facts,
        plan: rdma::plan,
        edit_spec: rdma::edit_spec,
        ..Feature::BASE
    },
    Feature { name: "spdk-iobuf", plan: spdk::plan, edit_spec: spdk::edit_spec, ..Feature::BASE },
];

/// [`Feature::at_create`] of whichever feature owns `effect` (unchanged when none does).
pub fn at_create(effect: &Effect, id: &str, pid: i32) -> Effect {
    FEATURES.iter().find_map(|f| (f.at_create)(effect, id, pid)).unwrap_or_else(|| effect.clone())
}

/// [`Feature::undo`] of whichever feature owns `effect`; `None`: no feature does.
pub fn undo(ledger: &Ledger, id: &str, effect: &Effect) -> Option<Result<(), String>> {
    FEATURES.iter().find_map(|f| (f.undo)(ledger, id, effect))
}
