//! Shared by tests/watch.rs and `make bench`'s watchdog section (bench/src/watchdog.rs): the
//! watchdog as a child process, GPU containers that emulate driver memory, and a host-side
//! observer that times what happens.
//!
//! **The emulation.** No GPU here. A GPU driver's system memory is taken from the page
//! allocator and charged to no cgroup; growing the hugetlb pool (`nr_hugepages`) does exactly
//! that, so a "GPU container" (GPU by its spec: `NVIDIA_VISIBLE_DEVICES=0` and a CDI
//! annotation) that is privileged enough to write `/sys/kernel/mm/hugepages/.../nr_hugepages`
//! grows the pool step by step from inside. One difference: the driver frees a process's
//! memory when the process exits; pool pages stay in the pool. The [`Observer`] plays that part
//! of the driver: when a growing container's init dies, it shrinks the pool back to where the
//! container found it (and every test restores the pool at its end under [`PoolGuard`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::*;
use serde_json::json;

pub const MI: u64 = 1 << 20;
pub const NR_HUGEPAGES: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages";
pub const PAGE_2M: u64 = 2 << 20;

/// The product's config for these tests: 256Mi of headroom per GPU, a 64Mi tolerance, the
/// default poll (100 ms) and sustain (200 ms), metrics every second.
pub fn watch_env(extra_watch: &str) -> ProductEnv {
    let root = PathBuf::from(format!("/tmp/{}", unique("dph-watch")));
    let metrics = root.join("watch.prom");
    let defaults = [
        ("tolerance", "\"64Mi\"".to_string()),
        ("settle_ms", "1000".to_string()),
        ("metrics_interval_ms", "1000".to_string()),
        ("metrics_file", format!("\"{}\"", metrics.display())),
    ];
    let mut watch = String::new();
    for (k, v) in defaults {
        if !extra_watch.lines().any(|l| l.split('=').next().map(str::trim) == Some(k)) {
            watch += &format!("{k} = {v}\n");
        }
    }
    ProductEnv::new(&format!("[gpu]\nheadroom_per_gpu = \"256Mi\"\n[watch]\n{watch}{extra_watch}"))
}

pub fn metrics_path(env: &ProductEnv) -> PathBuf {
    let text = std::fs::read_to_string(&env.config).unwrap();
    let line = text.lines().find(|l| l.starts_with("metrics_file")).unwrap();
    PathBuf::from(line.split('"').nth(1).unwrap())
}

/// A metric's value from the textfile (None if absent).
pub fn metric(env: &ProductEnv, name: &str) -> Option<f64> {
    let text = std::fs::read_to_string(metrics_path(env)).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("dataplane_hook_watch_{name} ")).and_then(|v| v.parse().ok())
    })
}

/// `dataplane-hook watch` as a child process; killed on drop.
pub struct Watchdog {
    child: Child,
    pub log: PathBuf,
}

