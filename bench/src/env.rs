//! Owns what every benchmark section stands on: the binaries, bundles, the two runtimes
//! (plain runc, dataplane-runtime) with private roots, one container lifecycle, the hugepage
//! pool lock, timing statistics and the machine description.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

pub const HP2M: &str = "/sys/kernel/mm/hugepages/hugepages-2048kB";
pub const RESERVATION_KEY: &str = "dataplane-hook.io/hugepages-2Mi";
/// The lock every user of the shared hugepage pool takes (tests/harness PoolGuard, demo).
pub use dataplane_tests::POOL_LOCK;

pub struct Ctx {
    pub hook: PathBuf,
    pub runtime: PathBuf,
    /// Bundles, runc roots, configs, state dirs. Under /run: the product's default state dir
    /// (/run/dataplane-hook) lives on that filesystem too, so its write costs are the real ones.
    pub work: tempfile::TempDir,
    pub runs: usize,
    /// Figures one section leaves for a later one (the lifecycle deltas for the breakdown).
    pub notes: std::cell::RefCell<std::collections::BTreeMap<String, Duration>>,
    /// Where the report goes (files a section writes beside it, such as plots); None: printed only.
    pub out_dir: Option<PathBuf>,
}

impl Ctx {
    pub fn new(bin_dir: &Path, runs: usize) -> Result<Ctx> {
        let hook = bin_dir.join("dataplane-hook");
        let runtime = bin_dir.join("dataplane-runtime");
        for b in [&hook, &runtime] {
            if !b.is_file() {
                bail!("{} not found (run `make build` or pass --bin-dir)", b.display());
            }
        }
        let work = tempfile::Builder::new()
            .prefix("dph-bench-")
            .tempdir_in("/run")
            .context("temp dir in /run")?;
        let tmpfs = work.path().join("tmpfs");
        std::fs::create_dir_all(&tmpfs)?;
        std::fs::create_dir_all(work.path().join("run"))?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "mode=0700,size=512m", "dph-bench"])
            .arg(&tmpfs)
            .status()?;
        if !st.success() {
            bail!("cannot mount a tmpfs on {}", tmpfs.display());
        }
        Ok(Ctx { hook, runtime, work, runs, notes: Default::default(), out_dir: None })
    }

    /// Where bundles, runc roots, state dirs and logs go: names starting with `run/` on the
    /// filesystem of /run (the default state dir's), all others on a tmpfs of the bench's.
    pub fn path(&self, name: &str) -> PathBuf {
        match name.strip_prefix("run/") {
            Some(rest) => self.work.path().join("run").join(rest),
            None => self.work.path().join("tmpfs").join(name),
        }
    }

    /// A product configuration with its own state dir and log (log level `info`, the default),
    /// and `runtime_path` as given.
    pub fn product_config(&self, name: &str, runtime_path: &str) -> Result<PathBuf> {
        let dir = self.path(name);
        std::fs::create_dir_all(&dir)?;
        let cfg = dir.join("config.toml");
        std::fs::write(
            &cfg,
            format!(
                "state_dir = \"{}\"\nlog_file = \"{}\"\nruntime_path = \"{runtime_path}\"\n",
                dir.join("state").display(),
                dir.join("hook.log").display()
            ),
        )?;
        Ok(cfg)
    }

    pub fn runc(&self, name: &str) -> Result<Runner> {
        let root = self.path(&format!("{name}.root"));
        std::fs::create_dir_all(&root)?;
        Ok(Runner { kind: Kind::Runc, root })
    }

    pub fn exec_only(&self, name: &str) -> Result<Runner> {
        let root = self.path(&format!("{name}.root"));
        std::fs::create_dir_all(&root)?;
        Ok(Runner { kind: Kind::ExecOnly, root })
    }

    pub fn product(&self, name: &str) -> Result<Runner> {
        let config = self.product_config(name, "runc")?;
        let root = self.path(&format!("{name}.root"));
        std::fs::create_dir_all(&root)?;
        Ok(Runner { kind: Kind::Product { runtime: self.runtime.clone(), config }, root })
    }
}

