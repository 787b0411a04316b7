//! Issue 6, the node watchdog (G10): `dataplane-hook watch` kills a GPU container early when
//! memory no cgroup is charged for outgrows the headroom granted to the GPU containers — within
//! a second of the crossing, never a non-GPU container — and stops once the node is back under
//! budget. Real runc, real cgroups (memory on cgroup v1 here), real `dataplane-hook watch`; the
//! GPU driver's uncharged memory is emulated by growing the hugetlb pool from inside the
//! container (see tests/harness/watch.rs). The v2 variant runs in the VM
//! (integration/vm/payloads/gpu/).

use std::path::PathBuf;
use std::time::Duration;

use dataplane_tests::watch::*;
use dataplane_tests::*;

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
    let _cg = CgroupParents::new();
    let pool = PoolGuard::new(0);
    let runc = Runner::runc();
    let mut b = gpu_container(Some(GROW), None);
    b.spec["linux"]["resources"]["memory"]["limit"] = serde_json::json!(256u64 << 20);
    b.save();
    let id = unique("ctl-grower");
    runc.launch(&b, &id);
    assert!(
        wait_stdout(&b, "grown", Duration::from_secs(20)),
        "the grower did not finish: {}",
        stdout_of(&b)
    );
    assert_eq!(pool_pages(), GROW.max, "the container took 640 MiB from the node");
    let pid = runc.pid(&id).unwrap();
    assert!(
        memory_usage(pid) < 64 * MI,
        "none of it is charged to the container: {}",
        memory_usage(pid)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(runc.status(&id).as_deref(), Some("running"), "nothing stopped it");
    runc.delete(&id);
    set_pool(0);
    pool.assert_baseline("control");
}

