//! Owns `dataplane-hook doctor`: is this node ready? One line per check — `pass`, `warn`,
//! `fail` (or `skip` when a check does not apply) — with the fix for anything not passing, and a
//! non-zero exit when any check fails.
//!
//! [`Facts::gather`] (gather.rs) reads the node once (sysfs, mountinfo, runtime binaries and
//! configs through [`crate::discovery`], the state dir, kernel feature probes); the checks
//! (checks.rs, one function each, listed in [`CHECKS`]) are pure functions of those facts,
//! unit-tested on recorded inputs (hybrid/v1/v2 mountinfo, real `--version` outputs,
//! containerd config dumps, hooks.d files) whose parsers are in parse.rs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::{Config, Loaded};
use crate::host::sysfs::{NodePool, Pool};
use crate::request::PageSize;

mod checks;
mod gather;
mod parse;

pub use crate::discovery::RuntimeBin;
pub use checks::{checks, CheckDef, CHECKS};
pub use parse::{
    cgroup_layout, containerd_handler, containerd_systemd_cgroup, crio_handler, hooks_d_entry,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Status {
    Pass,
    Skip,
    Warn,
    Fail,
}

impl Status {
    pub fn word(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Skip => "skip",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub status: Status,
    pub name: String,
    pub detail: String,
    pub fix: Option<String>,
}

impl Check {
    fn new(status: Status, name: impl Into<String>, detail: impl Into<String>) -> Check {
        Check { status, name: name.into(), detail: detail.into(), fix: None }
    }
    fn fix(mut self, fix: impl Into<String>) -> Check {
        self.fix = Some(fix.into());
        self
    }
    /// `warn hugepages 1Gi: 0 pages: ... (fix: ...)`, on one line.
    pub fn render(&self) -> String {
        let mut s = format!("{} {}: {}", self.status.word(), self.name, self.detail);
        if let Some(f) = &self.fix {
            s.push_str(&format!(" (fix: {f})"));
        }
        s.replace('\n', " ")
    }
}

/// A syscall probe: Ok, or the errno it failed with.
pub type Probe = Result<(), i32>;

#[derive(Debug, Clone)]
pub struct Kernel {
    pub release: String,
    pub openat2: Probe,
    pub fsopen: Probe,
    pub hugetlbfs: Probe,
    pub open_tree: Probe,
    pub move_mount: Probe,
    pub mount_setattr: Probe,
    pub pidfd_open: Probe,
    /// /proc/pressure/memory, if readable.
    pub psi: Option<String>,
    /// Whether a child cgroup of a cgroup2 mount has `cgroup.kill` (None: no child to look at).
    pub cgroup_kill: Option<bool>,
}

/// A path's metadata as far as doctor cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub is_dir: bool,
    pub is_symlink: bool,
    pub uid: u32,
    pub mode: u32,
    /// statfs f_type.
    pub fs_type: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct Containerd {
    pub config: PathBuf,
    /// `containerd --config <config> config dump` (the merged config containerd would load).
    pub dump: Result<String, String>,
    /// Running containerd: pid and start time (unix seconds).
    pub running: Option<(i32, u64)>,
    /// Newest mtime (unix seconds) of the main config and our drop-in.
    pub config_mtime: Option<u64>,
}

/// A file a runtime reads that may point at our binaries (hooks.d JSON, CRI-O drop-in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub content: String,
}

#[derive(Debug, Clone)]
pub struct Facts {
    pub config_path: Option<PathBuf>,
    pub config_error: Option<String>,
    pub config: Config,
    /// This binary and the wrapper beside it (canonical), and whether the wrapper exists.
    pub hook_exe: PathBuf,
    pub wrapper: PathBuf,
    pub wrapper_exists: bool,
    /// `runtime_path` resolved through PATH.
    pub real_runtime: Option<PathBuf>,
    /// Per page size: its pool, or None when the kernel lacks the size.
    pub pools: BTreeMap<PageSize, Option<Pool>>,
    pub node_pools: BTreeMap<PageSize, Vec<NodePool>>,
    pub mountinfo: String,
    /// `cgroup.controllers` of each cgroup2 mount point.
    pub v2_controllers: BTreeMap<PathBuf, String>,
    pub systemd_pid1: bool,
    pub runtimes: Vec<RuntimeBin>,
    pub containerd: Option<Containerd>,
    /// kubelet's `cgroupDriver` (from /var/lib/kubelet/config.yaml).
    pub kubelet_driver: Option<String>,
    pub hook_files: Vec<ConfigFile>,
    pub crio_dropins: Vec<ConfigFile>,
    /// Every binary path the runtime configs name → its canonical path if it exists.
    pub resolved: BTreeMap<PathBuf, Option<PathBuf>>,
    /// None: missing.
    pub state_dir: Option<Meta>,
    pub log: Result<(), String>,
    pub kernel: Kernel,
    pub cap_sys_resource: bool,
    pub gpus: Vec<String>,
    pub watch_pids: Vec<i32>,
    /// The textfile dir: Ok(true) exists and writable, Ok(false) missing, Err why not writable.
    pub textfile_dir: Result<bool, String>,
    /// The NRI plugin's state file and whether its process still runs (None: never ran here).
    pub nri: Option<(crate::nri::PluginState, bool)>,
}

const TMPFS_MAGIC: i64 = 0x01021994;
pub const MIN_RUNC_RSVD: (u32, u32, u32) = (1, 1, 10);

/// cgroup mounts from mountinfo: (fstype, mount point, super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, String)> {
    crate::host::mountinfo::parse(mountinfo)
        .filter(|m| m.is_cgroup())
        .map(|m| (m.fstype, m.mount_point, m.super_options))
        .collect()
}

/// `dataplane-hook doctor`: prints the checks; fails when any check fails. A config that does
/// not load is itself a failing check (the rest run with the built-in defaults).
pub fn run(explicit: Option<&Path>) -> anyhow::Result<()> {
    let (path, error, config) = match Loaded::resolve(explicit) {
        Ok(l) => (l.path, None, l.config),
        Err(e) => (explicit.map(Path::to_path_buf), Some(e.to_string()), Config::default()),
    };
    let facts = Facts::gather(path, error, config);
    let all = checks(&facts);
    for c in &all {
        println!("{}", c.render());
    }
    let n = |s: Status| all.iter().filter(|c| c.status == s).count();
    println!(
        "doctor: {} pass, {} warn, {} fail, {} skip",
        n(Status::Pass),
        n(Status::Warn),
        n(Status::Fail),
        n(Status::Skip)
    );
    if n(Status::Fail) > 0 {
        anyhow::bail!(
            "this node is not ready: {} failing checks (fix them as shown above)",
            n(Status::Fail)
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests;
