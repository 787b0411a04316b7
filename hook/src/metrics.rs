//! Owns the hooks' metrics in the Prometheus text format, for node_exporter's textfile collector
//! (`[metrics] textfile_dir`, file `dataplane_hook.prom`; `watch` writes its own
//! `dataplane_hook_watch.prom`, see `watch::metrics`).
//!
//! Every hook is a short-lived process, so counters live in the state dir (`metrics.json`):
//! code anywhere in the process [`note`]s events into a process-wide buffer, and the edge
//! (`cli`, the wrapper) calls [`flush`] once at the end: under `metrics.lock` (not the ledger's
//! lock, so a hook never holds the ledger longer for metrics) it folds the events into the
//! counters, writes them back (temp file + rename) and renders the textfile (temp dot-file +
//! rename: the collector reads `*.prom` only and never sees half a file) if that directory
//! exists (it is node_exporter's to make). Gauges (containers,
//! reserved pages, pools) are read fresh at each flush. Nothing here ever fails a hook: a flush
//! that cannot write is logged.
//!
//! The counters file is not fsync'd (a power loss may lose the last increments; Prometheus
//! treats any decrease as a counter reset) and, with the state dir on /run, resets at boot.

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::host::sysfs::Sysfs;
use crate::ledger::{ContainerRecord, GroupRecord};
use crate::request::PageSize;

pub const TEXTFILE_NAME: &str = "dataplane_hook.prom";
pub const COUNTERS_FILE: &str = "metrics.json";
const LOCK_FILE: &str = "metrics.lock";

/// Hook latency buckets (seconds): a create is milliseconds; a group's first member or a busy
/// ledger lock can take a second or more.
pub const BUCKETS: [f64; 12] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Something worth counting, noted where it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A container's hugepage request of `size` was met with a reservation, or refused.
    Request { size: PageSize, granted: bool },
    /// Pages reserved in the kernel (a container's private hugetlbfs, or a group's).
    Reserved { size: PageSize, pages: u64 },
    /// Reserved pages given back at teardown.
    Released { size: PageSize, pages: u64 },
    /// Files an application left in a hugetlbfs, reclaimed at teardown, and the pages they
    /// held. `origin`: "prefix" (removed from the host's hugetlbfs, G3) or "group" (left in a
    /// group's hugetlbfs when its last member went, released with the holder).
    Leaked { origin: &'static str, size: Option<PageSize>, files: u64, pages: u64 },
    /// A teardown (poststop, gc, failed create) that released everything, or left entries for
    /// the next gc.
    Teardown { complete: bool },
    /// One gc sweep (not dry runs): containers and groups released, problems.
    Gc { released: u64, groups: u64, errors: u64 },
    /// A hook run: stage, wall time, whether it succeeded.
    Hook { stage: String, seconds: f64, ok: bool },
}

static EVENTS: Mutex<Vec<Event>> = Mutex::new(Vec::new());

/// Records an event for the next [`flush`] of this process. Cheap: a push under a mutex.
pub fn note(e: Event) {
    EVENTS.lock().unwrap_or_else(|p| p.into_inner()).push(e);
}

fn take() -> Vec<Event> {
    std::mem::take(&mut *EVENTS.lock().unwrap_or_else(|p| p.into_inner()))
}

fn pending() -> bool {
    !EVENTS.lock().unwrap_or_else(|p| p.into_inner()).is_empty()
}

/// The page size a one-line error refuses a reservation of, if it is one. The SPEC fixes the
/// message form (`cannot reserve <bytes> of <size> hugepages for ...`) for every path that
/// refuses one (plan check, kernel refusal, group holder, wrapper), so the text is the contract.
pub fn refused_size(message: &str) -> Option<PageSize> {
    let i = message.find("cannot reserve ")?;
    let rest = &message[i..];
    PageSize::ALL.into_iter().find(|s| {
        rest.split(':').next().is_some_and(|head| head.contains(&format!(" of {s} hugepages")))
    })
}

