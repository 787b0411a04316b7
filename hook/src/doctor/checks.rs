//! The checks doctor runs, one function per check, listed in [`CHECKS`] in the order printed.
//! Each is a pure function of the [`Facts`]: what it finds on the node is gathered once, before.

use std::path::Path;

use super::parse::{
    cgroup_layout, containerd_handler, containerd_systemd_cgroup, crio_handler, hooks_d_entry,
};
use super::{Check, Facts, Probe, Status, MIN_RUNC_RSVD, TMPFS_MAGIC};
use crate::discovery::parse_version;
use crate::host::cgroup::{find_hierarchy, Version as CgVersion};
use crate::request::PageSize;
use Status::*;

/// One check: the name its lines start with, what it looks at, and the function.
pub struct CheckDef {
    /// Its lines' check name, or the start of it (`hugepages` is `hugepages 2Mi node0`...).
    pub name: &'static str,
    pub checks: &'static str,
    /// The lines it prints: none when it does not apply, several for one line per item.
    pub run: fn(&Facts) -> Vec<Check>,
}

macro_rules! row {
    ($name:literal, $checks:literal, $run:ident) => {
        CheckDef { name: $name, checks: $checks, run: $run }
    };
}

/// Every check, in the order printed.
pub const CHECKS: &[CheckDef] = &[
    row!(
        "config",
        "the configuration file loads (a broken one fails; the rest use the defaults)",
        config
    ),
    row!("binaries", "dataplane-runtime is installed beside dataplane-hook", binaries),
    row!("runtime_path", "runtime_path resolves to a real OCI runtime", runtime_path),
    row!("hugepages", "each page size has a pool, and every NUMA node has pages of it", hugepages),
    row!("cgroup layout", "a cgroup filesystem is mounted: v1, v2 or hybrid", cgroup_layout_check),
    row!(
        "hugetlb controller",
        "some cgroup hierarchy has the hugetlb controller (G7)",
        hugetlb_controller
    ),
    row!(
        "hugetlb rsvd accounting",
        "the kernel limits hugetlb reservations per cgroup (5.7+)",
        hugetlb_rsvd
    ),
    row!(
        "cgroup driver",
        "containerd, kubelet and PID 1 agree on the cgroup driver",
        cgroup_driver
    ),
    row!("runtime", "each runtime is installed once, at a version that works here", runtimes),
    row!(
        "support",
        "which integration paths each installed runtime version offers, and their guarantees",
        support_checks
    ),
    row!(
        "containerd handler",
        "containerd has the `dataplane` handler, pointing at this install, loaded",
        containerd_handler_check
    ),
    row!("crio handler", "each CRI-O drop-in handler points at this install", crio_handlers),
    row!("hooks.d", "each hooks.d file is valid and runs this install's hook", hooks_d),
    row!(
        "runtime integration",
        "some runtime is configured to use dataplane-hook",
        runtime_integration
    ),
    row!("state dir", "the state dir is root-only, and where it lives", state_dir),
    row!("log file", "the log file can be written", log_file),
    row!("kernel openat2", "openat2 (RESOLVE_IN_ROOT)", kernel_openat2),
    row!("kernel fsopen/fsmount", "fsopen/fsmount", kernel_fsopen),
    row!("kernel open_tree", "open_tree", kernel_open_tree),
    row!("kernel move_mount", "move_mount", kernel_move_mount),
    row!("kernel mount_setattr", "mount_setattr", kernel_mount_setattr),
    row!("kernel hugetlbfs", "hugetlbfs in this kernel", kernel_hugetlbfs),
    row!("kernel pidfd_open", "pidfd_open", kernel_pidfd_open),
    row!("kernel PSI", "memory pressure (PSI) is readable", kernel_psi),
    row!("kernel cgroup.kill", "cgroup.kill, where watch needs it", kernel_cgroup_kill),
    row!("CAP_SYS_RESOURCE", "root may raise hard rlimits (G11)", cap_sys_resource),
    row!("watch", "the GPU watchdog runs where there are GPUs", watch),
    row!("metrics", "the metrics textfile dir exists, and watch writes its file there", metrics),
    row!("nri plugin", "the NRI plugin, where one has run here, runs and is connected", nri_plugin),
];

