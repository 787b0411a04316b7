//! Shared harness for the integration tests: real runc, real dataplane-runtime, real DPDK,
//! real hugetlbfs and cgroups, as root.
//!
//! - [`PoolGuard`] serializes every test that touches the hugepage pool (machine-wide flock)
//!   and restores the pool size it found.
//! - [`TestBundle`] builds an OCI bundle whose rootfs bind-mounts the host's /usr read-only
//!   (busybox, dpdk-testpmd and their libraries come from the host).
//! - [`Runtime`] drives plain runc (the control) or dataplane-runtime (the product) with a
//!   private runc root and a private dataplane-hook state dir per test.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub mod console;
pub mod containerd;
pub mod dpdk;
pub mod util;
pub mod watch;

/// Directory holding the built `dataplane-hook` and `dataplane-runtime`.
/// `DPH_BIN_DIR` overrides (installed package: /usr/bin); else the cargo target dir of this
/// test executable (`target/<profile>/deps/<test>` → `target/<profile>/`), preferring release.
pub fn bin_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DPH_BIN_DIR") {
        return PathBuf::from(d);
    }
    let exe = std::env::current_exe().expect("test exe");
    let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    let target = profile_dir.parent().expect("target");
    for p in [target.join("release"), profile_dir.to_path_buf()] {
        if p.join("dataplane-runtime").exists() && p.join("dataplane-hook").exists() {
            return p;
        }
    }
    panic!(
        "dataplane-runtime/dataplane-hook not built next to {} (run `cargo build --release --workspace --bins` or `make test`)",
        exe.display()
    );
}

pub fn hook_bin() -> PathBuf {
    bin_dir().join("dataplane-hook")
}
pub fn runtime_bin() -> PathBuf {
    bin_dir().join("dataplane-runtime")
}

/// The OCI runtime the tests drive: `DPH_RUNTIME` (default `runc`; e.g. `crun`). Used as the
/// control and written as `runtime_path` in every [`ProductEnv`] config, so the same suites
/// run on another runtime (the VM payload runs them on runc and crun).
pub fn oci_runtime() -> String {
    std::env::var("DPH_RUNTIME").ok().filter(|s| !s.is_empty()).unwrap_or_else(|| "runc".into())
}

/// Whether the tests drive crun (which hides hooks' stderr unless told where to put it).
pub fn is_crun() -> bool {
    Path::new(&oci_runtime()).file_name().is_some_and(|n| n == "crun")
}

/// `DPH_SYSTEMD_CGROUP=1`: every runtime invocation gets `--systemd-cgroup` (runc and crun
/// both take it; containers then live in `system.slice:<runtime>:<id>` scopes).
pub fn systemd_cgroup() -> bool {
    matches!(std::env::var("DPH_SYSTEMD_CGROUP").as_deref(), Ok("1") | Ok("true") | Ok("yes"))
}

/// Panics unless root: these tests need real mounts, cgroups and runc.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "integration tests must run as root (make test runs them with sudo when needed)"
    );
}

pub const HP2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";

pub fn read_u64(path: &str) -> u64 {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().parse().unwrap()
}

/// The 2Mi pool counters (total, free, reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub total: u64,
    pub free: u64,
    pub reserved: u64,
}

pub fn counters() -> Counters {
    Counters {
        total: read_u64(&format!("{HP2M}/nr_hugepages")),
        free: read_u64(&format!("{HP2M}/free_hugepages")),
        reserved: read_u64(&format!("{HP2M}/resv_hugepages")),
    }
}

/// Exclusive use of the host's 2Mi pool for one test, sized to `pages`; restores the previous
/// size on drop. Serializes across threads and processes (flock on a file in /run/lock).
pub struct PoolGuard {
    lock: File,
    previous: u64,
    pub baseline: Counters,
}

/// The lock file every user of the shared 2Mi pool takes: the tests, `make bench`, `make demo`.
pub const POOL_LOCK: &str = "/run/lock/dataplane-tests.pool";

