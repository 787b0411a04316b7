//! Issue 4 (G9) end to end with podman: the hooks.d files `dataplane-hook configure --runtime
//! podman` wrote, real podman 4.3 + conmon + runc or crun, private storage. An annotated container gets
//! its kernel reservation, a private hugetlbfs and its own view of the pool counters; an
//! unannotated one is untouched; `podman rm` releases everything. The control is the same
//! annotated container with podman's hooks dir left empty: nothing happens.
//!
//! podman runs the harness's runtime and cgroup driver (`DPH_RUNTIME`, `DPH_SYSTEMD_CGROUP`:
//! `--runtime`, `--cgroup-manager systemd|cgroupfs`); the default is runc with cgroupfs.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use dataplane_tests::*;

/// A private podman: its own storage root, run root, containers.conf and hooks dir.
struct Podman {
    dir: tempfile::TempDir,
    hooks_dir: PathBuf,
}

impl Podman {
    fn new(hooks_dir: &Path) -> Podman {
        let dir = tempfile::Builder::new().prefix("dph-podman-").tempdir().unwrap();
        // Root lacks CAP_SYS_RESOURCE here: podman's default ulimits cannot be applied.
        std::fs::write(dir.path().join("containers.conf"), "[containers]\ndefault_ulimits = []\n")
            .unwrap();
        Podman { dir, hooks_dir: hooks_dir.to_path_buf() }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new("podman");
        c.env("CONTAINERS_CONF", self.dir.path().join("containers.conf"))
            .arg("--root")
            .arg(self.dir.path().join("root"))
            .arg("--runroot")
            .arg(self.dir.path().join("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.path().join("tmp"))
            .args(["--runtime", &oci_runtime(), "--cgroup-manager", cgroup_manager()])
            .args(["--storage-driver", "vfs", "--events-backend", "file"])
            .arg("--hooks-dir")
            .arg(&self.hooks_dir);
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(o.status.success(), "podman {args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `podman run -d` of a container on `rootfs` (host /usr read-only inside) printing its
    /// mounts and then sleeping; returns the full container id.
    fn start(&self, rootfs: &Path, name: &str, annotations: &[&str]) -> String {
        let mut args = vec!["run", "-d", "--name", name, "--network", "none", "-v", "/usr:/usr:ro"];
        for a in annotations {
            args.push("--annotation");
            args.push(a);
        }
        let rootfs = rootfs.to_str().unwrap();
        args.extend([
            "--rootfs",
            rootfs,
            "/bin/sh",
            "-c",
            "cat /proc/self/mountinfo; echo END-OF-MOUNTS; exec sleep 600",
        ]);
        self.ok(&args)
    }

    fn logs_when_ready(&self, name: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out = self.ok(&["logs", name]);
            if out.contains("END-OF-MOUNTS") {
                return out;
            }
            assert!(Instant::now() < deadline, "{name} never printed its mounts: {out}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.run(&["rm", "--all", "--force", "--time", "0"]);
        // vfs keeps no mounts, but a failed run can leave the shm mount of a container behind.
        let prefix = self.dir.path().display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
    }
}

/// podman's cgroup manager for the harness's driver (`DPH_SYSTEMD_CGROUP`).
fn cgroup_manager() -> &'static str {
    if systemd_cgroup() {
        "systemd"
    } else {
        "cgroupfs"
    }
}

/// The mountinfo line for `target` in a container's printed mountinfo.
fn mount_at<'a>(mountinfo: &'a str, target: &str) -> Option<&'a str> {
    mountinfo.lines().find(|l| l.split(' ').nth(4) == Some(target))
}

fn configure_podman(env: &ProductEnv, hooks: &Path) {
    let o = Command::new(hook_bin())
        .env_remove("DATAPLANE_HOOK_CONFIG")
        .args([
            "--config",
            env.config.to_str().unwrap(),
            "configure",
            "--runtime",
            "podman",
            "--hooks-dir",
            hooks.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "configure: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn podman_hooks_d_reserves_for_annotated_containers_only_and_rm_releases() {
    let t0 = Instant::now();
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let hooks = tempfile::tempdir().unwrap();
    configure_podman(&env, hooks.path());
    let rootfs = TestBundle::new(&["true"]);
    let wanted = ["dataplane-hook.io/enabled=true", "dataplane-hook.io/hugepages-2Mi=16Mi"];

    // Control: the same annotated container, podman reading an empty hooks dir.
    let empty = tempfile::tempdir().unwrap();
    let plain = Podman::new(empty.path());
    plain.start(&rootfs.rootfs(), "dph-ctl", &wanted);
    let mi = plain.logs_when_ready("dph-ctl");
    assert!(
        mount_at(&mi, "/dev/hugepages").is_none(),
        "control: no hugetlbfs without the hooks: {mi}"
    );
    assert_eq!(counters(), pool.baseline, "control: nothing reserved");
    assert!(env.records().is_empty());
    drop(plain);

    let p = Podman::new(hooks.path());
    let id = p.start(&rootfs.rootfs(), "dph-annotated", &wanted);
    let mi = p.logs_when_ready("dph-annotated");
    let huge = mount_at(&mi, "/dev/hugepages")
        .unwrap_or_else(|| panic!("no hugetlbfs at /dev/hugepages: {mi}\nlog: {}", env.log_text()));
    assert!(huge.contains(" - hugetlbfs "), "{huge}");
    assert!(
        mount_at(&mi, "/var/run/dpdk").is_some_and(|l| l.contains(" - tmpfs ")),
        "private DPDK runtime dir: {mi}"
    );
    let c = counters();
    assert_eq!(c.reserved, 8, "16Mi reserved in the kernel: {c:?}");
    assert_eq!(env.records().len(), 1, "{:?}", env.records());
    assert!(env.records()[0].starts_with(&id), "record {:?} for container {id}", env.records());
    // The container sees its own reservation as free pages (DPDK's free - resv).
    let view = |f: &str| -> u64 {
        p.ok(&[
            "exec",
            "dph-annotated",
            "cat",
            &format!("/sys/kernel/mm/hugepages/hugepages-2048kB/{f}"),
        ])
        .parse()
        .unwrap()
    };
    assert_eq!(
        view("free_hugepages") - view("resv_hugepages"),
        8,
        "the container's view of the pool"
    );
    // The hugetlbfs is the container's: writable, sized to the reservation.
    let df = p.ok(&[
        "exec",
        "dph-annotated",
        "sh",
        "-c",
        "touch /dev/hugepages/probe && stat -f -c '%b %S' /dev/hugepages",
    ]);
    assert_eq!(df, "8 2097152", "hugetlbfs blocks and block size");

    // An unannotated container next to it is untouched.
    p.start(&rootfs.rootfs(), "dph-plain", &["dataplane-hook.io/hugepages-2Mi=16Mi"]);
    let mi = p.logs_when_ready("dph-plain");
    assert!(mount_at(&mi, "/dev/hugepages").is_none(), "no opt-in, no hugetlbfs: {mi}");
    assert_eq!(counters(), c, "nothing more reserved");
    assert_eq!(env.records().len(), 1);
    p.ok(&["rm", "--force", "--time", "0", "dph-plain"]);

    // rm releases everything.
    p.ok(&["rm", "--force", "--time", "0", "dph-annotated"]);
    pool.assert_baseline("after podman rm");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
    assert!(!env.log_text().contains("ERROR"), "{}", env.log_text());
    drop(p);
    eprintln!("podman e2e took {:.1}s", t0.elapsed().as_secs_f64());
}