/// Every check's lines, in the order printed.
pub fn checks(f: &Facts) -> Vec<Check> {
    CHECKS.iter().flat_map(|c| (c.run)(f)).collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers the checks share.

fn errno_text(e: i32) -> String {
    std::io::Error::from_raw_os_error(e).to_string()
}

fn kernel_at_least(release: &str, want: (u32, u32)) -> Option<bool> {
    let v = parse_version(release)?;
    Some((v.major, v.minor) >= want)
}

/// The version of a `--version` output as doctor prints it (`1.6.20`), else its first line.
pub(super) fn version_text(out: &str) -> String {
    parse_version(out)
        .map(|v| format!("{}.{}.{}", v.major, v.minor, v.patch))
        .unwrap_or_else(|| out.lines().next().unwrap_or("").trim().to_string())
}

fn has_controller(f: &Facts, mount: &Path, controller: &str) -> bool {
    f.v2_controllers.get(mount).is_some_and(|s| s.split_whitespace().any(|x| x == controller))
}

/// Whether a binary a runtime config names is this install's `want`.
fn point(f: &Facts, what: &str, p: &str, want: &Path) -> (Status, String, Option<String>) {
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
}

/// A kernel feature the hook uses, from its syscall probe.
fn feature(name: &str, probe: &Probe, what: &str, since: &str) -> Check {
    match probe {
        Ok(()) => Check::new(Pass, format!("kernel {name}"), format!("available ({what})")),
        Err(e) if *e == libc::ENOSYS => {
            Check::new(Fail, format!("kernel {name}"), format!("missing: {what}"))
                .fix(format!("use Linux {since} or later"))
        }
        Err(e) if *e == libc::EPERM => {
            Check::new(Warn, format!("kernel {name}"), format!("cannot probe: {}", errno_text(*e)))
                .fix("run doctor as root")
        }
        Err(e) => {
            Check::new(Fail, format!("kernel {name}"), format!("unusable: {}", errno_text(*e)))
                .fix(format!("use Linux {since} or later"))
        }
    }
}

/// How many runtime configurations point at dataplane-hook (any install).
fn configured(f: &Facts) -> usize {
    let containerd = f
        .containerd
        .as_ref()
        .and_then(|c| c.dump.as_ref().ok())
        .is_some_and(|d| containerd_handler(d).is_some());
    let crio = f.crio_dropins.iter().filter(|c| crio_handler(&c.content).is_some()).count();
    let hooks = f.hook_files.iter().filter(|c| hooks_d_entry(&c.content).is_some()).count();
    usize::from(containerd) + crio + hooks
}

// ---------------------------------------------------------------------------------------------
// The checks.

/// The configuration file loads (a broken one fails; the rest use the defaults).
fn config(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// Dataplane-runtime is installed beside dataplane-hook.
fn binaries(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// Runtime_path resolves to a real OCI runtime.
fn runtime_path(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &f.config;
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
    out
}

/// Each page size has a pool, and every NUMA node has pages of it.
fn hugepages(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// A cgroup filesystem is mounted: v1, v2 or hybrid.
fn cgroup_layout_check(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let (layout, desc) = cgroup_layout(&f.mountinfo, &f.v2_controllers);
    out.push(Check::new(if layout == "none" { Fail } else { Pass }, "cgroup layout", desc));
    out
}

/// Some cgroup hierarchy has the hugetlb controller (G7).
fn hugetlb_controller(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let (layout, _) = cgroup_layout(&f.mountinfo, &f.v2_controllers);
    match find_hierarchy(&f.mountinfo, "hugetlb", |m| has_controller(f, m, "hugetlb")) {
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
    out
}

/// The kernel limits hugetlb reservations per cgroup (5.7+).
fn hugetlb_rsvd(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    match kernel_at_least(&f.kernel.release, (5, 7)) {
        Some(true) => out.push(Check::new(Pass, "hugetlb rsvd accounting", format!("kernel {} has hugetlb.<size>.rsvd.* (5.7+)", f.kernel.release))),
        Some(false) => out.push(
            Check::new(Warn, "hugetlb rsvd accounting", format!("kernel {} predates 5.7: only hugetlb.<size>.max is set, reservations are not limited per cgroup", f.kernel.release))
                .fix("use kernel 5.7 or later"),
        ),
        None => out.push(Check::new(Skip, "hugetlb rsvd accounting", format!("cannot read the kernel version from {:?}", f.kernel.release))),
    }
    out
}

/// Containerd, kubelet and PID 1 agree on the cgroup driver.
fn cgroup_driver(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// Each runtime is installed once, at a version that works here.
fn runtimes(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &f.config;
    let (layout, _) = cgroup_layout(&f.mountinfo, &f.v2_controllers);
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
                Some(v) if v.triple() < MIN_RUNC_RSVD => {
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
    out
}

/// Containerd has the `dataplane` handler, pointing at this install, loaded.
fn containerd_handler_check(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
                    let (mut st, mut d, mut fix) = match &bin {
                        Some(b) => point(f, "BinaryName", b, &f.wrapper),
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
    out
}

/// Each CRI-O drop-in handler points at this install.
fn crio_handlers(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    for file in &f.crio_dropins {
        if let Some(p) = crio_handler(&file.content) {
            let (st, d, fix) = point(f, "runtime_path", &p, &f.wrapper);
            let mut ch = Check::new(st, format!("crio handler {}", file.path.display()), d);
            ch.fix = fix;
            out.push(ch);
        }
    }
    out
}

/// Each hooks.d file is valid and runs this install's hook.
fn hooks_d(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
                let (st, d, fix) =
                    point(f, &format!("runs at {} the hook", stages.join(",")), &path, &f.hook_exe);
                let mut ch = Check::new(st, name, d);
                ch.fix = fix;
                out.push(ch);
            }
        }
    }
    out
}

/// Some runtime is configured to use dataplane-hook.
fn runtime_integration(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    if configured(f) == 0 {
        out.push(
            Check::new(Warn, "runtime integration", "no runtime is configured to use dataplane-hook (containerd handler, CRI-O handler, hooks.d)")
                .fix("dataplane-hook configure --runtime containerd|crio|podman"),
        );
    }
    out
}

/// The state dir is root-only, and where it lives.
fn state_dir(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &f.config;
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
    out
}

/// The log file can be written.
fn log_file(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &f.config;
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
    out
}

/// Openat2 (RESOLVE_IN_ROOT).
fn kernel_openat2(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature(
        "openat2",
        &k.openat2,
        "resolving paths inside an untrusted rootfs (RESOLVE_IN_ROOT)",
        "5.6",
    ));
    out
}

/// Fsopen/fsmount.
fn kernel_fsopen(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature(
        "fsopen/fsmount",
        &k.fsopen,
        "detached mounts, nothing mounted on the host",
        "5.2",
    ));
    out
}

/// Open_tree.
fn kernel_open_tree(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature("open_tree", &k.open_tree, "cloning a group's mounts", "5.2"));
    out
}

/// Move_mount.
fn kernel_move_mount(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature("move_mount", &k.move_mount, "attaching mounts inside the container", "5.2"));
    out
}

/// Mount_setattr.
fn kernel_mount_setattr(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature("mount_setattr", &k.mount_setattr, "read-only sysfs views", "5.12"));
    out
}

