//! Issue 2 (core) end to end: private hugetlbfs and DPDK dirs (G1), kernel reservation (G4),
//! teardown (G5), cgroup limits (G7) — real runc, real DPDK, real hugetlbfs and cgroups.
//! gc (G6) is proven in gc.rs, safety (G8) and input validation in safety.rs.

use std::time::Duration;

use dataplane_tests::dpdk::{forwarding, testpmd_primary, FORWARDING};
use dataplane_tests::util::*;
use dataplane_tests::*;

const ANN_2MI: &str = "dataplane-hook.io/hugepages-2Mi";

fn testpmd_bundle() -> TestBundle {
    let args = testpmd_primary(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestBundle::new(&args)
}

/// `delete --force` through the reaper, which must succeed.
fn delete(reap: &Reaper, id: &str) {
    let o = reap.delete(id);
    assert!(o.status.success(), "delete {id}: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn two_dpdk_primaries_with_the_default_prefix_both_run() {
    let pool = PoolGuard::new(128);
    {
        // Control: plain runc, both containers share the host's hugetlbfs and runtime dir.
        let shared_huge = HostHugetlbfs::mount("pagesize=2M");
        let shared_run = tempfile::tempdir().unwrap();
        let runc = Runner::runc();
        let reap = Reaper::new(&runc);
        let mut a = testpmd_bundle();
        a.bind(shared_huge.path(), "/dev/hugepages").bind(shared_run.path(), "/var/run/dpdk");
        let mut b = testpmd_bundle();
        b.bind(shared_huge.path(), "/dev/hugepages").bind(shared_run.path(), "/var/run/dpdk");
        let (ida, idb) = (unique("ctl-a"), unique("ctl-b"));
        reap.add(&ida);
        reap.add(&idb);
        runc.launch(&a, &ida);
        assert!(
            wait_for(Duration::from_secs(20), || forwarding(&a)),
            "control primary A never forwarded: {}",
            stdout_of(&a)
        );
        runc.launch(&b, &idb);
        assert!(
            runc.wait_stopped(&idb, Duration::from_secs(20)),
            "control: second primary kept running"
        );
        let err = output_of(&b);
        assert!(
            !forwarding(&b),
            "control: second primary with the same prefix must not run: {err}"
        );
        assert!(
            err.contains("Cannot create lock")
                || err.contains("Is another primary process running"),
            "control failure reason: {err}"
        );
        delete(&reap, &ida);
        delete(&reap, &idb);
    }
    pool.assert_baseline("after the control");

    // The product: same two containers (still asking for the host dirs), each gets its own.
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let mut a = testpmd_bundle();
    a.annotate(ANN_2MI, "64Mi");
    let mut b = testpmd_bundle();
    b.annotate(ANN_2MI, "64Mi");
    let (ida, idb) = (unique("dp-a"), unique("dp-b"));
    reap.add(&ida);
    reap.add(&idb);
    p.launch(&a, &ida);
    p.launch(&b, &idb);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(&a) && forwarding(&b)),
        "both primaries must forward:\nA: {}\nB: {}\nlog: {}",
        stdout_of(&a),
        stdout_of(&b),
        env.log_text()
    );
    assert_eq!(p.status(&ida).as_deref(), Some("running"));
    assert_eq!(p.status(&idb).as_deref(), Some("running"));
    assert_eq!(
        counters().reserved + counters().total - counters().free,
        64,
        "both reservations visible: {:?}",
        counters()
    );
    delete(&reap, &ida);
    delete(&reap, &idb);
    pool.assert_baseline("after deleting both primaries");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

// ---------------------------------------------------------------------------------------------
// G4: a container that reserved the whole pool runs DPDK in dynamic and in legacy memory mode.
// ---------------------------------------------------------------------------------------------

/// testpmd in a bundle; `legacy` adds `--legacy-mem`. Legacy mode with physical addresses
/// (IOVA as PA, DPDK's pick here) makes each physically contiguous run of pages its own
/// segment, and testpmd's port array (several MB) fails to allocate when the host's pool is
/// fragmented — a property of the host, not of whose counters DPDK read — so it runs as VA.
fn testpmd(legacy: bool) -> TestBundle {
    let eal: &[&str] = if legacy { &["--legacy-mem", "--iova-mode=va"] } else { &[] };
    let args = testpmd_primary(eal);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let b = TestBundle::new(&args);
    // DPDK creates its runtime dir but not /var/run itself (the product mounts one there).
    std::fs::create_dir_all(b.rootfs().join("var/run/dpdk")).unwrap();
    b
}

#[test]
fn container_reserving_the_whole_pool_runs_dpdk_in_dynamic_and_legacy_mode() {
    const PAGES: u64 = 64;
    let pool = PoolGuard::new(PAGES);
    let whole = format!("{}M", PAGES * 2);

    // Control: the same reservation made by hand (hugetlbfs min_size = the whole pool) and
    // bind-mounted into plain runc. The container reads the host's counters, where its own
    // reservation makes free - resv = 0: DPDK's legacy mode finds no usable page and refuses.
    {
        let fs = HostHugetlbfs::mount(&format!("pagesize=2M,min_size={whole},size={whole}"));
        assert_eq!(counters().reserved, PAGES, "hand-made reservation took the whole pool");
        let runc = Runner::runc();
        let reap = Reaper::new(&runc);
        let mut b = testpmd(true);
        b.bind(fs.path(), "/dev/hugepages");
        let id = unique("ctl-legacy");
        reap.add(&id);
        runc.launch(&b, &id);
        assert!(
            runc.wait_stopped(&id, Duration::from_secs(30)),
            "control: legacy testpmd kept running: {}",
            output_of(&b)
        );
        let out = output_of(&b);
        assert!(
            !out.contains(FORWARDING),
            "control: legacy testpmd must not run on a pool its own reservation hides: {out}"
        );
        // eal_hugepage_info.c: legacy mode counts only free_hugepages - resv_hugepages.
        assert!(out.contains("Cannot get hugepage information"), "control failure reason: {out}");
        delete(&reap, &id);
        // Dynamic mode counts the per-NUMA-node free pages (reservations not subtracted), so
        // it starts on the same reserved hugetlbfs: the refusal above is the counters' doing.
        let mut b = testpmd(false);
        b.bind(fs.path(), "/dev/hugepages");
        let id = unique("ctl-dynamic");
        reap.add(&id);
        runc.launch(&b, &id);
        assert!(
            wait_for(Duration::from_secs(30), || forwarding(&b)),
            "control: dynamic testpmd: {}",
            output_of(&b)
        );
        delete(&reap, &id);
    }
    pool.assert_baseline("after the control");

    // The product: the container's sysfs view shows its reservation as free, unreserved pages.
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    for legacy in [false, true] {
        let mut b = testpmd(legacy);
        b.annotate(ANN_2MI, &format!("{}Mi", PAGES * 2));
        let id = unique(if legacy { "dp-legacy" } else { "dp-dynamic" });
        reap.add(&id);
        p.launch(&b, &id);
        assert!(
            wait_for(Duration::from_secs(30), || forwarding(&b)),
            "legacy={legacy}: testpmd must forward with the whole pool reserved: {}\nlog: {}",
            output_of(&b),
            env.log_text()
        );
        let c = counters();
        assert_eq!(
            c.reserved + (c.total - c.free),
            PAGES,
            "legacy={legacy}: the whole pool is the container's: {c:?}"
        );
        let pid = p.pid(&id).unwrap();
        let view = format!("/proc/{pid}/root{HP2M}");
        assert_eq!(
            read_u64(&format!("{view}/free_hugepages")),
            PAGES,
            "the container sees its reservation as free pages"
        );
        assert_eq!(read_u64(&format!("{view}/resv_hugepages")), 0, "and none of it as reserved");
        delete(&reap, &id);
        pool.assert_baseline(&format!("after deleting the legacy={legacy} container"));
    }
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

// ---------------------------------------------------------------------------------------------
// G4: a request larger than what is left is refused at create; nothing is left behind.
// ---------------------------------------------------------------------------------------------

/// No cgroup directory named after `id` in any hierarchy (runc's `/<id>`, ours
/// `dataplane-hook/<id>`).
fn assert_no_cgroup_named(id: &str) {
    for m in host_mounts().iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2") {
        for d in
            [format!("{}/{id}", m.mount_point), format!("{}/dataplane-hook/{id}", m.mount_point)]
        {
            assert!(!std::path::Path::new(&d).exists(), "cgroup {d} left behind");
        }
    }
}

#[test]
fn request_larger_than_what_is_left_is_refused_and_leaves_nothing() {
    let _pool = PoolGuard::new(48);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);

    // A running DPDK container holding 32 of the 48 pages.
    let mut a = testpmd_bundle();
    a.annotate(ANN_2MI, "64Mi");
    let ida = unique("running");
    reap.add(&ida);
    p.launch(&a, &ida);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(&a)),
        "A must forward: {}",
        output_of(&a)
    );
    let pid_a = p.pid(&ida).unwrap();
    let before = counters();
    let records_before = env.records();
    let record_a = std::fs::read(env.state_dir.join(format!("containers/{ida}.json"))).unwrap();

    // B asks for 64Mi: 32 pages, only 16 are left.
    let mut b = testpmd_bundle();
    b.annotate(ANN_2MI, "64Mi");
    let config_before = std::fs::read(b.path().join("config.json")).unwrap();
    let idb = unique("too-big");
    reap.add(&idb);
    let o = create_with_timeout(&p, &b, &idb, Duration::from_secs(60)).expect("create hung");
    assert!(!o.status.success(), "B must be refused at create");
    let c = counters();
    let msg = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("no product error in: {}", String::from_utf8_lossy(&o.stderr)));
    assert_eq!(
        msg,
        format!(
            "dataplane-hook: cannot reserve 64Mi of 2Mi hugepages for container {idb}: {} pages free, {} already reserved by 1 containers (free hugepages or lower dataplane-hook.io/hugepages-2Mi)",
            c.free, c.reserved
        )
    );
    assert!(
        env.log_text()
            .contains(&format!("cannot reserve 64Mi of 2Mi hugepages for container {idb}")),
        "refusal logged"
    );

    // Nothing left behind.
    assert_eq!(p.status(&idb), None, "runc must not know B after the failed create");
    assert!(!p.runc_root.path().join(&idb).exists(), "runc state dir of B left");
    assert_eq!(c, before, "pool counters changed by the refused create");
    assert_eq!(env.records(), records_before, "ledger records changed by the refused create");
    assert_no_cgroup_named(&idb);
    assert_ne!(
        std::fs::read(b.path().join("config.json")).unwrap(),
        config_before,
        "(the wrapper did edit the spec)"
    );

    // A is unaffected: running, forwarding, its reservation and record intact.
    let lines = stdout_of(&a).matches(FORWARDING).count();
    assert!(
        wait_for(Duration::from_secs(10), || stdout_of(&a).matches(FORWARDING).count() > lines),
        "A stopped forwarding"
    );
    assert_eq!(p.status(&ida).as_deref(), Some("running"));
    assert_eq!(p.pid(&ida), Some(pid_a));
    assert!(mountinfo(&pid_a.to_string())
        .iter()
        .any(|m| m.fstype == "hugetlbfs" && m.mount_point == "/dev/hugepages"));
    assert_eq!(
        std::fs::read(env.state_dir.join(format!("containers/{ida}.json"))).unwrap(),
        record_a
    );
    assert_eq!(counters(), before);
}

