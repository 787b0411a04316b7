//! Owns deciding, without side effects, what a create will do: a [`Plan`] computed from the
//! validated request, the configuration and the node's facts. `status`, `--dry-run` and unit
//! tests look at plans; `apply` carries them out.

use std::any::{Any, TypeId};
use std::collections::BTreeMap;

use crate::config::Config;
use crate::features;
use crate::ledger::Effect;
use crate::request::{Bytes, ContainerPath, PageSize, Request};

/// What the node looks like, as far as planning cares: one value per feature that needs one,
/// of that feature's own type (`features::hugepages::Facts`, `features::rdma::RdmaFacts`, ...),
/// put in by the feature's `facts` and read back by type. Planning knows no feature's fields.
#[derive(Default)]
pub struct NodeFacts {
    parts: BTreeMap<TypeId, Box<dyn Fact>>,
}

/// A feature's facts: any plain value (cloned with the facts, shown in their `Debug`).
pub trait Fact: Any + std::fmt::Debug + Send + Sync {
    fn clone_box(&self) -> Box<dyn Fact>;
    fn as_any(&self) -> &dyn Any;
}

impl<T: Any + std::fmt::Debug + Clone + Send + Sync> Fact for T {
    fn clone_box(&self) -> Box<dyn Fact> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl NodeFacts {
    /// Sets (or replaces) the facts of type `T`.
    pub fn insert<T: Fact>(&mut self, facts: T) {
        self.parts.insert(TypeId::of::<T>(), Box::new(facts));
    }

    /// [`NodeFacts::insert`], by value.
    pub fn with<T: Fact>(mut self, facts: T) -> Self {
        self.insert(facts);
        self
    }

    /// The facts of type `T`, if a feature gathered them.
    pub fn get<T: Fact>(&self) -> Option<&T> {
        self.parts.get(&TypeId::of::<T>()).and_then(|b| (**b).as_any().downcast_ref::<T>())
    }
}

impl Clone for NodeFacts {
    fn clone(&self) -> Self {
        NodeFacts { parts: self.parts.iter().map(|(k, v)| (*k, (**v).clone_box())).collect() }
    }
}

impl std::fmt::Debug for NodeFacts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.parts.values()).finish()
    }
}

/// Prefix mode's cleanup at teardown (G3).
///
/// Every host path is kept as a trusted part (a spec bind mount's source, from the bundle) and
/// the container-controlled rest below it ([`HostDir`]), so teardown can resolve the rest
/// without ever leaving the source. Records written before that split carry the joined paths in
/// `hugetlbfs_dirs` / `runtime_dir`; they still deserialize, and teardown treats the whole of
/// such a path as untrusted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrefixCleanup {
    pub prefix: String,
    /// Old records only: host dirs the container bind-mounted, joined.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hugetlbfs_dirs: Vec<std::path::PathBuf>,
    /// Old records only: the host's DPDK runtime dir behind the container's, joined.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_dir: Option<std::path::PathBuf>,
    /// Host dirs the container bind-mounted; those that are hugetlbfs get cleaned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hugetlbfs: Vec<HostDir>,
    /// The host's DPDK runtime dir behind the container's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<HostDir>,
}

/// A host directory behind a container path: `source`, a spec bind mount's source (trusted:
/// it comes from the bundle), and `below`, the relative rest under it that the container chose
/// (an annotation) and whose contents it controls while it runs.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HostDir {
    pub source: std::path::PathBuf,
    #[serde(default, skip_serializing_if = "is_empty_path")]
    pub below: std::path::PathBuf,
    /// `(st_dev, st_ino)` of `source` when the plan was made: a source that another mount of
    /// the same host tree let a container swap for a symlink afterwards is not the same dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<(u64, u64)>,
}

fn is_empty_path(p: &std::path::Path) -> bool {
    p.as_os_str().is_empty()
}

/// An [`MountPlan::EmptyDir`]'s tmpfs: its size and mode (also nosuid, nodev, noexec), the same
/// whether the hook attaches it or the wrapper's fast path puts it in the spec.
pub const EMPTY_DIR_BYTES: u64 = 16 << 20;
pub const EMPTY_DIR_MODE: &str = "0755";