/// Hugetlbfs in this kernel.
fn kernel_hugetlbfs(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
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
    out
}

/// Pidfd_open.
fn kernel_pidfd_open(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    out.push(feature("pidfd_open", &k.pidfd_open, "watch's race-free kills", "5.3"));
    out
}

/// Memory pressure (PSI) is readable.
fn kernel_psi(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    match &k.psi {
        Some(_) => out.push(Check::new(Pass, "kernel PSI", "/proc/pressure/memory is readable (watch reacts to memory pressure)")),
        None => out.push(
            Check::new(Warn, "kernel PSI", "/proc/pressure/memory is missing: watch cannot see memory pressure, only uncharged memory")
                .fix("boot with psi=1 (CONFIG_PSI)"),
        ),
    }
    out
}

/// Cgroup.kill, where watch needs it.
fn kernel_cgroup_kill(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let k = &f.kernel;
    let mem_v2 = find_hierarchy(&f.mountinfo, "memory", |m| has_controller(f, m, "memory"))
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
    out
}

/// Root may raise hard rlimits (G11).
fn cap_sys_resource(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// The GPU watchdog runs where there are GPUs.
fn watch(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
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
    out
}

/// The metrics textfile dir exists, and watch writes its file there.
fn metrics(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    let cfg = &f.config;
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

/// One `support <runtime>` line per installed runtime whose version reads: which integration
/// paths it offers and which guarantees each gives there ([`crate::support`]). A version this
/// release does not know warns.
fn support_checks(f: &Facts) -> Vec<Check> {
    let mut out = Vec::new();
    for r in &f.runtimes {
        let (Some(rt), Some(v)) = (
            crate::support::Runtime::from_name(r.name),
            r.version.as_deref().and_then(parse_version).map(|v| v.triple()),
        ) else {
            continue;
        };
        if r.paths.is_empty() {
            continue;
        }
        let s = crate::support::support(rt, v);
        let name = format!("support {}", r.name);
        let d = format!("{}.{}.{}: {}", v.0, v.1, v.2, s.describe());
        out.push(match s.family {
            Some(_) => Check::new(Status::Pass, name, d),
            None => Check::new(Status::Warn, name, d).fix(
                "see the README's support matrix for the versions this release is tested with",
            ),
        });
    }
    out
}

/// The NRI plugin (`dataplane-hook nri`), where one has run on this node (its state file).
fn nri_plugin(f: &Facts) -> Vec<Check> {
    use Status::*;
    let Some((s, alive)) = &f.nri else { return vec![] };
    let sock = s.socket.display();
    vec![match (alive, s.connected) {
        (true, true) => Check::new(
            Pass,
            "nri plugin",
            format!("{} connected to {sock} ({} {})", s.name, s.runtime, s.runtime_version),
        ),
        (true, false) => Check::new(Fail, "nri plugin", format!("{} (pid {}) runs but is not connected to {sock}: pods opted in by annotation get nothing from the product", s.name, s.process.pid))
            .fix("enable NRI in the runtime (containerd: [plugins.\"io.containerd.nri.v1.nri\"] disable = false) and restart it, or pass the runtime's socket with --socket; the plugin reconnects by itself"),
        (false, _) => Check::new(Warn, "nri plugin", format!("{} is not running (last pid {}): pods opted in by annotation are created without the product", s.name, s.process.pid))
            .fix("start dataplane-hook nri (systemd unit or DaemonSet), or remove the state dir's nri-plugin.json if the node no longer uses it"),
    }]
}
