//! Owns the configuration file: where it is found, its keys, their defaults and validation.
//!
//! Lookup order (SPEC "Configuration"): `--config PATH`, `$DATAPLANE_HOOK_CONFIG`,
//! `/etc/dataplane-hook/config.toml`, built-in defaults. Unknown keys and bad values are errors
//! naming the key.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::request::Bytes;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/dataplane-hook/config.toml";
pub const CONFIG_ENV: &str = "DATAPLANE_HOOK_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read config {path}: {source} (check the path given by --config or ${CONFIG_ENV})"
    )]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config {path}: {message} (fix the key named above; see the Configuration section of the README)")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config {path}: key `{key}`: {message} (fix that key in the config file)")]
    Value { path: PathBuf, key: &'static str, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Ledger, group dirs and host-side mounts. Root-only.
    pub state_dir: PathBuf,
    /// The real OCI runtime behind `dataplane-runtime`.
    pub runtime_path: PathBuf,
    /// Hooks' stderr is often swallowed: we always log here too. Empty string disables.
    pub log_file: PathBuf,
    pub log_level: String,
    /// G8: how long one hook stage, gc run or wrapper spec edit may take, seconds; the hooks
    /// the product injects or configures carry it (plus a margin) as their OCI `timeout`.
    pub hook_timeout_secs: u64,
    pub hugepages: HugepagesConfig,
    pub dpdk: DpdkConfig,
    pub rdma: RdmaConfig,
    pub gpu: GpuConfig,
    pub watch: WatchConfig,
    pub metrics: MetricsConfig,
}

/// Metrics for node_exporter's textfile collector (see `crate::metrics`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// The directory node_exporter's textfile collector reads: the hooks keep
    /// `dataplane_hook.prom` there when it exists (`watch` writes its own file, `[watch]
    /// metrics_file`, which belongs in the same directory). "" writes no file; the counters are
    /// kept in state_dir either way.
    pub textfile_dir: PathBuf,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { textfile_dir: "/var/lib/node_exporter/textfile_collector".into() }
    }
}

/// G10: driver-memory headroom for GPU containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Headroom per GPU when the container has no `gpu-headroom` annotation.
    #[serde(with = "quantity")]
    pub headroom_per_gpu: Bytes,
    /// The most headroom a container may be granted per GPU (the `gpu-headroom` annotation and
    /// `headroom_per_gpu` alike; never more than the node's memory in all). Any pod can write
    /// the annotation, and the headroom granted is what `watch` tolerates node-wide.
    #[serde(with = "quantity")]
    pub max_headroom_per_gpu: Bytes,
    /// What a GPU container without a memory limit gets.
    pub unlimited_policy: UnlimitedPolicy,
    /// Smallest memory limit a GPU container may be left with once its headroom is carved out.
    #[serde(with = "quantity")]
    pub min_memory_limit: Bytes,
    /// cgroup v2: `memory.high` = this share of the lowered `memory.max` (1.0: not set).
    pub memory_high_fraction: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnlimitedPolicy {
    /// Run it unlimited; its headroom still counts for `watch`.
    Allow,
    /// Fail the create.
    Refuse,
    /// Limit it to the node's memory minus its headroom.
    LimitToNode,
}

/// G10: `dataplane-hook watch`, the node watchdog for uncharged (driver) memory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// Re-measure period while GPU containers run (the fast path reads /proc/meminfo only).
    pub poll_interval_ms: u64,
    /// How long uncharged memory must stay over budget before a kill.
    pub sustain_ms: u64,
    /// Uncharged growth tolerated beyond the granted headroom (measurement noise).
    #[serde(with = "quantity")]
    pub tolerance: Bytes,
    /// After a kill, how long to let the driver free the victim's memory before re-measuring.
    pub settle_ms: u64,
    /// PSI trigger on /proc/pressure/memory in the kernel's syntax ("some|full <stall us>
    /// <window us>"); while it fires, a kill needs no tolerance and no sustain. "" disables.
    pub pressure_trigger: String,
    /// Log and count what would be killed; kill nothing.
    pub dry_run: bool,
    /// node-exporter textfile (`*.prom`), written atomically; "" disables.
    pub metrics_file: PathBuf,
    pub metrics_interval_ms: u64,
    /// Count growth of the hugetlb pool as uncharged memory (it is: no memory cgroup pays for
    /// pool pages). false for nodes whose pool is resized at run time on purpose.
    pub count_hugetlb: bool,
}

