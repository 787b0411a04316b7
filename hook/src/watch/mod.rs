//! Owns `dataplane-hook watch`, the node watchdog for GPU driver memory (G10).
//!
//! GPU drivers allocate system memory that no cgroup is charged for, so neither the container's
//! memory limit nor (on a thrashing node) the kernel OOM killer stops a runaway GPU workload
//! (shared/seeds/004: a 40g pod drove 31g of driver memory and the node went NotReady). The
//! hook carved a driver-memory headroom out of every GPU container's limit; this daemon checks
//! that the node's uncharged memory stays within the headroom granted, and kills a GPU
//! container's whole cgroup early when it does not — before the node thrashes.
//!
//! One thread, one `poll()`: the ledger directory (inotify: GPU containers come and go), the
//! memory PSI trigger (POLLPRI: the kernel says tasks stall on memory), and a timeout — the
//! periodic re-measure (`[watch] poll_interval_ms`, only while GPU containers run; idle it
//! wakes every few seconds). Rooms: [`estimator`] (what is uncharged), [`baseline`],
//! [`inventory`] (GPU containers and their headroom), [`psi`], [`policy`] (when and whom, pure),
//! [`attribution`] (per-container providers), [`killer`], [`metrics`].

pub mod attribution;
pub mod baseline;
pub mod estimator;
pub mod inventory;
pub mod killer;
pub mod metrics;
pub mod policy;
pub mod psi;

use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::fs::inotify;

use crate::config::{Config, Loaded, WatchConfig};
use crate::host::cgroup::{self, Version};
use crate::host::proc::ProcessId;
use crate::ledger::{now_unix, read_containers_unlocked};
use crate::request::Bytes;

use self::attribution::{Attribution, Unattributed};
use self::estimator::Estimator;
use self::inventory::GpuContainer;
use self::killer::Killer;
use self::metrics::Metrics;
use self::policy::{Candidate, Observation, Policy, Thresholds, Verdict, Why};

/// How often the baseline follows the node while no GPU container runs.
const BASELINE_EVERY_MS: u64 = 5_000;
/// How often the liveness of known containers is checked (a lost poststop leaves a record).
const LIVENESS_EVERY_MS: u64 = 1_000;

pub fn run(loaded: &Loaded) -> anyhow::Result<()> {
    let mut d = Daemon::new(&loaded.config)?;
    d.run()
}

/// Formats a signed byte count (`-12Mi`).
fn sbytes(v: i64) -> String {
    if v < 0 {
        format!("-{}", mib(v.unsigned_abs()))
    } else {
        mib(v as u64)
    }
}
fn mib(v: u64) -> String {
    let b = Bytes(v);
    if v.is_multiple_of(1 << 20) {
        b.to_string()
    } else {
        format!("{:.1}Mi", v as f64 / (1u64 << 20) as f64)
    }
}

/// One line on stderr (journald / `kubectl logs`) and in the log file.
macro_rules! say {
    ($lvl:ident, $($arg:tt)*) => {{
        let m = format!($($arg)*);
        tracing::$lvl!("{m}");
        eprintln!("dataplane-hook watch: {m}");
    }};
}

pub struct Daemon {
    cfg: WatchConfig,
    state_dir: PathBuf,
    start: Instant,
    est: Estimator,
    psi: Option<psi::Trigger>,
    inotify: OwnedFd,
    killer: Killer,
    policy: Policy,
    attribution: Box<dyn Attribution>,
    metrics: Metrics,
    boot_id: String,
    baseline: i64,
    gpus: Vec<GpuContainer>,
    /// Inits of every other container in the ledger: protected from any kill.
    others: Vec<ProcessId>,
    dirty: bool,
    was_over: bool,
    next_liveness: u64,
    next_baseline: u64,
    next_metrics: u64,
    pressure_until: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot watch {path}: {source} (check `state_dir` in the config)")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("cannot read the node's memory: {0} (is /proc mounted?)")]
    Meminfo(std::io::Error),
    #[error("cannot find the memory cgroup hierarchy: {0} (mount the host's cgroup filesystem)")]
    Cgroup(cgroup::CgroupError),
}

