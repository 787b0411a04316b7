//! Issue 13, prefix mode (G3) at teardown, attacked through the real runtime (runc via
//! dataplane-runtime): a container controls what is inside its volumes and hugetlbfs while it
//! runs, and poststop must still touch nothing outside them, never block on a file the
//! container made, and never remove the live runtime dir of a DPDK primary it does not manage.
//! Also: runtime dirs under /proc, /sys, /dev refused at parse, and a tampered ledger record
//! that names host paths outside the state dir and cgroupfs refused by teardown.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::dpdk::*;
use dataplane_tests::util::*;
use dataplane_tests::*;

const PREFIX: &str = "dataplane-hook.io/dpdk-file-prefix";
const RUNTIME_DIR: &str = "dataplane-hook.io/dpdk-runtime-dir";

/// A host directory outside every container's volumes, removed on drop.
struct HostDir(PathBuf);
impl HostDir {
    fn new(what: &str) -> HostDir {
        let p = PathBuf::from(format!("/tmp/{}", unique(what)));
        std::fs::create_dir_all(&p).unwrap();
        HostDir(p)
    }
}
impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn sh(script: &str) -> TestBundle {
    TestBundle::new(&["sh", "-c", script])
}

/// `delete --force ID`, bounded: the time it took, or None when it was still running after
/// `limit` (it is killed then).
fn delete_bounded(r: &Runner, id: &str, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut child: Child = r
        .command()
        .args(["delete", "--force", id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            return Some(start.elapsed());
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `b` to its end as container `id` (create, start, wait until stopped).
fn run_to_end(r: &Runner, b: &TestBundle, id: &str) {
    r.launch(b, id);
    assert!(r.wait_stopped(id, Duration::from_secs(20)), "{id} did not stop: {}", stdout_of(b));
}

// ---------------------------------------------------------------------------------------------
// 1. A symlink in the container-controlled part of the runtime dir path.
// ---------------------------------------------------------------------------------------------

/// The container replaces its runtime dir (inside a writable volume) by a symlink to a host
/// directory; poststop must not remove `<that host dir>/<prefix>`. (In Kubernetes: an emptyDir
/// with `ln -s / /scratch/rt` and prefix `etc` would take the host's /etc.)
#[test]
fn prefix_teardown_never_follows_a_volume_symlink_to_a_host_dir() {
    require_root();
    let host = HostDir::new("dph-host-victim");
    let victim = host.0.join("victim");
    std::fs::create_dir_all(victim.join("sub")).unwrap();
    std::fs::write(victim.join("sub/canary"), "host data\n").unwrap();
    let vol = HostDir::new("dph-vol");
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let mut b = sh(&format!("rm -rf /vol/rt; ln -s {} /vol/rt", host.0.display()));
    b.annotate(PREFIX, "victim").annotate(RUNTIME_DIR, "/vol/rt").bind(&vol.0, "/vol");
    let id = unique("pfx-symlink");
    run_to_end(&r, &b, &id);
    // Precondition: the runtime dir in the volume really is a symlink to the host dir, so a
    // teardown that follows it reaches the victim.
    assert_eq!(
        std::fs::read_link(vol.0.join("rt")).ok().as_deref(),
        Some(host.0.as_path()),
        "precondition: /vol/rt -> host dir"
    );
    assert!(
        vol.0.join("rt/victim/sub/canary").exists(),
        "precondition: the link resolves to the victim on the host"
    );
    let o = r.delete(&id);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        std::fs::read_to_string(victim.join("sub/canary")).ok().as_deref(),
        Some("host data\n"),
        "host dir {} was removed through the container's symlink\nlog: {}",
        victim.display(),
        env.log_text()
    );
    assert!(env.log_text().contains("symlink"), "the skip is logged: {}", env.log_text());
    assert!(env.records().is_empty(), "teardown completes: {:?}", env.records());
}

/// The trusted part swapped: the spec binds a host dir at /a and its subdir `x` at /b (the
/// runtime dir). Through /a the container replaces the host's `x` itself by a symlink to a host
/// dir; poststop must notice that the source is no longer the directory it was given.
#[test]
fn prefix_teardown_never_follows_a_bind_source_swapped_through_another_mount() {
    require_root();
    let host = HostDir::new("dph-host-victim");
    std::fs::create_dir_all(host.0.join("victim")).unwrap();
    std::fs::write(host.0.join("victim/canary"), "host data\n").unwrap();
    let tree = HostDir::new("dph-tree");
    std::fs::create_dir_all(tree.0.join("x")).unwrap();
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let mut b = sh(&format!("rm -rf /a/x; ln -s {} /a/x", host.0.display()));
    b.annotate(PREFIX, "victim")
        .annotate(RUNTIME_DIR, "/b")
        .bind(&tree.0, "/a")
        .bind(&tree.0.join("x"), "/b");
    let id = unique("pfx-swap");
    run_to_end(&r, &b, &id);
    assert_eq!(
        std::fs::read_link(tree.0.join("x")).ok().as_deref(),
        Some(host.0.as_path()),
        "precondition: the bind source itself is now a symlink to the host dir\n{}",
        stdout_of(&b)
    );
    let o = r.delete(&id);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
    assert!(
        host.0.join("victim/canary").exists(),
        "host dir removed through the swapped bind source\nlog: {}",
        env.log_text()
    );
    assert!(env.log_text().contains("replaced"), "the skip is logged: {}", env.log_text());
}

/// Control for the same layout without a symlink: G3 still removes `<runtime dir>/<prefix>`
/// inside the volume (including what DPDK leaves there: files, sockets, a subdirectory).
#[test]
fn prefix_teardown_still_removes_the_prefix_dir_inside_a_volume() {
    require_root();
    let vol = HostDir::new("dph-vol");
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let mut b = sh("mkdir -p /vol/rt/app1/sub /vol/rt/other && echo x > /vol/rt/app1/config && echo y > /vol/rt/app1/sub/f && mkfifo /vol/rt/app1/fifo");
    b.annotate(PREFIX, "app1").annotate(RUNTIME_DIR, "/vol/rt").bind(&vol.0, "/vol");
    let id = unique("pfx-vol");
    run_to_end(&r, &b, &id);
    assert!(
        vol.0.join("rt/app1/sub/f").exists(),
        "precondition: the container made its prefix dir"
    );
    let o = r.delete(&id);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !vol.0.join("rt/app1").exists(),
        "prefix dir removed: {:?}\nlog: {}",
        walk(&vol.0),
        env.log_text()
    );
    assert!(vol.0.join("rt/other").exists(), "another prefix's dir untouched");
    assert!(env.records().is_empty());
}

/// The same with the hugetlbfs mount path: the admin put it inside a volume
/// (`mount_path_2mi = "/vol/hp"`), the container makes it a symlink to another hugetlbfs on the
/// host; poststop must not clean that one's files of the prefix.
#[test]
fn prefix_teardown_never_cleans_a_hugetlbfs_reached_through_a_volume_symlink() {
    require_root();
    let other = HostHugetlbfs::mount("pagesize=2M");
    std::fs::write(other.path().join("leakymap_0"), "").unwrap();
    let vol = HostDir::new("dph-vol");
    let env = ProductEnv::new("[hugepages]\nmount_path_2mi = \"/vol/hp\"\n");
    let r = Runner::product(&env);
    let mut b = sh(&format!("rm -rf /vol/hp; ln -s {} /vol/hp", other.path().display()));
    b.annotate(PREFIX, "leaky").bind(&vol.0, "/vol");
    let id = unique("pfx-hugelink");
    run_to_end(&r, &b, &id);
    assert_eq!(
        std::fs::read_link(vol.0.join("hp")).ok().as_deref(),
        Some(other.path()),
        "precondition: /vol/hp -> the other hugetlbfs"
    );
    assert!(vol.0.join("hp/leakymap_0").exists(), "precondition: the link reaches its file");
    let o = r.delete(&id);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
    assert!(
        other.path().join("leakymap_0").exists(),
        "a file of another hugetlbfs was removed through the symlink\nlog: {}",
        env.log_text()
    );
    assert!(env.records().is_empty());
}

// ---------------------------------------------------------------------------------------------
// 2. A FIFO named like a hugepage file.
// ---------------------------------------------------------------------------------------------

/// A blocking O_RDONLY open of `fifo` blocks (nobody writes): the precondition that makes the
/// attack a stall. Unblocks its own opener before returning.
fn blocking_open_blocks(fifo: &Path) -> bool {
    let p = fifo.to_path_buf();
    let (tx, rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        let f = std::fs::File::open(&p);
        let _ = tx.send(f.is_ok());
    });
    let blocked = rx.recv_timeout(Duration::from_millis(700)).is_err();
    // A writer lets the blocked reader through.
    let _w = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo);
    let _ = rx.recv_timeout(Duration::from_secs(5));
    let _ = t.join();
    blocked
}

