//! doctor's checks on recorded facts.

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
        nri: None,
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
    f.v2_controllers = [(PathBuf::from("/sys/fs/cgroup"), "cpu memory hugetlb pids".to_string())]
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
    f.v2_controllers =
        [(PathBuf::from("/sys/fs/cgroup"), "cpu memory hugetlb".to_string())].into_iter().collect();
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
    let c =
        find(&checks(&f), "hooks.d /usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json")
            .clone();
    assert_eq!(
        (c.status, c.detail.as_str()),
        (Status::Pass, "runs at poststop the hook /usr/bin/dataplane-hook")
    );
    f.hook_files[0].content = "{".into();
    assert_eq!(
        find(&checks(&f), "hooks.d /usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json")
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

#[test]
fn versions_print_as_major_minor_patch_or_the_first_line() {
    assert_eq!(checks::version_text(RUNC_115), "1.1.5");
    assert_eq!(checks::version_text(CRUN), "1.8.1");
    assert_eq!(checks::version_text(CONTAINERD), "1.6.20");
    assert_eq!(checks::version_text(CONTAINERD2), "2.0.2");
    assert_eq!(checks::version_text("crun version 1.21\n"), "1.21.0");
    assert_eq!(checks::version_text("  weird output  \nmore\n"), "weird output");
}

/// A node where every check has something to say: runtimes configured every way, a GPU.
fn everything_configured() -> Facts {
    let mut f = healthy();
    let shipped = crate::configure::Install::shipped();
    f.hook_files = vec![ConfigFile {
        path: "/usr/share/containers/oci/hooks.d/dataplane-hook-poststop.json".into(),
        content: crate::configure::render_hook(crate::configure::HOOK_POSTSTOP, &shipped),
    }];
    f.crio_dropins = vec![ConfigFile {
        path: "/etc/crio/crio.conf.d/99-dataplane.conf".into(),
        content: crate::configure::render_crio(&shipped),
    }];
    f.resolved.insert("/usr/bin/dataplane-hook".into(), Some("/usr/bin/dataplane-hook".into()));
    f.gpus = vec!["/dev/nvidia0".into()];
    f.watch_pids = vec![42];
    f.nri = Some((nri_state(), true));
    f
}

fn nri_state() -> crate::nri::PluginState {
    crate::nri::PluginState {
        process: crate::host::proc::ProcessId { pid: 42, start_time: 1, boot: None },
        socket: "/var/run/nri/nri.sock".into(),
        name: "10-dataplane-hook".into(),
        connected: true,
        runtime: "containerd".into(),
        runtime_version: "v1.7.24".into(),
        since: 0,
    }
}

#[test]
fn the_nri_plugin_is_checked_only_where_it_ran_and_must_be_connected() {
    let mut f = healthy();
    assert!(checks(&f).iter().all(|c| c.name != "nri plugin"), "no plugin ever ran: no line");
    let state = nri_state();
    f.nri = Some((state.clone(), true));
    let c = checks(&f);
    assert_eq!(find(&c, "nri plugin").status, Status::Pass);
    assert!(find(&c, "nri plugin").detail.contains("containerd v1.7.24"));
    f.nri = Some((crate::nri::PluginState { connected: false, ..state.clone() }, true));
    let c = checks(&f);
    assert_eq!(find(&c, "nri plugin").status, Status::Fail);
    assert!(find(&c, "nri plugin").render().contains("io.containerd.nri.v1.nri"));
    f.nri = Some((state, false));
    assert_eq!(find(&checks(&f), "nri plugin").status, Status::Warn);
}

#[test]
fn every_line_comes_from_its_row_of_the_table_in_the_table_order() {
    let mut names: Vec<&str> = CHECKS.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), CHECKS.len(), "one row per check name");
    let f = everything_configured();
    let mut all = Vec::new();
    for row in CHECKS {
        assert!(!row.checks.is_empty(), "{} says what it checks", row.name);
        let lines = (row.run)(&f);
        // The one row that is silent when it passes: some runtime is configured.
        assert_eq!(lines.is_empty(), row.name == "runtime integration", "{}: {lines:#?}", row.name);
        for l in &lines {
            assert!(
                l.name == row.name || l.name.starts_with(&format!("{} ", row.name)),
                "row {} printed {}",
                row.name,
                l.render()
            );
        }
        all.extend(lines);
    }
    assert_eq!(all, checks(&f), "doctor prints the rows' lines, in the table's order");
    assert!(all.iter().all(|c| c.status != Status::Fail), "{all:#?}");
}