impl Daemon {
    pub fn new(cfg: &Config) -> Result<Daemon, WatchError> {
        let w = cfg.watch.clone();
        let state_dir = cfg.state_dir.clone();
        let containers = state_dir.join("containers");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&containers)
            .map_err(|source| WatchError::StateDir { path: containers.clone(), source })?;
        let ino = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .map_err(|e| WatchError::StateDir { path: containers.clone(), source: e.into() })?;
        inotify::add_watch(
            &ino,
            &containers,
            inotify::WatchFlags::CREATE
                | inotify::WatchFlags::MOVED_TO
                | inotify::WatchFlags::DELETE
                | inotify::WatchFlags::CLOSE_WRITE,
        )
        .map_err(|e| WatchError::StateDir { path: containers.clone(), source: e.into() })?;

        let h = cgroup::memory_hierarchy().map_err(WatchError::Cgroup)?;
        let v2_root = (h.version == Version::V2).then(|| h.mount.clone());
        let mut est = Estimator::new(Path::new("/proc"), v2_root, w.count_hugetlb)
            .map_err(WatchError::Meminfo)?;

        let psi = if w.pressure_trigger.is_empty() {
            None
        } else {
            let (full, stall, window) =
                crate::config::parse_pressure_trigger(&w.pressure_trigger).expect("validated");
            match psi::Trigger::arm(Path::new("/proc/pressure/memory"), full, stall, window) {
                Ok(t) => {
                    if t.degraded {
                        say!(warn, "PSI trigger {:?} needs CAP_SYS_RESOURCE; armed {:?} instead (pressure is seen up to {} ms later)", w.pressure_trigger, t.describe(), t.window_us / 1000);
                    }
                    Some(t)
                }
                Err(e) => {
                    say!(warn, "memory pressure is not watched: {e}; uncharged memory still is");
                    None
                }
            }
        };

        // Stay resident while the node thrashes: lock what is mapped now, as it is touched
        // (ONFAULT: no prefault, so the RSS stays what we use). Best effort.
        // SAFETY: mlockall takes flags only.
        if unsafe { libc::mlockall(libc::MCL_CURRENT | libc::MCL_ONFAULT) } != 0 {
            tracing::debug!("mlockall: {}", std::io::Error::last_os_error());
        }
        let _ = std::fs::write("/proc/self/oom_score_adj", "-1000");

        let boot_id = baseline::boot_id();
        let records = read_containers_unlocked(&state_dir).0;
        let (mut gpus, _) = inventory::classify(&records);
        gpus.retain(|g| g.init.is_alive());
        let now = est.full().map_err(WatchError::Meminfo)?;
        let base = match (gpus.is_empty(), baseline::load(&state_dir, &boot_id, w.count_hugetlb)) {
            (true, _) => now.uncharged,
            (false, Some(saved)) => {
                say!(
                    info,
                    "{} GPU containers already run: using the baseline saved at {} ({})",
                    gpus.len(),
                    saved.taken,
                    sbytes(saved.bytes)
                );
                saved.bytes
            }
            (false, None) => {
                say!(warn, "{} GPU containers already run and no baseline of this boot is saved: the baseline ({}) includes their driver memory, so kills come late by that much", gpus.len(), sbytes(now.uncharged));
                now.uncharged
            }
        };
        let policy = Policy::new(Thresholds {
            tolerance: w.tolerance.0,
            sustain_ms: w.sustain_ms,
            settle_ms: w.settle_ms,
        });
        let killer = Killer::new(h.clone());
        say!(
            info,
            "watching: memory hierarchy {} ({:?}), baseline {} uncharged, poll {} ms, sustain {} ms, tolerance {}, pressure {}, attribution {}{}",
            h.mount.display(),
            h.version,
            sbytes(base),
            w.poll_interval_ms,
            w.sustain_ms,
            w.tolerance,
            psi.as_ref().map(|t| t.describe()).unwrap_or_else(|| "off".into()),
            Unattributed.name(),
            if w.dry_run { ", DRY RUN" } else { "" }
        );
        let d = Daemon {
            cfg: w,
            state_dir,
            start: Instant::now(),
            est,
            psi,
            inotify: ino,
            killer,
            policy,
            attribution: Box::new(Unattributed),
            metrics: Metrics { baseline: base, ..Default::default() },
            boot_id,
            baseline: base,
            gpus: vec![],
            others: vec![],
            dirty: true,
            was_over: false,
            next_liveness: 0,
            next_baseline: 0,
            next_metrics: 0,
            pressure_until: 0,
        };
        d.save_baseline();
        Ok(d)
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn run(&mut self) -> anyhow::Result<()> {
        loop {
            let now = self.now_ms();
            let wait = self.tick(now);
            self.wait(wait);
        }
    }