#[test]
fn a_gpu_container_past_its_headroom_is_killed_within_a_second_and_a_charged_neighbour_survives() {
    let _cg = CgroupParents::new();
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
    assert!(
        memory_usage(hog_pid) >= 1 << 30,
        "the hog's memory is charged: {}",
        memory_usage(hog_pid)
    );

    let g = gpu_container(Some(GROW), None);
    let gid = unique("gpu-grower");
    p.launch(&g, &gid);
    let gpid = p.pid(&gid).unwrap();
    let obs = Observer::start(
        HEADROOM_PAGES + TOLERANCE_PAGES,
        vec![("grower".into(), gpid)],
        vec!["grower".into()],
        0,
    );
    assert!(
        obs.wait_death("grower", Duration::from_secs(20)),
        "the grower was never killed:\n{}",
        watch.text()
    );
    std::thread::sleep(Duration::from_millis(300));
    let seen = obs.finish();

    let (_, pages_at_death) = seen.death("grower").unwrap();
    let reaction = seen
        .reaction("grower")
        .unwrap_or_else(|| panic!("killed before crossing? {seen:?}\n{}", watch.text()));
    eprintln!(
        "reaction {reaction:?}, pool at death {} MiB, at crossing {} MiB",
        pages_at_death * 2,
        seen.pages_at_cross * 2
    );
    assert!(
        reaction < Duration::from_secs(1),
        "killed {reaction:?} after crossing its budget:\n{}",
        watch.text()
    );
    assert!(
        pages_at_death > HEADROOM_PAGES,
        "killed at {} MiB, before it used its 256Mi headroom",
        pages_at_death * 2
    );
    let text = watch.text();
    let line = text
        .lines()
        .find(|l| l.contains(&format!("killed GPU container {gid}")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(
        line.contains("exceeds the 256Mi of headroom granted to 1 GPU containers")
            && line.contains("youngest GPU container first"),
        "{line}"
    );
    assert_eq!(watch.kills(), 1, "{text}");

    // The neighbour was never a candidate and is untouched.
    assert_eq!(p.status(&hog_id).as_deref(), Some("running"));
    assert!(memory_usage(hog_pid) >= 1 << 30);
    // The node is back under budget (the emulated driver freed the pool): no further kill.
    assert!(
        wait_for(Duration::from_secs(5), || metric(&env, "kills_total") == Some(1.0)),
        "metrics: {:?}",
        std::fs::read_to_string(metrics_path(&env))
    );
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
    let _cg = CgroupParents::new();
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
fn episode(
    grower_is_youngest: bool,
    extra_idle: bool,
) -> (String, Seen, Vec<(String, Option<String>)>) {
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
    let obs = Observer::start(
        n * HEADROOM_PAGES + TOLERANCE_PAGES,
        watched.clone(),
        vec!["grower".into()],
        0,
    );
    assert!(
        obs.wait_death("grower", Duration::from_secs(20)),
        "the grower was never killed:\n{}",
        watch.text()
    );
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
    let _cg = CgroupParents::new();
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
    let _cg = CgroupParents::new();
    let pool = PoolGuard::new(0);
    let (text, seen, states) = episode(false, true);
    let order: Vec<&str> = seen.deaths.iter().map(|d| d.0.as_str()).collect();
    assert_eq!(order, vec!["idle", "grower"], "{seen:?}\n{text}");
    assert!(seen.reaction("idle").unwrap() < Duration::from_secs(1), "{seen:?}");
    let gap = seen.death("grower").unwrap().0 - seen.death("idle").unwrap().0;
    assert!(
        gap >= Duration::from_millis(900) && gap < Duration::from_secs(3),
        "re-measured after settling ({gap:?})"
    );
    assert_eq!(
        state(&states, "oldest-idle"),
        Some("running"),
        "it stopped once back under budget:\n{text}"
    );
    assert_eq!(text.lines().filter(|l| l.contains("killed GPU container")).count(), 2, "{text}");
    assert!(text.contains("back under budget"), "{text}");
    set_pool(0);
    pool.assert_baseline("youngest first");
}

#[test]
fn dry_run_reports_the_kill_with_its_numbers_and_kills_nothing() {
    let _cg = CgroupParents::new();
    let pool = PoolGuard::new(0);
    let env = watch_env("dry_run = true");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let g = gpu_container(Some(GROW), None);
    let id = unique("gpu-dry");
    p.launch(&g, &id);
    assert!(wait_stdout(&g, "grown", Duration::from_secs(20)), "{}", stdout_of(&g));
    assert!(
        wait_for(Duration::from_secs(5), || watch.text().contains("dry run: would kill")),
        "{}",
        watch.text()
    );
    assert_eq!(p.status(&id).as_deref(), Some("running"));
    assert_eq!(watch.kills(), 0);
    assert!(wait_for(Duration::from_secs(3), || metric(&env, "dry_run_kills_total")
        .unwrap_or(0.0)
        >= 1.0));
    let text = watch.text();
    let line = text.lines().find(|l| l.contains("would kill")).unwrap();
    assert!(
        line.contains(&format!("would kill GPU container {id}"))
            && line.contains("above the baseline exceeds the 256Mi"),
        "{line}"
    );
    p.delete(&id);
    set_pool(0);
    pool.assert_baseline("dry run");
}

#[test]
fn memory_pressure_kills_a_gpu_container_over_its_headroom_without_waiting_for_tolerance_or_sustain(
) {
    // Tolerance 512Mi and sustain 60 s: the budget rule alone cannot kill within this test.
    // The GPU container sits 64 MiB over its 256Mi headroom (within the tolerance). Then a
    // non-GPU container makes the node stall on memory: the PSI trigger fires and the GPU
    // container is killed at once; the thrasher, not a GPU container, is never a candidate.
    let _cg = CgroupParents::new();
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
    assert!(
        pid_alive(gpid),
        "over its headroom but within the tolerance, and no pressure: it lives:\n{}",
        watch.text()
    );
    assert_eq!(watch.kills(), 0);

    let t = thrasher();
    let tid = unique("thrasher");
    p.launch(&t, &tid);
    let killed = wait_for(Duration::from_secs(30), || !pid_alive(gpid));
    let text = watch.text();
    let pressure = std::fs::read_to_string("/proc/pressure/memory").unwrap_or_default();
    assert!(killed, "the pressure trigger never killed it (node pressure: {pressure}):\n{text}");
    let line = text
        .lines()
        .find(|l| l.contains(&format!("killed GPU container {gid}")))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("over while memory pressure fired"), "{line}");
    assert_eq!(p.status(&tid).as_deref(), Some("running"), "the thrasher is not a GPU container");
    p.delete(&tid);
    p.delete(&gid);
    set_pool(0);
    pool.assert_baseline("pressure");
}

/// A host process (`sleep`) standing in for an init; killed on drop.
struct HostSleep(std::process::Child);
impl HostSleep {
    fn start() -> HostSleep {
        HostSleep(std::process::Command::new("sleep").arg("100000").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}
impl Drop for HostSleep {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `/proc/<pid>/stat`'s start time (field 22).
fn start_time(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &s[s.rfind(')').unwrap() + 2..];
    rest.split(' ').nth(22 - 3).unwrap().parse().unwrap()
}

#[test]
fn a_huge_grant_in_the_ledger_never_kills_another_tenants_gpu_container() {
    // Issue 13: a GPU container granted more than i64::MAX of headroom (before the create side
    // bounded gpu-headroom, `9Ei` on an unlimited GPU container was accepted) wrapped the
    // watchdog's `granted as i64` into a huge negative grant: an "excess" of exabytes, and the
    // youngest GPU container — another tenant's, idle, within its headroom — was killed.
    // The record is planted as such a create left it (the create side now refuses it); the
    // attacker is an older live process, the victim an idle GPU container through the product.
    let _cg = CgroupParents::new();
    let pool = PoolGuard::new(0);
    let env = watch_env("");
    let attacker = HostSleep::start();
    std::thread::sleep(Duration::from_millis(1100)); // an older start time than the victim's
    let record = serde_json::json!({
        "id": "attacker", "bundle": "/nonexistent", "created": 1,
        "init": { "pid": attacker.pid(), "start_time": start_time(attacker.pid()) },
        "entries": [{ "kind": "gpu_headroom", "done": true, "gpus": 1, "evidence": ["NVIDIA_VISIBLE_DEVICES=0"],
                      "headroom": 9u64 << 60, "requested_limit": null, "limit": null, "high": null, "set_cgroup": false }],
    });
    std::fs::create_dir_all(env.state_dir.join("containers")).unwrap();
    std::fs::write(env.state_dir.join("containers/attacker.json"), record.to_string()).unwrap();
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let g = gpu_container(None, None);
    let id = unique("gpu-victim");
    p.launch(&g, &id);
    let pid = p.pid(&id).unwrap();
    assert!(
        wait_for(Duration::from_secs(5), || watch.text().contains("2 GPU containers")),
        "watch saw both: {}",
        watch.text()
    );
    // Nothing grows: sustain (200 ms) and settle (1 s) pass several times over.
    std::thread::sleep(Duration::from_secs(4));
    let text = watch.text();
    assert!(pid_alive(pid), "the idle GPU container was killed for the attacker's grant:\n{text}");
    assert_eq!(watch.kills(), 0, "{text}");
    assert!(!text.contains("over budget"), "{text}");
    assert_eq!(p.status(&id).as_deref(), Some("running"));
    p.delete(&id);
    std::fs::remove_file(env.state_dir.join("containers/attacker.json")).unwrap();
    drop(attacker);
    pool.assert_baseline("huge grant");
}

/// The memory cgroup directory of `pid` (v1 `memory` or the v2 unified hierarchy).
fn memory_dir(pid: i32) -> PathBuf {
    util::cgroup_dirs(pid)
        .into_iter()
        .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
        .unwrap_or_else(|| panic!("no memory cgroup for pid {pid}"))
}

#[test]
fn a_gpu_container_whose_init_moved_its_cgroup_is_not_killed_elsewhere() {
    // Issue 13: the killer used to kill whatever cgroup the GPU container's init was in when
    // it acted. An init that moved itself (a container with a writable cgroupfs) into another
    // cgroup — here one holding a bystander the ledger does not know — took the bystander down
    // with it. Now only the cgroup recorded at create is killed, and only while the init is
    // still in it: the kill is refused and logged.
    let _cg = CgroupParents::new();
    let pool = PoolGuard::new(0);
    let env = watch_env("");
    let watch = Watchdog::start(&env);
    let p = Runner::product(&env);
    let g = gpu_container_with(
        &format!("while [ ! -e /dph-go ]; do sleep 0.05; done; {}", grow_script(GROW)),
        None,
    );
    let gid = unique("gpu-mover");
    p.launch(&g, &gid);
    let gpid = p.pid(&gid).unwrap();
    let own = memory_dir(gpid);
    let bystander_dir = own.parent().unwrap().join(unique("bystander"));
    std::fs::create_dir(&bystander_dir).unwrap();
    let bystander = HostSleep::start();
    std::fs::write(bystander_dir.join("cgroup.procs"), bystander.pid().to_string()).unwrap();
    std::fs::write(bystander_dir.join("cgroup.procs"), gpid.to_string()).unwrap();
    assert_eq!(
        memory_dir(gpid),
        bystander_dir,
        "precondition: the init moved into the bystander's cgroup"
    );
    assert_eq!(memory_dir(bystander.pid()), bystander_dir);
    std::fs::write(g.rootfs().join("dph-go"), "").unwrap();
    // The grower crosses its budget within ~1 s; the watchdog then decides (kill or refusal).
    let decided = || {
        let t = watch.text();
        t.contains(&format!("refusing to kill container {gid}"))
            || t.contains(&format!("killed GPU container {gid}"))
    };
    let refused = wait_for(Duration::from_secs(20), || decided() || !pid_alive(bystander.pid()));
    std::thread::sleep(Duration::from_millis(300));
    let text = watch.text();
    let bystander_alive = pid_alive(bystander.pid());
    // Clean up before asserting: the container (now outside its own cgroup), the bystander, its cgroup.
    let _ = std::process::Command::new("kill").args(["-9", &gpid.to_string()]).status();
    p.delete(&gid);
    drop(bystander);
    let _ = wait_for(Duration::from_secs(5), || std::fs::remove_dir(&bystander_dir).is_ok());
    set_pool(0);
    assert!(
        bystander_alive,
        "the watchdog killed a process outside the GPU container's recorded cgroup:\n{text}"
    );
    assert!(refused, "no decision was logged:\n{text}");
    let line =
        text.lines().find(|l| l.contains(&format!("refusing to kill container {gid}"))).unwrap();
    assert!(
        line.contains("recorded at create")
            && line.contains(bystander_dir.file_name().unwrap().to_str().unwrap()),
        "{line}"
    );
    assert_eq!(watch.kills(), 0, "{text}");
    pool.assert_baseline("moved init");
}

/// The textfile dir may belong to the collector's user. Whoever owns it can plant a symlink at
/// the name the daemon's temp file will have (it was `.<name>.<pid>.tmp`, the pid of a running
/// daemon being public) and, before the one atomic writer, had root write the metrics through
/// it over any host file and chmod that file 0644.
#[test]
fn a_symlink_planted_in_the_textfile_dir_is_never_written_through() {
    use std::os::unix::fs::PermissionsExt;
    require_root();
    let env = watch_env("");
    let prom = metrics_path(&env);
    let dir = prom.parent().unwrap().to_path_buf();
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = RemoveDir(dir.clone());
    let victim = env.root.join("shadow");
    std::fs::write(&victim, "root:secret\n").unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
    let watch = Watchdog::start(&env);
    let name = prom.file_name().unwrap().to_str().unwrap();
    let planted = dir.join(format!(".{name}.{}.tmp", watch.pid()));
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    assert_eq!(std::fs::read_to_string(&planted).unwrap(), "root:secret\n", "the link points");
    // Metrics are written every second: wait for two writes after the link was planted.
    let first = std::fs::symlink_metadata(&prom).ok().map(|m| m.modified().unwrap());
    assert!(
        wait_for(Duration::from_secs(10), || {
            std::fs::symlink_metadata(&prom).ok().map(|m| m.modified().unwrap()) != first
        }),
        "the daemon rewrote {}: {}",
        prom.display(),
        watch.text()
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:secret\n", "written through");
    assert_eq!(
        std::fs::symlink_metadata(&victim).unwrap().permissions().mode() & 0o777,
        0o600,
        "chmodded through"
    );
    let m = std::fs::symlink_metadata(&prom).unwrap();
    assert!(m.file_type().is_file(), "the textfile is a plain file");
    assert!(std::fs::read_to_string(&prom).unwrap().contains("dataplane_hook_watch_kills_total"));
}

struct RemoveDir(PathBuf);

impl Drop for RemoveDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