/// Serde for byte quantities written the Kubernetes way (`2Gi`) or as plain integers.
mod quantity {
    use super::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Q {
            S(String),
            N(u64),
        }
        match Q::deserialize(d)? {
            Q::N(n) => Ok(Bytes(n)),
            Q::S(s) => Bytes::parse_quantity(&s).map_err(|e| {
                serde::de::Error::custom(format!("{s:?}: {e} (write a quantity such as 2Gi)"))
            }),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HugepagesConfig {
    /// Reserve in the kernel (hugetlbfs `min_size`) at create.
    pub reserve: bool,
    pub mount_path_2mi: PathBuf,
    pub mount_path_1gi: PathBuf,
    /// Share of a pool that containers may reserve.
    pub max_reserved_fraction: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpdkConfig {
    /// Path inside the container that gets a private/group dir.
    pub runtime_dir: PathBuf,
}

/// G11: limits and GID rules for RDMA containers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RdmaConfig {
    /// RLIMIT_MEMLOCK given to RDMA containers: "unlimited" or a quantity ("64Gi").
    pub memlock: String,
    /// RLIMIT_NOFILE given to RDMA containers.
    pub nofile: u64,
    /// When the host cannot grant these limits: "error" refuses the create, "warn" logs and
    /// gives what it can.
    pub on_unmet_limits: OnUnmet,
    /// Accept RoCE v1 GIDs on Ethernet ports (default: RoCE v2 only, what NCCL and Mooncake use).
    pub allow_roce_v1: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnmet {
    Error,
    Warn,
}

impl Default for RdmaConfig {
    fn default() -> Self {
        RdmaConfig {
            memlock: "unlimited".into(),
            nofile: 1 << 20,
            on_unmet_limits: OnUnmet::Error,
            allow_roce_v1: false,
        }
    }
}

impl RdmaConfig {
    /// RLIMIT_MEMLOCK in bytes (`u64::MAX`: unlimited). The value is validated at load.
    pub fn memlock_bytes(&self) -> u64 {
        parse_memlock(&self.memlock).unwrap_or(u64::MAX)
    }
}

fn parse_memlock(s: &str) -> Result<u64, String> {
    if s == "unlimited" {
        return Ok(u64::MAX);
    }
    match crate::request::Bytes::parse_quantity(s) {
        Ok(b) if b.0 > 0 => Ok(b.0),
        Ok(_) => Err("must be greater than 0".into()),
        Err(e) => Err(format!("must be \"unlimited\" or a quantity such as 64Gi: {e}")),
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            state_dir: "/run/dataplane-hook".into(),
            runtime_path: "runc".into(),
            log_file: "/var/log/dataplane-hook.log".into(),
            log_level: "info".into(),
            hook_timeout_secs: crate::deadline::DEFAULT_SECS,
            hugepages: HugepagesConfig::default(),
            dpdk: DpdkConfig::default(),
            rdma: RdmaConfig::default(),
            gpu: GpuConfig::default(),
            watch: WatchConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            headroom_per_gpu: Bytes(2 << 30),
            // The incident behind G10 (a 40g pod, 31g of driver memory) fits one GPU's worth.
            max_headroom_per_gpu: Bytes(32 << 30),
            unlimited_policy: UnlimitedPolicy::Allow,
            min_memory_limit: Bytes(64 << 20),
            memory_high_fraction: 0.95,
        }
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            poll_interval_ms: 100,
            sustain_ms: 200,
            tolerance: Bytes(256 << 20),
            settle_ms: 1000,
            pressure_trigger: "some 150000 1000000".into(),
            dry_run: false,
            metrics_file: "/var/lib/node_exporter/textfile_collector/dataplane_hook_watch.prom"
                .into(),
            metrics_interval_ms: 10_000,
            count_hugetlb: true,
        }
    }
}

/// Parses a PSI trigger line: (full?, stall us, window us). The kernel takes windows of
/// 500ms..10s and a stall no longer than the window.
pub fn parse_pressure_trigger(s: &str) -> Result<(bool, u64, u64), String> {
    let f: Vec<&str> = s.split_whitespace().collect();
    let bad = || {
        format!("{s:?} is not \"some|full <stall us> <window us>\" (e.g. \"some 150000 1000000\"; \"\" disables)")
    };
    let [kind, stall, window] = f.as_slice() else { return Err(bad()) };
    let full = match *kind {
        "some" => false,
        "full" => true,
        _ => return Err(bad()),
    };
    let (stall, window): (u64, u64) =
        (stall.parse().map_err(|_| bad())?, window.parse().map_err(|_| bad())?);
    if !(500_000..=10_000_000).contains(&window) || stall == 0 || stall > window {
        return Err(format!(
            "{s:?}: the window must be 500000..10000000 us and the stall 1..window us"
        ));
    }
    Ok((full, stall, window))
}

impl Default for HugepagesConfig {
    fn default() -> Self {
        HugepagesConfig {
            reserve: true,
            mount_path_2mi: "/dev/hugepages".into(),
            mount_path_1gi: "/dev/hugepages-1Gi".into(),
            max_reserved_fraction: 1.0,
        }
    }
}

impl Default for DpdkConfig {
    fn default() -> Self {
        DpdkConfig { runtime_dir: "/var/run/dpdk".into() }
    }
}

/// The configuration in effect and the file it came from (None: built-in defaults).
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub path: Option<PathBuf>,
}

