//! Issue 3 end to end: DPDK multi-process groups across containers (G2) and prefix mode (G3),
//! with real runc, real dataplane-runtime and real `dpdk-testpmd` primaries and secondaries.

use std::time::Duration;

use dataplane_tests::dpdk::*;
use dataplane_tests::util::HostHugetlbfs;
use dataplane_tests::*;

const GROUP: &str = "dataplane-hook.io/dpdk-group";
const HUGE: &str = "dataplane-hook.io/hugepages-2Mi";

fn bundle(args: &[String]) -> TestBundle {
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBundle::new(&a)
}

fn group_member(args: &[String], group: &str) -> TestBundle {
    let mut b = bundle(args);
    b.annotate(GROUP, group).annotate(HUGE, "64Mi");
    b
}

fn holder_of(env: &ProductEnv, name: &str) -> Option<i64> {
    env.status_json()["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == name)
        .and_then(|g| g["holder"].as_i64())
}

#[test]
fn seed_002_secondaries_in_different_pid_namespaces_collide_and_a_group_fixes_it() {
    let pool = PoolGuard::new(128);

    // Control (the incident): three containers, each its own PID namespace, sharing the
    // host's hugetlbfs and runtime dir. Both secondaries are PID 1 in their containers.
    {
        let huge = HostHugetlbfs::mount("pagesize=2M");
        let run = tempfile::tempdir().unwrap();
        let runc = Runner::runc();
        let mut p = bundle(&testpmd_mp_primary(3, &[]));
        let mut s1 = bundle(&testpmd_secondary(3, 1, &[]));
        let mut s2 = bundle(&testpmd_secondary(3, 2, &[]));
        for b in [&mut p, &mut s1, &mut s2] {
            b.bind(huge.path(), "/dev/hugepages").bind(run.path(), "/var/run/dpdk");
        }
        let ids = [unique("ctl-p"), unique("ctl-s1"), unique("ctl-s2")];
        runc.launch(&p, &ids[0]);
        assert!(
            wait_for(Duration::from_secs(30), || forwarding(&p)),
            "control primary: {}",
            output_of(&p)
        );
        runc.launch(&s1, &ids[1]);
        assert!(
            wait_for(Duration::from_secs(30), || forwarding(&s1)),
            "control secondary 1: {}",
            output_of(&s1)
        );
        runc.launch(&s2, &ids[2]);
        assert!(
            runc.wait_stopped(&ids[2], Duration::from_secs(30)),
            "control: the second secondary kept running"
        );
        let out = output_of(&s2);
        assert!(
            out.contains(SECONDARY_COLLISION),
            "control: expected the seed's failure, got: {out}"
        );
        assert!(
            out.contains("couldn't lock") && out.contains("fbarray_memseg") && out.contains("_1"),
            "control: the PID-named lock collides: {out}"
        );
        for id in &ids {
            runc.delete(id);
        }
    }

    // The product: the same three, one DPDK group.
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let p = group_member(&testpmd_mp_primary(3, &[]), "seed");
    let s1 = group_member(&testpmd_secondary(3, 1, &[]), "seed");
    let s2 = group_member(&testpmd_secondary(3, 2, &[]), "seed");
    let ids = [unique("grp-p"), unique("grp-s1"), unique("grp-s2")];
    r.launch(&p, &ids[0]);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(&p)),
        "primary: {}\n{}",
        output_of(&p),
        env.log_text()
    );
    r.launch(&s1, &ids[1]);
    r.launch(&s2, &ids[2]);
    assert!(
        wait_for(Duration::from_secs(40), || forwarding(&s1) && forwarding(&s2)),
        "both secondaries must attach and forward:\nS1: {}\nS2: {}\nlog: {}",
        output_of(&s1),
        output_of(&s2),
        env.log_text()
    );
    for id in &ids {
        assert_eq!(r.status(id).as_deref(), Some("running"), "{id}");
    }
    // One reservation for the whole group.
    assert_eq!(counters().reserved + (counters().total - counters().free), 32, "{:?}", counters());
    let s = env.status_json();
    let g = &s["groups"][0];
    assert_eq!(g["members"].as_array().unwrap().len(), 3, "{s}");
    assert!(g["holder_alive"].as_bool().unwrap(), "{s}");
    for id in &ids {
        r.delete(id);
    }
    env.assert_released(&pool, "after the last member");
}

