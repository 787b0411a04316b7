//! G6: `dataplane-hook gc` releases what containers whose poststop never ran left behind, and
//! never touches a live container. Liveness is the container init's identity (pid + start
//! time), not a runtime's state dir.

use std::path::PathBuf;
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;

const ANN_2MI: &str = "dataplane-hook.io/hugepages-2Mi";

fn sleeper(mib: u64) -> TestBundle {
    let mut b = TestBundle::new(&["sleep", "600"]);
    b.annotate(ANN_2MI, &format!("{mib}Mi"));
    b
}

fn record(env: &ProductEnv, id: &str) -> Option<Vec<u8>> {
    std::fs::read(env.state_dir.join(format!("containers/{id}.json"))).ok()
}

fn hugetlb_max(pid: i32) -> (PathBuf, String) {
    let cg = HugetlbCgroup::of(pid);
    let v = cg.read(cg.max);
    (cg.dir.join(cg.max), v)
}

/// Removes cgroup dirs runc could not remove because its state was taken away.
fn remove_cgroups(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// SIGKILLs the container's init and removes runc's state for it, so neither `runc delete` nor
/// the poststop hook can ever run for it: what a node reboot, a crashed shim or a lost runc
/// root leaves.
fn lose(r: &Runner, id: &str, pid: i32) {
    signal(pid, libc::SIGKILL);
    assert!(wait_pid_gone(pid, Duration::from_secs(10)), "init {pid} did not die");
    std::fs::remove_dir_all(r.runc_root.path().join(id)).unwrap();
    assert_eq!(r.status(id), None, "runc must have forgotten {id}");
}

fn gc(env: &ProductEnv, dry_run: bool) -> String {
    let o = if dry_run { env.hook(&["gc", "--dry-run"]) } else { env.hook(&["gc"]) };
    assert!(o.status.success(), "gc (dry_run={dry_run}): {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

#[test]
fn gc_releases_a_container_whose_state_vanished_and_leaves_live_neighbours_alone() {
    let pool = PoolGuard::new(32);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let (lost, live, orphan) = (unique("lost"), unique("live"), unique("orphan"));
    let bundles: Vec<TestBundle> = (0..3).map(|_| sleeper(8)).collect();
    for (id, b) in [&lost, &live, &orphan].into_iter().zip(&bundles) {
        reap.add(id);
        p.launch(b, id);
    }
    let pid = |id: &str| p.pid(id).unwrap();
    let (pid_lost, pid_live, pid_orphan) = (pid(&lost), pid(&live), pid(&orphan));
    let (max_lost, v) = hugetlb_max(pid_lost);
    let leftovers: Vec<PathBuf> = [cgroup_dirs(pid_lost), cgroup_dirs(pid_orphan)].concat();
    assert_eq!(v, (8u64 << 20).to_string());
    let read_lost = || std::fs::read_to_string(&max_lost).map(|s| s.trim().to_string());
    assert_eq!(counters().reserved, 12);

    // `lost`: init dead, runc state gone, poststop never ran. `orphan`: runc state gone too,
    // but its init still runs — it is alive, whatever the runtime's state dir says.
    lose(&p, &lost, pid_lost);
    std::fs::remove_dir_all(p.runc_root.path().join(&orphan)).unwrap();
    assert!(record(&env, &lost).is_some(), "without gc the dead container's record stays");
    let live_record = record(&env, &live).unwrap();
    let orphan_record = record(&env, &orphan).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || counters().reserved == 8),
        "the kernel dropped the dead one's reservation with its mount namespace: {:?}",
        counters()
    );
    // (A runtime without its state leaves the dead container's cgroup; a systemd scope goes.)
    let cg_left = read_lost().is_ok();
    assert!(
        cg_left || systemd_cgroup(),
        "precondition: runc without its state left the dead container's cgroup {}",
        max_lost.display()
    );
    if cg_left {
        assert_eq!(
            read_lost().unwrap(),
            (8u64 << 20).to_string(),
            "the dead one's cgroup limit is still ours"
        );
    }

    // --dry-run reports and releases nothing.
    let out = gc(&env, true);
    assert!(out.lines().any(|l| l == format!("would release {lost}")), "{out}");
    assert!(out.lines().any(|l| l == format!("live {live}")), "{out}");
    assert!(out.lines().any(|l| l == format!("live {orphan}")), "{out}");
    assert!(record(&env, &lost).is_some(), "dry run removed a record");
    if cg_left {
        assert_eq!(
            read_lost().unwrap(),
            (8u64 << 20).to_string(),
            "dry run restored a cgroup value"
        );
    }

    // gc releases the dead one: its record goes, the cgroup value it set is restored.
    let out = gc(&env, false);
    assert!(out.lines().any(|l| l == format!("released {lost}")), "{out}");
    assert!(
        !out.contains(&format!("released {live}")) && !out.contains(&format!("released {orphan}")),
        "{out}"
    );
    assert!(record(&env, &lost).is_none(), "gc left the dead container's record");
    if cg_left {
        assert!(unlimited(&read_lost().unwrap()), "gc restored the dead container's hugetlb limit");
    }

    // The live neighbours: records, reservations, mounts and limits intact.
    assert_eq!(record(&env, &live).unwrap(), live_record);
    assert_eq!(record(&env, &orphan).unwrap(), orphan_record);
    assert_eq!(counters().reserved, 8, "live reservations untouched");
    for (id, pid) in [(&live, pid_live), (&orphan, pid_orphan)] {
        assert!(
            mountinfo(&pid.to_string())
                .iter()
                .any(|m| m.fstype == "hugetlbfs" && m.mount_point == "/dev/hugepages"),
            "{id}: hugetlbfs gone"
        );
        assert!(
            mountinfo(&pid.to_string()).iter().any(|m| m.mount_point == "/var/run/dpdk"),
            "{id}: runtime dir gone"
        );
        assert_eq!(hugetlb_max(pid).1, (8u64 << 20).to_string(), "{id}: limit changed");
    }
    assert_eq!(p.status(&live).as_deref(), Some("running"));

    // Clean up: the live one the normal way; the orphan once its init is gone, by gc.
    assert!(reap.delete(&live).status.success());
    signal(pid_orphan, libc::SIGKILL);
    assert!(wait_pid_gone(pid_orphan, Duration::from_secs(10)));
    let out = gc(&env, false);
    assert!(out.lines().any(|l| l == format!("released {orphan}")), "{out}");
    remove_cgroups(&leftovers);
    pool.assert_baseline("after releasing everything");
    assert!(env.records().is_empty(), "records left: {:?}", env.records());
}

#[test]
fn every_create_runs_gc_first() {
    let pool = PoolGuard::new(16);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let lost = unique("lost");
    let b = sleeper(32);
    reap.add(&lost);
    p.launch(&b, &lost);
    let pid_lost = p.pid(&lost).unwrap();
    let leftovers = cgroup_dirs(pid_lost);
    lose(&p, &lost, pid_lost);
    assert!(record(&env, &lost).is_some());

    // The next create releases the dead container's record before planning, and its own
    // request for the whole pool is admitted.
    let next = unique("next");
    let b = sleeper(32);
    reap.add(&next);
    p.launch(&b, &next);
    assert!(record(&env, &lost).is_none(), "create did not gc the dead container");
    assert_eq!(env.records(), vec![format!("{next}.json")]);
    assert_eq!(counters().reserved, 16);
    assert!(reap.delete(&next).status.success());
    remove_cgroups(&leftovers);
    pool.assert_baseline("after delete");
    assert!(env.records().is_empty());
}

/// A hook that died half way leaves a record whose last entry is an intent, not marked done.
/// gc undoes it like any other entry, tolerating effects that were never made.
#[test]
fn gc_undoes_a_record_left_by_a_hook_that_died_midway() {
    let env = ProductEnv::new("");
    // A dead process's identity: a child that exited.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = child.id() as i32;
    let start_time: u64 = std::fs::read_to_string(format!("/proc/{dead_pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().nth(19).and_then(|t| t.parse().ok()))
        })
        .unwrap_or(1);
    child.wait().unwrap();

    // A cgroup it made (any cgroup mount will do), a value it wrote, and an intent it never
    // carried out. The value is a real control file in a cgroup of the test's own: undo only
    // ever writes on a cgroup filesystem (issue 13), so a plain file no longer stands in.
    let mounts = host_mounts();
    let cg = mounts
        .iter()
        .find(|m| m.fstype == "cgroup2")
        .or_else(|| mounts.iter().find(|m| m.fstype == "cgroup"))
        .expect("a cgroup mount");
    let cg_root = PathBuf::from(&cg.mount_point);
    let made = cg_root.join(unique("dph-gc-made"));
    std::fs::create_dir(&made).unwrap();
    let never_made = cg_root.join(unique("dph-gc-never-made"));
    // An intent the hook did carry out but died before marking done: the effect is real and
    // must be undone like a done one.
    let made_unmarked = cg_root.join(unique("dph-gc-made-unmarked"));
    std::fs::create_dir(&made_unmarked).unwrap();
    let valued = cg_root.join(unique("dph-gc-valued"));
    std::fs::create_dir(&valued).unwrap();
    // v2: cgroup.max.descendants ("max" or a number); v1: notify_on_release (0 or 1).
    let (name, previous, value) = if cg.fstype == "cgroup2" {
        ("cgroup.max.descendants", "max", "5")
    } else {
        ("notify_on_release", "0", "1")
    };
    let value_file = valued.join(name);
    std::fs::write(&value_file, value).unwrap();
    let id = unique("midway");
    let rec = serde_json::json!({
        "id": id, "init": {"pid": dead_pid, "start_time": start_time}, "bundle": "/nonexistent",
        "created": 1, "group": null, "reservations": {"2Mi": 4194304},
        "entries": [
            {"kind": "cgroup_created", "dir": made, "shared": false, "done": true},
            {"kind": "cgroup_value", "file": value_file, "value": value, "previous": previous, "done": true},
            {"kind": "cgroup_created", "dir": made_unmarked, "shared": false, "done": false},
            {"kind": "cgroup_created", "dir": never_made, "shared": false, "done": false}
        ]
    });
    assert!(!never_made.exists(), "precondition: the last intent was never carried out");
    assert!(made.is_dir() && made_unmarked.is_dir(), "precondition: the made cgroups exist");
    std::fs::create_dir_all(env.state_dir.join("containers")).unwrap();
    std::fs::write(env.state_dir.join(format!("containers/{id}.json")), rec.to_string()).unwrap();

    let out = gc(&env, false);
    let restored = std::fs::read_to_string(&value_file).unwrap_or_default();
    let cleanup = || {
        let _ = std::fs::remove_dir(&made);
        let _ = std::fs::remove_dir(&made_unmarked);
        let _ = std::fs::remove_dir(&valued);
    };
    if !out.lines().any(|l| l == format!("released {id}")) {
        cleanup();
        panic!("gc did not release the half-done record: {out}");
    }
    let (still, still_unmarked) = (made.exists(), made_unmarked.exists());
    cleanup();
    assert!(!still, "gc did not remove the cgroup the dead hook created");
    assert!(!still_unmarked, "gc left the cgroup of an intent the hook made but never marked");
    // Released although one intent had no effect to undo (the ENOENT is tolerated), and gc
    // made nothing while undoing it.
    assert!(!never_made.exists(), "gc created the never-made cgroup");
    assert_eq!(restored.trim(), previous, "gc wrote the previous value back");
    assert!(env.records().is_empty(), "records left: {:?}", env.records());
}