/// A new filesystem attached in the container.
#[derive(Debug, Clone, PartialEq)]
pub enum MountPlan {
    /// A private hugetlbfs of `bytes`, reserved in the kernel when `reserve`.
    Hugetlbfs { size: PageSize, bytes: Bytes, reserve: bool, target: ContainerPath },
    /// A private, empty directory (small tmpfs).
    EmptyDir { target: ContainerPath },
    /// Read-only view files over a sysfs directory; skipped when the container lacks it.
    View { target: ContainerPath, files: Vec<(String, String)> },
    /// A clone of the mount at `path` in process `pid`'s mount namespace (a group's holder).
    FromNamespace { pid: i32, path: std::path::PathBuf, target: ContainerPath },
}

/// One thing a create does, as data. Features only say what (a mount, a limit, an entry for
/// the record); `apply` carries steps out without knowing which feature asked for them, and
/// every step's undo is the ledger entry it leaves.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A resource limit raised on the init (per process: nothing to undo).
    Rlimit(RlimitStep),
    /// A new filesystem attached in the container (all of a plan's in one entry into the
    /// container's mount namespace; they die with it).
    Mount(MountPlan),
    /// hugetlb limits (bytes) for the container's cgroup, equal to what it may use.
    HugetlbLimits(Vec<(PageSize, Bytes)>),
    /// A memory limit (and v2 `memory.high` below it) on the container's own memory cgroup.
    MemoryLimit { limit: Bytes, high: Option<Bytes> },
    /// An entry with nothing to do on the node at create, written to the record for teardown
    /// (its undo), status and watch. An entry that wants the init's cgroup as the create left
    /// it gets it filled in by its feature (`features::at_create`).
    Record(Effect),
}