impl Drop for Ctx {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.work.path().join("tmpfs")).status();
    }
}

/// The filesystem type of the directory `path` is in (from /proc/self/mountinfo).
pub fn fs_type(path: &Path) -> String {
    let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for l in mi.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let Some(dash) = f.iter().position(|x| *x == "-") else { continue };
        let (Some(mp), Some(ty)) = (f.get(4), f.get(dash + 1)) else { continue };
        if path.starts_with(mp) && best.as_ref().is_none_or(|(n, _)| mp.len() >= *n) {
            best = Some((mp.len(), ty.to_string()));
        }
    }
    best.map(|(_, t)| t).unwrap_or_else(|| "?".into())
}

/// An OCI bundle running `args` with `annotations`: the integration tests' rootfs and default
/// spec (tests/harness), with runc's default capabilities (what `runc spec` gives a container).
pub fn make_bundle(dir: &Path, args: &[&str], annotations: &[(&str, &str)]) -> Result<PathBuf> {
    dataplane_tests::make_rootfs(&dir.join("rootfs"))?;
    let mut spec = dataplane_tests::default_spec(args);
    let caps = json!(dataplane_tests::RUNC_DEFAULT_CAPS);
    spec["process"]["capabilities"] =
        json!({"bounding": caps, "effective": caps, "permitted": caps});
    spec["hostname"] = json!("bench");
    spec["annotations"] = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect::<serde_json::Map<_, _>>()
        .into();
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&spec)?)?;
    Ok(dir.to_path_buf())
}

/// The no-op container every lifecycle figure is about.
pub const NOOP: &[&str] = &["/usr/bin/true"];

#[derive(Debug, Clone)]
pub enum Kind {
    Runc,
    Product {
        runtime: PathBuf,
        config: PathBuf,
    },
    /// The bench binary as a wrapper that only execs runc ([`EXEC_ONLY_FLAG`]): what any
    /// runc-compatible exec wrapper costs at the least.
    ExecOnly,
}

/// argv[1] of the bench binary when it stands in for a wrapper that does nothing but exec runc
/// (`dataplane-bench --exec-only RUNC-ARGS...`): a static Rust executable like the product's,
/// doing no work of its own.
pub const EXEC_ONLY_FLAG: &str = "--exec-only";

/// [`EXEC_ONLY_FLAG`]: exec runc (found in PATH, as the product's default `runtime_path`).
pub fn exec_only(args: &[String]) -> i32 {
    use std::os::unix::process::CommandExt;
    let e = Command::new("runc").args(args).exec();
    eprintln!("dataplane-bench: exec runc: {e}");
    127
}

/// One runtime with a private `--root`.
#[derive(Debug, Clone)]
pub struct Runner {
    pub kind: Kind,
    pub root: PathBuf,
}

impl Runner {
    pub fn command(&self) -> Command {
        let mut c = match &self.kind {
            Kind::Runc => Command::new("runc"),
            Kind::ExecOnly => {
                let mut c = Command::new(std::env::current_exe().expect("the bench's own path"));
                c.arg(EXEC_ONLY_FLAG);
                c
            }
            Kind::Product { runtime, config } => {
                let mut c = Command::new(runtime);
                c.env("DATAPLANE_HOOK_CONFIG", config);
                c
            }
        };
        c.arg("--root").arg(&self.root);
        c
    }

    pub fn config(&self) -> Option<&Path> {
        match &self.kind {
            Kind::Runc | Kind::ExecOnly => None,
            Kind::Product { config, .. } => Some(config),
        }
    }

    /// Runs `args`; stdio goes to /dev/null and a file (a container's init inherits runc's
    /// stdio, so a pipe would stay open as long as the container lives).
    pub fn run(&self, args: &[&str], err_file: &Path) -> Result<()> {
        let err = File::create(err_file)?;
        let st = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .status()?;
        if !st.success() {
            bail!(
                "{} {}: {st}: {}",
                self.name(),
                args.join(" "),
                std::fs::read_to_string(err_file).unwrap_or_default().trim()
            );
        }
        Ok(())
    }