/// Notes what a successful create was granted: its hugepage requests (prefix mode reserves
/// nothing of ours: not counted) and the kernel reservations made for it.
pub fn granted(req: &crate::request::Request, plan: &crate::plan::Plan, reserve: bool) {
    if req.file_prefix.is_some() {
        return;
    }
    for size in req.hugepages.keys() {
        note(Event::Request { size: *size, granted: true });
    }
    if reserve {
        for (size, bytes) in &plan.reservations() {
            note(Event::Reserved { size: *size, pages: bytes.pages(*size) });
        }
    }
}

/// Notes the end of a hook stage (and a refusal, if its error is one), then flushes.
pub fn hook_done(cfg: &Config, stage: &str, elapsed: Duration, err: Option<&anyhow::Error>) {
    if let Some(size) = err.and_then(|e| refused_size(&crate::log::one_line(e))) {
        note(Event::Request { size, granted: false });
    }
    note(Event::Hook {
        stage: stage.to_string(),
        seconds: elapsed.as_secs_f64(),
        ok: err.is_none(),
    });
    flush_logged(cfg);
}

/// The wrapper's end: a refusal it made (a group's first member) is noted; anything pending is
/// flushed. Does nothing (no file access) when nothing happened.
pub fn wrapper_done(cfg: &Config, err: Option<&anyhow::Error>) {
    if let Some(size) = err.and_then(|e| refused_size(&crate::log::one_line(e))) {
        note(Event::Request { size, granted: false });
    }
    if pending() {
        flush_logged(cfg);
    }
}

/// Flushes, logging (never returning) a failure.
pub fn flush_logged(cfg: &Config) {
    if let Err(e) = flush(cfg) {
        tracing::warn!("cannot update metrics: {e}");
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{op} {path}: {source}")]
pub struct MetricsError {
    op: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> MetricsError + 'a {
    move |source| MetricsError { op, path: path.to_path_buf(), source }
}

/// A latency histogram: per-bucket (non-cumulative) counts, count, sum.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        self.buckets.resize(BUCKETS.len(), 0);
        if let Some(i) = BUCKETS.iter().position(|le| v <= *le) {
            self.buckets[i] += 1;
        }
        self.count += 1;
        self.sum += v;
    }
}

/// The persistent counters: family → rendered label set → value.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    #[serde(default)]
    pub counters: BTreeMap<String, BTreeMap<String, u64>>,
    #[serde(default)]
    pub histograms: BTreeMap<String, BTreeMap<String, Histogram>>,
}

