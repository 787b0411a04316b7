//! Owns `dataplane-hook doctor`: is this node ready? One line per check — `pass`, `warn`,
//! `fail` (or `skip` when a check does not apply) — with the fix for anything not passing, and a
//! non-zero exit when any check fails.
//!
//! [`Facts::gather`] reads the node once (sysfs, mountinfo, runtime binaries and configs, the
//! state dir, kernel feature probes); [`checks`] is a pure function of those facts, unit-tested
//! on recorded inputs (hybrid/v1/v2 mountinfo, real `--version` outputs, containerd config dumps,
//! hooks.d files).

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, Loaded};
use crate::host::cgroup::{find_hierarchy, Version as CgVersion};
use crate::host::sysfs::{NodePool, Pool, Sysfs};
use crate::request::PageSize;

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeBin {
    pub name: &'static str,
    pub paths: Vec<PathBuf>,
    /// `<bin> --version` output of the first path.
    pub version: Option<String>,
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
}

const TMPFS_MAGIC: i64 = 0x01021994;
pub const MIN_RUNC_RSVD: (u32, u32, u32) = (1, 1, 10);

/// The first `N.N[.N]` in a `--version` output (`runc version 1.1.5+ds1`, `containerd
/// github.com/containerd/containerd 1.6.20~ds1 ...`, `podman version 4.3.1`, `v2.0.0`).
pub fn parse_version(out: &str) -> Option<(u32, u32, u32)> {
    for word in out.lines().next()?.split_whitespace() {
        let w = word.trim_start_matches('v');
        let mut it = w.split(|c: char| !c.is_ascii_digit());
        let (Some(a), Some(b)) = (it.next(), it.next()) else { continue };
        if a.is_empty() || b.is_empty() || !w[a.len()..].starts_with('.') {
            continue;
        }
        let (Ok(a), Ok(b)) = (a.parse(), b.parse()) else { continue };
        let c = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        return Some((a, b, c));
    }
    None
}

fn version_text(out: &str) -> String {
    parse_version(out)
        .map(|(a, b, c)| format!("{a}.{b}.{c}"))
        .unwrap_or_else(|| out.lines().next().unwrap_or("").trim().to_string())
}

/// The `dataplane` handler of a containerd config dump: (runtime_type, BinaryName, pod_annotations).
pub fn containerd_handler(dump: &str) -> Option<(String, Option<String>, Vec<String>)> {
    let t: toml::Table = dump.parse().ok()?;
    let plugins = t.get("plugins")?.as_table()?;
    let h = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"].iter().find_map(|p| {
        plugins
            .get(*p)?
            .get("containerd")?
            .get("runtimes")?
            .get(crate::configure::HANDLER)?
            .as_table()
            .cloned()
    })?;
    let rt = h.get("runtime_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let bin = h
        .get("options")
        .and_then(|o| o.get("BinaryName"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from);
    let ann = h
        .get("pod_annotations")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Some((rt, bin, ann))
}

/// `SystemdCgroup` of containerd's `runc` handler in a config dump.
pub fn containerd_systemd_cgroup(dump: &str) -> Option<bool> {
    let t: toml::Table = dump.parse().ok()?;
    let plugins = t.get("plugins")?.as_table()?;
    ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"].iter().find_map(|p| {
        plugins
            .get(*p)?
            .get("containerd")?
            .get("runtimes")?
            .get("runc")?
            .get("options")?
            .get("SystemdCgroup")?
            .as_bool()
    })
}

/// The hook binary a hooks.d file runs, and its stages. None: not valid oci-hooks JSON.
pub fn hooks_d_entry(content: &str) -> Option<(String, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(content).ok()?;
    let path = v.get("hook")?.get("path")?.as_str()?.to_string();
    let stages =
        v.get("stages")?.as_array()?.iter().filter_map(|s| s.as_str().map(String::from)).collect();
    Some((path, stages))
}

/// `runtime_path` of CRI-O's `dataplane` handler in a drop-in.
pub fn crio_handler(content: &str) -> Option<String> {
    let t: toml::Table = content.parse().ok()?;
    t.get("crio")?
        .get("runtime")?
        .get("runtimes")?
        .get(crate::configure::HANDLER)?
        .get("runtime_path")?
        .as_str()
        .map(String::from)
}

/// cgroup mounts from mountinfo: (fstype, mount point, super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, String)> {
    crate::host::mountinfo::parse(mountinfo)
        .filter(|m| m.is_cgroup())
        .map(|m| (m.fstype, m.mount_point, m.super_options))
        .collect()
}

/// The cgroup layout: ("v1" | "v2" | "hybrid", description).
pub fn cgroup_layout(
    mountinfo: &str,
    v2_controllers: &BTreeMap<PathBuf, String>,
) -> (&'static str, String) {
    let mounts = cgroup_mounts(mountinfo);
    let mut v1: Vec<String> = Vec::new();
    let mut v2: Vec<String> = Vec::new();
    for (fstype, mount, sopts) in &mounts {
        if fstype == "cgroup" {
            let ctrls: Vec<&str> = sopts
                .split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro") && !o.starts_with("name=") && !o.contains('=')
                })
                .collect();
            if !ctrls.is_empty() {
                v1.push(ctrls.join(","));
            }
        } else {
            let c = v2_controllers
                .get(mount)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            v2.push(format!(
                "{} ({})",
                mount.display(),
                if c.is_empty() { "no controllers".into() } else { c }
            ));
        }
    }
    match (v1.is_empty(), v2.is_empty()) {
        (true, false) => ("v2", format!("cgroup v2 only: {}", v2.join(", "))),
        (false, true) => ("v1", format!("cgroup v1 only: {}", v1.join(" "))),
        (false, false) => (
            "hybrid",
            format!("hybrid: v1 controllers {} and cgroup2 at {}", v1.join(" "), v2.join(", ")),
        ),
        (true, true) => ("none", "no cgroup filesystem is mounted".to_string()),
    }
}

fn errno_text(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

fn kernel_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let (a, b, _) = parse_version(release)?;
    Some((a, b) >= want)
}

