//! Issue 6, the node watchdog (G10): `dataplane-hook watch` kills a GPU container early when
//! memory no cgroup is charged for outgrows the headroom granted to the GPU containers — within
//! a second of the crossing, never a non-GPU container — and stops once the node is back under
//! budget. Real runc, real cgroups (memory on cgroup v1 here), real `dataplane-hook watch`; the
//! GPU driver's uncharged memory is emulated by growing the hugetlb pool from inside the
//! container (see tests/harness/watch.rs). The v2 variant runs in the VM
//! (integration/vm/payloads/gpu/).

use std::time::Duration;

use dataplane_tests::*;
use dataplane_tests::watch::*;

/// Grows 8 pages (16 MiB) every 50 ms to 640 MiB: past a 256Mi headroom in ~0.9 s.
const GROW: Grow = Grow { step: 8, every_ms: 50, max: 320 };
const HEADROOM_PAGES: u64 = 128; // 256Mi
const TOLERANCE_PAGES: u64 = 32; // 64Mi
/// For two or three GPU containers (512Mi or 768Mi granted): up to 1280 MiB.
const GROW_MORE: Grow = Grow { step: 8, every_ms: 50, max: 640 };

#[test]
fn control_uncharged_memory_grows_past_the_memory_limit_and_nothing_stops_it() {
    // Without the product: the container's memory limit (256Mi) does not see the pool it grows
    // to 640 MiB; the cgroup's own usage stays tiny; the container keeps running.
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let runc = Runner::runc();
    let mut b = gpu_container(Some(GROW), None);
    b.spec["linux"]["resources"]["memory"]["limit"] = serde_json::json!(256u64 << 20);
    b.save();
    let id = unique("ctl-grower");
    runc.launch(&b, &id);
    assert!(wait_stdout(&b, "grown", Duration::from_secs(20)), "the grower did not finish: {}", stdout_of(&b));
    assert_eq!(pool_pages(), GROW.max, "the container took 640 MiB from the node");
    let pid = runc.pid(&id).unwrap();
    assert!(memory_usage(pid) < 64 * MI, "none of it is charged to the container: {}", memory_usage(pid));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runc.status(&id).as_deref(), Some("running"), "nothing stopped it");
    runc.delete(&id);
    set_pool(0);
    pool.assert_baseline("control");
}

#[test]
fn a_gpu_container_past_its_headroom_is_killed_within_a_second_and_a_charged_neighbour_survives() {
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let env = watch_env("");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);

    // A non-GPU neighbour with 1 GiB of charged memory.
    let hog = memory_hog(1024);
    let hog_id = unique("hog");
    p.launch(&hog, &hog_id);
    assert!(wait_stdout(&hog, "filled", Duration::from_secs(30)), "hog: {}", stdout_of(&hog));
    let hog_pid = p.pid(&hog_id).unwrap();
    assert!(memory_usage(hog_pid) >= 1 << 30, "the hog's memory is charged: {}", memory_usage(hog_pid));

    let g = gpu_container(Some(GROW), None);
    let gid = unique("gpu-grower");
    p.launch(&g, &gid);
    let gpid = p.pid(&gid).unwrap();
    let obs = Observer::start(HEADROOM_PAGES + TOLERANCE_PAGES, vec![("grower".into(), gpid)], vec!["grower".into()], 0);
    assert!(obs.wait_death("grower", Duration::from_secs(20)), "the grower was never killed:\n{}", watch.text());
    std::thread::sleep(Duration::from_millis(300));
    let seen = obs.finish();

    let (_, pages_at_death) = seen.death("grower").unwrap();
    let reaction = seen.reaction("grower").unwrap_or_else(|| panic!("killed before crossing? {seen:?}\n{}", watch.text()));
    eprintln!("reaction {reaction:?}, pool at death {} MiB, at crossing {} MiB", pages_at_death * 2, seen.pages_at_cross * 2);
    assert!(reaction < Duration::from_secs(1), "killed {reaction:?} after crossing its budget:\n{}", watch.text());
    assert!(pages_at_death > HEADROOM_PAGES, "killed at {} MiB, before it used its 256Mi headroom", pages_at_death * 2);
    let text = watch.text();
    let line = text.lines().find(|l| l.contains(&format!("killed GPU container {gid}"))).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("exceeds the 256Mi of headroom granted to 1 GPU containers") && line.contains("youngest GPU container first"), "{line}");
    assert_eq!(watch.kills(), 1, "{text}");

    // The neighbour was never a candidate and is untouched.
    assert_eq!(p.status(&hog_id).as_deref(), Some("running"));
    assert!(memory_usage(hog_pid) >= 1 << 30);
    // The node is back under budget (the emulated driver freed the pool): no further kill.
    assert!(wait_for(Duration::from_secs(5), || metric(&env, "kills_total") == Some(1.0)), "metrics: {:?}", std::fs::read_to_string(metrics_path(&env)));
    assert!(metric(&env, "last_reaction_seconds").unwrap() < 1.0);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(watch.kills(), 1);
    assert_eq!(p.status(&hog_id).as_deref(), Some("running"));
    p.delete(&gid);
    p.delete(&hog_id);
    set_pool(0);
    pool.assert_baseline("after the kill");
}