fn labels(pairs: &[(&str, &str)]) -> String {
    pairs.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect::<Vec<_>>().join(",")
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

impl Counters {
    fn add(&mut self, family: &str, labels: String, n: u64) {
        *self.counters.entry(family.to_string()).or_default().entry(labels).or_default() += n;
    }

    pub fn get(&self, family: &str, labels: &str) -> u64 {
        self.counters.get(family).and_then(|m| m.get(labels)).copied().unwrap_or(0)
    }

    pub fn apply(&mut self, events: &[Event]) {
        for e in events {
            match e {
                Event::Request { size, granted } => {
                    let result = if *granted { "granted" } else { "refused" };
                    self.add(
                        "reservations_total",
                        labels(&[("size", size.name()), ("result", result)]),
                        1,
                    );
                }
                Event::Reserved { size, pages } => {
                    self.add("reserved_pages_total", labels(&[("size", size.name())]), *pages)
                }
                Event::Released { size, pages } => {
                    self.add("released_pages_total", labels(&[("size", size.name())]), *pages)
                }
                Event::Leaked { origin, size, files, pages } => {
                    self.add("leaked_files_reclaimed_total", labels(&[("origin", origin)]), *files);
                    if let Some(s) = size {
                        self.add(
                            "leaked_pages_reclaimed_total",
                            labels(&[("origin", origin), ("size", s.name())]),
                            *pages,
                        );
                    }
                }
                Event::Teardown { complete } => {
                    let result = if *complete { "complete" } else { "incomplete" };
                    self.add("teardowns_total", labels(&[("result", result)]), 1);
                }
                Event::Gc { released, groups, errors } => {
                    self.add("gc_runs_total", String::new(), 1);
                    self.add(
                        "gc_actions_total",
                        labels(&[("action", "release_container")]),
                        *released,
                    );
                    self.add("gc_actions_total", labels(&[("action", "release_group")]), *groups);
                    self.add("gc_errors_total", String::new(), *errors);
                }
                Event::Hook { stage, seconds, ok } => {
                    let l = labels(&[("stage", stage)]);
                    self.histograms
                        .entry("hook_duration_seconds".into())
                        .or_default()
                        .entry(l.clone())
                        .or_default()
                        .observe(*seconds);
                    if !ok {
                        self.add("hook_failures_total", l, 1);
                    } else {
                        self.add("hook_failures_total", l, 0);
                    }
                }
            }
        }
    }
}

/// What the node looks like now (gauges, read fresh at each flush).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Gauges {
    /// Page sizes the kernel has, with its pool counters.
    pub pools: BTreeMap<PageSize, crate::host::sysfs::Pool>,
    /// Live containers with a ledger record.
    pub containers: u64,
    pub groups: u64,
    /// Pages reserved by live containers and live groups.
    pub reserved: BTreeMap<PageSize, u64>,
    pub now_unix: u64,
}

impl Gauges {
    pub fn read(state_dir: &Path) -> Gauges {
        let mut g = Gauges { now_unix: crate::ledger::now_unix(), ..Default::default() };
        let sysfs = Sysfs::default();
        for size in PageSize::ALL {
            if let Some(p) = sysfs.pool(size) {
                g.pools.insert(size, p);
                g.reserved.insert(size, 0);
            }
        }
        let (records, _) = crate::ledger::read_containers_unlocked(state_dir);
        for rec in records.iter().filter(|r| r.init.is_alive()) {
            g.add_container(rec);
        }
        for grp in read_groups_unlocked(state_dir) {
            if grp.holder.is_some_and(|h| h.is_alive()) {
                g.groups += 1;
                for (size, bytes) in &grp.reservations {
                    *g.reserved.entry(*size).or_default() += bytes.pages(*size);
                }
            }
        }
        g
    }

    fn add_container(&mut self, rec: &ContainerRecord) {
        self.containers += 1;
        for size in PageSize::ALL {
            let p = rec.reserved_pages(size);
            if p > 0 {
                *self.reserved.entry(size).or_default() += p;
            }
        }
    }
}

fn read_groups_unlocked(state_dir: &Path) -> Vec<GroupRecord> {
    let Ok(rd) = std::fs::read_dir(state_dir.join("groups")) else { return vec![] };
    rd.flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| n.ends_with(".json") && !n.starts_with('.'))
        })
        .filter_map(|e| serde_json::from_slice(&std::fs::read(e.path()).ok()?).ok())
        .collect()
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
}

const COUNTER_FAMILIES: &[Family] = &[
    Family { name: "reservations_total", kind: "counter", help: "Hugepage requests of containers by page size: met with a reservation (granted) or refused at create." },
    Family { name: "reserved_pages_total", kind: "counter", help: "Hugepages reserved in the kernel at create (containers' private hugetlbfs and DPDK groups')." },
    Family { name: "released_pages_total", kind: "counter", help: "Reserved hugepages given back at teardown." },
    Family { name: "leaked_files_reclaimed_total", kind: "counter", help: "Hugepage files applications left behind, reclaimed at teardown (prefix: removed from the host's hugetlbfs; group: left in a group's hugetlbfs by its last member)." },
    Family { name: "leaked_pages_reclaimed_total", kind: "counter", help: "Hugepages held by leaked files, reclaimed at teardown." },
    Family { name: "teardowns_total", kind: "counter", help: "Teardowns (poststop, gc, failed creates): complete, or incomplete (left for the next gc)." },
    Family { name: "gc_runs_total", kind: "counter", help: "Garbage-collection sweeps (dataplane-hook gc and the one at every create)." },
    Family { name: "gc_actions_total", kind: "counter", help: "What gc released: containers and DPDK groups whose processes were gone." },
    Family { name: "gc_errors_total", kind: "counter", help: "Problems gc met (corrupt records, partial teardowns)." },
    Family { name: "hook_failures_total", kind: "counter", help: "Hook runs that failed, by stage." },
];