/// Lets every reader blocked on `fifo` through (a stalled hook in the unfixed code), so a
/// failing run does not leave a hook hanging on the node.
fn release_readers(fifo: &Path) {
    for _ in 0..50 {
        let _ = std::fs::OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(fifo);
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fifo_in_hugetlbfs_neither_stalls_poststop_nor_the_next_create() {
    require_root();
    let huge = HostHugetlbfs::mount("pagesize=2M");
    let fifo = huge.path().join("ffmap_0");
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let mut b = sh("mkfifo /dev/hugepages/ffmap_0");
    b.annotate(PREFIX, "ff").bind(huge.path(), "/dev/hugepages");
    let id = unique("pfx-fifo");
    run_to_end(&r, &b, &id);
    let meta = std::fs::symlink_metadata(&fifo).expect("precondition: the container made the FIFO");
    assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()), "precondition: a FIFO");
    assert!(
        blocking_open_blocks(&fifo),
        "precondition: a blocking O_RDONLY open of the FIFO blocks"
    );

    let took = delete_bounded(&r, &id, Duration::from_secs(10));
    // Right after: another container's create on the node (the state-dir lock must be free).
    let mut next = sh("true");
    next.annotate(PREFIX, "ff2").bind(huge.path(), "/dev/hugepages");
    let id2 = unique("pfx-next");
    let created = create_with_timeout(&r, &next, &id2, Duration::from_secs(40));
    release_readers(&fifo);
    let _ = delete_bounded(&r, &id2, Duration::from_secs(10));

    assert!(
        took.is_some_and(|t| t < Duration::from_secs(3)),
        "delete (poststop) took {took:?}\nlog: {}",
        env.log_text()
    );
    let created = created.expect("the next create hung");
    assert!(
        created.status.success(),
        "the next create failed: {}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(fifo.exists(), "a FIFO is not a hugepage file: left alone");
    assert!(
        env.log_text().contains("not a regular file"),
        "the skip is logged: {}",
        env.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// 3. An explicit prefix shared with a live DPDK primary the product does not manage.
// ---------------------------------------------------------------------------------------------

fn testpmd_no_huge(prefix: &str) -> TestBundle {
    let a = testpmd_primary(&["--no-huge", "--file-prefix", prefix]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    TestBundle::new(&a)
}

/// Whether some process holds a POSIX (fcntl) lock on `file` (by inode, from /proc/locks).
fn fcntl_locked(file: &Path) -> bool {
    let Ok(m) = std::fs::metadata(file) else { return false };
    let ino = std::os::unix::fs::MetadataExt::ino(&m);
    std::fs::read_to_string("/proc/locks")
        .unwrap()
        .lines()
        .any(|l| l.contains("POSIX") && l.contains(&format!(":{ino} ")))
}

#[test]
fn prefix_teardown_leaves_the_runtime_dir_of_a_live_unmanaged_primary() {
    require_root();
    let rt = HostDir::new("dph-shared-rt");
    // The primary: plain runc, the host's shared runtime dir, DPDK's default prefix.
    let runc = Runner::runc();
    let mut primary = testpmd_no_huge("rte");
    primary.bind(&rt.0, "/var/run/dpdk");
    let pid_p = unique("primary");
    runc.launch(&primary, &pid_p);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(&primary)),
        "primary: {}",
        stdout_of(&primary)
    );
    let config = rt.0.join("rte/config");
    assert!(
        fcntl_locked(&config),
        "precondition: the primary holds an fcntl lock on {}",
        config.display()
    );

    // A product container with the same explicit prefix and runtime dir stops.
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let mut b = sh("true");
    b.annotate(PREFIX, "rte").bind(&rt.0, "/var/run/dpdk");
    let id = unique("pfx-rte");
    run_to_end(&r, &b, &id);
    let o = r.delete(&id);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));

    assert!(
        config.exists(),
        "the live primary's runtime dir was removed: {:?}\nlog: {}",
        walk(&rt.0),
        env.log_text()
    );
    assert!(
        rt.0.join("rte/mp_socket").exists(),
        "its multi-process socket stays: {:?}",
        walk(&rt.0)
    );
    assert_eq!(runc.status(&pid_p).as_deref(), Some("running"), "the primary survives");
    assert!(env.log_text().contains("locked"), "the skip is logged: {}", env.log_text());
    assert!(
        env.records().is_empty(),
        "the record goes (nothing of ours to retry): {:?}",
        env.records()
    );

    // G3 keeps working: a prefix dir nobody locks any more (its primary was killed) goes.
    let mut stale = testpmd_no_huge("$DPDK_FILE_PREFIX");
    let cmd = stale.spec["process"]["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().to_string())
        .collect::<Vec<_>>()
        .join(" ");
    stale.spec["process"]["args"] = serde_json::json!(["sh", "-c", format!("exec {cmd}")]);
    stale.save();
    stale.annotate(PREFIX, "stale").bind(&rt.0, "/var/run/dpdk");
    let ids = unique("pfx-stale");
    r.launch(&stale, &ids);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(&stale)),
        "stale: {}",
        stdout_of(&stale)
    );
    assert!(rt.0.join("stale/config").exists(), "precondition: the killed primary's dir");
    r.kill(&ids, "KILL");
    assert!(r.wait_stopped(&ids, Duration::from_secs(10)));
    let o = r.delete(&ids);
    assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
    assert!(
        !rt.0.join("stale").exists(),
        "an unlocked prefix dir is removed: {:?}\nlog: {}",
        walk(&rt.0),
        env.log_text()
    );
    assert!(
        config.exists() && runc.status(&pid_p).as_deref() == Some("running"),
        "the primary is still untouched"
    );

    runc.kill(&pid_p, "KILL");
    assert!(runc.wait_stopped(&pid_p, Duration::from_secs(10)));
    runc.delete(&pid_p);
}