/// Every check, in the order printed.
pub fn checks(f: &Facts) -> Vec<Check> {
    use Status::*;
    let mut out = Vec::new();
    let cfg = &f.config;

    // Configuration and binaries.
    match (&f.config_error, &f.config_path) {
        (Some(e), _) => out.push(
            Check::new(Fail, "config", e.clone())
                .fix("fix the file; the checks below use the built-in defaults"),
        ),
        (None, Some(p)) => out.push(Check::new(Pass, "config", p.display().to_string())),
        (None, None) => out.push(Check::new(
            Pass,
            "config",
            format!("built-in defaults ({} does not exist)", crate::config::DEFAULT_CONFIG_PATH),
        )),
    }
    if f.wrapper_exists {
        out.push(Check::new(
            Pass,
            "binaries",
            format!("{} and {} beside it", f.hook_exe.display(), f.wrapper.display()),
        ));
    } else {
        out.push(
            Check::new(Fail, "binaries", format!("{} is missing", f.wrapper.display()))
                .fix("install dataplane-runtime beside dataplane-hook"),
        );
    }
    match &f.real_runtime {
        Some(p) => out.push(Check::new(
            Pass,
            "runtime_path",
            format!("{} -> {}", cfg.runtime_path.display(), p.display()),
        )),
        None => out.push(
            Check::new(
                Fail,
                "runtime_path",
                format!(
                    "{} not found: dataplane-runtime cannot start any container",
                    cfg.runtime_path.display()
                ),
            )
            .fix("install runc or set runtime_path in the config to the real OCI runtime"),
        ),
    }

    // Hugepage pools, per size and NUMA node.
    for (size, pool) in &f.pools {
        let name = format!("hugepages {size}");
        let set = format!("echo N > /sys/kernel/mm/hugepages/{}/nr_hugepages, or hugepagesz={} hugepages=N on the kernel command line", size.sysfs_dir(), if *size == PageSize::Size1Gi { "1G" } else { "2M" });
        match pool {
            None => out.push(Check::new(Skip, name, "this kernel or CPU has no such page size")),
            Some(p) if p.total == 0 => out.push(
                Check::new(
                    Warn,
                    name,
                    format!(
                        "the pool is empty: containers asking for {}{} are refused",
                        crate::request::PREFIX,
                        size.annotation()
                    ),
                )
                .fix(set),
            ),
            Some(p) => {
                let mut d = format!(
                    "{} pages ({}), {} free, {} reserved",
                    p.total,
                    crate::request::Bytes(p.total * size.bytes()),
                    p.free,
                    p.reserved
                );
                if p.surplus > 0 {
                    d.push_str(&format!(", {} surplus", p.surplus));
                }
                out.push(Check::new(Pass, name, d));
                let nodes = f.node_pools.get(size).cloned().unwrap_or_default();
                let empty_nodes: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.total == 0)
                    .map(|n| format!("node{}", n.node))
                    .collect();
                for n in &nodes {
                    let nm = format!("hugepages {size} node{}", n.node);
                    if n.total == 0 && nodes.len() > 1 {
                        out.push(
                            Check::new(Warn, nm, "no pages on this NUMA node: DPDK lcores here get remote memory")
                                .fix(format!("echo N > /sys/devices/system/node/node{}/hugepages/{}/nr_hugepages", n.node, size.sysfs_dir())),
                        );
                    } else {
                        out.push(Check::new(
                            Pass,
                            nm,
                            format!("{} pages, {} free", n.total, n.free),
                        ));
                    }
                }
                let _ = empty_nodes;
            }
        }
    }

    // cgroups: layout, the hugetlb controller, the driver.
    let (layout, desc) = cgroup_layout(&f.mountinfo, &f.v2_controllers);
    out.push(Check::new(if layout == "none" { Fail } else { Pass }, "cgroup layout", desc));
    let has = |m: &Path, c: &str| {
        f.v2_controllers.get(m).is_some_and(|s| s.split_whitespace().any(|x| x == c))
    };
    match find_hierarchy(&f.mountinfo, "hugetlb", |m| has(m, "hugetlb")) {
        Some(h) if h.version == CgVersion::V1 => out.push(Check::new(Pass, "hugetlb controller", format!("cgroup v1 at {}", h.mount.display()))),
        Some(h) => {
            let mut d = format!("cgroup v2 at {}", h.mount.display());
            if layout == "hybrid" {
                d.push_str(" (hybrid host: hugetlb is only on the unified hierarchy; runc cannot apply spec hugepage limits here, so the wrapper moves them to the hook, which writes them)");
            }
            out.push(Check::new(Pass, "hugetlb controller", d));
        }
        None => out.push(
            Check::new(Fail, "hugetlb controller", "no cgroup hierarchy has it: hugetlb limits (G7) cannot be set and creates with hugepages fail")
                .fix("boot a kernel with CONFIG_CGROUP_HUGETLB and mount it (v1: mount -t cgroup -o hugetlb none /sys/fs/cgroup/hugetlb; v2: it must be in cgroup.controllers)"),
        ),
    }
    match kernel_at_least(&f.kernel.release, (5, 7)) {
        Some(true) => out.push(Check::new(Pass, "hugetlb rsvd accounting", format!("kernel {} has hugetlb.<size>.rsvd.* (5.7+)", f.kernel.release))),
        Some(false) => out.push(
            Check::new(Warn, "hugetlb rsvd accounting", format!("kernel {} predates 5.7: only hugetlb.<size>.max is set, reservations are not limited per cgroup", f.kernel.release))
                .fix("use kernel 5.7 or later"),
        ),
        None => out.push(Check::new(Skip, "hugetlb rsvd accounting", format!("cannot read the kernel version from {:?}", f.kernel.release))),
    }
    let driver = if f.systemd_pid1 { "systemd" } else { "cgroupfs" };
    let mut d = format!("{driver} (PID 1 is {}systemd)", if f.systemd_pid1 { "" } else { "not " });
    let mut status = Pass;
    let mut fix = None;
    if let Some(sc) = f
        .containerd
        .as_ref()
        .and_then(|c| c.dump.as_ref().ok())
        .and_then(|d| containerd_systemd_cgroup(d))
    {
        d.push_str(&format!("; containerd runc SystemdCgroup = {sc}"));
        if sc && !f.systemd_pid1 {
            status = Fail;
            fix = Some("set SystemdCgroup = false in containerd's runc options: there is no systemd to create cgroups".to_string());
        } else if sc != f.systemd_pid1 {
            status = Warn;
            fix = Some("use the systemd driver on systemd hosts (SystemdCgroup = true, kubelet cgroupDriver: systemd)".to_string());
        }
    }
    if let Some(k) = &f.kubelet_driver {
        d.push_str(&format!("; kubelet cgroupDriver = {k}"));
        if k != driver && status == Pass {
            status = Warn;
            fix = Some(format!(
                "make kubelet's cgroupDriver ({k}) and the runtime's agree ({driver})"
            ));
        }
    }
    let mut c = Check::new(status, "cgroup driver", d);
    c.fix = fix;
    out.push(c);

    // Runtimes and their versions.
    let hybrid = layout == "hybrid";
    let runtime_name = cfg.runtime_path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    for r in &f.runtimes {
        let name = format!("runtime {}", r.name);
        let Some(first) = r.paths.first() else {
            let st = if runtime_name == r.name { Fail } else { Skip };
            out.push(Check::new(st, name, "not installed"));
            continue;
        };
        let text =
            r.version.as_deref().map(version_text).unwrap_or_else(|| "version unknown".into());
        let mut d = format!("{} {text}", first.display());
        if r.paths.len() > 1 {
            let others: Vec<String> =
                r.paths[1..].iter().map(|p| p.display().to_string()).collect();
            out.push(
                Check::new(
                    Warn,
                    name.clone(),
                    format!("{d}; also installed: {}", others.join(", ")),
                )
                .fix(format!(
                    "remove the copies you do not use, so every tool runs the same {}",
                    r.name
                )),
            );
            continue;
        }
        let v = r.version.as_deref().and_then(parse_version);
        match r.name {
            "runc" => match v {
                Some(v) if v < MIN_RUNC_RSVD => {
                    d.push_str(": older than 1.1.10, it does not apply hugetlb rsvd limits from the spec (the hook writes hugetlb.<size>.rsvd.* itself)");
                    out.push(Check::new(Warn, name, d).fix("upgrade runc to 1.1.10 or later"));
                }
                _ => out.push(Check::new(Pass, name, d)),
            },
            "crun" if hybrid => {
                d.push_str(": crun refuses hybrid cgroup hosts");
                let st = if runtime_name == "crun" { Fail } else { Warn };
                out.push(Check::new(st, name, d).fix("keep runtime_path = runc on this host"));
            }
            _ => out.push(Check::new(Pass, name, d)),
        }
    }

    // Runtime configurations pointing at this install.
    let mut configured = 0;
    let point = |what: &str, p: &str, want: &Path| -> (Status, String, Option<String>) {
        match f.resolved.get(Path::new(p)).cloned().flatten() {
            Some(c) if c == want => (Pass, format!("{what} {p}"), None),
            Some(c) => (
                Warn,
                format!(
                    "{what} {p}, which is {} — another install than this one ({})",
                    c.display(),
                    want.display()
                ),
                Some("run `dataplane-hook configure` from the install you mean to use".to_string()),
            ),
            None => (
                Fail,
                format!("{what} {p}, which does not exist"),
                Some("reinstall, or run `dataplane-hook configure` again".to_string()),
            ),
        }
    };
    if let Some(c) = &f.containerd {
        let name = "containerd handler";
        match &c.dump {
            Err(e) => out.push(Check::new(Warn, name, format!("cannot read the config {}: {e}", c.config.display())).fix("check that `containerd config dump` works")),
            Ok(dump) => match containerd_handler(dump) {
                None => out.push(
                    Check::new(Warn, name, format!("no `{}` runtime handler in {} (pods with RuntimeClass dataplane cannot start)", crate::configure::HANDLER, c.config.display()))
                        .fix("dataplane-hook configure --runtime containerd, then restart containerd"),
                ),
                Some((rt, bin, ann)) => {
                    configured += 1;
                    let (mut st, mut d, mut fix) = match &bin {
                        Some(b) => point("BinaryName", b, &f.wrapper),
                        None => (Fail, "no options.BinaryName: containerd would run plain runc".to_string(), Some("dataplane-hook configure --runtime containerd".to_string())),
                    };
                    if rt != "io.containerd.runc.v2" {
                        st = st.max(Warn);
                        d.push_str(&format!("; runtime_type {rt:?} is not io.containerd.runc.v2"));
                    }
                    if !ann.iter().any(|a| a == "dataplane-hook.io/*") {
                        st = st.max(Warn);
                        d.push_str("; pod_annotations lacks \"dataplane-hook.io/*\": pod annotations do not reach the hook");
                        fix.get_or_insert_with(|| "dataplane-hook configure --runtime containerd".to_string());
                    }
                    if let (Some((pid, started)), Some(mtime)) = (c.running, c.config_mtime) {
                        if started < mtime {
                            st = st.max(Warn);
                            d.push_str(&format!("; containerd (pid {pid}) started before its config last changed"));
                            fix = Some("restart containerd to load the handler (systemctl restart containerd)".to_string());
                        }
                    }
                    let mut ch = Check::new(st, name, d);
                    ch.fix = fix;
                    out.push(ch);
                }
            },
        }
    }
    for file in &f.crio_dropins {
        if let Some(p) = crio_handler(&file.content) {
            configured += 1;
            let (st, d, fix) = point("runtime_path", &p, &f.wrapper);
            let mut ch = Check::new(st, format!("crio handler {}", file.path.display()), d);
            ch.fix = fix;
            out.push(ch);
        }
    }
    for file in &f.hook_files {
        let name = format!("hooks.d {}", file.path.display());
        match hooks_d_entry(&file.content) {
            None => out.push(
                Check::new(
                    Fail,
                    name,
                    "not valid oci-hooks 1.0.0 JSON: podman and CRI-O refuse to start containers",
                )
                .fix("dataplane-hook configure --runtime podman|crio"),
            ),
            Some((path, stages)) => {
                configured += 1;
                let (st, d, fix) =
                    point(&format!("runs at {} the hook", stages.join(",")), &path, &f.hook_exe);
                let mut ch = Check::new(st, name, d);
                ch.fix = fix;
                out.push(ch);
            }
        }
    }
    if configured == 0 {
        out.push(
            Check::new(Warn, "runtime integration", "no runtime is configured to use dataplane-hook (containerd handler, CRI-O handler, hooks.d)")
                .fix("dataplane-hook configure --runtime containerd|crio|podman"),
        );
    }

    // State dir and log.
    let sd = cfg.state_dir.display().to_string();
    match &f.state_dir {
        None => out.push(Check::new(
            Pass,
            "state dir",
            format!("{sd} does not exist yet (created root-only, 0700, at the first create)"),
        )),
        Some(m) if m.is_symlink || !m.is_dir => out.push(
            Check::new(Fail, "state dir", format!("{sd} is not a directory"))
                .fix(format!("remove {sd}; the hook recreates it")),
        ),
        Some(m) if m.uid != 0 => out.push(
            Check::new(
                Fail,
                "state dir",
                format!("{sd} is owned by uid {}: another user could forge ledger records", m.uid),
            )
            .fix(format!("chown root:root {sd}")),
        ),
        Some(m) if m.mode & 0o077 != 0 => out.push(
            Check::new(
                Warn,
                "state dir",
                format!(
                    "{sd} has mode {:o} (the next hook run tightens it to 0700)",
                    m.mode & 0o7777
                ),
            )
            .fix(format!("chmod 0700 {sd}")),
        ),
        Some(m) => {
            let where_ = if m.fs_type == Some(TMPFS_MAGIC) {
                "tmpfs: gone at reboot with the containers"
            } else {
                "persistent storage: records outlive a reboot, gc releases them"
            };
            out.push(Check::new(Pass, "state dir", format!("{sd}, root-only (0700), on {where_}")));
        }
    }
    match (&f.log, cfg.log_file.as_os_str().is_empty()) {
        (_, true) => out.push(
            Check::new(
                Warn,
                "log file",
                "log_file = \"\": hook errors only reach the runtime, which often swallows them",
            )
            .fix("set log_file in the config"),
        ),
        (Ok(()), false) => out.push(Check::new(
            Pass,
            "log file",
            format!("{} can be written", cfg.log_file.display()),
        )),
        (Err(e), false) => out.push(
            Check::new(Fail, "log file", format!("cannot write {}: {e}", cfg.log_file.display()))
                .fix("make its directory writable by root, or change log_file"),
        ),
    }

    // Kernel features the hook uses.
    let k = &f.kernel;
    let feature = |name: &str, probe: &Probe, what: &str, since: &str| -> Check {
        match probe {
            Ok(()) => Check::new(Pass, format!("kernel {name}"), format!("available ({what})")),
            Err(e) if *e == libc::ENOSYS => {
                Check::new(Fail, format!("kernel {name}"), format!("missing: {what}"))
                    .fix(format!("use Linux {since} or later"))
            }
            Err(e) if *e == libc::EPERM => Check::new(
                Warn,
                format!("kernel {name}"),
                format!("cannot probe: {}", errno_text(*e)),
            )
            .fix("run doctor as root"),
            Err(e) => {
                Check::new(Fail, format!("kernel {name}"), format!("unusable: {}", errno_text(*e)))
                    .fix(format!("use Linux {since} or later"))
            }
        }
    };
    out.push(feature(
        "openat2",
        &k.openat2,
        "resolving paths inside an untrusted rootfs (RESOLVE_IN_ROOT)",
        "5.6",
    ));
    out.push(feature(
        "fsopen/fsmount",
        &k.fsopen,
        "detached mounts, nothing mounted on the host",
        "5.2",
    ));
    out.push(feature("open_tree", &k.open_tree, "cloning a group's mounts", "5.2"));
    out.push(feature("move_mount", &k.move_mount, "attaching mounts inside the container", "5.2"));
    out.push(feature("mount_setattr", &k.mount_setattr, "read-only sysfs views", "5.12"));
    match &k.hugetlbfs {
        Ok(()) => out.push(Check::new(
            Pass,
            "kernel hugetlbfs",
            "available (private hugetlbfs with min_size reservations)",
        )),
        Err(e) if *e == libc::ENODEV => out.push(
            Check::new(Fail, "kernel hugetlbfs", "not in this kernel")
                .fix("use a kernel with CONFIG_HUGETLBFS"),
        ),
        Err(e) => out.push(feature(
            "hugetlbfs",
            &Err(*e),
            "private hugetlbfs with min_size reservations",
            "5.2",
        )),
    }
    out.push(feature("pidfd_open", &k.pidfd_open, "watch's race-free kills", "5.3"));
    match &k.psi {
        Some(_) => out.push(Check::new(Pass, "kernel PSI", "/proc/pressure/memory is readable (watch reacts to memory pressure)")),
        None => out.push(
            Check::new(Warn, "kernel PSI", "/proc/pressure/memory is missing: watch cannot see memory pressure, only uncharged memory")
                .fix("boot with psi=1 (CONFIG_PSI)"),
        ),
    }
    let mem_v2 = find_hierarchy(&f.mountinfo, "memory", |m| has(m, "memory"))
        .map(|h| h.version == CgVersion::V2);
    match (k.cgroup_kill, mem_v2) {
        (_, Some(false)) => out.push(Check::new(
            Pass,
            "kernel cgroup.kill",
            "not needed: the memory controller is on cgroup v1, watch kills through pidfds",
        )),
        (Some(true), _) => out.push(Check::new(
            Pass,
            "kernel cgroup.kill",
            "available (watch kills a container's whole cgroup at once)",
        )),
        (Some(false), _) => out.push(
            Check::new(
                Warn,
                "kernel cgroup.kill",
                "missing: watch kills process by process (a forking victim takes longer)",
            )
            .fix("use Linux 5.14 or later"),
        ),
        (None, _) => out.push(Check::new(
            Skip,
            "kernel cgroup.kill",
            "no child cgroup on a cgroup2 mount to look at",
        )),
    }
    if f.cap_sys_resource {
        out.push(Check::new(
            Pass,
            "CAP_SYS_RESOURCE",
            "held: RDMA containers can be given higher memlock/nofile limits (G11)",
        ));
    } else {
        out.push(
            Check::new(Warn, "CAP_SYS_RESOURCE", "not held by root here: hard rlimits cannot be raised, so RDMA containers asking for more memlock/nofile are refused")
                .fix("run the runtime with CAP_SYS_RESOURCE, or set [rdma] on_unmet_limits = \"warn\""),
        );
    }

    // GPUs and the watchdog.
    if f.gpus.is_empty() {
        out.push(Check::new(Skip, "watch", "no GPU device nodes (/dev/nvidia*, /dev/kfd)"));
    } else if let Some(pid) = f.watch_pids.first() {
        out.push(Check::new(
            Pass,
            "watch",
            format!("running (pid {pid}) for {}", f.gpus.join(", ")),
        ));
    } else {
        out.push(
            Check::new(Warn, "watch", format!("GPUs found ({}) but `dataplane-hook watch` is not running: driver memory can exhaust the node", f.gpus.join(", ")))
                .fix("systemctl enable --now dataplane-hook-watch (or deploy the DaemonSet)"),
        );
    }

    // Metrics.
    let td = &cfg.metrics.textfile_dir;
    if td.as_os_str().is_empty() {
        out.push(Check::new(
            Skip,
            "metrics",
            "[metrics] textfile_dir = \"\": no textfile is written",
        ));
    } else {
        match &f.textfile_dir {
            Ok(true) => out.push(Check::new(Pass, "metrics", format!("{}/{} (point node_exporter's --collector.textfile.directory here)", td.display(), crate::metrics::TEXTFILE_NAME))),
            Ok(false) => out.push(
                Check::new(Warn, "metrics", format!("{} does not exist: no metrics textfile is written", td.display()))
                    .fix("create it, or point [metrics] textfile_dir at node_exporter's --collector.textfile.directory (\"\" turns this off)"),
            ),
            Err(e) => out.push(Check::new(Warn, "metrics", format!("cannot write to {}: {e}", td.display())).fix("make it writable by root or change [metrics] textfile_dir")),
        }
        let wf = &cfg.watch.metrics_file;
        if !wf.as_os_str().is_empty() && wf.parent() != Some(td.as_path()) {
            out.push(
                Check::new(
                    Warn,
                    "metrics watch",
                    format!(
                        "[watch] metrics_file {} is not in [metrics] textfile_dir {}",
                        wf.display(),
                        td.display()
                    ),
                )
                .fix("put both in the directory node_exporter reads"),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Gathering the facts from this node.

/// Runs `cmd args` with a timeout; stdout+stderr on success.
fn capture(cmd: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.display()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not answer in {}s",
                    cmd.display(),
                    args.join(" "),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() {
        Ok(text)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed").to_string())
    }
}

fn meta(p: &Path) -> Option<Meta> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let fs_type = rustix::fs::statfs(p).ok().map(|s| s.f_type);
    Some(Meta {
        is_dir: m.is_dir(),
        is_symlink: m.file_type().is_symlink(),
        uid: m.uid(),
        mode: m.mode(),
        fs_type,
    })
}

fn probe<T>(r: rustix::io::Result<T>) -> Probe {
    r.map(|_| ()).map_err(|e| e.raw_os_error())
}

fn raw_probe(rc: libc::c_long) -> Probe {
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // Called with arguments it must reject: any answer but ENOSYS means the syscall exists.
    if e == libc::ENOSYS {
        Err(e)
    } else {
        Ok(())
    }
}

fn kernel_facts(v2_mounts: &[PathBuf]) -> Kernel {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use rustix::mount::{fsopen, open_tree, FsOpenFlags, OpenTreeFlags};
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    // SAFETY: invalid fds and empty paths: the kernel validates and returns EBADF.
    let move_mount = raw_probe(unsafe {
        libc::syscall(libc::SYS_move_mount, -1, c"".as_ptr(), -1, c"".as_ptr(), 0)
    });
    // SAFETY: as above; a null attr with size 0 is rejected after the fd check.
    let mount_setattr = raw_probe(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::null::<u8>(),
            0usize,
        )
    });
    let cgroup_kill = v2_mounts.iter().find_map(|m| {
        let child = std::fs::read_dir(m)
            .ok()?
            .flatten()
            .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))?;
        Some(child.path().join("cgroup.kill").exists())
    });
    Kernel {
        release,
        openat2: probe(rustix::fs::openat2(
            CWD,
            "/",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )),
        fsopen: probe(fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)),
        hugetlbfs: probe(fsopen("hugetlbfs", FsOpenFlags::FSOPEN_CLOEXEC)),
        // Without OPEN_TREE_CLONE: an O_PATH handle on a mount, nothing is copied.
        open_tree: probe(open_tree(CWD, "/", OpenTreeFlags::OPEN_TREE_CLOEXEC)),
        move_mount,
        mount_setattr,
        pidfd_open: probe(rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )),
        psi: crate::host::read_kernel_file("/proc/pressure/memory").ok(),
        cgroup_kill,
    }
}