/// The textfile: HELP/TYPE per family, series in a stable order.
pub fn render(c: &Counters, g: &Gauges) -> String {
    let mut c = c.clone();
    // Every size the kernel has shows both results from the start, so rate() works at once.
    for size in g.pools.keys() {
        for result in ["granted", "refused"] {
            c.add("reservations_total", labels(&[("size", size.name()), ("result", result)]), 0);
        }
        for f in ["reserved_pages_total", "released_pages_total"] {
            c.add(f, labels(&[("size", size.name())]), 0);
        }
    }
    for origin in ["prefix", "group"] {
        c.add("leaked_files_reclaimed_total", labels(&[("origin", origin)]), 0);
    }
    for result in ["complete", "incomplete"] {
        c.add("teardowns_total", labels(&[("result", result)]), 0);
    }
    c.add("gc_runs_total", String::new(), 0);
    c.add("gc_errors_total", String::new(), 0);
    for action in ["release_container", "release_group"] {
        c.add("gc_actions_total", labels(&[("action", action)]), 0);
    }

    let mut s = String::new();
    let header = |s: &mut String, name: &str, kind: &str, help: &str| {
        s.push_str(&format!(
            "# HELP dataplane_hook_{name} {help}\n# TYPE dataplane_hook_{name} {kind}\n"
        ));
    };
    let series = |s: &mut String, name: &str, l: &str, v: String| {
        if l.is_empty() {
            s.push_str(&format!("dataplane_hook_{name} {v}\n"));
        } else {
            s.push_str(&format!("dataplane_hook_{name}{{{l}}} {v}\n"));
        }
    };
    for f in COUNTER_FAMILIES {
        let Some(m) = c.counters.get(f.name) else { continue };
        header(&mut s, f.name, f.kind, f.help);
        for (l, v) in m {
            series(&mut s, f.name, l, v.to_string());
        }
    }
    if let Some(m) = c.histograms.get("hook_duration_seconds") {
        header(
            &mut s,
            "hook_duration_seconds",
            "histogram",
            "Wall time of hook runs (createRuntime, poststop), from start to the state written.",
        );
        for (l, h) in m {
            let mut cum = 0;
            for (i, le) in BUCKETS.iter().enumerate() {
                cum += h.buckets.get(i).copied().unwrap_or(0);
                series(
                    &mut s,
                    "hook_duration_seconds_bucket",
                    &format!("{l},le=\"{le}\""),
                    cum.to_string(),
                );
            }
            series(
                &mut s,
                "hook_duration_seconds_bucket",
                &format!("{l},le=\"+Inf\""),
                h.count.to_string(),
            );
            series(&mut s, "hook_duration_seconds_sum", l, format!("{:.6}", h.sum));
            series(&mut s, "hook_duration_seconds_count", l, h.count.to_string());
        }
    }
    header(&mut s, "containers", "gauge", "Live containers set up by the hook.");
    series(&mut s, "containers", "", g.containers.to_string());
    header(&mut s, "groups", "gauge", "Live DPDK groups.");
    series(&mut s, "groups", "", g.groups.to_string());
    if !g.reserved.is_empty() {
        header(
            &mut s,
            "reserved_pages",
            "gauge",
            "Hugepages reserved now by live containers and groups.",
        );
        for (size, p) in &g.reserved {
            series(&mut s, "reserved_pages", &labels(&[("size", size.name())]), p.to_string());
        }
    }
    if !g.pools.is_empty() {
        header(
            &mut s,
            "pool_pages",
            "gauge",
            "The kernel's hugepage pool per page size (total, free, reserved, surplus).",
        );
        for (size, p) in &g.pools {
            for (state, v) in [
                ("total", p.total),
                ("free", p.free),
                ("reserved", p.reserved),
                ("surplus", p.surplus),
            ] {
                series(
                    &mut s,
                    "pool_pages",
                    &labels(&[("size", size.name()), ("state", state)]),
                    v.to_string(),
                );
            }
        }
    }
    header(
        &mut s,
        "metrics_updated_timestamp_seconds",
        "gauge",
        "When a hook or gc last wrote this file.",
    );
    series(&mut s, "metrics_updated_timestamp_seconds", "", g.now_unix.to_string());
    s
}