impl Step {
    /// Where a step runs in a create, whatever feature asked for it: limits on the init first
    /// (they can fail before anything needs undoing), then the mounts (they make the kernel
    /// reservations an admission lock waits for), then the rest in the features' order (a
    /// record entry that reads the init's cgroup comes after the cgroup steps before it, which
    /// may have moved the init to a cgroup of its own).
    fn phase(&self) -> u8 {
        match self {
            Step::Rlimit(_) => 0,
            Step::Mount(_) => 1,
            Step::HugetlbLimits(_) | Step::MemoryLimit { .. } | Step::Record(_) => 2,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// What the create does, in the order it does it.
    pub steps: Vec<Step>,
    /// Things the create goes ahead despite; logged.
    pub warnings: Vec<String>,
}

/// `prlimit` on the container's init. `required`: failing it fails the create.
#[derive(Debug, Clone, PartialEq)]
pub struct RlimitStep {
    pub resource: crate::host::rlimit::Resource,
    pub limit: crate::host::rlimit::Limit,
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {why} ({fix})")]
pub struct PlanError {
    pub what: String,
    pub why: String,
    pub fix: String,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Adds a step (features call this from their `plan`).
    pub fn push(&mut self, step: Step) {
        self.steps.push(step);
    }

    pub fn mounts(&self) -> impl Iterator<Item = &MountPlan> {
        self.steps.iter().filter_map(|s| match s {
            Step::Mount(m) => Some(m),
            _ => None,
        })
    }

    /// The entries the plan writes to the record as they are planned.
    pub fn records(&self) -> impl Iterator<Item = &Effect> {
        self.steps.iter().filter_map(|s| match s {
            Step::Record(e) => Some(e),
            _ => None,
        })
    }

    /// The hugepages the kernel reserves for the container itself: its private hugetlbfs
    /// mounts (a group's pages are the group's).
    pub fn reservations(&self) -> BTreeMap<PageSize, Bytes> {
        reservations_of(self.mounts())
    }

    pub fn hugetlb_limits(&self) -> Vec<(PageSize, Bytes)> {
        self.steps
            .iter()
            .filter_map(|s| match s {
                Step::HugetlbLimits(l) => Some(l.iter().copied()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// The hugepages that private hugetlbfs `mounts` reserve.
pub fn reservations_of<'a>(
    mounts: impl IntoIterator<Item = &'a MountPlan>,
) -> BTreeMap<PageSize, Bytes> {
    mounts
        .into_iter()
        .filter_map(|m| match m {
            MountPlan::Hugetlbfs { size, bytes, .. } => Some((*size, *bytes)),
            _ => None,
        })
        .collect()
}

/// Computes the plan for container `id`: every feature's steps, put in [`Step::phase`] order
/// (stable: within a phase, the features' order).
pub fn plan(id: &str, req: &Request, cfg: &Config, facts: &NodeFacts) -> Result<Plan, PlanError> {
    let mut p = Plan::default();
    for f in features::FEATURES {
        (f.plan)(id, req, cfg, facts, &mut p)?;
    }
    p.steps.sort_by_key(Step::phase);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::{gpu, hugepages};
    use crate::host::sysfs::{NodePool, Pool};

    fn kind(s: &Step) -> &'static str {
        match s {
            Step::Rlimit(_) => "rlimit",
            Step::Mount(MountPlan::Hugetlbfs { .. }) => "hugetlbfs",
            Step::Mount(MountPlan::EmptyDir { .. }) => "empty-dir",
            Step::Mount(MountPlan::View { .. }) => "view",
            Step::Mount(MountPlan::FromNamespace { .. }) => "from-namespace",
            Step::HugetlbLimits(_) => "hugetlb-limits",
            Step::MemoryLimit { .. } => "memory-limit",
            Step::Record(Effect::GpuHeadroom(_)) => "gpu-grant",
            Step::Record(Effect::PrefixFiles(_)) => "prefix-files",
            Step::Record(_) => "record",
        }
    }

    fn node() -> NodeFacts {
        let pool = Pool { total: 64, free: 64, reserved: 0, surplus: 0 };
        NodeFacts::default()
            .with(hugepages::Facts {
                pools: [(PageSize::Size2Mi, pool)].into(),
                node_pools: [(
                    PageSize::Size2Mi,
                    vec![NodePool { node: 0, total: 64, free: 64, surplus: 0 }],
                )]
                .into(),
                ours: Default::default(),
            })
            .with(gpu::Facts { mem_total: 64 << 30 })
    }

    /// Whatever feature asks for them, the mounts come together and first (they make the
    /// reservation), the cgroup writes and record entries after them in the features' order
    /// (the GPU grant after the hugetlb limits that may move the init, its memory limit last).
    #[test]
    fn steps_run_in_phase_order_whatever_feature_asked_for_them() {
        let req = Request {
            hugepages: [(PageSize::Size2Mi, Bytes(16 << 20))].into(),
            gpu: gpu::GpuSpec {
                gpus: 1,
                evidence: vec!["device /dev/nvidia0".into()],
                limit: Some(8 << 30),
                lowered_from: None,
            },
            ..Default::default()
        };
        let p = plan("c", &req, &Config::default(), &node()).unwrap();
        let kinds: Vec<_> = p.steps.iter().map(kind).collect();
        assert_eq!(
            kinds,
            [
                "hugetlbfs",
                "view",
                "view",
                "empty-dir",
                "hugetlb-limits",
                "gpu-grant",
                "memory-limit"
            ]
        );
        assert_eq!(p.reservations(), [(PageSize::Size2Mi, Bytes(16 << 20))].into());
        assert_eq!(p.hugetlb_limits(), vec![(PageSize::Size2Mi, Bytes(16 << 20))]);
    }

    #[test]
    fn a_container_that_asks_for_nothing_gets_only_its_runtime_dir() {
        let p = plan("c", &Request::default(), &Config::default(), &NodeFacts::default()).unwrap();
        assert_eq!(p.steps.iter().map(kind).collect::<Vec<_>>(), ["empty-dir"]);
        assert!(p.reservations().is_empty() && p.warnings.is_empty());
    }

    #[test]
    fn facts_are_found_by_their_type_and_cloned_whole() {
        let f = node();
        assert_eq!(f.get::<gpu::Facts>().map(|g| g.mem_total), Some(64 << 30));
        assert!(f.get::<crate::features::rdma::RdmaFacts>().is_none());
        let c = f.clone().with(gpu::Facts { mem_total: 1 });
        assert_eq!(c.get::<gpu::Facts>().unwrap().mem_total, 1, "insert replaces");
        assert_eq!(f.get::<gpu::Facts>().unwrap().mem_total, 64 << 30, "the clone is its own");
        assert_eq!(c.get::<hugepages::Facts>().unwrap().pools.len(), 1);
    }
}