    pub fn name(&self) -> &'static str {
        match self.kind {
            Kind::Runc => "runc",
            Kind::ExecOnly => "exec-only wrapper",
            Kind::Product { .. } => "dataplane-runtime",
        }
    }

    /// `create` with a pid file; returns the init's pid.
    pub fn create(&self, bundle: &Path, id: &str) -> Result<i32> {
        let pid_file = bundle.join(format!("{id}.pid"));
        let b = bundle.display().to_string();
        let p = pid_file.display().to_string();
        self.run(
            &["create", "--bundle", &b, "--pid-file", &p, id],
            &bundle.join(format!("{id}.err")),
        )?;
        let pid = std::fs::read_to_string(&pid_file)?.trim().parse()?;
        let _ = std::fs::remove_file(&pid_file);
        Ok(pid)
    }

    /// One full lifecycle of a container that exits at once: create, start, wait for the
    /// init to exit, delete. The bench process is a child subreaper, so the init (orphaned
    /// when `runc create` exits) is our child and its exit is seen without polling.
    pub fn lifecycle(&self, bundle: &Path, id: &str) -> Result<Duration> {
        Ok(self.lifecycle_cpu(bundle, id)?.0)
    }

    /// [`Runner::lifecycle`], also returning the CPU time (user + system) of every process it
    /// ran and reaped: runc, the wrapper, the hooks, the container. Only meaningful while no
    /// other thread of the bench runs children.
    pub fn lifecycle_cpu(&self, bundle: &Path, id: &str) -> Result<(Duration, Duration)> {
        let err = bundle.join(format!("{id}.err"));
        let cpu0 = children_cpu();
        let t = Instant::now();
        let pid = self.create(bundle, id)?;
        self.run(&["start", id], &err)?;
        wait_exit(pid)?;
        self.run(&["delete", id], &err)?;
        let d = t.elapsed();
        let cpu = children_cpu().saturating_sub(cpu0);
        let _ = std::fs::remove_file(&err);
        Ok((d, cpu))
    }
}

fn timeval(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// User + system CPU time of all reaped descendants so far (getrusage(RUSAGE_CHILDREN)).
pub fn children_cpu() -> Duration {
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: plain syscall with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    timeval(ru.ru_utime) + timeval(ru.ru_stime)
}

/// Becomes a child subreaper: orphaned container inits are re-parented to us.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        bail!("prctl(PR_SET_CHILD_SUBREAPER): {}", std::io::Error::last_os_error());
    }
    Ok(())
}

/// Waits for `pid` to exit: reaps it when it is our child, else polls /proc.
pub fn wait_exit(pid: i32) -> Result<()> {
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
        Ok(_) => Ok(()),
        Err(nix::errno::Errno::ECHILD) => {
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Err(_) => return Ok(()),
                    Ok(s) if s.rsplit(") ").next().is_some_and(|r| r.starts_with('Z')) => {
                        return Ok(())
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(1)),
                }
            }
            bail!("container init {pid} did not exit within 30s")
        }
        Err(e) => bail!("waitpid({pid}): {e}"),
    }
}

/// Reaps whatever else was re-parented to us (call only when no other thread waits).
pub fn reap_orphans() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(s) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if s == WaitStatus::StillAlive {
            break;
        }
    }
}

/// A child's wall time and peak RSS (ru_maxrss of wait4, KiB).
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    /// User + system CPU time of the process (less sensitive to a busy machine than wall).
    pub cpu: Duration,
    pub max_rss_kib: u64,
    pub success: bool,
}