/// Reads the counters file; a missing or unreadable one starts from zero (a counter reset).
pub fn load_counters(state_dir: &Path) -> Counters {
    let p = state_dir.join(COUNTERS_FILE);
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
            tracing::warn!(
                "metrics counters {} are corrupt ({e}); starting from zero",
                p.display()
            );
            Counters::default()
        }),
        Err(_) => Counters::default(),
    }
}

/// Writes `bytes` to `path` atomically with exactly `mode` (the textfile's temp is a dot-file,
/// which the collector's `*.prom` never picks up).
fn replace(path: &Path, bytes: &[u8], mode: u32) -> Result<(), MetricsError> {
    use crate::host::atomic_file::{write, Mode, Options};
    write(path, bytes, Options::new(Mode::Exactly(mode))).map_err(err("write", path))
}

/// Folds this process's events into the counters and rewrites the textfile.
pub fn flush(cfg: &Config) -> Result<(), MetricsError> {
    flush_events(cfg, &take())
}

/// Folds `events` into the counters and rewrites the textfile.
pub fn flush_events(cfg: &Config, events: &[Event]) -> Result<(), MetricsError> {
    let sd = &cfg.state_dir;
    let lock_path = sd.join(LOCK_FILE);
    let open_lock = || crate::ledger::open_lock_file(&lock_path);
    // A hook has made the state dir already (the ledger); make it here only when it is missing.
    let lock = match open_lock() {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(sd)
                .map_err(err("mkdir", sd))?;
            open_lock()
        }
        r => r,
    }
    .map_err(err("open", &lock_path))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| err("lock", &lock_path)(e.into()))?;
    let mut c = load_counters(sd);
    c.apply(events);
    if !events.is_empty() {
        replace(&sd.join(COUNTERS_FILE), &serde_json::to_vec(&c).expect("serializes"), 0o600)?;
    }
    // Only into a directory that exists: a node without node_exporter gets no stray directory
    // (its collector's directory is made by its package or its DaemonSet's hostPath).
    let dir = &cfg.metrics.textfile_dir;
    if !dir.as_os_str().is_empty() && dir.is_dir() {
        let text = render(&c, &Gauges::read(sd));
        replace(&dir.join(TEXTFILE_NAME), text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// Counts `dir`'s regular files and the hugepages they hold (a hugetlbfs: st_blocks are 512
/// bytes). For a group's hugetlbfs once its last member is gone: every file there is a leak.
pub fn hugetlbfs_usage(dir: &Path, size: PageSize) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let Ok(rd) = std::fs::read_dir(dir) else { return (0, 0) };
    let mut files = 0;
    let mut bytes = 0;
    for e in rd.flatten() {
        if let Ok(m) = e.metadata() {
            if m.is_file() {
                files += 1;
                bytes += m.blocks() * 512;
            }
        }
    }
    (files, bytes.div_ceil(size.bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sysfs::Pool;
    use std::os::unix::fs::PermissionsExt;

    fn gauges() -> Gauges {
        Gauges {
            pools: [
                (PageSize::Size2Mi, Pool { total: 64, free: 60, reserved: 8, surplus: 0 }),
                (PageSize::Size1Gi, Pool::default()),
            ]
            .into_iter()
            .collect(),
            containers: 2,
            groups: 1,
            reserved: [(PageSize::Size2Mi, 8), (PageSize::Size1Gi, 0)].into_iter().collect(),
            now_unix: 1_700_000_000,
        }
    }

    /// Every sample line is `name{labels} value` with a parseable value, every family has
    /// HELP and TYPE before its samples, and no family appears twice.
    fn check_format(text: &str) {
        let mut typed: Vec<String> = vec![];
        for l in text.lines() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(!typed.contains(&name), "family {name} twice");
                typed.push(name);
                continue;
            }
            if l.starts_with("# HELP ") {
                continue;
            }
            let (series, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("{l}"));
            assert!(value.parse::<f64>().is_ok(), "{l}");
            let name = series.split('{').next().unwrap();
            assert!(name.starts_with("dataplane_hook_"), "{l}");
            let fam = typed.last().unwrap_or_else(|| panic!("sample before TYPE: {l}"));
            assert!(
                name == fam
                    || name
                        .strip_prefix(fam.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s)),
                "{l} under {fam}"
            );
            assert_eq!(series.matches('{').count(), series.matches('}').count(), "{l}");
        }
    }

    #[test]
    fn events_fold_into_counters_and_render_in_the_textfile_format() {
        let mut c = Counters::default();
        c.apply(&[
            Event::Request { size: PageSize::Size2Mi, granted: true },
            Event::Reserved { size: PageSize::Size2Mi, pages: 4 },
            Event::Request { size: PageSize::Size2Mi, granted: false },
            Event::Released { size: PageSize::Size2Mi, pages: 4 },
            Event::Leaked { origin: "prefix", size: Some(PageSize::Size2Mi), files: 3, pages: 3 },
            Event::Teardown { complete: true },
            Event::Gc { released: 2, groups: 1, errors: 0 },
            Event::Hook { stage: "createRuntime".into(), seconds: 0.004, ok: true },
            Event::Hook { stage: "createRuntime".into(), seconds: 0.3, ok: false },
            Event::Hook { stage: "poststop".into(), seconds: 20.0, ok: true },
        ]);
        let text = render(&c, &gauges());
        check_format(&text);
        for want in [
            "dataplane_hook_reservations_total{size=\"2Mi\",result=\"granted\"} 1\n",
            "dataplane_hook_reservations_total{size=\"2Mi\",result=\"refused\"} 1\n",
            "dataplane_hook_reservations_total{size=\"1Gi\",result=\"granted\"} 0\n",
            "dataplane_hook_reserved_pages_total{size=\"2Mi\"} 4\n",
            "dataplane_hook_released_pages_total{size=\"2Mi\"} 4\n",
            "dataplane_hook_leaked_files_reclaimed_total{origin=\"prefix\"} 3\n",
            "dataplane_hook_leaked_files_reclaimed_total{origin=\"group\"} 0\n",
            "dataplane_hook_leaked_pages_reclaimed_total{origin=\"prefix\",size=\"2Mi\"} 3\n",
            "dataplane_hook_teardowns_total{result=\"complete\"} 1\n",
            "dataplane_hook_gc_runs_total 1\n",
            "dataplane_hook_gc_actions_total{action=\"release_container\"} 2\n",
            "dataplane_hook_gc_actions_total{action=\"release_group\"} 1\n",
            "dataplane_hook_hook_failures_total{stage=\"createRuntime\"} 1\n",
            "dataplane_hook_hook_failures_total{stage=\"poststop\"} 0\n",
            // Cumulative buckets: 0.004 falls in le=0.005, 0.3 in le=0.5, 20 only in +Inf.
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"0.0025\"} 0\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"0.005\"} 1\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"0.25\"} 1\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"0.5\"} 2\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"createRuntime\",le=\"+Inf\"} 2\n",
            "dataplane_hook_hook_duration_seconds_count{stage=\"createRuntime\"} 2\n",
            "dataplane_hook_hook_duration_seconds_sum{stage=\"createRuntime\"} 0.304000\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"poststop\",le=\"10\"} 0\n",
            "dataplane_hook_hook_duration_seconds_bucket{stage=\"poststop\",le=\"+Inf\"} 1\n",
            "dataplane_hook_containers 2\n",
            "dataplane_hook_groups 1\n",
            "dataplane_hook_reserved_pages{size=\"2Mi\"} 8\n",
            "dataplane_hook_pool_pages{size=\"2Mi\",state=\"free\"} 60\n",
            "dataplane_hook_metrics_updated_timestamp_seconds 1700000000\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Counters survive a round trip through the state file's JSON.
        let back: Counters = serde_json::from_slice(&serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn empty_counters_still_render_every_family_at_zero() {
        let text = render(&Counters::default(), &gauges());
        check_format(&text);
        assert!(text.contains("dataplane_hook_gc_runs_total 0\n"), "{text}");
        assert!(!text.contains("hook_duration_seconds"), "no histogram before the first hook run");
    }

    #[test]
    fn refusals_are_recognised_by_the_spec_message_form_only() {
        for (msg, want) in [
            ("cannot reserve 256Mi of 2Mi hugepages for container abc: 40 pages free, 30 already reserved by 2 containers (free hugepages or lower dataplane-hook.io/hugepages-2Mi)", Some(PageSize::Size2Mi)),
            ("cannot reserve 1Gi of 1Gi hugepages for DPDK group _/g: the kernel refused (free hugepages or lower dataplane-hook.io/hugepages-1Gi)", Some(PageSize::Size1Gi)),
            ("cannot prepare DPDK group _/g for container x: cannot reserve 4Mi of 2Mi hugepages for container x: no (y)", Some(PageSize::Size2Mi)),
            ("cannot set up mounts in container abc: mount: ENOMEM (see the log)", None),
            ("invalid annotation dataplane-hook.io/hugepages-2Mi: cannot reserve nothing", None),
            ("cannot add container b to DPDK group _/g: its first member sized it with 64Mi of 2Mi hugepages (x)", None),
        ] {
            assert_eq!(refused_size(msg), want, "{msg}");
        }
    }

    #[test]
    fn concurrent_flushes_lose_no_increment() {
        let t = tempfile::tempdir().unwrap();
        let mut cfg = Config { state_dir: t.path().join("state"), ..Default::default() };
        cfg.metrics.textfile_dir = t.path().join("textfile");
        // No directory, no file (and no directory made); the counters are kept regardless.
        flush_events(&cfg, &[]).unwrap();
        assert!(!cfg.metrics.textfile_dir.exists());
        std::fs::create_dir(&cfg.metrics.textfile_dir).unwrap();
        // Many threads fold into the same file under the lock, as concurrent hooks do.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    for _ in 0..10 {
                        flush_events(&cfg, &[Event::Gc { released: 1, groups: 0, errors: 0 }])
                            .unwrap();
                    }
                })
            })
            .collect();
        for th in threads {
            th.join().unwrap();
        }
        let c = load_counters(&cfg.state_dir);
        assert_eq!(c.get("gc_runs_total", ""), 80);
        let text = std::fs::read_to_string(cfg.metrics.textfile_dir.join(TEXTFILE_NAME)).unwrap();
        assert!(text.contains("dataplane_hook_gc_runs_total 80\n"), "{text}");
        let names: Vec<String> = std::fs::read_dir(&cfg.metrics.textfile_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, vec![TEXTFILE_NAME.to_string()], "no temp files left");
        let mode =
            std::fs::metadata(cfg.state_dir.join(COUNTERS_FILE)).unwrap().permissions().mode()
                & 0o777;
        assert_eq!(mode, 0o600);
    }
}