// ---------------------------------------------------------------------------------------------
// 4. Hardening: runtime dirs in kernel filesystems; a tampered record.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_runtime_dir_under_proc_sys_or_dev_is_refused_at_create() {
    require_root();
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    for dir in ["/proc/sys/kernel", "/sys/fs/cgroup", "/dev/shm"] {
        let mut b = sh("true");
        b.annotate(PREFIX, "p1").annotate(RUNTIME_DIR, dir);
        let id = unique("pfx-kernfs");
        let o = r.create(&b, &id);
        assert!(!o.status.success(), "{dir}: create must fail");
        let msg = product_error(&o.stderr).unwrap_or_else(|| {
            panic!("{dir}: no product error in {}", String::from_utf8_lossy(&o.stderr))
        });
        assert!(
            msg.starts_with(&format!("dataplane-hook: invalid annotation {RUNTIME_DIR}=\"{dir}\"")),
            "{msg}"
        );
        assert_spec_form(dir, &msg);
        assert!(env.records().is_empty(), "{dir}: nothing left behind: {:?}", env.records());
    }
    // A hugetlbfs mount path under /dev is still fine: only the runtime dir is checked.
    let mut b = sh("true");
    b.annotate(PREFIX, "p1").annotate(RUNTIME_DIR, "/var/run/dpdk");
    let id = unique("pfx-ok");
    let o = r.create(&b, &id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    r.delete(&id);
}