#[test]
fn members_start_in_any_order_and_restart() {
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    // Secondaries first: they retry until their primary is up.
    let s1 = group_member(&retrying(&testpmd_secondary(3, 1, &[])), "order");
    let s2 = group_member(&retrying(&testpmd_secondary(3, 2, &[])), "order");
    let p = group_member(&testpmd_mp_primary(3, &[]), "order");
    let (i1, i2, ip) = (unique("ord-s1"), unique("ord-s2"), unique("ord-p"));
    r.launch(&s1, &i1);
    r.launch(&s2, &i2);
    std::thread::sleep(Duration::from_secs(1));
    r.launch(&p, &ip);
    assert!(
        wait_for(Duration::from_secs(60), || forwarding(&p) && forwarding(&s1) && forwarding(&s2)),
        "all three forward:\nP: {}\nS1: {}\nS2: {}",
        output_of(&p),
        output_of(&s1),
        output_of(&s2)
    );

    // Restart a secondary (new container, same group): it attaches again.
    r.delete(&i1);
    let s1b = group_member(&testpmd_secondary(3, 1, &[]), "order");
    let i1b = unique("ord-s1b");
    r.launch(&s1b, &i1b);
    assert!(
        wait_for(Duration::from_secs(40), || forwarding(&s1b)),
        "restarted secondary: {}",
        output_of(&s1b)
    );
    for id in [&i1b, &i2, &ip] {
        r.delete(id);
    }
    env.assert_released(&pool, "after the last member");
}

#[test]
fn the_group_outlives_its_first_member_and_goes_with_the_last() {
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let keeper = group_member(&["sleep".to_string(), "600".to_string()], "life");
    let ik = unique("life-keep");
    r.launch(&keeper, &ik);
    let holder = holder_of(&env, "life").expect("group exists");

    for round in 0..2 {
        let p = group_member(&testpmd_mp_primary(2, &[]), "life");
        let s = group_member(&retrying(&testpmd_secondary(2, 1, &[])), "life");
        let (ip, is) = (unique("life-p"), unique("life-s"));
        r.launch(&p, &ip);
        r.launch(&s, &is);
        assert!(
            wait_for(Duration::from_secs(40), || forwarding(&p) && forwarding(&s)),
            "round {round}: P: {}\nS: {}",
            output_of(&p),
            output_of(&s)
        );
        r.delete(&ip);
        r.delete(&is);
        assert_eq!(
            holder_of(&env, "life"),
            Some(holder),
            "round {round}: the group (holder) outlives its members"
        );
    }
    r.delete(&ik);
    // Gone means reaped: a zombie holder still holds its pid (and on a host whose PID 1 never
    // reaps, it would stay one forever).
    assert!(
        dataplane_tests::util::wait_pid_gone(holder as i32, Duration::from_secs(10)),
        "holder {holder} must be gone (reaped), it is still {}",
        if dataplane_tests::util::is_zombie(holder as i32) { "a zombie" } else { "running" }
    );
    env.assert_released(&pool, "after the last member");
}

#[test]
fn same_group_name_in_two_namespaces_is_two_groups() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let script = |me: &str| {
        vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("touch /var/run/dpdk/{me}; sleep 2; ls /var/run/dpdk; sleep 600"),
        ]
    };
    let mut a = group_member(&script("from-a"), "g");
    a.annotate("io.kubernetes.cri.sandbox-namespace", "team-a");
    let mut b = group_member(&script("from-b"), "g");
    b.annotate("io.kubernetes.cri.sandbox-namespace", "team-b");
    let (ia, ib) = (unique("ns-a"), unique("ns-b"));
    r.launch(&a, &ia);
    r.launch(&b, &ib);
    assert!(wait_for(Duration::from_secs(10), || stdout_of(&a).contains("from-")
        && stdout_of(&b).contains("from-")));
    assert!(!stdout_of(&a).contains("from-b"), "team-a sees team-b's dir: {}", stdout_of(&a));
    assert!(!stdout_of(&b).contains("from-a"), "team-b sees team-a's dir: {}", stdout_of(&b));
    let s = env.status_json();
    let groups = s["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 2, "{s}");
    assert_ne!(groups[0]["holder"], groups[1]["holder"]);
    // Each group reserved its own pages.
    assert_eq!(counters().reserved, 64, "{:?}", counters());
    r.delete(&ia);
    r.delete(&ib);
    env.assert_released(&pool, "after both");
}

#[test]
fn later_member_asking_for_more_than_the_group_is_refused_clearly() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let a = group_member(&["sleep".to_string(), "600".to_string()], "size");
    let ia = unique("size-a");
    r.launch(&a, &ia);
    let mut b = bundle(&["sleep".to_string(), "600".to_string()]);
    b.annotate(GROUP, "size").annotate(HUGE, "128Mi");
    let ib = unique("size-b");
    let o = r.create(&b, &ib);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        err.contains("dataplane-hook:")
            && err.contains("sized it with 64Mi")
            && err.contains("128Mi"),
        "{err}"
    );
    assert_eq!(r.status(&ib), None, "nothing left of the refused container");
    r.delete(&ia);
    env.assert_released(&pool, "after the member");
}