#[test]
fn any_one_configured_runtime_is_integration_and_a_broken_hooks_file_is_not() {
    let integration = |f: &Facts| checks(f).into_iter().find(|c| c.name == "runtime integration");
    let all = everything_configured();
    let mut f = all.clone();
    f.containerd = None;
    f.crio_dropins.clear();
    f.hook_files.clear();
    assert_eq!(integration(&f).map(|c| c.status), Some(Status::Warn));
    f.crio_dropins = all.crio_dropins.clone();
    assert_eq!(integration(&f), None, "a CRI-O handler is enough");
    f.crio_dropins.clear();
    f.hook_files = all.hook_files.clone();
    assert_eq!(integration(&f), None, "a hooks.d file is enough");
    f.hook_files[0].content = "{".into();
    assert_eq!(integration(&f).map(|c| c.status), Some(Status::Warn), "an invalid one is not");
    f.hook_files.clear();
    f.containerd = all.containerd.clone();
    assert_eq!(integration(&f), None, "a containerd handler is enough");
    f.containerd.as_mut().unwrap().dump = Ok("version = 2\n".into());
    assert_eq!(integration(&f).map(|c| c.status), Some(Status::Warn), "no handler in it");
}

/// Issue 14: the runtimes of a 2026 node (Debian 13: containerd 1.7.24, runc 1.1.15, crun
/// 1.21, podman 5.4; containerd 2.x elsewhere) are recognised, each line says which
/// guarantees each integration path gives, and a version this release does not know warns.
#[test]
fn support_lines_recognise_modern_runtime_versions_and_say_what_each_path_gives() {
    let rt = |name, version: &str| RuntimeBin {
        name,
        paths: vec![format!("/usr/bin/{name}").into()],
        version: Some(version.into()),
    };
    let mut f = healthy();
    f.runtimes = vec![
        rt("runc", "runc version 1.1.15+ds1\ncommit: 1.1.15+ds1-2\nspec: 1.2.0\n"),
        rt("crun", "crun version 1.21\ncommit: 10269840aa07fb7e6b7e1acff6198692d8ff5c88\n"),
        rt(
            "containerd",
            "containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+deb13u1\n",
        ),
        rt("podman", "podman version 5.4.2\n"),
    ];
    let cs = checks(&f);
    let runc = find(&cs, "support runc");
    assert_eq!(runc.status, Status::Pass);
    assert!(runc.detail.starts_with("1.1.15: runc >= 1.1.10: "), "{}", runc.render());
    assert!(runc.detail.contains("writes hugetlb.<size>.rsvd.max from the spec itself"));
    let c = find(&cs, "support containerd");
    assert!(c.detail.starts_with("1.7.24: containerd 1.7: runtime handler dataplane: G1-G12 (tested by make test: cri.rs"), "{}", c.render());
    assert!(find(&cs, "support crun").detail.contains("crun 1.2x"));
    let p = find(&cs, "support podman");
    assert!(
        p.detail.contains("podman 5: hooks.d: G1, G4-G12; G2 only for members"),
        "{}",
        p.render()
    );

    f.runtimes = vec![
        rt("containerd", CONTAINERD2),
        rt("containerd", "containerd github.com/containerd/containerd 1.5.9\n"),
    ];
    let cs = checks(&f);
    let lines: Vec<&Check> = cs.iter().filter(|c| c.name == "support containerd").collect();
    assert!(lines[0].detail.contains("containerd 2.x: runtime handler dataplane: G1-G12 (configure's files format-checked only"), "{}", lines[0].render());
    assert_eq!(lines[1].status, Status::Warn, "{}", lines[1].render());
    assert!(lines[1].detail.starts_with("1.5.9: a version this release does not know"));
    assert!(lines[1].fix.is_some());
}