/// A record that names host paths for undo — a file outside cgroupfs as a cgroup value, a host
/// directory as a cgroup and as a state dir — is refused entry by entry: nothing on the host
/// changes, the refusal is logged and the record stays for a human.
#[test]
fn a_tampered_record_never_makes_teardown_write_or_delete_outside_cgroupfs_and_the_state_dir() {
    require_root();
    let env = ProductEnv::new("");
    let o = env.hook(&["gc"]);
    assert!(o.status.success(), "gc creates the state dir: {}", String::from_utf8_lossy(&o.stderr));
    let host = HostDir::new("dph-tamper");
    let file = host.0.join("passwd");
    std::fs::write(&file, "root:x:0:0\n").unwrap();
    let empty = host.0.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let tree = host.0.join("tree");
    std::fs::create_dir_all(tree.join("a")).unwrap();
    std::fs::write(tree.join("a/f"), "data").unwrap();
    let rec = serde_json::json!({
        "id": "tampered", "init": {"pid": 999_999_999, "start_time": 1}, "bundle": "/nonexistent",
        "created": 0, "reservations": {},
        "entries": [
            {"kind": "state_dir", "path": tree, "done": true},
            {"kind": "state_dir", "path": env.state_dir.join("../..").join(tree.strip_prefix("/").unwrap()), "done": true},
            {"kind": "cgroup_created", "dir": empty, "shared": false, "done": true},
            {"kind": "cgroup_value", "file": file, "value": "1", "previous": "overwritten", "done": true},
        ]
    });
    let path = env.state_dir.join("containers/tampered.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&rec).unwrap()).unwrap();
    let o = env.hook(&["gc"]);
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "root:x:0:0\n",
        "a host file was written as a cgroup value"
    );
    assert!(empty.exists(), "a host directory was removed as a cgroup");
    assert!(tree.join("a/f").exists(), "a host tree was removed as a state dir");
    assert!(path.exists(), "the refused entries stay in the record for a human");
    let log = env.log_text();
    assert!(
        log.contains("refused"),
        "the refusal is logged: {log}\ngc: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}