fn resolve_in_path(p: &Path) -> Option<PathBuf> {
    if p.components().count() > 1 || p.is_absolute() {
        return p.is_file().then(|| p.to_path_buf());
    }
    let paths = std::env::var_os("PATH")
        .unwrap_or_else(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    std::env::split_paths(&paths).map(|d| d.join(p)).find(|c| c.is_file())
}

fn boot_time() -> Option<u64> {
    crate::host::proc::boot_time()
}

fn mtime(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.mtime() as u64)
}

fn containerd_facts() -> Option<Containerd> {
    let bin = crate::configure::installed("containerd").into_iter().next();
    let procs = crate::configure::running("containerd");
    if bin.is_none() && procs.is_empty() {
        return None;
    }
    let choice = match crate::configure::choose_containerd(None) {
        Ok(c) => c,
        Err(e) => {
            return Some(Containerd {
                config: crate::configure::CONTAINERD_DEFAULT_CONFIG.into(),
                dump: Err(e.to_string()),
                running: None,
                config_mtime: None,
            })
        }
    };
    let exe = procs.first().map(|d| d.exe.clone()).or(bin)?;
    let cfg = choice.config.display().to_string();
    let dump = if choice.config.exists() {
        capture(&exe, &["--config", &cfg, "config", "dump"], Duration::from_secs(10))
    } else {
        Err(format!("{cfg} does not exist"))
    };
    let running = procs
        .iter()
        .find(|d| {
            crate::configure::config_flag(&d.args, "--config", "-c")
                .is_none_or(|c| c == choice.config)
        })
        .and_then(|d| {
            let ticks = crate::host::proc::start_time(d.pid)?;
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
            Some((d.pid, boot_time()? + ticks / hz))
        });
    let dropin = choice
        .config
        .parent()
        .unwrap_or(Path::new("/"))
        .join("conf.d")
        .join(crate::configure::CONTAINERD_DROPIN_NAME);
    let config_mtime = [mtime(&choice.config), mtime(&dropin)].into_iter().flatten().max();
    Some(Containerd { config: choice.config, dump, running, config_mtime })
}