// ---------------------------------------------------------------------------------------------
// G4: concurrent creates never over-commit.
// ---------------------------------------------------------------------------------------------

#[test]
fn concurrent_creates_on_a_small_pool_never_overcommit() {
    const POOL: u64 = 16;
    const EACH: u64 = 4; // pages: 8Mi
    const THREADS: usize = 12;
    let pool = PoolGuard::new(POOL);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let bundles: Vec<(String, TestBundle)> = (0..THREADS)
        .map(|i| {
            let mut b = TestBundle::new(&["sleep", "120"]);
            b.annotate(ANN_2MI, &format!("{}Mi", EACH * 2));
            (unique(&format!("race{i}")), b)
        })
        .collect();
    for (id, _) in &bundles {
        reap.add(id);
    }
    let results: Vec<(String, Option<std::process::Output>)> = std::thread::scope(|s| {
        let hs: Vec<_> = bundles
            .iter()
            .map(|(id, b)| {
                let p = &p;
                s.spawn(move || {
                    (id.clone(), create_with_timeout(p, b, id, Duration::from_secs(90)))
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let hung: Vec<&String> =
        results.iter().filter(|(_, o)| o.is_none()).map(|(id, _)| id).collect();
    assert!(hung.is_empty(), "creates hung: {hung:?}");
    let ok: Vec<&String> = results
        .iter()
        .filter(|(_, o)| o.as_ref().unwrap().status.success())
        .map(|(id, _)| id)
        .collect();
    assert_eq!(
        ok.len() as u64,
        POOL / EACH,
        "exactly as many creates succeed as fit: {ok:?}\nlog: {}",
        env.log_text()
    );
    assert_eq!(
        counters().reserved,
        POOL,
        "the kernel's reserved count matches the successful creates"
    );
    for (id, o) in &results {
        let o = o.as_ref().unwrap();
        if o.status.success() {
            assert_eq!(p.status(id).as_deref(), Some("created"));
            continue;
        }
        let msg = product_error(&o.stderr).unwrap_or_else(|| {
            panic!("{id}: no product error: {}", String::from_utf8_lossy(&o.stderr))
        });
        assert!(
            msg.starts_with(&format!(
                "dataplane-hook: cannot reserve 8Mi of 2Mi hugepages for container {id}: "
            )),
            "{msg}"
        );
        assert!(
            msg.ends_with("(free hugepages or lower dataplane-hook.io/hugepages-2Mi)"),
            "{msg}"
        );
        assert_eq!(p.status(id), None, "{id}: refused container left in runc");
        assert_no_cgroup_named(id);
    }
    let mut recs = env.records();
    recs.sort();
    let mut want: Vec<String> = ok.iter().map(|id| format!("{id}.json")).collect();
    want.sort();
    assert_eq!(recs, want, "one ledger record per successful create");

    for id in &ok {
        let o = reap.delete(id);
        assert!(o.status.success(), "delete {id}: {}", String::from_utf8_lossy(&o.stderr));
    }
    pool.assert_baseline("after deleting the containers that fit");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

// ---------------------------------------------------------------------------------------------
// G5: an app that takes hugepages and crashes, or is SIGKILLed, leaves nothing behind.
// ---------------------------------------------------------------------------------------------

/// `sh` running testpmd as a child (so it can be killed with a signal the container's init
/// would ignore) and reporting how it ended.
fn crashing_app() -> TestBundle {
    let cmd = testpmd_primary(&[]).join(" ") + "; echo app-exit=$?";
    let mut b = TestBundle::new(&["sh", "-c", &cmd]);
    b.spec["process"]["rlimits"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "RLIMIT_CORE", "hard": 0, "soft": 0}));
    b.save();
    std::fs::create_dir_all(b.rootfs().join("var/run/dpdk")).unwrap();
    b
}

/// Launches `b`, waits for testpmd to forward, returns (init pid, testpmd pid).
fn launch_app(r: &Runner, b: &TestBundle, id: &str) -> (i32, i32) {
    r.launch(b, id);
    assert!(
        wait_for(Duration::from_secs(30), || forwarding(b)),
        "{id}: testpmd never forwarded: {}",
        output_of(b)
    );
    let init = r.pid(id).unwrap();
    let app = *children(init)
        .iter()
        .find(|&&c| comm(c) == "dpdk-testpmd")
        .unwrap_or_else(|| panic!("no testpmd under {init}"));
    (init, app)
}

#[derive(Debug, Clone, Copy)]
enum Death {
    /// The app aborts (SIGABRT); the container's init sees it exit with 134.
    Abort,
    /// The container is killed with SIGKILL.
    Kill,
}

fn die(r: &Runner, id: &str, app: i32, how: Death) {
    match how {
        Death::Abort => signal(app, libc::SIGABRT),
        Death::Kill => assert!(r.kill(id, "KILL").status.success()),
    }
    assert!(r.wait_stopped(id, Duration::from_secs(20)), "{id} did not stop after {how:?}");
}

#[test]
fn crashed_and_killed_apps_leave_the_pool_at_baseline() {
    const PAGES: u64 = 32;
    let pool = PoolGuard::new(PAGES);

    // Control: the same app on a host hugetlbfs leaks its rtemap files and their pages.
    for how in [Death::Abort, Death::Kill] {
        let fs = HostHugetlbfs::mount("pagesize=2M");
        let runc = Runner::runc();
        let reap = Reaper::new(&runc);
        let mut b = crashing_app();
        b.bind(fs.path(), "/dev/hugepages");
        let id = unique("ctl-crash");
        reap.add(&id);
        let (_, app) = launch_app(&runc, &b, &id);
        die(&runc, &id, app, how);
        if let Death::Abort = how {
            assert!(stdout_of(&b).contains("app-exit=134"), "the app aborted: {}", output_of(&b));
        }
        assert!(reap.delete(&id).status.success());
        let leaked = fs.files();
        assert!(
            leaked.iter().any(|f| f.starts_with("rtemap_")),
            "control ({how:?}): rtemap files stay: {leaked:?}"
        );
        assert!(counters().free < PAGES, "control ({how:?}): pages stay taken: {:?}", counters());
        drop(fs);
        pool.assert_baseline("after unmounting the control's hugetlbfs");
    }

    // The product: after each delete the pool is exactly at baseline.
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    for round in 0..3 {
        for how in [Death::Abort, Death::Kill] {
            let mut b = crashing_app();
            b.annotate(ANN_2MI, &format!("{}Mi", PAGES * 2));
            let id = unique(&format!("crash{round}"));
            reap.add(&id);
            let (_, app) = launch_app(&p, &b, &id);
            let files =
                list_dir(&std::path::PathBuf::from(format!("/proc/{app}/root/dev/hugepages")));
            assert!(
                files.iter().any(|f| f.starts_with("rtemap_")),
                "the app took hugepages as files: {files:?}"
            );
            assert!(counters().free < PAGES, "the app uses pages: {:?}", counters());
            die(&p, &id, app, how);
            if let Death::Abort = how {
                assert!(
                    stdout_of(&b).contains("app-exit=134"),
                    "the app aborted: {}",
                    output_of(&b)
                );
            }
            let o = reap.delete(&id);
            assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
            pool.assert_baseline(&format!("round {round}, {how:?}: after delete"));
            assert!(
                env.records().is_empty(),
                "round {round}, {how:?}: records left: {:?}",
                env.records()
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// G7: the container's cgroup carries hugetlb max and rsvd.max equal to the reservation.
// ---------------------------------------------------------------------------------------------

fn assert_hugetlb_limits(pid: i32, bytes: u64) {
    let cg = HugetlbCgroup::of(pid);
    for f in [cg.max, cg.rsvd] {
        let v = std::fs::read_to_string(cg.dir.join(f))
            .unwrap_or_else(|e| panic!("{}/{f}: {e}", cg.dir.display()));
        assert_eq!(v.trim(), bytes.to_string(), "{}/{f}", cg.dir.display());
    }
}

#[test]
fn cgroup_hugetlb_max_and_rsvd_max_match_the_reservation() {
    let pool = PoolGuard::new(32);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);

    // From the annotation.
    let mut b = TestBundle::new(&["sleep", "60"]);
    b.annotate(ANN_2MI, "16Mi");
    let id = unique("cg-ann");
    reap.add(&id);
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    assert_hugetlb_limits(pid, 16 << 20);
    assert_eq!(counters().reserved, 8);
    delete(&reap, &id);
    pool.assert_baseline("after the annotated container");

    // From the spec's hugepageLimits (what kubelet writes). Control: on a hybrid host (hugetlb
    // only on the unified mount, like the dev machine) plain runc cannot apply them and fails
    // the create; elsewhere it applies them itself.
    let hybrid = hybrid_hugetlb();
    let runc = Runner::runc();
    let reap_runc = Reaper::new(&runc);
    let mut b = TestBundle::new(&["sleep", "60"]);
    b.hugepage_limit("2MB", 16 << 20);
    let id = unique("cg-ctl");
    reap_runc.add(&id);
    let o =
        create_with_timeout(&runc, &b, &id, Duration::from_secs(30)).expect("runtime create hung");
    if hybrid {
        assert!(
            !o.status.success(),
            "control: the runtime unexpectedly applied hugepageLimits on this hybrid host"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("hugetlb"),
            "control reason: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    } else {
        assert!(o.status.success(), "control: {}", String::from_utf8_lossy(&o.stderr));
    }
    drop(reap_runc);

    let mut b = TestBundle::new(&["sleep", "60"]);
    b.hugepage_limit("2MB", 16 << 20).hugepage_limit("1GB", 0);
    let id = unique("cg-spec");
    reap.add(&id);
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    assert_hugetlb_limits(pid, 16 << 20);
    assert_eq!(counters().reserved, 8, "hugepageLimits alone asks for the reservation");
    let spec = b.reload().clone();
    assert_eq!(
        spec["linux"]["resources"].get("hugepageLimits").is_none(),
        hybrid,
        "the wrapper takes hugepageLimits out for the runtime exactly on hybrid hosts"
    );
    delete(&reap, &id);
    pool.assert_baseline("after the hugepageLimits container");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

// ---------------------------------------------------------------------------------------------
// G5: poststop is idempotent, refuses a live container, and restores the pool exactly.
// ---------------------------------------------------------------------------------------------

#[test]
fn poststop_is_idempotent_and_restores_the_pool() {
    let pool = PoolGuard::new(32);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let mut b = TestBundle::new(&["sleep", "600"]);
    b.annotate(ANN_2MI, "16Mi");
    let id = unique("post");
    reap.add(&id);
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    let cg = HugetlbCgroup::of(pid);
    assert_hugetlb_limits(pid, 16 << 20);
    let state = state_json(&id, Some(pid), b.path(), "stopped");

    // A poststop for a container whose init still runs must not pull the floor from under it.
    let o = hook_with_stdin(&env, "poststop", &state);
    assert!(!o.status.success(), "poststop of a live container must refuse");
    let msg = assert_one_line("poststop of a live container", &o.stderr);
    assert!(msg.contains(&id) && msg.contains("still running"), "{msg}");
    assert_eq!(env.records(), vec![format!("{id}.json")]);
    assert_eq!(counters().reserved, 8, "the live container keeps its reservation");

    assert!(p.kill(&id, "KILL").status.success());
    assert!(p.wait_stopped(&id, Duration::from_secs(10)));
    for n in 1..=2 {
        let o = hook_with_stdin(&env, "poststop", &state);
        assert!(o.status.success(), "poststop #{n}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(o.stdout.is_empty(), "a hook never writes to stdout");
        assert!(env.records().is_empty(), "poststop #{n}: records left: {:?}", env.records());
        pool.assert_baseline(&format!("after poststop #{n}"));
        // runc has not deleted the container yet: its cgroup is still there to check (a
        // systemd scope may go with its last process).
        assert!(
            cg.dir.exists() || systemd_cgroup(),
            "precondition: the stopped container's cgroup {} exists",
            cg.dir.display()
        );
        if cg.dir.exists() {
            assert!(
                unlimited(&cg.read(cg.max)) && unlimited(&cg.read(cg.rsvd)),
                "limits restored: {}",
                cg.dir.display()
            );
        }
    }
    // runc's own poststop (a third run) after that is fine too.
    let o = reap.delete(&id);
    assert!(
        o.status.success(),
        "delete after manual poststops: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    pool.assert_baseline("after delete");
    assert!(!cg.dir.exists(), "cgroup {} left", cg.dir.display());
}

/// A 1Gi request the node cannot hold is refused at create with what to do, whatever 1Gi
/// support this host has: no 1Gi page size at all, an empty 1Gi pool, or a pool too small for
/// one page more than it has free. Every branch asserts; none passes by returning early.
#[test]
fn a_1gi_request_the_node_cannot_hold_is_refused_with_what_to_do() {
    const GI_DIR: &str = "/sys/kernel/mm/hugepages/hugepages-1048576kB";
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let supported = std::path::Path::new(GI_DIR).is_dir();
    let (total, free) = if supported {
        (read_u64(&format!("{GI_DIR}/nr_hugepages")), read_u64(&format!("{GI_DIR}/free_hugepages")))
    } else {
        (0, 0)
    };
    // One page more than is free: never admissible, and never takes a page from anyone.
    let want = free + 1;
    eprintln!(
        "1Gi on this host: {}",
        if !supported {
            "no 1Gi page size (proving the refusal for an unsupported size)".to_string()
        } else {
            format!("{total} pages, {free} free (asking for {want})")
        }
    );
    let mut b = TestBundle::new(&["true"]);
    b.annotate("dataplane-hook.io/hugepages-1Gi", &format!("{want}Gi"));
    let id = unique("gi");
    reap.add(&id);
    let o = create_with_timeout(&p, &b, &id, Duration::from_secs(30)).expect("create hung");
    assert!(!o.status.success(), "a 1Gi request of {want} pages was admitted");
    let msg = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    let what =
        format!("dataplane-hook: cannot reserve {want}Gi of 1Gi hugepages for container {id}: ");
    assert!(msg.starts_with(&what), "{msg}");
    if !supported {
        assert!(msg.contains("this kernel has no 1Gi hugepage size"), "{msg}");
    } else {
        assert!(msg[what.len()..].starts_with(&format!("{free} pages free")), "{msg}");
        if total == 0 {
            assert!(
                msg.contains("the node has no 1Gi pool") && msg.contains("nr_hugepages"),
                "{msg}"
            );
        } else {
            assert!(
                msg.contains("free hugepages or lower dataplane-hook.io/hugepages-1Gi"),
                "{msg}"
            );
        }
    }
    assert_spec_form("1Gi beyond the node", &msg);
    assert_eq!(p.status(&id), None);
    assert!(env.records().is_empty());
    if supported {
        assert_eq!(read_u64(&format!("{GI_DIR}/nr_hugepages")), total, "the 1Gi pool untouched");
    }
}

/// G1's fast path: a container that asks for nothing gets its private DPDK runtime dir as a
/// plain tmpfs mount in its spec and runs no hook (nothing to reserve, record or undo), yet the
/// create still runs gc first (G6). Control: plain runc gives two containers nothing private —
/// a runtime dir bound from the host is shared.
#[test]
fn a_container_asking_for_nothing_gets_a_private_runtime_dir_without_a_hook() {
    let shared_run = tempfile::tempdir().unwrap();
    let script = "echo $$ > /var/run/dpdk/owner; sleep 1; ls /var/run/dpdk; grep ' /var/run/dpdk ' /proc/self/mountinfo; sleep 600";
    let bundle = || {
        let mut b = TestBundle::new(&["sh", "-c", script]);
        b.bind(shared_run.path(), "/var/run/dpdk");
        b
    };
    {
        // Control: plain runc, the host dir is the runtime dir of both.
        let runc = Runner::runc();
        let reap = Reaper::new(&runc);
        let (a, b) = (bundle(), bundle());
        let (ida, idb) = (unique("ctl-fa"), unique("ctl-fb"));
        reap.add(&ida);
        reap.add(&idb);
        runc.launch(&a, &ida);
        runc.launch(&b, &idb);
        assert!(
            wait_for(Duration::from_secs(10), || stdout_of(&a).contains("owner")),
            "control: {}",
            stdout_of(&a)
        );
        assert!(
            shared_run.path().join("owner").exists(),
            "control: the containers wrote into the host dir"
        );
        delete(&reap, &ida);
        delete(&reap, &idb);
        std::fs::remove_file(shared_run.path().join("owner")).unwrap();
    }
    let env = ProductEnv::new("");
    // A dead container's record: the create must release it (gc at the start of every create).
    let dead = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = dead.id() as i32;
    let mut dead = dead;
    dead.wait().unwrap();
    let stale = unique("stale");
    std::fs::create_dir_all(env.state_dir.join("containers")).unwrap();
    std::fs::write(
        env.state_dir.join(format!("containers/{stale}.json")),
        serde_json::json!({"id": stale, "init": {"pid": dead_pid, "start_time": 1}, "bundle": "/nonexistent", "created": 1, "entries": []}).to_string(),
    )
    .unwrap();
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let (a, b) = (bundle(), bundle());
    let (ida, idb) = (unique("fast-a"), unique("fast-b"));
    reap.add(&ida);
    reap.add(&idb);
    p.launch(&a, &ida);
    assert!(
        env.records().is_empty(),
        "the create released the dead record and recorded nothing: {:?}",
        env.records()
    );
    p.launch(&b, &idb);
    for (bd, id) in [(&a, &ida), (&b, &idb)] {
        assert!(
            wait_for(Duration::from_secs(10), || stdout_of(bd).contains(" - tmpfs ")),
            "{id}: no tmpfs at /var/run/dpdk: {}",
            stdout_of(bd)
        );
        let out = stdout_of(bd);
        assert_eq!(
            out.lines().filter(|l| *l == "owner").count(),
            1,
            "{id} sees only its own file: {out}"
        );
        let spec: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bd.path().join("config.json")).unwrap()).unwrap();
        assert!(
            spec.get("hooks").is_none_or(|h| h.as_object().is_none_or(|o| o.is_empty())),
            "{id}: no hook injected: {}",
            spec["hooks"]
        );
        let last = spec["mounts"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(
            (last["destination"].as_str(), last["type"].as_str()),
            (Some("/var/run/dpdk"), Some("tmpfs")),
            "{last}"
        );
    }
    assert!(!shared_run.path().join("owner").exists(), "nothing reached the host dir");
    assert!(env.records().is_empty(), "{:?}", env.records());
    delete(&reap, &ida);
    delete(&reap, &idb);
}