impl Loaded {
    /// Resolves the config path by the SPEC's lookup order and loads it.
    pub fn resolve(explicit: Option<&Path>) -> Result<Loaded, ConfigError> {
        if let Some(p) = explicit {
            return Self::from_file(p);
        }
        if let Some(p) = std::env::var_os(CONFIG_ENV).filter(|v| !v.is_empty()) {
            return Self::from_file(Path::new(&p));
        }
        let default = Path::new(DEFAULT_CONFIG_PATH);
        if default.exists() {
            return Self::from_file(default);
        }
        Ok(Loaded { config: Config::default(), path: None })
    }

    pub fn from_file(path: &Path) -> Result<Loaded, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let config = Config::parse(&text, path)?;
        let abs = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        Ok(Loaded { config, path: Some(abs) })
    }
}

impl Config {
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: {
                let msg = e.message().replace('\n', " ").trim().to_string();
                match e.span().and_then(|s| key_at(text, s.start)) {
                    Some(key) if !msg.contains(&key) => format!("key `{key}`: {msg}"),
                    _ => msg,
                }
            },
        })?;
        config.validate(path)?;
        Ok(config)
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let bad = |key: &'static str, message: &str| ConfigError::Value {
            path: path.to_path_buf(),
            key,
            message: message.to_string(),
        };
        if !self.state_dir.is_absolute() {
            return Err(bad("state_dir", "must be an absolute path"));
        }
        if self.runtime_path.as_os_str().is_empty() {
            return Err(bad("runtime_path", "must not be empty"));
        }
        if !self.log_file.as_os_str().is_empty() && !self.log_file.is_absolute() {
            return Err(bad("log_file", "must be an absolute path (or \"\" to log nowhere)"));
        }
        if !matches!(self.log_level.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
            return Err(bad("log_level", "must be one of error, warn, info, debug, trace"));
        }
        if !(1..=300).contains(&self.hook_timeout_secs) {
            return Err(bad("hook_timeout_secs", "must be 1..300 seconds"));
        }
        let f = self.hugepages.max_reserved_fraction;
        if !(f > 0.0 && f <= 1.0) {
            return Err(bad("hugepages.max_reserved_fraction", "must be in (0, 1]"));
        }
        for (key, p) in [
            ("hugepages.mount_path_2mi", &self.hugepages.mount_path_2mi),
            ("hugepages.mount_path_1gi", &self.hugepages.mount_path_1gi),
            ("dpdk.runtime_dir", &self.dpdk.runtime_dir),
        ] {
            if !p.is_absolute() || p == Path::new("/") {
                return Err(bad(key, "must be an absolute container path other than /"));
            }
        }
        if let Err(e) = parse_memlock(&self.rdma.memlock) {
            return Err(bad("rdma.memlock", &e));
        }
        if self.rdma.nofile == 0 {
            return Err(bad("rdma.nofile", "must be greater than 0"));
        }
        if self.gpu.headroom_per_gpu.0 == 0 {
            return Err(bad("gpu.headroom_per_gpu", "must be greater than 0"));
        }
        if self.gpu.max_headroom_per_gpu.0 == 0 {
            return Err(bad("gpu.max_headroom_per_gpu", "must be greater than 0"));
        }
        if self.gpu.headroom_per_gpu.0 > self.gpu.max_headroom_per_gpu.0 {
            return Err(bad(
                "gpu.headroom_per_gpu",
                &format!(
                    "must not be more than gpu.max_headroom_per_gpu ({})",
                    self.gpu.max_headroom_per_gpu
                ),
            ));
        }
        let f = self.gpu.memory_high_fraction;
        if !(0.5..=1.0).contains(&f) {
            return Err(bad(
                "gpu.memory_high_fraction",
                "must be in [0.5, 1] (1 leaves memory.high unset)",
            ));
        }
        let w = &self.watch;
        for (key, v, lo, hi) in [
            ("watch.poll_interval_ms", w.poll_interval_ms, 10, 10_000),
            ("watch.sustain_ms", w.sustain_ms, 0, 600_000),
            ("watch.settle_ms", w.settle_ms, 0, 600_000),
            ("watch.metrics_interval_ms", w.metrics_interval_ms, 1000, 3_600_000),
        ] {
            if !(lo..=hi).contains(&v) {
                return Err(bad(key, &format!("must be in {lo}..={hi}")));
            }
        }
        if !w.pressure_trigger.is_empty() {
            if let Err(e) = parse_pressure_trigger(&w.pressure_trigger) {
                return Err(bad("watch.pressure_trigger", &e));
            }
        }
        if !w.metrics_file.as_os_str().is_empty() && !w.metrics_file.is_absolute() {
            return Err(bad(
                "watch.metrics_file",
                "must be an absolute path (or \"\" to write none)",
            ));
        }
        let t = &self.metrics.textfile_dir;
        if !t.as_os_str().is_empty() && !t.is_absolute() {
            return Err(bad(
                "metrics.textfile_dir",
                "must be an absolute path (or \"\" to write no textfile)",
            ));
        }
        Ok(())
    }
}