impl Watchdog {
    pub fn start(env: &ProductEnv) -> Watchdog {
        let log = env.root.join("watch.stderr");
        let err = std::fs::File::create(&log).unwrap();
        let child = Command::new(hook_bin())
            .arg("--config")
            .arg(&env.config)
            .arg("watch")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .unwrap();
        let w = Watchdog { child, log };
        assert!(
            wait_for(Duration::from_secs(10), || w.text().contains("watching:")),
            "watch did not start: {}",
            w.text()
        );
        w
    }
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
    /// Its stderr so far.
    pub fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
    pub fn kills(&self) -> usize {
        self.text().lines().filter(|l| l.contains("killed GPU container")).count()
    }
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a GPU container grows the pool: `step` pages every `every_ms`, up to `max` pages.
#[derive(Debug, Clone, Copy)]
pub struct Grow {
    pub step: u64,
    pub every_ms: u64,
    pub max: u64,
}

/// An absolute cgroup path: on a v2 host (the VM) the caller's own cgroup is a service with
/// processes, which cannot have controller-enabled children.
pub fn cgroup_path(b: &mut TestBundle) {
    b.spec["linux"]["cgroupsPath"] = json!(format!("/dataplane-tests/{}", unique("watch")));
    b.save();
}

/// Removes the (empty) `dataplane-tests` parent cgroups runc leaves behind, in every hierarchy;
/// one still in use by another test stays (rmdir fails with EBUSY).
pub fn remove_test_cgroup_parents() {
    let mut dirs = vec![PathBuf::from("/sys/fs/cgroup/dataplane-tests")];
    if let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") {
        dirs.extend(rd.flatten().map(|e| e.path().join("dataplane-tests")));
    }
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Held by a test while it makes containers under the `dataplane-tests` parent cgroups; when
/// the last holder goes (also when a test fails) the empty parents are removed. A shared flock
/// per holder: removing a parent while another test's runc is between creating it and creating
/// its child below fails that create (`mkdir .../dataplane-tests/<id>: no such file`).
pub struct CgroupParents(std::fs::File);

impl CgroupParents {
    pub fn new() -> CgroupParents {
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open("/run/lock/dataplane-tests.cgroups")
            .expect("lock file");
        #[allow(deprecated)]
        nix::fcntl::flock(std::os::fd::AsRawFd::as_raw_fd(&f), nix::fcntl::FlockArg::LockShared)
            .expect("flock");
        CgroupParents(f)
    }
}

impl Default for CgroupParents {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for CgroupParents {
    fn drop(&mut self) {
        use std::os::fd::AsRawFd;
        #[allow(deprecated)]
        let last =
            nix::fcntl::flock(self.0.as_raw_fd(), nix::fcntl::FlockArg::LockExclusiveNonblock)
                .is_ok();
        if last {
            remove_test_cgroup_parents();
        }
    }
}

/// Makes the container's /sys writable (the emulation writes the pool size from inside).
pub fn writable_sys(b: &mut TestBundle) {
    for m in b.spec["mounts"].as_array_mut().unwrap() {
        if m["destination"] == "/sys" {
            m["options"] = json!(["nosuid", "noexec", "nodev", "rw"]);
        }
    }
    b.save();
}

/// The shell loop that grows the pool from inside; prints `grown` at the end.
pub fn grow_script(g: Grow) -> String {
    format!(
        "f={NR_HUGEPAGES}; n=$(cat $f); echo start $n; \
         while [ $n -lt {max} ]; do n=$((n+{step})); echo $n > $f; sleep {secs}; done; \
         echo grown $(cat $f); exec sleep 100000",
        max = g.max,
        step = g.step,
        secs = g.every_ms as f64 / 1000.0
    )
}

/// The bench's shell: grow to `low` pages, hold `hold_ms` (a steady state well under budget),
/// then jump to `high` pages in one write, so the crossing instant is unambiguous.
pub fn jump_script(low: u64, high: u64, hold_ms: u64) -> String {
    format!(
        "f={NR_HUGEPAGES}; echo {low} > $f; sleep {hold}; echo jump; echo {high} > $f; echo jumped $(cat $f); exec sleep 100000",
        hold = hold_ms as f64 / 1000.0
    )
}

/// A GPU container running `script` (see [`gpu_container`]).
pub fn gpu_container_with(script: &str, headroom: Option<&str>) -> TestBundle {
    let mut b = TestBundle::new(&["sh", "-c", script]);
    cgroup_path(&mut b);
    b.spec["linux"]["resources"]["memory"] = serde_json::json!({ "limit": 1u64 << 30 });
    b.env("NVIDIA_VISIBLE_DEVICES=0");
    b.annotate("cdi.k8s.io/emulated-gpu", "nvidia.com/gpu=0");
    if let Some(h) = headroom {
        b.annotate("dataplane-hook.io/gpu-headroom", h);
    }
    writable_sys(&mut b);
    b
}

/// A GPU container (by its spec) with a 1Gi limit; it grows the pool if `grow` is given, else
/// idles. `headroom`: its `gpu-headroom` annotation (None: the config's 256Mi per GPU).
pub fn gpu_container(grow: Option<Grow>, headroom: Option<&str>) -> TestBundle {
    let script = match grow {
        Some(g) => grow_script(g),
        None => "echo idle; exec sleep 100000".into(),
    };
    gpu_container_with(&script, headroom)
}

/// A non-GPU container that makes the node stall on memory: 4 readers loop over the big files
/// of the host's /usr/lib inside a 16Mi memory limit, so every read is a refault and page
/// cache reclaim (PSI `some` on this host: ~15% avg10).
pub fn thrasher() -> TestBundle {
    let script = "files=$(find /usr/lib -type f -size +1M | head -200); echo thrashing; \
                  for i in 1 2 3 4; do (while true; do cat $files > /dev/null 2>&1; done) & done; wait";
    let mut b = TestBundle::new(&["sh", "-c", script]);
    cgroup_path(&mut b);
    b.spec["linux"]["resources"]["memory"] = json!({ "limit": 16u64 << 20 });
    b.save();
    b
}

/// A non-GPU container that fills `mib` of its /tmp (tmpfs: charged to its memory cgroup) and
/// stays; prints `filled`.
pub fn memory_hog(mib: u64) -> TestBundle {
    let script =
        format!("head -c {} /dev/zero > /tmp/fill && echo filled; exec sleep 100000", mib * MI);
    let mut b = TestBundle::new(&["sh", "-c", &script]);
    cgroup_path(&mut b);
    b.spec["linux"]["resources"]["memory"] = json!({ "limit": (mib + 512) * MI });
    b.save();
    b
}

pub fn pool_pages() -> u64 {
    read_u64(NR_HUGEPAGES)
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(s) => !s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')).unwrap_or(true),
    }
}

/// What the observer saw.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// When the pool first exceeded the threshold.
    pub crossed: Option<Instant>,
    /// Pool size (pages) at that moment and at each death.
    pub pages_at_cross: u64,
    /// (name, when it died, pool pages then), in order.
    pub deaths: Vec<(String, Instant, u64)>,
    pub max_pages: u64,
}