#[test]
fn hooks_d_path_refuses_members_that_do_not_share_a_pid_namespace() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    // Plain runc with the hook in the spec: what podman and CRI-O do with hooks.d.
    let runc = Runner::runc();
    let mut a = group_member(&["sleep".to_string(), "600".to_string()], "hd");
    a.with_hooks_d(&env);
    let mut b = group_member(&["sleep".to_string(), "600".to_string()], "hd");
    b.with_hooks_d(&env);
    let (ia, ib) = (unique("hd-a"), unique("hd-b"));
    runc.launch(&a, &ia);
    let o = runc.create(&b, &ib);
    // Clean up before asserting: a panic would drop the bundles before the runner's deletes.
    runc.delete(&ib);
    runc.delete(&ia);
    assert!(!o.status.success(), "the second member in its own PID namespace must be refused");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    // runc shows the hook's stderr in its error; crun sends hooks' stderr nowhere unless the
    // spec's `run.oci.hooks.stderr` names a file (dataplane-runtime sets it, hooks.d cannot):
    // there the reason is in the product's log and crun says the hook failed.
    let reason = if is_crun() { env.log_text() } else { err.clone() };
    assert!(
        reason.contains("PID namespace") && reason.contains("`dataplane` runtime handler"),
        "stderr: {err}\nlog: {}",
        env.log_text()
    );
    if is_crun() {
        assert!(err.contains("error executing hook"), "{err}");
    }
    env.assert_released(&pool, "after both");
}

#[test]
fn prefix_mode_gives_unique_prefixes_and_cleans_leaked_files() {
    let pool = PoolGuard::new(128);
    let huge = HostHugetlbfs::mount("pagesize=2M");
    let run = tempfile::tempdir().unwrap();
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let cmd = testpmd_primary(&["--file-prefix", "$DPDK_FILE_PREFIX"]).join(" ");
    let mk = || {
        let mut b = bundle(&[
            "sh".to_string(),
            "-c".to_string(),
            format!("echo prefix=$DPDK_FILE_PREFIX; exec {cmd}"),
        ]);
        b.annotate("dataplane-hook.io/dpdk-file-prefix", "auto");
        b.bind(huge.path(), "/dev/hugepages").bind(run.path(), "/var/run/dpdk");
        b
    };
    let (a, b) = (mk(), mk());
    let (ia, ib) = (unique("pfx-a"), unique("pfx-b"));
    r.launch(&a, &ia);
    r.launch(&b, &ib);
    assert!(
        wait_for(Duration::from_secs(40), || forwarding(&a) && forwarding(&b)),
        "A: {}\nB: {}",
        output_of(&a),
        output_of(&b)
    );
    let prefix = |b: &TestBundle| {
        stdout_of(b).lines().find_map(|l| l.strip_prefix("prefix=").map(String::from)).unwrap()
    };
    let (pa, pb) = (prefix(&a), prefix(&b));
    assert_ne!(pa, pb);
    assert!(!pa.is_empty() && !pb.is_empty());
    let mine =
        |p: &str| huge.files().into_iter().filter(|f| f.starts_with(&format!("{p}map_"))).count();
    assert!(mine(&pa) > 0 && mine(&pb) > 0, "both use hugepage files: {:?}", huge.files());
    // A crashes (SIGKILL leaves its files behind); delete cleans only A's.
    r.kill(&ia, "KILL");
    assert!(r.wait_stopped(&ia, Duration::from_secs(10)));
    assert!(mine(&pa) > 0, "SIGKILL leaves files (the leak the product cleans)");
    assert!(run.path().join(&pa).is_dir(), "precondition: A's runtime dir is on the host");
    r.delete(&ia);
    assert_eq!(mine(&pa), 0, "A's files removed: {:?}", huge.files());
    assert!(mine(&pb) > 0, "B's files untouched: {:?}", huge.files());
    assert!(!run.path().join(&pa).exists(), "A's runtime dir removed");
    assert!(run.path().join(&pb).exists(), "B's runtime dir untouched");
    assert_eq!(r.status(&ib).as_deref(), Some("running"), "B unaffected");
    r.kill(&ib, "KILL");
    assert!(r.wait_stopped(&ib, Duration::from_secs(10)));
    r.delete(&ib);
    assert!(huge.files().is_empty(), "{:?}", huge.files());
    pool.assert_baseline("after both prefix-mode containers");
    assert!(env.records().is_empty());
}

#[test]
fn prefix_mode_control_leaks_without_the_product() {
    let pool = PoolGuard::new(64);
    let huge = HostHugetlbfs::mount("pagesize=2M");
    let run = tempfile::tempdir().unwrap();
    let runc = Runner::runc();
    let mut a = bundle(&testpmd_primary(&["--file-prefix", "leaky"]));
    a.bind(huge.path(), "/dev/hugepages").bind(run.path(), "/var/run/dpdk");
    let ia = unique("leak");
    runc.launch(&a, &ia);
    assert!(wait_for(Duration::from_secs(30), || forwarding(&a)), "{}", output_of(&a));
    runc.kill(&ia, "KILL");
    assert!(runc.wait_stopped(&ia, Duration::from_secs(10)));
    runc.delete(&ia);
    let leaked = huge.files().into_iter().filter(|f| f.starts_with("leakymap_")).count();
    assert!(leaked > 0, "plain runc leaves the crashed app's hugepage files");
    assert!(counters().free < pool.baseline.free, "and their pages stay taken: {:?}", counters());
    drop(huge);
    pool.assert_baseline("after unmounting the host hugetlbfs");
}
