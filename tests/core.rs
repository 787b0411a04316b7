//! Issue 2 (core) end to end: private hugetlbfs and DPDK dirs (G1), kernel reservation (G4),
//! teardown (G5), gc (G6), cgroup limits (G7), safety (G8) — real runc, real DPDK.

use std::time::Duration;

use dataplane_tests::dpdk::{testpmd_primary, FORWARDING};
use dataplane_tests::*;

fn testpmd_bundle() -> TestBundle {
    let args = testpmd_primary(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBundle::new(&args)
}

fn forwarding(b: &TestBundle) -> bool {
    stdout_of(b).contains(FORWARDING)
}

#[test]
fn two_dpdk_primaries_with_the_default_prefix_both_run() {
    let pool = PoolGuard::new(128);
    let shared_huge = tempfile::tempdir().unwrap();
    let shared_run = tempfile::tempdir().unwrap();
    assert!(std::process::Command::new("mount")
        .args(["-t", "hugetlbfs", "-o", "pagesize=2M", "nodev"])
        .arg(shared_huge.path())
        .status()
        .unwrap()
        .success());

    // Control: plain runc, both containers share the host's hugetlbfs and runtime dir.
    let runc = Runner::runc();
    let mut a = testpmd_bundle();
    a.bind(shared_huge.path(), "/dev/hugepages").bind(shared_run.path(), "/var/run/dpdk");
    let mut b = testpmd_bundle();
    b.bind(shared_huge.path(), "/dev/hugepages").bind(shared_run.path(), "/var/run/dpdk");
    let (ida, idb) = (unique("ctl-a"), unique("ctl-b"));
    runc.launch(&a, &ida);
    assert!(wait_for(Duration::from_secs(20), || forwarding(&a)), "control primary A never forwarded: {}", stdout_of(&a));
    runc.launch(&b, &idb);
    assert!(runc.wait_stopped(&idb, Duration::from_secs(20)), "control: second primary kept running");
    let err = std::fs::read_to_string(b.path().join("stderr.log")).unwrap() + &stdout_of(&b);
    assert!(!forwarding(&b), "control: second primary with the same prefix must not run: {err}");
    assert!(err.contains("Cannot create lock") || err.contains("Is another primary process running"), "control failure reason: {err}");
    runc.delete(&ida);
    runc.delete(&idb);
    let _ = std::process::Command::new("umount").arg(shared_huge.path()).status();

    // The product: same two containers (still asking for the host dirs), each gets its own.
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let mut a = testpmd_bundle();
    a.annotate("dataplane-hook.io/hugepages-2Mi", "64Mi");
    let mut b = testpmd_bundle();
    b.annotate("dataplane-hook.io/hugepages-2Mi", "64Mi");
    let (ida, idb) = (unique("dp-a"), unique("dp-b"));
    p.launch(&a, &ida);
    p.launch(&b, &idb);
    assert!(wait_for(Duration::from_secs(30), || forwarding(&a) && forwarding(&b)),
        "both primaries must forward:\nA: {}\nB: {}\nlog: {}", stdout_of(&a), stdout_of(&b), env.log_text());
    assert_eq!(p.status(&ida).as_deref(), Some("running"));
    assert_eq!(p.status(&idb).as_deref(), Some("running"));
    assert_eq!(counters().reserved + counters().total - counters().free, 64, "both reservations visible: {:?}", counters());
    p.delete(&ida);
    p.delete(&idb);
    pool.assert_baseline("after deleting both primaries");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}