    /// Blocks until an event or `ms` passed; records what woke us.
    fn wait(&mut self, ms: u64) {
        let ts = Timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 };
        let psi_fd = self.psi.as_ref().map(|t| t.fd());
        let mut fds = vec![PollFd::from_borrowed_fd(self.inotify.as_fd(), PollFlags::IN)];
        if let Some(fd) = psi_fd {
            fds.push(PollFd::from_borrowed_fd(fd, PollFlags::PRI));
        }
        match poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let ino_ready = fds[0].revents().contains(PollFlags::IN);
        let psi_rev = fds.get(1).map(|f| f.revents());
        drop(fds);
        if ino_ready {
            let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
            let mut r = inotify::Reader::new(&self.inotify, &mut buf);
            while r.next().is_ok() {}
            self.dirty = true;
        }
        if let Some(rev) = psi_rev {
            if rev.intersects(PollFlags::ERR | PollFlags::NVAL) {
                say!(warn, "the memory PSI trigger was destroyed; pressure is no longer watched");
                self.psi = None;
            } else if rev.contains(PollFlags::PRI) {
                let now = self.now_ms();
                let window = self.psi.as_ref().map(|t| t.window_us / 1000).unwrap_or(1000);
                self.pressure_until = now.saturating_add(window);
                self.metrics.pressure_events += 1;
                let text =
                    crate::host::read_kernel_file("/proc/pressure/memory").unwrap_or_default();
                tracing::info!(avg10 = ?psi::avg10(&text, false), "memory pressure trigger fired");
            }
        }
    }

    /// Re-reads the ledger's containers (lock-free).
    fn refresh(&mut self) {
        let (records, bad) = read_containers_unlocked(&self.state_dir);
        for e in bad {
            tracing::warn!("ledger: {e}");
        }
        let (mut gpus, others) = inventory::classify(&records);
        gpus.retain(|g| g.init.is_alive());
        let before: Vec<String> = self.gpus.iter().map(|g| g.id.clone()).collect();
        let after: Vec<String> = gpus.iter().map(|g| g.id.clone()).collect();
        if before != after {
            let granted = policy::granted(gpus.iter().map(|g| g.headroom));
            say!(
                info,
                "{} GPU containers, {} of headroom granted [{}]; baseline {}",
                gpus.len(),
                mib(granted),
                after.join(", "),
                sbytes(self.baseline)
            );
        }
        self.gpus = gpus;
        self.others = others;
        self.dirty = false;
    }

    fn save_baseline(&self) {
        let s = baseline::Saved {
            boot_id: self.boot_id.clone(),
            count_hugetlb: self.cfg.count_hugetlb,
            bytes: self.baseline,
            taken: now_unix(),
        };
        if let Err(e) = baseline::save(&self.state_dir, &s) {
            tracing::warn!("cannot save the baseline: {e}");
        }
    }

    fn write_metrics(&mut self, now: u64) {
        self.next_metrics = now.saturating_add(self.cfg.metrics_interval_ms);
        if self.cfg.metrics_file.as_os_str().is_empty() {
            return;
        }
        self.metrics.baseline = self.baseline;
        self.metrics.granted = policy::granted(self.gpus.iter().map(|g| g.headroom));
        self.metrics.gpu_containers = self.gpus.len();
        if let Err(e) = self.metrics.write(&self.cfg.metrics_file) {
            tracing::warn!("cannot write metrics {}: {e}", self.cfg.metrics_file.display());
        }
    }

    /// One decision round; returns how long to sleep (ms).
    pub fn tick(&mut self, now: u64) -> u64 {
        if self.dirty {
            self.refresh();
        } else if now >= self.next_liveness && !self.gpus.is_empty() {
            let n = self.gpus.len();
            self.gpus.retain(|g| g.init.is_alive());
            if self.gpus.len() != n {
                self.dirty = true; // re-read: a record may have gone too
                self.refresh();
            }
        }
        if now >= self.next_liveness {
            self.next_liveness = now.saturating_add(LIVENESS_EVERY_MS);
        }

        if self.gpus.is_empty() {
            self.policy.reset();
            self.was_over = false;
            if now >= self.next_baseline {
                self.next_baseline = now.saturating_add(BASELINE_EVERY_MS);
                match self.est.full() {
                    Ok(e) => {
                        let moved =
                            e.uncharged.saturating_sub(self.baseline).unsigned_abs() >= 1 << 20;
                        self.baseline = e.uncharged;
                        self.metrics.uncharged = 0;
                        if moved {
                            self.save_baseline();
                        }
                    }
                    Err(e) => tracing::warn!("cannot measure: {e}"),
                }
            }
            if now >= self.next_metrics {
                self.write_metrics(now);
            }
            return self.next_baseline.min(self.next_metrics).saturating_sub(now).max(1);
        }

        let pressure = now < self.pressure_until;
        let granted = policy::granted(self.gpus.iter().map(|g| g.headroom));
        let threshold = if pressure { 0 } else { policy::signed(self.cfg.tolerance.0) };
        let (mut uncharged, mut full) = match self.est.fast() {
            Ok((fast, _)) => (fast.saturating_sub(self.baseline), None),
            Err(e) => {
                tracing::warn!("cannot measure: {e}");
                return self.cfg.poll_interval_ms;
            }
        };
        // The full estimate only lowers the fast one: read it only when the fast one is over.
        let excess = Observation { now_ms: now, uncharged, granted, pressure }.excess();
        if excess > threshold || now >= self.next_metrics {
            if let Ok(e) = self.est.full() {
                uncharged = e.uncharged.saturating_sub(self.baseline);
                full = Some(e);
            }
        }
        if full.is_some() {
            self.metrics.uncharged = uncharged;
        }
        let obs = Observation { now_ms: now, uncharged, granted, pressure };
        let candidates: Vec<Candidate> = self
            .gpus
            .iter()
            .map(|g| Candidate {
                id: g.id.clone(),
                start_time: g.init.start_time,
                headroom: g.headroom,
            })
            .collect();
        let attributed = self.attribution.sample(&self.gpus);
        let verdict = self.policy.observe(&obs, &candidates, attributed.as_ref());
        match &verdict {
            Verdict::Over { .. } if !self.was_over => {
                self.was_over = true;
                say!(
                    info,
                    "over budget: {} uncharged above the baseline, {} granted to {} GPU containers (excess {}, tolerance {}{})",
                    sbytes(uncharged),
                    mib(granted),
                    self.gpus.len(),
                    sbytes(obs.excess()),
                    self.cfg.tolerance,
                    if pressure { ", memory pressure" } else { "" }
                );
            }
            Verdict::UnderBudget if self.was_over => {
                self.was_over = false;
                say!(
                    info,
                    "back under budget: {} uncharged above the baseline, {} granted",
                    sbytes(uncharged),
                    mib(granted)
                );
            }
            Verdict::NoVictim => {
                say!(warn, "uncharged memory {} exceeds the {} granted, but no GPU container is left to kill (another user holds it)", sbytes(uncharged), mib(granted));
            }
            Verdict::Kill { victim, why, since_ms, by_attribution } => {
                self.was_over = true; // a pressure kill has no Over verdict before it
                self.kill(victim, *why, *since_ms, *by_attribution, &obs);
                self.write_metrics(self.now_ms());
            }
            _ => {}
        }
        if now >= self.next_metrics {
            self.write_metrics(now);
        }
        let now = self.now_ms();
        let mut wait = self.cfg.poll_interval_ms;
        if let Some(d) = self.policy.deadline().filter(|d| *d > now) {
            wait = wait.min(d - now);
        }
        wait.min(self.next_metrics.saturating_sub(now)).max(1)
    }

    fn kill(
        &mut self,
        victim: &str,
        why: Why,
        since_ms: u64,
        by_attribution: bool,
        o: &Observation,
    ) {
        let Some(v) = self.gpus.iter().find(|g| g.id == victim).cloned() else { return };
        let mut protect = self.others.clone();
        protect.extend(self.gpus.iter().filter(|g| g.id != victim).map(|g| g.init));
        let why_s = match why {
            Why::Budget => format!(
                "over by more than the {} tolerance for {} ms",
                self.cfg.tolerance, self.cfg.sustain_ms
            ),
            Why::Pressure => {
                let t = crate::host::read_kernel_file("/proc/pressure/memory").unwrap_or_default();
                let trig = self.psi.as_ref().map(|t| t.describe()).unwrap_or_default();
                format!(
                    "over while memory pressure fired (PSI trigger \"{trig}\"; some avg10 {:.2}%)",
                    psi::avg10(&t, false).unwrap_or(0.0)
                )
            }
        };
        let order = if by_attribution {
            format!("attribution ({})", self.attribution.name())
        } else {
            "youngest GPU container first".into()
        };
        let numbers = format!(
            "uncharged memory {} above the baseline exceeds the {} of headroom granted to {} GPU containers by {}, {why_s}; victim {} ({} GPUs, {} headroom) chosen by {order}",
            sbytes(o.uncharged),
            mib(o.granted),
            self.gpus.len(),
            sbytes(o.excess()),
            v.id,
            v.gpus,
            mib(v.headroom),
        );
        if self.cfg.dry_run {
            say!(warn, "dry run: would kill GPU container {}: {numbers}", v.id);
            self.metrics.dry_run_kills += 1;
        } else {
            match self.killer.kill(&v, &protect) {
                Ok(k) => {
                    let reaction = self.now_ms().saturating_sub(since_ms);
                    say!(
                        warn,
                        "killed GPU container {} (cgroup {}, {}, {} processes, {} rounds, {:.1} ms; {} ms after the budget was crossed): {numbers}",
                        v.id,
                        k.cgroup.display(),
                        k.method,
                        k.signalled,
                        k.rounds,
                        k.elapsed.as_secs_f64() * 1000.0,
                        reaction
                    );
                    self.metrics.kills += 1;
                    self.metrics.last_reaction_seconds = Some(reaction as f64 / 1000.0);
                    self.metrics.last_kill_unix = Some(now_unix());
                }
                Err(killer::KillError::Gone { .. }) => {
                    say!(info, "GPU container {} exited before it could be killed", v.id)
                }
                Err(e) => say!(error, "{e} ({numbers})"),
            }
        }
        let now = self.now_ms();
        self.policy.killed(victim, now);
        self.dirty = true;
    }
}