/// The dotted key whose line holds byte `offset` (`hugepages.reserve`), for error messages.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut section = String::new();
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let t = line.trim();
        if t.starts_with('[') && t.ends_with(']') {
            section = t.trim_matches(|c| c == '[' || c == ']').trim().to_string();
        }
        if offset < pos + line.len() {
            let key = t.split('=').next()?.trim();
            if key.is_empty() || key.starts_with('[') {
                return None;
            }
            let key = if section.is_empty() { key.to_string() } else { format!("{section}.{key}") };
            // Named inside a one-line error: control characters written as escapes.
            return Some(
                key.chars()
                    .map(
                        |c| {
                            if c.is_control() {
                                c.escape_debug().to_string()
                            } else {
                                c.to_string()
                            }
                        },
                    )
                    .collect(),
            );
        }
        pos += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("/etc/x.toml"))
    }

    #[test]
    fn a_key_with_control_characters_still_gives_a_one_line_error() {
        // Fuzz find (config_toml): the key named in a syntax error was copied raw, `\r` and NUL
        // included.
        let e = parse("[gpu]\nheadroom_p\r\0\"\n").unwrap_err().to_string();
        assert!(!e.contains(['\n', '\r', '\0']), "{e:?}");
        assert!(e.contains("key `gpu.headroom_p\\r\\0\"`"), "{e}");
    }

    #[test]
    fn empty_file_gives_spec_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, Path::new("/run/dataplane-hook"));
        assert_eq!(c.hugepages.mount_path_1gi, Path::new("/dev/hugepages-1Gi"));
        assert_eq!(c.dpdk.runtime_dir, Path::new("/var/run/dpdk"));
    }

    #[test]
    fn spec_example_parses() {
        let c = parse(
            r#"
state_dir    = "/run/dataplane-hook"
runtime_path = "runc"
log_file     = "/var/log/dataplane-hook.log"
log_level    = "info"
[hugepages]
reserve          = true
mount_path_2mi   = "/dev/hugepages"
mount_path_1gi   = "/dev/hugepages-1Gi"
max_reserved_fraction = 0.5
[dpdk]
runtime_dir = "/var/run/dpdk"
"#,
        )
        .unwrap();
        assert_eq!(c.hugepages.max_reserved_fraction, 0.5);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = parse("[hugepages]\nreserv = true\n").unwrap_err().to_string();
        assert!(e.contains("reserv"), "{e}");
        let e = parse("stat_dir = \"/x\"\n").unwrap_err().to_string();
        assert!(e.contains("stat_dir"), "{e}");
    }

    #[test]
    fn bad_values_are_named() {
        for (text, key) in [
            ("state_dir = \"relative\"", "state_dir"),
            ("log_level = \"loud\"", "log_level"),
            ("hook_timeout_secs = 0", "hook_timeout_secs"),
            ("hook_timeout_secs = 301", "hook_timeout_secs"),
            ("[hugepages]\nmax_reserved_fraction = 1.5", "max_reserved_fraction"),
            ("[hugepages]\nmax_reserved_fraction = 0", "max_reserved_fraction"),
            ("[dpdk]\nruntime_dir = \"var/run\"", "dpdk.runtime_dir"),
            ("[hugepages]\nreserve = \"yes\"", "reserve"),
            ("[rdma]\nmemlock = \"lots\"", "rdma.memlock"),
            ("[rdma]\nnofile = 0", "rdma.nofile"),
            ("[rdma]\non_unmet_limits = \"ignore\"", "on_unmet_limits"),
            ("[gpu]\nheadroom_per_gpu = \"lots\"", "gpu.headroom_per_gpu"),
            ("[gpu]\nheadroom_per_gpu = 0", "gpu.headroom_per_gpu"),
            ("[gpu]\nunlimited_policy = \"maybe\"", "unlimited_policy"),
            ("[gpu]\nmemory_high_fraction = 0.1", "gpu.memory_high_fraction"),
            ("[gpu]\nmax_headroom_per_gpu = 0", "gpu.max_headroom_per_gpu"),
            ("[gpu]\nmax_headroom_per_gpu = \"1Gi\"", "gpu.headroom_per_gpu"),
            ("[watch]\npoll_interval_ms = 0", "watch.poll_interval_ms"),
            ("[watch]\npressure_trigger = \"some 1 1\"", "watch.pressure_trigger"),
            ("[watch]\npressure_trigger = \"often\"", "watch.pressure_trigger"),
            ("[watch]\nmetrics_file = \"x.prom\"", "watch.metrics_file"),
            ("[watch]\ntolerance = \"-1\"", "watch.tolerance"),
            ("[metrics]\ntextfile_dir = \"prom\"", "metrics.textfile_dir"),
            ("[metrics]\ntextfile = \"/x\"", "textfile"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(key), "{text} -> {e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn gpu_and_watch_sections_parse_quantities_and_policies() {
        let c = parse(
            "[gpu]\nheadroom_per_gpu = \"4Gi\"\nunlimited_policy = \"limit-to-node\"\nmin_memory_limit = 1048576\n\
             [watch]\ntolerance = \"64Mi\"\nsustain_ms = 0\npressure_trigger = \"\"\ndry_run = true\n",
        )
        .unwrap();
        assert_eq!(c.gpu.headroom_per_gpu, Bytes(4 << 30));
        assert_eq!(c.gpu.unlimited_policy, UnlimitedPolicy::LimitToNode);
        assert_eq!(c.gpu.min_memory_limit, Bytes(1 << 20));
        assert_eq!(c.gpu.max_headroom_per_gpu, Bytes(32 << 30), "default");
        let tight =
            parse("[gpu]\nheadroom_per_gpu = \"1Gi\"\nmax_headroom_per_gpu = \"1Gi\"\n").unwrap();
        assert_eq!(
            tight.gpu.max_headroom_per_gpu,
            Bytes(1 << 30),
            "equal to headroom_per_gpu is fine"
        );
        assert_eq!(
            (c.watch.tolerance, c.watch.sustain_ms, c.watch.dry_run),
            (Bytes(64 << 20), 0, true)
        );
        assert_eq!(parse_pressure_trigger("full 100000 2000000"), Ok((true, 100000, 2000000)));
        // Defaults round-trip through TOML (quantities serialize as strings).
        let text = toml::to_string(&Config::default()).unwrap();
        assert!(text.contains("headroom_per_gpu = \"2Gi\""), "{text}");
        assert_eq!(parse(&text).unwrap(), Config::default());
    }
}
