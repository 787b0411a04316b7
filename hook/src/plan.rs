//! Owns deciding, without side effects, what a create will do: a [`Plan`] computed from the
//! validated request, the configuration and the node's facts. `status`, `--dry-run` and unit
//! tests look at plans; `apply` carries them out.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::features;
use crate::host::sysfs::{NodePool, Pool};
use crate::request::{Bytes, ContainerPath, PageSize, Request};

/// What the node looks like, as far as planning cares.
#[derive(Debug, Clone, Default)]
pub struct NodeFacts {
    /// Pools per page size the kernel supports.
    pub pools: BTreeMap<PageSize, Pool>,
    pub node_pools: BTreeMap<PageSize, Vec<NodePool>>,
    /// Pages reserved by live containers we manage, and how many containers hold them.
    pub ours: BTreeMap<PageSize, (u64, usize)>,
    /// G11: the RDMA container's spec, limits and GID tables, read by the hook.
    pub rdma: Option<crate::features::rdma::RdmaFacts>,
    /// The node's MemTotal in bytes (0: unknown), for GPU containers without a memory limit
    /// (read for GPU containers only).
    pub mem_total: u64,
    /// The DPDK group this container joins (admitted before planning) and its dir.
    pub group: Option<crate::ledger::GroupRecord>,
    pub group_dir: std::path::PathBuf,
    /// The container spec's mounts: (destination, type, source, options).
    pub spec_mounts: Vec<crate::oci::SpecMount>,
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

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    pub mounts: Vec<MountPlan>,
    /// Resource limits raised on the init (G11; per process: nothing to undo).
    pub rlimits: Vec<RlimitStep>,
    /// Things the create goes ahead despite; logged.
    pub warnings: Vec<String>,
    /// hugetlb limits (bytes) for the container's cgroup.
    pub hugetlb_limits: Vec<(PageSize, Bytes)>,
    pub reservations: BTreeMap<PageSize, Bytes>,
    /// G10: a GPU container's driver-memory headroom and memory limit.
    pub gpu: Option<crate::features::gpu::GpuPlan>,
    pub prefix: Option<PrefixCleanup>,
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
        self.mounts.is_empty()
            && self.hugetlb_limits.is_empty()
            && self.gpu.is_none()
            && self.rlimits.is_empty()
    }
}

/// Computes the plan for container `id`.
pub fn plan(id: &str, req: &Request, cfg: &Config, facts: &NodeFacts) -> Result<Plan, PlanError> {
    let mut p = Plan::default();
    for f in features::FEATURES {
        (f.plan)(id, req, cfg, facts, &mut p)?;
    }
    Ok(p)
}