impl PoolGuard {
    /// Takes the pool (waiting for the lock), sizes it to `pages` and waits until it is idle;
    /// panics when it cannot (a test's failure).
    pub fn new(pages: u64) -> PoolGuard {
        require_root();
        PoolGuard::try_new(pages, None).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`PoolGuard::new`] for callers that report rather than panic (`make bench`); `waiting`
    /// is printed on stderr before it blocks on the lock.
    pub fn try_new(pages: u64, waiting: Option<&str>) -> Result<PoolGuard, String> {
        let _ = std::fs::create_dir_all("/run/lock");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(POOL_LOCK)
            .map_err(|e| format!("{POOL_LOCK}: {e}"))?;
        if let Some(w) = waiting {
            eprintln!("{w}");
        }
        #[allow(deprecated)]
        nix::fcntl::flock(lock.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive)
            .map_err(|e| format!("flock {POOL_LOCK}: {e}"))?;
        let nr = format!("{HP2M}/nr_hugepages");
        let previous: u64 = std::fs::read_to_string(&nr)
            .map_err(|e| format!("{nr}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{nr}: {e}"))?;
        // From here on the drop restores the size it found.
        let mut guard =
            PoolGuard { lock, previous, baseline: Counters { total: 0, free: 0, reserved: 0 } };
        std::fs::write(&nr, pages.to_string()).map_err(|e| format!("{nr}: {e}"))?;
        // The previous holder's last container may still be going (the kernel drops a private
        // hugetlbfs and its reservation when the container's mount namespace dies, which can
        // trail the runtime's delete): give the pool a moment to become idle.
        wait_for(Duration::from_secs(30), || {
            let c = counters();
            c.free == c.total && c.reserved == 0
        });
        let baseline = counters();
        if baseline.total != pages {
            return Err(format!(
                "could not size the 2Mi pool to {pages} pages (memory fragmented?): {baseline:?}"
            ));
        }
        if baseline.free != pages || baseline.reserved != 0 {
            return Err(format!(
                "hugepages of the pool are in use or reserved by someone else: {baseline:?}"
            ));
        }
        guard.baseline = baseline;
        Ok(guard)
    }