#[test]
fn uncharged_growth_without_gpu_containers_kills_nothing() {
    // The same growth from a non-GPU container: nothing is ours to kill, nothing is killed.
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let env = watch_env("");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let mut b = TestBundle::new(&["sh", "-c", &grow_script(GROW)]);
    cgroup_path(&mut b);
    writable_sys(&mut b);
    let id = unique("cpu-grower");
    p.launch(&b, &id);
    assert!(wait_stdout(&b, "grown", Duration::from_secs(20)), "{}", stdout_of(&b));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(p.status(&id).as_deref(), Some("running"));
    assert_eq!(watch.kills(), 0, "{}", watch.text());
    p.delete(&id);
    set_pool(0);
    pool.assert_baseline("non-GPU growth");
}

/// Two or three GPU containers, one growing: returns (watch log, seen) after the episode.
fn episode(grower_is_youngest: bool, extra_idle: bool) -> (String, Seen, Vec<(String, Option<String>)>) {
    let env = watch_env("");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let mut ids = vec![];
    let mut watched = vec![];
    let mut launch = |name: &str, grow: Option<Grow>| {
        let b = gpu_container(grow, None);
        let id = unique(name);
        p.launch(&b, &id);
        let pid = p.pid(&id).unwrap();
        ids.push((name.to_string(), id));
        watched.push((name.to_string(), pid));
        std::thread::sleep(Duration::from_millis(1100)); // distinct start times (clock ticks)
        b
    };
    // Oldest first.
    let _c = extra_idle.then(|| launch("oldest-idle", None));
    let (_a, _b) = if grower_is_youngest {
        let a = launch("idle", None);
        (a, launch("grower", Some(GROW_MORE)))
    } else {
        let a = launch("grower", Some(GROW_MORE));
        (a, launch("idle", None))
    };
    let n = watched.len() as u64;
    let obs = Observer::start(n * HEADROOM_PAGES + TOLERANCE_PAGES, watched.clone(), vec!["grower".into()], 0);
    assert!(obs.wait_death("grower", Duration::from_secs(20)), "the grower was never killed:\n{}", watch.text());
    // Let the policy settle and re-measure: nothing more may die.
    std::thread::sleep(Duration::from_secs(3));
    let seen = obs.finish();
    let states = ids.iter().map(|(name, id)| (name.clone(), p.status(id))).collect();
    for (_, id) in &ids {
        p.delete(id);
    }
    (watch.text(), seen, states)
}

fn state<'a>(states: &'a [(String, Option<String>)], name: &str) -> Option<&'a str> {
    states.iter().find(|s| s.0 == name).and_then(|s| s.1.as_deref())
}

#[test]
fn two_gpu_containers_the_youngest_grower_dies_and_the_other_keeps_running() {
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let (text, seen, states) = episode(true, false);
    assert_eq!(seen.deaths.len(), 1, "only the grower died: {seen:?}\n{text}");
    assert_eq!(seen.deaths[0].0, "grower");
    assert!(seen.reaction("grower").unwrap() < Duration::from_secs(1), "{seen:?}");
    assert_eq!(state(&states, "idle"), Some("running"), "{text}");
    assert!(text.contains("back under budget"), "{text}");
    assert_eq!(text.lines().filter(|l| l.contains("killed GPU container")).count(), 1, "{text}");
    set_pool(0);
    pool.assert_baseline("two containers");
}