/// Spawns `cmd` with `stdin` written to it, waits with wait4 for its rusage.
pub fn measure(cmd: &mut Command, stdin: &[u8]) -> Result<(Measured, String)> {
    let err_file = tempfile::NamedTempFile::new()?;
    let t = Instant::now();
    let mut child =
        cmd.stdin(Stdio::piped()).stdout(Stdio::null()).stderr(err_file.reopen()?).spawn()?;
    {
        let mut si = child.stdin.take().expect("piped");
        si.write_all(stdin)?;
    }
    let mut status = 0;
    // SAFETY: zeroed rusage is a valid out-parameter.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for our own child; `child` is not waited on afterwards.
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let wall = t.elapsed();
    if r < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let success = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    let err = std::fs::read_to_string(err_file.path()).unwrap_or_default();
    let cpu = timeval(ru.ru_utime) + timeval(ru.ru_stime);
    Ok((Measured { wall, cpu, max_rss_kib: ru.ru_maxrss as u64, success }, err))
}

/// Exclusive use of the host's 2Mi pool (the tests' guard, same lock), sized to `pages`; the
/// size it found is restored on drop.
pub fn pool_guard(pages: u64) -> Result<dataplane_tests::PoolGuard> {
    let waiting = format!("bench: waiting for the hugepage pool lock {POOL_LOCK} ...");
    dataplane_tests::PoolGuard::try_new(pages, Some(&waiting)).map_err(anyhow::Error::msg)
}

pub fn read_u64(path: &str) -> Result<u64> {
    Ok(std::fs::read_to_string(path).with_context(|| path.to_string())?.trim().parse()?)
}

/// (total, free, reserved) of the 2Mi pool.
pub fn pool() -> Result<(u64, u64, u64)> {
    Ok((
        read_u64(&format!("{HP2M}/nr_hugepages"))?,
        read_u64(&format!("{HP2M}/free_hugepages"))?,
        read_u64(&format!("{HP2M}/resv_hugepages"))?,
    ))
}

/// Order statistics of a sample of durations.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: Duration,
    pub p10: Duration,
    pub p90: Duration,
    pub min: Duration,
}

pub fn stats(sample: &[Duration]) -> Stats {
    let mut v = sample.to_vec();
    v.sort();
    let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    let median =
        if v.len() % 2 == 1 { v[v.len() / 2] } else { (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2 };
    Stats { median, p10: q(0.1), p90: q(0.9), min: v[0] }
}

/// A 95% confidence interval of median(sample) / median(base), by bootstrap: both samples
/// resampled with replacement 2000 times (fixed seed: the same data gives the same interval).
/// Says how far the run's noise alone could move the ratio.
pub fn ratio_ci(sample: &[Duration], base: &[Duration]) -> (f64, f64) {
    let mut rng = fastrand::Rng::with_seed(0x6470_6862);
    let mut resample = |v: &[Duration]| -> Duration {
        let r: Vec<Duration> = (0..v.len()).map(|_| v[rng.usize(..v.len())]).collect();
        stats(&r).median
    };
    let mut ratios: Vec<f64> =
        (0..2000).map(|_| resample(sample).as_secs_f64() / resample(base).as_secs_f64()).collect();
    ratios.sort_by(f64::total_cmp);
    (ratios[ratios.len() * 25 / 1000], ratios[ratios.len() * 975 / 1000 - 1])
}

pub fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The machine the figures come from, as a markdown table.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into());
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|k| k.parse::<u64>().ok())
        .map(|k| format!("{:.1} GiB", k as f64 / 1048576.0))
        .unwrap_or_else(|| "?".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    let os = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_else(|| "?".into());
    let runc = first_line("runc", &["--version"]);
    let cgroups = match dataplane_hook::host::cgroup::hugetlb_hierarchy() {
        Ok(h) => {
            let v2_root = std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .any(|l| l.contains(" /sys/fs/cgroup ") && l.contains(" - cgroup2 "));
            let layout = if v2_root {
                "v2"
            } else if h.version == dataplane_hook::host::cgroup::Version::V2 {
                "hybrid, hugetlb only on the unified hierarchy"
            } else if Path::new("/sys/fs/cgroup/unified").exists() {
                "hybrid, hugetlb on v1"
            } else {
                "v1"
            };
            format!("{layout} (hugetlb controller at {})", h.mount.display())
        }
        Err(e) => format!("? ({e})"),
    };
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M:%S UTC"]);
    let commit = first_line("git", &["rev-parse", "--short", "HEAD"]);
    // Only the code measured counts (others may be editing other parts of a shared tree).
    let dirty = Command::new("git")
        .args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            "hook",
            "bench",
            "Cargo.toml",
            "Cargo.lock",
        ])
        .output()
        .ok()
        .map(|o| !o.stdout.is_empty());
    let commit = match dirty {
        Some(true) => format!("{commit} (with uncommitted changes in hook/ or bench/)"),
        _ => commit,
    };
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let rows = [
        ("date", date),
        ("load average at start (1/5/15 min)", load.join(" ")),
        ("commit", commit),
        ("CPU", format!("{cpu}, {cores} cores")),
        ("memory", mem),
        ("OS", os),
        ("kernel", kernel),
        ("runc", runc),
        ("cgroups", cgroups),
    ];
    let mut s = String::from("| | |\n|---|---|\n");
    for (k, v) in rows {
        s += &format!("| {k} | {v} |\n");
    }
    s
}