    /// Waits briefly for the pool to return to its baseline, then asserts it did.
    pub fn assert_baseline(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let c = counters();
            if c == self.baseline {
                return;
            }
            if Instant::now() > deadline {
                panic!("{what}: pool not at baseline: {c:?} != {:?}", self.baseline);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PoolGuard {
    fn drop(&mut self) {
        set_pool(self.previous);
        let _ = &self.lock;
    }
}

pub fn set_pool(pages: u64) {
    std::fs::write(format!("{HP2M}/nr_hugepages"), pages.to_string()).expect("write nr_hugepages");
}

/// A unique name for this test run (container ids, dirs).
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

/// An OCI bundle in a temp dir: rootfs with the host's /usr bind-mounted read-only.
pub struct TestBundle {
    pub dir: tempfile::TempDir,
    pub spec: Value,
}

impl TestBundle {
    /// A bundle running `args` (argv inside the container).
    pub fn new(args: &[&str]) -> TestBundle {
        let dir = tempfile::Builder::new().prefix("dph-bundle-").tempdir().expect("tempdir");
        make_rootfs(&dir.path().join("rootfs")).expect("rootfs");
        let spec = default_spec(args);
        let b = TestBundle { dir, spec };
        b.save();
        b
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    pub fn save(&self) {
        std::fs::write(
            self.path().join("config.json"),
            serde_json::to_vec_pretty(&self.spec).unwrap(),
        )
        .unwrap();
    }

    pub fn annotate(&mut self, key: &str, value: &str) -> &mut Self {
        self.spec["annotations"][key] = json!(value);
        self.save();
        self
    }

    /// Adds a bind mount from the host (read-write).
    pub fn bind(&mut self, host: &Path, container: &str) -> &mut Self {
        self.spec["mounts"].as_array_mut().unwrap().push(json!({
            "destination": container, "type": "bind", "source": host.display().to_string(),
            "options": ["rbind", "rw"]
        }));
        self.save();
        self
    }

    pub fn env(&mut self, kv: &str) -> &mut Self {
        self.spec["process"]["env"].as_array_mut().unwrap().push(json!(kv));
        self.save();
        self
    }

    pub fn hugepage_limit(&mut self, page_size: &str, bytes: u64) -> &mut Self {
        let lim = &mut self.spec["linux"]["resources"]["hugepageLimits"];
        if !lim.is_array() {
            *lim = json!([]);
        }
        lim.as_array_mut().unwrap().push(json!({"pageSize": page_size, "limit": bytes}));
        self.save();
        self
    }

    /// Wires the product's hook into the spec at createRuntime and poststop, as podman's and
    /// CRI-O's hooks.d do (no wrapper, no spec edit of the product's own): for plain runc.
    pub fn with_hooks_d(&mut self, env: &ProductEnv) -> &mut Self {
        let args =
            ["dataplane-hook".to_string(), "--config".into(), env.config.display().to_string()];
        self.spec["hooks"] = hooks_d_spec(&hook_bin().display().to_string(), &args);
        self.save();
        self
    }

    /// Reloads config.json from disk (after the wrapper edited it).
    pub fn reload(&mut self) -> &Value {
        self.spec =
            serde_json::from_slice(&std::fs::read(self.path().join("config.json")).unwrap())
                .unwrap();
        &self.spec
    }
}

/// The rootfs every bundle of the tests, the bench and the demo uses: empty mount points, the
/// usual top-level links into /usr (the host's /usr is bind-mounted read-only by
/// [`default_spec`]), and a passwd/group naming root.
pub fn make_rootfs(rootfs: &Path) -> std::io::Result<()> {
    for d in ["usr", "proc", "sys", "dev", "tmp", "etc", "var", "run"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    for (l, t) in
        [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]
    {
        match std::os::unix::fs::symlink(t, rootfs.join(l)) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
    }
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")?;
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n")
}

/// The OCI `hooks` object hooks.d produces: `path` run with `args` and the stage name
/// appended, at createRuntime and poststop (where the product's hook runs).
pub fn hooks_d_spec(path: &str, args: &[String]) -> Value {
    let entry = |stage: &str| {
        let mut a = args.to_vec();
        a.push(stage.to_string());
        json!([{ "path": path, "args": a }])
    };
    json!({ "createRuntime": entry("createRuntime"), "poststop": entry("poststop") })
}

/// A runc-style spec: default namespaces, /proc, /dev, /sys, the host's /usr read-only.
pub fn default_spec(args: &[&str]) -> Value {
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/"],
            "cwd": "/",
            "capabilities": {
                "bounding": caps(), "effective": caps(), "permitted": caps()
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "dph",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/usr", "type": "bind", "source": "/usr", "options": ["rbind", "ro"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "nodev", "mode=1777"]}
        ],
        "linux": {
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [{"type": "pid"}, {"type": "network"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
        },
        "annotations": {}
    })
}

/// runc's default capability set (`runc spec`): what the bench measures containers with.
pub const RUNC_DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_RAW",
    "CAP_SYS_CHROOT",
    "CAP_MKNOD",
    "CAP_AUDIT_WRITE",
    "CAP_SETFCAP",
];

/// runc's defaults plus what DPDK needs (memlock, mounts, scheduling, raw I/O).
fn caps() -> Value {
    let mut c: Vec<&str> = RUNC_DEFAULT_CAPS.to_vec();
    c.extend(["CAP_IPC_LOCK", "CAP_SYS_ADMIN", "CAP_SYS_NICE", "CAP_SYS_RAWIO"]);
    json!(c)
}

/// Which runtime a test drives.
#[derive(Debug, Clone)]
pub enum Runtime {
    /// Plain runc: the control.
    Runc,
    /// dataplane-runtime with its own config file (private state dir and log).
    Product(ProductEnv),
}

/// A private configuration for the product: state dir and log file under a temp dir.
#[derive(Debug, Clone)]
pub struct ProductEnv {
    pub root: PathBuf,
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log: PathBuf,
    /// Removes `root` when the last clone goes, unless the test is failing (its log stays).
    _cleanup: std::sync::Arc<RemoveOnDrop>,
}

#[derive(Debug)]
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if !std::thread::panicking() && !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl ProductEnv {
    /// `extra` is appended to the config file (TOML).
    pub fn new(extra: &str) -> ProductEnv {
        let root = PathBuf::from(format!("/tmp/{}", unique("dph-env")));
        std::fs::create_dir_all(&root).unwrap();
        let state_dir = root.join("state");
        let log = root.join("hook.log");
        let config = root.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "state_dir = \"{}\"\nlog_file = \"{}\"\nlog_level = \"debug\"\n{}{extra}\n",
                state_dir.display(),
                log.display(),
                // A test that sets its own runtime_path keeps it (TOML forbids the key twice).
                if extra.contains("runtime_path") {
                    String::new()
                } else {
                    format!("runtime_path = \"{}\"\n", oci_runtime())
                }
            ),
        )
        .unwrap();
        let _cleanup = std::sync::Arc::new(RemoveOnDrop(root.clone()));
        ProductEnv { root, config, state_dir, log, _cleanup }
    }

    /// An environment over an existing config file (its state dir and log under `root`, which
    /// the caller owns and cleans).
    pub fn from_parts(root: &Path, config: &Path) -> ProductEnv {
        ProductEnv {
            root: root.to_path_buf(),
            config: config.to_path_buf(),
            state_dir: root.join("state"),
            log: root.join("hook.log"),
            _cleanup: std::sync::Arc::new(RemoveOnDrop(PathBuf::new())),
        }
    }

    /// Runs `dataplane-hook --config <ours> ARGS`.
    pub fn hook(&self, args: &[&str]) -> Output {
        Command::new(hook_bin()).arg("--config").arg(&self.config).args(args).output().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// `dataplane-hook status --json`, which must succeed.
    pub fn status_json(&self) -> Value {
        let o = self.hook(&["status", "--json"]);
        assert!(o.status.success(), "status: {}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// Everything released: the pool at its baseline, no container or group in `status`, no
    /// group file left in the state dir.
    pub fn assert_released(&self, pool: &PoolGuard, what: &str) {
        pool.assert_baseline(what);
        let s = self.status_json();
        assert_eq!(s["groups"].as_array().unwrap().len(), 0, "{what}: groups left: {s}");
        assert_eq!(s["containers"].as_array().unwrap().len(), 0, "{what}: containers left: {s}");
        let dirs: Vec<_> = std::fs::read_dir(self.state_dir.join("groups"))
            .map(|d| d.flatten().map(|e| e.file_name()).collect())
            .unwrap_or_default();
        assert!(dirs.is_empty(), "{what}: group files left: {dirs:?}");
    }

    /// Ledger records present.
    pub fn records(&self) -> Vec<String> {
        std::fs::read_dir(self.state_dir.join("containers"))
            .map(|rd| {
                rd.flatten()
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| n.ends_with(".json"))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Drives one runtime with a private runc root (so tests never see each other's containers).
pub struct Runner {
    pub runtime: Runtime,
    pub runc_root: tempfile::TempDir,
    /// Containers created through this runner: force-deleted on drop (a failed test must not
    /// leave DPDK spinning on the node).
    created: std::sync::Mutex<Vec<String>>,
}

impl Drop for Runner {
    fn drop(&mut self) {
        let ids = std::mem::take(&mut *self.created.lock().unwrap_or_else(|e| e.into_inner()));
        for id in ids {
            let _ = self.command().args(["delete", "--force", &id]).output();
        }
    }
}

impl Runner {
    pub fn runc() -> Runner {
        Runner {
            runtime: Runtime::Runc,
            runc_root: tempfile::Builder::new().prefix("dph-runc-").tempdir().unwrap(),
            created: Default::default(),
        }
    }
    pub fn product(env: &ProductEnv) -> Runner {
        Runner {
            runtime: Runtime::Product(env.clone()),
            runc_root: tempfile::Builder::new().prefix("dph-runc-").tempdir().unwrap(),
            created: Default::default(),
        }
    }

    pub fn command(&self) -> Command {
        match &self.runtime {
            Runtime::Runc => {
                let mut c = Command::new(oci_runtime());
                c.arg("--root").arg(self.runc_root.path());
                if systemd_cgroup() {
                    c.arg("--systemd-cgroup");
                }
                c
            }
            Runtime::Product(env) => {
                let mut c = Command::new(runtime_bin());
                c.env("DATAPLANE_HOOK_CONFIG", &env.config);
                c.arg("--root").arg(self.runc_root.path());
                if systemd_cgroup() {
                    c.arg("--systemd-cgroup");
                }
                c
            }
        }
    }

    /// `create --bundle B ID`; stdout/stderr of the container go to files in the bundle.
    pub fn create(&self, b: &TestBundle, id: &str) -> Output {
        let out = File::create(b.path().join("stdout.log")).unwrap();
        let err = File::create(b.path().join("stderr.log")).unwrap();
        self.created.lock().unwrap().push(id.to_string());
        let mut c = self.command();
        c.args(["create", "--bundle"]).arg(b.path()).arg(id);
        // runc create waits for the container's stdio to close only in `run`; give it files.
        let child = c.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap();
        let o = child.wait_with_output().unwrap();
        let stderr = std::fs::read(b.path().join("stderr.log")).unwrap_or_default();
        Output { status: o.status, stdout: vec![], stderr }
    }

    pub fn start(&self, id: &str) -> Output {
        self.command().args(["start", id]).output().unwrap()
    }

    /// create + start; panics with the runtime's stderr on failure.
    pub fn launch(&self, b: &TestBundle, id: &str) {
        let o = self.create(b, id);
        assert!(o.status.success(), "create {id} failed: {}", String::from_utf8_lossy(&o.stderr));
        let o = self.start(id);
        assert!(o.status.success(), "start {id} failed: {}", String::from_utf8_lossy(&o.stderr));
    }

    pub fn kill(&self, id: &str, sig: &str) -> Output {
        self.command().args(["kill", id, sig]).output().unwrap()
    }

    pub fn delete(&self, id: &str) -> Output {
        self.command().args(["delete", "--force", id]).output().unwrap()
    }

    /// `state ID` → status string ("created", "running", "stopped") or None.
    pub fn status(&self, id: &str) -> Option<String> {
        let o = self.command().args(["state", id]).output().unwrap();
        if !o.status.success() {
            return None;
        }
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        v["status"].as_str().map(String::from)
    }

    pub fn pid(&self, id: &str) -> Option<i32> {
        let o = self.command().args(["state", id]).output().unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).ok()?;
        v["pid"].as_i64().map(|p| p as i32)
    }

    /// Waits until the container stopped (or the timeout passed).
    pub fn wait_stopped(&self, id: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            match self.status(id).as_deref() {
                Some("stopped") | None => return true,
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
        false
    }

    /// `run` to completion (foreground, no detach); returns the output.
    pub fn run(&self, b: &TestBundle, id: &str) -> Output {
        self.created.lock().unwrap().push(id.to_string());
        let mut c = self.command();
        c.args(["run", "--bundle"]).arg(b.path()).arg(id);
        c.stdin(Stdio::null()).output().unwrap()
    }
}

/// Text of a file the container wrote into its bundle logs.
pub fn stdout_of(b: &TestBundle) -> String {
    std::fs::read_to_string(b.path().join("stdout.log")).unwrap_or_default()
}

/// The container's stdout then its stderr (what [`Runner::create`] captured in the bundle).
pub fn output_of(b: &TestBundle) -> String {
    stdout_of(b) + &std::fs::read_to_string(b.path().join("stderr.log")).unwrap_or_default()
}

/// Polls `f` until it returns true or `timeout` passes.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