#[test]
fn without_attribution_the_youngest_goes_first_then_the_grower_and_it_stops_under_budget() {
    // The documented cost of having no per-container attribution: the grower is older than an
    // idle GPU container, so the idle one is killed first; the node is still over budget after
    // the settle time, so the grower goes next; then the node is back under budget and an even
    // older idle GPU container survives.
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let (text, seen, states) = episode(false, true);
    let order: Vec<&str> = seen.deaths.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(order, vec!["idle", "grower"], "{seen:?}\n{text}");
    assert!(seen.reaction("idle").unwrap() < Duration::from_secs(1), "{seen:?}");
    let gap = seen.death("grower").unwrap().0 - seen.death("idle").unwrap().0;
    assert!(gap >= Duration::from_millis(900) && gap < Duration::from_secs(3), "re-measured after settling ({gap:?})");
    assert_eq!(state(&states, "oldest-idle"), Some("running"), "it stopped once back under budget:\n{text}");
    assert_eq!(text.lines().filter(|l| l.contains("killed GPU container")).count(), 2, "{text}");
    assert!(text.contains("back under budget"), "{text}");
    set_pool(0);
    pool.assert_baseline("youngest first");
}

#[test]
fn dry_run_reports_the_kill_with_its_numbers_and_kills_nothing() {
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let env = watch_env("dry_run = true");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let g = gpu_container(Some(GROW), None);
    let id = unique("gpu-dry");
    p.launch(&g, &id);
    assert!(wait_stdout(&g, "grown", Duration::from_secs(20)), "{}", stdout_of(&g));
    assert!(wait_for(Duration::from_secs(5), || watch.text().contains("dry run: would kill")), "{}", watch.text());
    assert_eq!(p.status(&id).as_deref(), Some("running"));
    assert_eq!(watch.kills(), 0);
    assert!(wait_for(Duration::from_secs(3), || metric(&env, "dry_run_kills_total").unwrap_or(0.0) >= 1.0));
    let text = watch.text();
    let line = text.lines().find(|l| l.contains("would kill")).unwrap();
    assert!(line.contains(&format!("would kill GPU container {id}")) && line.contains("above the baseline exceeds the 256Mi"), "{line}");
    p.delete(&id);
    set_pool(0);
    pool.assert_baseline("dry run");
}

#[test]
fn memory_pressure_kills_a_gpu_container_over_its_headroom_without_waiting_for_tolerance_or_sustain() {
    // Tolerance 512Mi and sustain 60 s: the budget rule alone cannot kill within this test.
    // The GPU container sits 64 MiB over its 256Mi headroom (within the tolerance). Then a
    // non-GPU container makes the node stall on memory: the PSI trigger fires and the GPU
    // container is killed at once; the thrasher, not a GPU container, is never a candidate.
    let _cg = CgroupParents;
    let pool = PoolGuard::new(0);
    let env = watch_env("tolerance = \"512Mi\"\nsustain_ms = 60000\n");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let g = gpu_container(Some(Grow { step: 8, every_ms: 50, max: HEADROOM_PAGES + 32 }), None);
    let gid = unique("gpu-over");
    p.launch(&g, &gid);
    assert!(wait_stdout(&g, "grown", Duration::from_secs(20)), "{}", stdout_of(&g));
    let gpid = p.pid(&gid).unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    assert!(pid_alive(gpid), "over its headroom but within the tolerance, and no pressure: it lives:\n{}", watch.text());
    assert_eq!(watch.kills(), 0);

    let t = thrasher();
    let tid = unique("thrasher");
    p.launch(&t, &tid);
    let killed = wait_for(Duration::from_secs(30), || !pid_alive(gpid));
    let text = watch.text();
    let pressure = std::fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
    assert!(killed, "the pressure trigger never killed it (node pressure: {pressure}):\n{text}");
    let line = text.lines().find(|l| l.contains(&format!("killed GPU container {gid}"))).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("over while memory pressure fired"), "{line}");
    assert_eq!(p.status(&tid).as_deref(), Some("running"), "the thrasher is not a GPU container");
    p.delete(&tid);
    p.delete(&gid);
    set_pool(0);
    pool.assert_baseline("pressure");
}