fn read_configs(dirs: &[&str], ext: &str, want: impl Fn(&str) -> bool) -> Vec<ConfigFile> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else { continue };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(content) = std::fs::read_to_string(&p) {
                if want(&content) {
                    out.push(ConfigFile { path: p, content });
                }
            }
        }
    }
    out
}

fn watch_pids() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = crate::host::read_kernel_bytes(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_hook = args.first().is_some_and(|a| a.ends_with(b"dataplane-hook"));
        if is_hook && args.iter().any(|a| *a == b"watch") {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn gpus() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n == "kfd"
                        || n.strip_prefix("nvidia")
                            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(|n| format!("/dev/{n}"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether `d` exists and this process may write in it; asked with access(2), never by
/// writing (doctor changes nothing on the node).
fn writable_dir(d: &Path) -> Result<bool, String> {
    if !d.exists() {
        return Ok(false);
    }
    rustix::fs::access(d, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK)
        .map(|()| true)
        .map_err(|e| std::io::Error::from(e).to_string())
}

/// The log file: writable if it exists, else its directory must let the hook create it.
fn log_writable(p: &Path) -> Result<(), String> {
    if p.exists() {
        return rustix::fs::access(p, rustix::fs::Access::WRITE_OK)
            .map_err(|e| std::io::Error::from(e).to_string());
    }
    let mut dir = p.parent().unwrap_or(Path::new("/"));
    // The hook creates missing parents: the first existing ancestor must be writable.
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    writable_dir(dir).and_then(|w| {
        if w {
            Ok(())
        } else {
            Err(format!("{} does not exist", dir.display()))
        }
    })
}

impl Facts {
    pub fn gather(
        config_path: Option<PathBuf>,
        config_error: Option<String>,
        config: Config,
    ) -> Facts {
        let hook_exe = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .unwrap_or_else(|_| PathBuf::from("dataplane-hook"));
        let wrapper = hook_exe.with_file_name("dataplane-runtime");
        let sysfs = Sysfs::default();
        let mut pools = BTreeMap::new();
        let mut node_pools = BTreeMap::new();
        for size in PageSize::ALL {
            pools.insert(size, sysfs.pool(size));
            node_pools.insert(size, sysfs.node_pools(size));
        }
        let mountinfo = crate::host::read_kernel_file("/proc/self/mountinfo").unwrap_or_default();
        let v2: Vec<PathBuf> = cgroup_mounts(&mountinfo)
            .into_iter()
            .filter(|(t, _, _)| t == "cgroup2")
            .map(|(_, m, _)| m)
            .collect();
        let v2_controllers = v2
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    crate::host::read_kernel_file(m.join("cgroup.controllers")).unwrap_or_default(),
                )
            })
            .collect();
        let runtimes = ["runc", "crun", "containerd", "podman", "crio"]
            .into_iter()
            .map(|name| {
                let paths = crate::configure::installed(name);
                let version = paths
                    .first()
                    .and_then(|p| capture(p, &["--version"], Duration::from_secs(5)).ok());
                RuntimeBin { name, paths, version }
            })
            .collect();
        let containerd = containerd_facts();
        let kubelet_driver =
            std::fs::read_to_string("/var/lib/kubelet/config.yaml").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("cgroupDriver:")
                        .map(|v| v.trim().trim_matches('"').to_string())
                })
            });
        let hook_files = read_configs(
            &[crate::configure::PODMAN_HOOKS_DIR, "/etc/containers/oci/hooks.d"],
            "json",
            |c| {
                hooks_d_entry(c)
                    .map_or(c.contains("dataplane-hook"), |(p, _)| p.ends_with("dataplane-hook"))
            },
        );
        let crio_dropins = read_configs(&[crate::configure::CRIO_CONFIG_DIR], "conf", |c| {
            crio_handler(c).is_some()
        });
        let mut resolved = BTreeMap::new();
        let mut named: Vec<String> =
            hook_files.iter().filter_map(|f| hooks_d_entry(&f.content).map(|(p, _)| p)).collect();
        named.extend(crio_dropins.iter().filter_map(|f| crio_handler(&f.content)));
        if let Some(Ok(d)) = containerd.as_ref().map(|c| &c.dump) {
            named.extend(containerd_handler(d).and_then(|(_, b, _)| b));
        }
        for p in named {
            let pb = PathBuf::from(&p);
            resolved.insert(pb.clone(), pb.canonicalize().ok());
        }
        let log = if config.log_file.as_os_str().is_empty() {
            Ok(())
        } else {
            log_writable(&config.log_file)
        };
        let textfile_dir = if config.metrics.textfile_dir.as_os_str().is_empty() {
            Ok(false)
        } else {
            writable_dir(&config.metrics.textfile_dir)
        };
        Facts {
            config_path,
            config_error,
            hook_exe,
            wrapper_exists: wrapper.is_file(),
            wrapper,
            real_runtime: resolve_in_path(&config.runtime_path),
            pools,
            node_pools,
            kernel: kernel_facts(&v2),
            mountinfo,
            v2_controllers,
            systemd_pid1: Path::new("/run/systemd/system").is_dir(),
            runtimes,
            containerd,
            kubelet_driver,
            hook_files,
            crio_dropins,
            resolved,
            state_dir: meta(&config.state_dir),
            log,
            cap_sys_resource: crate::host::rlimit::grantable().cap_sys_resource,
            gpus: gpus(),
            watch_pids: watch_pids(),
            textfile_dir,
            config,
        }
    }
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
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V2: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
    const V1: &str = "32 31 0:29 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n33 31 0:30 / /sys/fs/cgroup/hugetlb rw - cgroup cgroup rw,hugetlb\n";

    // Recorded `--version` outputs (Debian 12, Ubuntu 24.04, upstream).
    const RUNC_115: &str = "runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\nlibseccomp: 2.5.4\n";
    const RUNC_1112: &str = "runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\n";
    const CRUN: &str =
        "crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\nrundir: /run/crun\n";
    const CONTAINERD: &str =
        "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n";
    const CONTAINERD2: &str = "containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4\n";

    /// A containerd 1.6 config dump with the handler as `configure` writes it.
    fn dump(binary: &str, systemd: bool) -> String {
        format!(
            "version = 2\n[plugins]\n  [plugins.\"io.containerd.grpc.v1.cri\"]\n    [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n      \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes]\n        [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.dataplane]\n          \
             pod_annotations = [\"dataplane-hook.io/*\"]\n          runtime_type = \"io.containerd.runc.v2\"\n          \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.dataplane.options]\n            BinaryName = \"{binary}\"\n        \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n          runtime_type = \"io.containerd.runc.v2\"\n          \
             [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n            SystemdCgroup = {systemd}\n"
        )
    }

    fn pool(total: u64, free: u64, reserved: u64) -> Option<Pool> {
        Some(Pool { total, free, reserved, surplus: 0 })
    }

    /// A healthy hybrid node like this one, as recorded.
    fn healthy() -> Facts {
        let ok = Ok(());
        Facts {
            config_path: Some("/etc/dataplane-hook/config.toml".into()),
            config_error: None,
            config: Config::default(),
            hook_exe: "/usr/bin/dataplane-hook".into(),
            wrapper: "/usr/bin/dataplane-runtime".into(),
            wrapper_exists: true,
            real_runtime: Some("/usr/sbin/runc".into()),
            pools: [(PageSize::Size2Mi, pool(512, 500, 12)), (PageSize::Size1Gi, pool(2, 2, 0))]
                .into_iter()
                .collect(),
            node_pools: [
                (PageSize::Size2Mi, vec![NodePool { node: 0, total: 512, free: 500, surplus: 0 }]),
                (PageSize::Size1Gi, vec![NodePool { node: 0, total: 2, free: 2, surplus: 0 }]),
            ]
            .into_iter()
            .collect(),
            mountinfo: HYBRID.into(),
            v2_controllers: [(PathBuf::from("/sys/fs/cgroup/unified"), "hugetlb\n".to_string())]
                .into_iter()
                .collect(),
            systemd_pid1: false,
            runtimes: vec![
                RuntimeBin {
                    name: "runc",
                    paths: vec!["/usr/sbin/runc".into()],
                    version: Some(RUNC_1112.into()),
                },
                RuntimeBin { name: "crun", paths: vec![], version: None },
                RuntimeBin {
                    name: "containerd",
                    paths: vec!["/usr/bin/containerd".into()],
                    version: Some(CONTAINERD.into()),
                },
            ],
            containerd: Some(Containerd {
                config: "/etc/containerd/config.toml".into(),
                dump: Ok(dump("/usr/bin/dataplane-runtime", false)),
                running: Some((10, 2000)),
                config_mtime: Some(1000),
            }),
            kubelet_driver: None,
            hook_files: vec![],
            crio_dropins: vec![],
            resolved: [(
                PathBuf::from("/usr/bin/dataplane-runtime"),
                Some(PathBuf::from("/usr/bin/dataplane-runtime")),
            )]
            .into_iter()
            .collect(),
            state_dir: Some(Meta {
                is_dir: true,
                is_symlink: false,
                uid: 0,
                mode: 0o40700,
                fs_type: Some(TMPFS_MAGIC),
            }),
            log: ok,
            kernel: Kernel {
                release: "6.1.0-18-amd64".into(),
                openat2: Ok(()),
                fsopen: Ok(()),
                hugetlbfs: Ok(()),
                open_tree: Ok(()),
                move_mount: Ok(()),
                mount_setattr: Ok(()),
                pidfd_open: Ok(()),
                psi: Some("some avg10=0.00 avg60=0.00 avg300=0.00 total=0\n".into()),
                cgroup_kill: Some(true),
            },
            cap_sys_resource: true,
            gpus: vec![],
            watch_pids: vec![],
            textfile_dir: Ok(true),
        }
    }

    fn find<'a>(cs: &'a [Check], name: &str) -> &'a Check {
        cs.iter().find(|c| c.name == name).unwrap_or_else(|| panic!("no check {name}: {cs:#?}"))
    }

    #[test]
    fn a_healthy_hybrid_node_passes_with_the_right_answers() {
        let cs = checks(&healthy());
        for c in &cs {
            assert!(c.status != Status::Fail && c.status != Status::Warn, "{}", c.render());
            assert!(!c.render().contains('\n'));
        }
        assert!(
            find(&cs, "hugetlb controller")
                .detail
                .starts_with("cgroup v2 at /sys/fs/cgroup/unified (hybrid host"),
            "{cs:#?}"
        );
        assert!(
            find(&cs, "cgroup layout").detail.starts_with("hybrid: v1 controllers cpu memory"),
            "{cs:#?}"
        );
        assert_eq!(find(&cs, "hugepages 2Mi").detail, "512 pages (1Gi), 500 free, 12 reserved");
        assert_eq!(find(&cs, "hugepages 2Mi node0").detail, "512 pages, 500 free");
        assert_eq!(find(&cs, "containerd handler").detail, "BinaryName /usr/bin/dataplane-runtime");
        assert_eq!(find(&cs, "runtime containerd").detail, "/usr/bin/containerd 1.6.20");
        assert_eq!(
            find(&cs, "cgroup driver").detail,
            "cgroupfs (PID 1 is not systemd); containerd runc SystemdCgroup = false"
        );
        assert!(
            find(&cs, "kernel cgroup.kill").detail.starts_with("not needed"),
            "memory is on v1 here"
        );
    }

    #[test]
    fn versions_parse_from_real_outputs() {
        assert_eq!(parse_version(RUNC_115), Some((1, 1, 5)));
        assert_eq!(parse_version(RUNC_1112), Some((1, 1, 12)));
        assert_eq!(parse_version(CRUN), Some((1, 8, 1)));
        assert_eq!(parse_version(CONTAINERD), Some((1, 6, 20)));
        assert_eq!(parse_version(CONTAINERD2), Some((2, 0, 2)));
        assert_eq!(parse_version("podman version 4.3.1\n"), Some((4, 3, 1)));
        assert_eq!(parse_version("6.18.44-fc-v669"), Some((6, 18, 44)));
        assert_eq!(parse_version("no digits here"), None);
    }

    #[test]
    fn old_runc_warns_about_rsvd_and_crun_on_hybrid_warns_or_fails() {
        let mut f = healthy();
        f.runtimes[0].version = Some(RUNC_115.into());
        f.runtimes[1] = RuntimeBin {
            name: "crun",
            paths: vec!["/usr/bin/crun".into()],
            version: Some(CRUN.into()),
        };
        let cs = checks(&f);
        let runc = find(&cs, "runtime runc");
        assert_eq!(runc.status, Status::Warn);
        assert!(
            runc.detail.contains("1.1.5")
                && runc.detail.contains("rsvd")
                && runc.fix.as_deref() == Some("upgrade runc to 1.1.10 or later"),
            "{runc:?}"
        );
        assert_eq!(find(&cs, "runtime crun").status, Status::Warn);
        f.config.runtime_path = "crun".into();
        assert_eq!(find(&checks(&f), "runtime crun").status, Status::Fail);
        // On a v2 host crun is fine.
        f.mountinfo = V2.into();
        f.v2_controllers =
            [(PathBuf::from("/sys/fs/cgroup"), "cpu memory hugetlb pids".to_string())]
                .into_iter()
                .collect();
        assert_eq!(find(&checks(&f), "runtime crun").status, Status::Pass);
    }

    #[test]
    fn hugetlb_controller_is_found_on_v1_v2_and_missing_fails() {
        let mut f = healthy();
        f.mountinfo = V1.into();
        f.v2_controllers.clear();
        let cs = checks(&f);
        assert_eq!(find(&cs, "hugetlb controller").detail, "cgroup v1 at /sys/fs/cgroup/hugetlb");
        assert!(find(&cs, "cgroup layout").detail.starts_with("cgroup v1 only"));
        f.mountinfo = V2.into();
        f.v2_controllers = [(PathBuf::from("/sys/fs/cgroup"), "cpu memory hugetlb".to_string())]
            .into_iter()
            .collect();
        let cs = checks(&f);
        assert_eq!(find(&cs, "hugetlb controller").detail, "cgroup v2 at /sys/fs/cgroup");
        assert_eq!(find(&cs, "kernel cgroup.kill").status, Status::Pass);
        // The unified mount without hugetlb (hybrid systemd default): nothing has it.
        f.mountinfo = HYBRID.into();
        f.v2_controllers =
            [(PathBuf::from("/sys/fs/cgroup/unified"), String::new())].into_iter().collect();
        let c = find(&checks(&f), "hugetlb controller").clone();
        assert_eq!(c.status, Status::Fail);
        assert!(c.fix.unwrap().contains("CONFIG_CGROUP_HUGETLB"));
    }

    #[test]
    fn empty_pools_and_empty_numa_nodes_warn_with_the_command_to_fix() {
        let mut f = healthy();
        f.pools.insert(PageSize::Size1Gi, pool(0, 0, 0));
        f.node_pools.insert(
            PageSize::Size2Mi,
            vec![
                NodePool { node: 0, total: 512, free: 500, surplus: 0 },
                NodePool { node: 1, total: 0, free: 0, surplus: 0 },
            ],
        );
        let cs = checks(&f);
        let g = find(&cs, "hugepages 1Gi");
        assert_eq!(g.status, Status::Warn);
        assert!(
            g.fix
                .as_ref()
                .unwrap()
                .contains("/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages")
                && g.fix.as_ref().unwrap().contains("hugepagesz=1G"),
            "{g:?}"
        );
        let n1 = find(&cs, "hugepages 2Mi node1");
        assert_eq!(n1.status, Status::Warn);
        assert!(n1
            .fix
            .as_ref()
            .unwrap()
            .contains("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"));
        f.pools.insert(PageSize::Size1Gi, None);
        assert_eq!(find(&checks(&f), "hugepages 1Gi").status, Status::Skip);
    }

    #[test]
    fn runtime_configs_must_point_at_this_install() {
        let mut f = healthy();
        // Another install's wrapper.
        f.containerd.as_mut().unwrap().dump = Ok(dump("/opt/old/dataplane-runtime", false));
        f.resolved
            .insert("/opt/old/dataplane-runtime".into(), Some("/opt/old/dataplane-runtime".into()));
        assert_eq!(find(&checks(&f), "containerd handler").status, Status::Warn);
        // A wrapper that is gone.
        f.containerd.as_mut().unwrap().dump = Ok(dump("/usr/local/bin/dataplane-runtime", false));
        let c = find(&checks(&f), "containerd handler").clone();
        assert_eq!(c.status, Status::Fail, "{c:?}");
        // No handler at all: configure is the fix.
        f.containerd.as_mut().unwrap().dump = Ok("version = 2\n".into());
        let cs = checks(&f);
        assert!(find(&cs, "containerd handler")
            .fix
            .as_ref()
            .unwrap()
            .contains("dataplane-hook configure --runtime containerd"));
        assert_eq!(find(&cs, "runtime integration").status, Status::Warn);
        // Config changed after containerd started: restart it.
        f.containerd.as_mut().unwrap().dump = Ok(dump("/usr/bin/dataplane-runtime", false));
        f.containerd.as_mut().unwrap().config_mtime = Some(3000);
        let c = find(&checks(&f), "containerd handler").clone();
        assert_eq!(c.status, Status::Warn);
        assert!(c.fix.unwrap().contains("restart containerd"));
        // hooks.d: the shipped file points at /usr/bin/dataplane-hook.
        f.hook_files = vec![ConfigFile {
            path: "/usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json".into(),
            content: crate::configure::render_hook(
                crate::configure::HOOK_POSTSTOP,
                &crate::configure::Install::shipped(),
            ),
        }];
        f.resolved.insert("/usr/bin/dataplane-hook".into(), Some("/usr/bin/dataplane-hook".into()));
        let c = find(
            &checks(&f),
            "hooks.d /usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json",
        )
        .clone();
        assert_eq!(
            (c.status, c.detail.as_str()),
            (Status::Pass, "runs at poststop the hook /usr/bin/dataplane-hook")
        );
        f.hook_files[0].content = "{".into();
        assert_eq!(
            find(
                &checks(&f),
                "hooks.d /usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json"
            )
            .status,
            Status::Fail
        );
        // CRI-O's drop-in as configure writes it.
        f.crio_dropins = vec![ConfigFile {
            path: "/etc/crio/crio.conf.d/99-dataplane.conf".into(),
            content: crate::configure::render_crio(&crate::configure::Install::shipped()),
        }];
        assert_eq!(
            find(&checks(&f), "crio handler /etc/crio/crio.conf.d/99-dataplane.conf").status,
            Status::Pass
        );
    }

    #[test]
    fn systemd_cgroups_without_systemd_fail() {
        let mut f = healthy();
        f.containerd.as_mut().unwrap().dump = Ok(dump("/usr/bin/dataplane-runtime", true));
        let c = find(&checks(&f), "cgroup driver").clone();
        assert_eq!(c.status, Status::Fail);
        f.systemd_pid1 = true;
        assert_eq!(find(&checks(&f), "cgroup driver").status, Status::Pass);
        f.kubelet_driver = Some("cgroupfs".into());
        assert_eq!(find(&checks(&f), "cgroup driver").status, Status::Warn);
    }

    #[test]
    fn state_dir_log_and_kernel_problems_fail_with_fixes() {
        let mut f = healthy();
        f.state_dir =
            Some(Meta { is_dir: true, is_symlink: false, uid: 1000, mode: 0o40700, fs_type: None });
        f.log = Err("Permission denied (os error 13)".into());
        f.kernel.openat2 = Err(libc::ENOSYS);
        f.kernel.hugetlbfs = Err(libc::ENODEV);
        f.kernel.psi = None;
        f.kernel.release = "5.4.0".into();
        f.config_error =
            Some("invalid config /etc/x.toml: key `state_dir`: must be an absolute path".into());
        let cs = checks(&f);
        for (name, st) in [
            ("state dir", Status::Fail),
            ("log file", Status::Fail),
            ("kernel openat2", Status::Fail),
            ("kernel hugetlbfs", Status::Fail),
            ("kernel PSI", Status::Warn),
            ("hugetlb rsvd accounting", Status::Warn),
            ("config", Status::Fail),
        ] {
            let c = find(&cs, name);
            assert_eq!(c.status, st, "{c:?}");
            if st != Status::Pass {
                assert!(c.fix.is_some(), "{c:?}");
            }
        }
        assert!(find(&cs, "kernel openat2").fix.as_deref() == Some("use Linux 5.6 or later"));
        f.kernel.release = "5.4.0".into();
        f.state_dir =
            Some(Meta { is_dir: true, is_symlink: false, uid: 0, mode: 0o40755, fs_type: None });
        assert_eq!(find(&checks(&f), "state dir").status, Status::Warn);
        f.state_dir = None;
        assert_eq!(find(&checks(&f), "state dir").status, Status::Pass);
    }

    #[test]
    fn gpus_without_watch_warn_and_metrics_dirs_must_agree() {
        let mut f = healthy();
        f.gpus = vec!["/dev/nvidia0".into()];
        assert_eq!(find(&checks(&f), "watch").status, Status::Warn);
        f.watch_pids = vec![42];
        assert_eq!(find(&checks(&f), "watch").status, Status::Pass);
        f.config.watch.metrics_file =
            "/var/lib/prometheus/node-exporter/dataplane_hook_watch.prom".into();
        assert_eq!(find(&checks(&f), "metrics watch").status, Status::Warn);
        f.config.metrics.textfile_dir = "/var/lib/prometheus/node-exporter".into();
        assert!(checks(&f).iter().all(|c| c.name != "metrics watch"));
    }

    #[test]
    fn check_lines_carry_status_name_detail_and_fix() {
        let c = Check::new(Status::Warn, "hugepages 1Gi", "the pool is empty").fix("echo 2 > x");
        assert_eq!(c.render(), "warn hugepages 1Gi: the pool is empty (fix: echo 2 > x)");
    }
}