impl Seen {
    pub fn death(&self, name: &str) -> Option<(Instant, u64)> {
        self.deaths.iter().find(|d| d.0 == name).map(|d| (d.1, d.2))
    }
    /// Crossing to `name`'s death; zero when it died before the pool crossed the threshold
    /// (the estimate's noise put the node over budget one growth step early).
    pub fn reaction(&self, name: &str) -> Option<Duration> {
        let died = self.death(name)?.0;
        Some(died.saturating_duration_since(self.crossed.unwrap_or(died)))
    }
}

/// A host thread polling the pool (every 2 ms) and the watched inits: it times the crossing of
/// `threshold_pages` and every death, and, as the driver would, gives the pool back when a
/// container in `frees_on_exit` dies (shrinks it to `base_pages`).
pub struct Observer {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Observer {
    pub fn start(
        threshold_pages: u64,
        watched: Vec<(String, i32)>,
        frees_on_exit: Vec<String>,
        base_pages: u64,
    ) -> Observer {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (s, st) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut alive: Vec<(String, i32)> = watched;
            while !st.load(Ordering::Relaxed) {
                let pages = pool_pages();
                let now = Instant::now();
                {
                    let mut g = s.lock().unwrap();
                    g.max_pages = g.max_pages.max(pages);
                    if g.crossed.is_none() && pages > threshold_pages {
                        g.crossed = Some(now);
                        g.pages_at_cross = pages;
                    }
                }
                let mut i = 0;
                while i < alive.len() {
                    if pid_alive(alive[i].1) {
                        i += 1;
                        continue;
                    }
                    let (name, _) = alive.remove(i);
                    s.lock().unwrap().deaths.push((name.clone(), now, pages));
                    if frees_on_exit.contains(&name) {
                        set_pool(base_pages); // the driver frees the process's memory on exit
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Observer { stop, seen, thread: Some(thread) }
    }

    pub fn seen(&self) -> Seen {
        self.seen.lock().unwrap().clone()
    }

    /// Waits until the observer saw `name` die (its clock, not the caller's, times the death).
    pub fn wait_death(&self, name: &str, timeout: Duration) -> bool {
        wait_for(timeout, || self.seen().death(name).is_some())
    }

    pub fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
        self.seen()
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits for `text` in a container's stdout.
pub fn wait_stdout(b: &TestBundle, text: &str, timeout: Duration) -> bool {
    wait_for(timeout, || stdout_of(b).contains(text))
}

/// The memory cgroup usage of `pid` (v1 `memory.usage_in_bytes`, v2 `memory.current`).
pub fn memory_usage(pid: i32) -> u64 {
    for d in util::cgroup_dirs(pid) {
        for f in ["memory.usage_in_bytes", "memory.current"] {
            if let Ok(s) = std::fs::read_to_string(d.join(f)) {
                return s.trim().parse().unwrap();
            }
        }
    }
    panic!("no memory cgroup for {pid}")
}

/// CPU time of a process, in seconds: /proc/<pid>/schedstat (ns, all threads' time on a
/// CPU), finer than utime+stime's clock ticks (10 ms) for an idle daemon.
pub fn cpu_seconds(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    s.split_whitespace().next().unwrap().parse::<u64>().unwrap() as f64 / 1e9
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`).
pub fn status_kib(pid: i32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Path of a file in a bundle.
pub fn in_bundle(b: &TestBundle, name: &str) -> PathBuf {
    b.path().join(name)
}

pub fn exists(p: &Path) -> bool {
    p.exists()
}