/// argv[1] of the bench binary when runc runs it as a hook shim (see [`hook_shim`]).
pub const SHIM_FLAG: &str = "--hook-shim";

/// Hook shim: `dataplane-bench --hook-shim OUT HOOK ARGS...`. Runc runs this in place of the
/// hook; it runs the real hook with the same stdin (the state) and appends
/// `<stage> <wall ns> <peak RSS KiB> <ok>` for the hook process alone to OUT. Measures the
/// hook where runc really runs it (createRuntime: after the mounts, before pivot_root).
pub fn hook_shim(args: &[String]) -> i32 {
    let (Some(out), Some(hook)) = (args.first(), args.get(1)) else {
        eprintln!("dataplane-bench: {SHIM_FLAG} OUT HOOK ARGS...");
        return 2;
    };
    let mut state = Vec::new();
    if let Err(e) = std::io::Read::read_to_end(&mut std::io::stdin(), &mut state) {
        eprintln!("dataplane-bench: hook shim: reading the state: {e}");
        return 1;
    }
    let stage = args.last().cloned().unwrap_or_default();
    match measure(Command::new(hook).args(&args[2..]), &state) {
        Ok((m, err)) => {
            eprint!("{err}");
            let line = format!(
                "{stage} {} {} {} {}\n",
                m.wall.as_nanos(),
                m.max_rss_kib,
                m.success,
                m.cpu.as_nanos()
            );
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(out)
                .and_then(|mut f| f.write_all(line.as_bytes()));
            if m.success {
                0
            } else {
                1
            }
        }
        Err(e) => {
            eprintln!("dataplane-bench: hook shim: {e}");
            1
        }
    }
}

/// One line the hook shim wrote.
pub struct ShimRecord {
    pub stage: String,
    pub wall: Duration,
    pub cpu: Duration,
    pub max_rss_kib: u64,
}

pub fn read_shim_records(path: &Path) -> Vec<ShimRecord> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(ShimRecord {
                stage: f.first()?.to_string(),
                wall: Duration::from_nanos(f.get(1)?.parse().ok()?),
                max_rss_kib: f.get(2)?.parse().ok()?,
                cpu: Duration::from_nanos(f.get(4)?.parse().ok()?),
            })
        })
        .collect()
}

/// Adds hooks that run `hook` through the shim to the bundle's spec (plain runc then runs the
/// product's hook exactly where dataplane-runtime would have put it).
pub fn add_shimmed_hooks(bundle: &Path, hook: &Path, config: &Path, out: &Path) -> Result<()> {
    let path = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    let me = std::env::current_exe()?.display().to_string();
    let args =
        ["dataplane-bench", SHIM_FLAG, &out.display().to_string(), &hook.display().to_string()]
            .map(String::from);
    let mut args = args.to_vec();
    args.extend(["--config".to_string(), config.display().to_string()]);
    spec["hooks"] = dataplane_tests::hooks_d_spec(&me, &args);
    std::fs::write(&path, serde_json::to_vec_pretty(&spec)?)?;
    Ok(())
}
