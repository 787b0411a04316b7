//! Owns G10 for a container: recognising a GPU container from its spec (device nodes,
//! `NVIDIA_VISIBLE_DEVICES`/`AMD_VISIBLE_DEVICES`, CDI annotations), counting its GPUs, and
//! carving a driver-memory headroom out of its memory limit so that charged memory plus the
//! memory the GPU driver allocates for it (which no cgroup is charged for) stays within what the
//! pod asked the scheduler for. `dataplane-hook watch` enforces the headroom on the node.
//!
//! Two paths, one decision ([`decide`]):
//! - wrapper (`dataplane-runtime`): [`edit_spec`] lowers `linux.resources.memory.limit` (and on a
//!   pure cgroup v2 host adds `memory.high` below it through `linux.resources.unified`), so the
//!   runtime applies it; it tells the hook so in the hook entry it injected (`env`
//!   [`LIMIT_ENV`]`=<limit the pod asked for>`), a channel no pod author can write: CRI runtimes
//!   copy pod annotations into the spec (CRI-O all of them), never hook entries.
//! - hooks.d (and the hook behind the wrapper): the plan's [`GpuPlan`] is recorded in the ledger
//!   (`Effect::GpuHeadroom`, what `watch` reads, with the init's memory cgroup) and, without the
//!   wrapper's word, `apply` writes the container's memory cgroup itself (v2 `memory.max` +
//!   `memory.high`, v1 `memory.limit_in_bytes`) with the previous values in the ledger so
//!   teardown restores them.
//!
//! GPU count rules:
//! - each `/dev/nvidia<N>` and each `/dev/dri/renderD<N>` in `linux.devices` (or bind-mounted
//!   there) is one GPU; `/dev/kfd` alone (AMD compute) counts as one;
//! - `NVIDIA_VISIBLE_DEVICES` / `AMD_VISIBLE_DEVICES`: empty, `void`, `none` mean no GPU; `all`
//!   means every GPU of that vendor on the host (counted from the host's `/dev`; a host without
//!   one gives 0, i.e. not a GPU container); otherwise the number of distinct comma-separated
//!   entries (indexes, UUIDs, MIG ids);
//! - CDI annotations `cdi.k8s.io/*`: every distinct fully-qualified device `vendor/gpu=name`
//!   (class `gpu`) is one GPU, `name` `all` counts the vendor's host GPUs;
//! - the sources describe the same devices in different words, so the count is the largest any
//!   one source gives, not their sum;
//! - `dataplane-hook.io/gpu-headroom` only sizes the headroom of a container that is a GPU
//!   container by the rules above; on any other container it is refused (it would make the
//!   watchdog tolerate uncharged memory for, and kill, a container without a GPU).
//!
//! Bounds: any pod may write `gpu-headroom`, and the headroom granted is what `watch` tolerates
//! as uncharged memory node-wide; an unlimited container (`unlimited_policy = "allow"`) pays
//! nothing for it. So the headroom, whatever its source, is at most `[gpu]
//! max_headroom_per_gpu` per GPU and never more than the node's memory; more is refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{Config, UnlimitedPolicy};
use crate::features::{FactsContext, SpecContext};
use crate::ledger::{Effect, Ledger};
use crate::oci::Bundle;
use crate::plan::{NodeFacts, Plan, PlanError, Step};
use crate::request::{Bytes, Request, PREFIX};

/// The annotation earlier versions of the wrapper left on a spec whose memory limit it had
/// lowered. A pod author can write any annotation into the spec (CRI-O passes them all; the
/// hooks.d path reads the spec as it comes), so it proved nothing: a forged one made the hook
/// write no limit while `watch` granted the headroom. The wrapper no longer writes it and a spec
/// that carries it is refused: the key is the product's, and a clear refusal beats silently
/// doing something else than the spec claims.
pub const LIMIT_MARKER: &str = "dataplane-hook.internal/gpu-requested-memory-limit";

/// What tells the hook that the wrapper already lowered the spec's memory limit: this variable
/// in the `env` of a hook entry in the spec (the wrapper sets it on the entries it injects for
/// itself), with the limit the pod asked for in bytes, or `unlimited`. Hook entries come only
/// from the runtime's side (the wrapper, hooks.d files, the runtime's config), never from a pod.
pub const LIMIT_ENV: &str = "DATAPLANE_HOOK_GPU_REQUESTED_LIMIT";

/// Hook stages whose entries may carry [`LIMIT_ENV`] (those the hook plans in).
const MARKED_STAGES: [&str; 2] = ["createRuntime", "prestart"];

const PAGE: u64 = 4096;

/// GPUs the host has, per vendor, for `all`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostGpus {
    /// `/dev/nvidia<N>` nodes.
    pub nvidia: u32,
    /// `/dev/dri/renderD<N>` nodes (AMD, Intel, ...).
    pub render: u32,
}

impl HostGpus {
    /// Counts the host's GPU device nodes under `dev` (normally `/dev`).
    pub fn probe_at(dev: &Path) -> HostGpus {
        let count = |dir: &Path, f: fn(&str) -> bool| {
            std::fs::read_dir(dir)
                .map(|rd| {
                    rd.flatten().filter(|e| e.file_name().to_str().is_some_and(f)).count() as u32
                })
                .unwrap_or(0)
        };
        HostGpus {
            nvidia: count(dev, is_nvidia_gpu_name),
            render: count(&dev.join("dri"), is_render_name),
        }
    }

    pub fn probe() -> HostGpus {
        Self::probe_at(Path::new("/dev"))
    }
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}
fn is_nvidia_gpu_name(n: &str) -> bool {
    n.strip_prefix("nvidia").is_some_and(digits)
}
fn is_render_name(n: &str) -> bool {
    n.strip_prefix("renderD").is_some_and(digits)
}

/// What the spec says about GPUs and memory: the input of [`decide`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuSpec {
    /// GPUs given to the container (0: not a GPU container by its spec).
    pub gpus: u32,
    /// Why we think so, for logs and messages (`device /dev/nvidia0`, `NVIDIA_VISIBLE_DEVICES=0`).
    pub evidence: Vec<String>,
    /// `linux.resources.memory.limit` as the spec has it now (None: unlimited).
    pub limit: Option<u64>,
    /// Set by [`LIMIT_ENV`] in a hook entry: the wrapper already lowered the limit; this is what
    /// the pod asked for (inner None: unlimited).
    pub lowered_from: Option<Option<u64>>,
}

/// Reads GPU facts from a spec (pure apart from the arguments).
pub fn inspect(
    spec: &Value,
    annotations: &BTreeMap<String, String>,
    host: &HostGpus,
) -> Result<GpuSpec, PlanError> {
    inspect_with(spec, annotations, || *host)
}

/// [`inspect`] asking `probe` for the host's GPUs only when the spec names `all` of them
/// (probing lists the host's /dev), at most once.
fn inspect_with(
    spec: &Value,
    annotations: &BTreeMap<String, String>,
    probe: impl Fn() -> HostGpus,
) -> Result<GpuSpec, PlanError> {
    let probed = std::cell::OnceCell::new();
    let host = || *probed.get_or_init(&probe);
    let mut nvidia_nodes = BTreeSet::new();
    let mut render_nodes = BTreeSet::new();
    let mut kfd = false;
    let mut evidence = Vec::new();
    let mut paths: Vec<&str> = Vec::new();
    if let Some(devs) = spec.pointer("/linux/devices").and_then(Value::as_array) {
        paths.extend(devs.iter().filter_map(|d| d.get("path").and_then(Value::as_str)));
    }
    if let Some(ms) = spec.get("mounts").and_then(Value::as_array) {
        paths.extend(ms.iter().filter_map(|m| m.get("destination").and_then(Value::as_str)));
    }
    for p in paths {
        let p = p.trim_end_matches('/');
        if let Some(n) = p.strip_prefix("/dev/").filter(|n| is_nvidia_gpu_name(n)) {
            nvidia_nodes.insert(n.to_string());
        } else if let Some(n) = p.strip_prefix("/dev/dri/").filter(|n| is_render_name(n)) {
            render_nodes.insert(n.to_string());
        } else if p == "/dev/kfd" {
            kfd = true;
        }
    }
    let mut by_devices = (nvidia_nodes.len() + render_nodes.len()) as u32;
    if by_devices == 0 && kfd {
        by_devices = 1;
    }
    for n in nvidia_nodes.iter().chain(render_nodes.iter()) {
        let dir = if n.starts_with("render") { "/dev/dri/" } else { "/dev/" };
        evidence.push(format!("device {dir}{n}"));
    }
    if kfd {
        evidence.push("device /dev/kfd".into());
    }

    // Environment: the last definition of a variable wins, as in execve.
    let mut env: BTreeMap<&str, &str> = BTreeMap::new();
    if let Some(vars) = spec.pointer("/process/env").and_then(Value::as_array) {
        for kv in vars.iter().filter_map(Value::as_str) {
            if let Some((k, v)) = kv.split_once('=') {
                env.insert(k, v);
            }
        }
    }
    let mut by_env = 0;
    let (all_nvidia, all_render) = (|| host().nvidia, || host().render);
    for (var, all) in [
        ("NVIDIA_VISIBLE_DEVICES", &all_nvidia as &dyn Fn() -> u32),
        ("AMD_VISIBLE_DEVICES", &all_render),
    ] {
        let Some(v) = env.get(var) else { continue };
        let n = visible_devices(v, all);
        if n > 0 {
            evidence.push(format!("{var}={v}"));
        }
        by_env = by_env.max(n);
    }

    let mut cdi: BTreeSet<String> = BTreeSet::new();
    let mut cdi_all = 0;
    for (k, v) in annotations {
        if !k.starts_with("cdi.k8s.io/") {
            continue;
        }
        for dev in v.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let Some((kind, name)) = dev.split_once('=') else { continue };
            let Some((vendor, class)) = kind.split_once('/') else { continue };
            if class != "gpu" {
                continue;
            }
            if name == "all" {
                cdi_all =
                    cdi_all.max(if vendor == "nvidia.com" { host().nvidia } else { host().render });
            } else {
                cdi.insert(dev.to_string());
            }
            evidence.push(format!("CDI {k}={dev}"));
        }
    }
    let by_cdi = (cdi.len() as u32).max(cdi_all);

    let limit = spec
        .pointer("/linux/resources/memory/limit")
        .and_then(Value::as_i64)
        .filter(|l| *l > 0)
        .map(|l| l as u64);
    if let Some(v) = annotations.get(LIMIT_MARKER) {
        return Err(PlanError {
            what: "cannot set up a GPU container".into(),
            why: format!("annotation {LIMIT_MARKER}={v:?} is reserved: only dataplane-runtime may say that it lowered the memory limit, and it says so in its hook entry, not in an annotation a pod can set"),
            fix: format!("remove the annotation {LIMIT_MARKER}"),
        });
    }
    let lowered_from = wrapper_lowered_from(spec)?;
    Ok(GpuSpec { gpus: by_devices.max(by_env).max(by_cdi), evidence, limit, lowered_from })
}

/// What the wrapper's hook entries say it lowered the limit from (None: it did not lower it).
fn wrapper_lowered_from(spec: &Value) -> Result<Option<Option<u64>>, PlanError> {
    let prefix = format!("{LIMIT_ENV}=");
    let marks = MARKED_STAGES
        .iter()
        .filter_map(|stage| spec.pointer(&format!("/hooks/{stage}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|h| h.get("env").and_then(Value::as_array))
        .flatten()
        .filter_map(|e| e.as_str()?.strip_prefix(prefix.as_str()));
    let mut found = None;
    for v in marks {
        let parsed = match v {
            "unlimited" => None,
            n => Some(n.parse::<u64>().map_err(|_| PlanError {
                what: "cannot set up a GPU container".into(),
                why: format!("the hook entry's {LIMIT_ENV}={v:?} is not a byte count"),
                fix: format!(
                    "remove {LIMIT_ENV} from the hook's env: only dataplane-runtime sets it"
                ),
            })?),
        };
        if found.is_some_and(|f| f != parsed) {
            return Err(PlanError {
                what: "cannot set up a GPU container".into(),
                why: format!("hook entries disagree on {LIMIT_ENV}"),
                fix: format!(
                    "remove {LIMIT_ENV} from the hooks' env: only dataplane-runtime sets it"
                ),
            });
        }
        found = Some(parsed);
    }
    Ok(found)
}

/// GPUs named by a `*_VISIBLE_DEVICES` value (`all`: as many as the host has).
fn visible_devices(v: &str, all: &dyn Fn() -> u32) -> u32 {
    match v.trim() {
        "" | "void" | "none" => 0,
        "all" => all(),
        list => {
            list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect::<BTreeSet<_>>().len()
                as u32
        }
    }
}

/// Reads the GPU facts of a bundle on this host.
pub fn inspect_bundle(
    b: &Bundle,
    annotations: &BTreeMap<String, String>,
) -> Result<GpuSpec, PlanError> {
    inspect_with(&b.raw, annotations, HostGpus::probe)
}

/// What a create does for a GPU container.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GpuPlan {
    pub gpus: u32,
    pub evidence: Vec<String>,
    /// Driver memory granted to the container: what `watch` tolerates as uncharged for it.
    pub headroom: Bytes,
    /// The limit the pod asked for (None: unlimited).
    pub requested_limit: Option<Bytes>,
    /// The limit it runs with (None: unlimited).
    pub limit: Option<Bytes>,
    /// cgroup v2 `memory.high` below the limit (None: not set).
    pub high: Option<Bytes>,
    /// The hook writes the memory cgroup (hooks.d); false when the wrapper's spec edit did it.
    pub set_cgroup: bool,
    /// The init's memory cgroup at create, as `/proc/<pid>/cgroup` names it (the host's view):
    /// the only cgroup `watch` may kill for this container. Filled in when the create records
    /// the grant ([`at_create`]); None in records written before it was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

fn headroom_source(req: &Request, cfg: &Config, gpus: u32) -> String {
    match req.gpu_headroom {
        Some(_) => format!("{PREFIX}gpu-headroom"),
        None => format!("{gpus} GPU x {} from [gpu] headroom_per_gpu", cfg.gpu.headroom_per_gpu),
    }
}

/// Whether the GPU feature has something to decide for the request: its spec gives it GPUs, or
/// it asks for a headroom (which [`decide`] refuses without a GPU).
pub fn is_gpu(req: &Request) -> bool {
    req.gpu.gpus > 0 || req.gpu_headroom.is_some()
}

/// The most headroom a container with `gpus` GPUs may be granted: `[gpu] max_headroom_per_gpu`
/// per GPU, and never more than the node's memory (`mem_total`, 0: unknown, not applied).
pub fn max_headroom(cfg: &Config, gpus: u32, mem_total: u64) -> Bytes {
    let per_gpu = cfg.gpu.max_headroom_per_gpu.0.saturating_mul(gpus as u64);
    Bytes(if mem_total > 0 { per_gpu.min(mem_total) } else { per_gpu })
}

/// The one decision both paths share. `mem_total`: the node's MemTotal (0 if unknown).
pub fn decide(
    id: &str,
    req: &Request,
    cfg: &Config,
    mem_total: u64,
) -> Result<Option<GpuPlan>, PlanError> {
    let g = &req.gpu;
    if !is_gpu(req) {
        return Ok(None);
    }
    if g.gpus == 0 {
        // Only a spec's GPU counts: the annotation alone would make a container without one
        // a GPU container, tolerated (its headroom) and killed by `watch`.
        return Err(PlanError {
            what: format!("cannot give container {id} a GPU driver-memory headroom"),
            why: format!(
                "{PREFIX}gpu-headroom is set but the spec gives it no GPU (no /dev/nvidia<N>, /dev/dri/renderD<N> or /dev/kfd device, no NVIDIA_VISIBLE_DEVICES or AMD_VISIBLE_DEVICES naming one, no CDI gpu annotation)"
            ),
            fix: format!("remove {PREFIX}gpu-headroom, or give the container its GPU"),
        });
    }
    let gpus = g.gpus;
    let evidence = g.evidence.clone();
    let headroom =
        req.gpu_headroom.unwrap_or(Bytes(cfg.gpu.headroom_per_gpu.0.saturating_mul(gpus as u64)));
    let bound = max_headroom(cfg, gpus, mem_total);
    if headroom.0 > bound.0 {
        let per_gpu = cfg.gpu.max_headroom_per_gpu;
        let s = if gpus == 1 { "" } else { "s" };
        let node = if mem_total > 0 && bound.0 == mem_total {
            format!(", capped at the node's memory {}", Bytes(mem_total))
        } else {
            String::new()
        };
        return Err(PlanError {
            what: format!("cannot give GPU container {id} its driver-memory headroom"),
            why: format!(
                "{headroom} of headroom ({}) is more than the {bound} a container with {gpus} GPU{s} may be granted ({per_gpu} per GPU from [gpu] max_headroom_per_gpu{node})",
                headroom_source(req, cfg, gpus)
            ),
            fix: match req.gpu_headroom {
                Some(_) => format!("lower {PREFIX}gpu-headroom to at most {bound}"),
                None => "lower [gpu] headroom_per_gpu or give the container fewer GPUs".into(),
            },
        });
    }
    let what = format!("cannot give GPU container {id} its driver-memory headroom");
    let requested = match g.lowered_from {
        Some(orig) => orig,
        None => g.limit,
    }
    .map(Bytes);
    let (limit, high) = carve(
        &what,
        requested,
        headroom,
        &headroom_source(req, cfg, gpus),
        &format!(" or lower {PREFIX}gpu-headroom"),
        cfg,
        mem_total,
    )?;
    if let (Some(_), Some(want)) = (g.lowered_from, limit) {
        // The wrapper lowered the spec; it must agree with what we would have done.
        if g.limit != Some(want.0) {
            return Err(PlanError {
                what,
                why: format!(
                    "the spec's memory limit {} is not the {want} dataplane-runtime should have set (its hook entry's {LIMIT_ENV} says {})",
                    g.limit.map(|l| Bytes(l).to_string()).unwrap_or_else(|| "unlimited".into()),
                    requested.map(|r| r.to_string()).unwrap_or_else(|| "unlimited".into()),
                ),
                fix: "use the same config for dataplane-runtime and dataplane-hook".into(),
            });
        }
    }
    Ok(Some(GpuPlan {
        gpus,
        evidence,
        headroom,
        requested_limit: requested,
        limit,
        high,
        set_cgroup: g.lowered_from.is_none(),
        cgroup: None,
    }))
}

/// The limit (None: unlimited) and cgroup v2 `memory.high` a GPU container runs with when its pod
/// asks for `requested` (None: unlimited) and `headroom` is carved out of it; `source` says where
/// the headroom came from. Shared by create ([`decide`]) and `update` ([`replan`]).
fn carve(
    what: &str,
    requested: Option<Bytes>,
    headroom: Bytes,
    source: &str,
    or_else: &str,
    cfg: &Config,
    mem_total: u64,
) -> Result<(Option<Bytes>, Option<Bytes>), PlanError> {
    let min = cfg.gpu.min_memory_limit;
    let need = Bytes(headroom.0.saturating_add(min.0));
    let what = what.to_string();
    let limit = match requested {
        Some(l) if l.0 < need.0 => {
            return Err(PlanError {
                what,
                why: format!(
                    "its memory limit {l} minus {headroom} of headroom ({source}) leaves {}, below [gpu] min_memory_limit {min}",
                    Bytes(l.0.saturating_sub(headroom.0)),
                ),
                fix: format!("raise the container's memory limit to at least {need}{or_else}"),
            })
        }
        Some(l) => Some(Bytes((l.0 - headroom.0) / PAGE * PAGE)),
        None => match cfg.gpu.unlimited_policy {
            UnlimitedPolicy::Allow => None,
            UnlimitedPolicy::Refuse => {
                return Err(PlanError {
                    what,
                    why: "it has no memory limit and [gpu] unlimited_policy is \"refuse\"".into(),
                    fix: format!("give the container a memory limit (resources.limits.memory) of at least {need}"),
                })
            }
            UnlimitedPolicy::LimitToNode => {
                if mem_total < need.0 {
                    return Err(PlanError {
                        what,
                        why: format!(
                            "it has no memory limit, [gpu] unlimited_policy is \"limit-to-node\", and the node's memory ({}) is below {need}",
                            Bytes(mem_total)
                        ),
                        fix: format!("give the container a memory limit or lower {PREFIX}gpu-headroom"),
                    });
                }
                Some(Bytes((mem_total - headroom.0) / PAGE * PAGE))
            }
        },
    };
    let f = cfg.gpu.memory_high_fraction;
    let high = limit.filter(|_| f < 1.0).map(|l| Bytes(((l.0 as f64 * f) as u64) / PAGE * PAGE));
    Ok((limit, high))
}

/// `dataplane-runtime update` of GPU container `id`: its grant `g` (from the ledger) re-planned
/// for the memory limit the update asks for — `requested` None: the update leaves the limit
/// alone (the recorded request stands); Some(None): unlimited. The headroom is the one granted
/// at create.
pub fn replan(
    id: &str,
    g: &GpuPlan,
    requested: Option<Option<u64>>,
    cfg: &Config,
    mem_total: u64,
) -> Result<GpuPlan, PlanError> {
    let requested = match requested {
        Some(r) => r.map(Bytes),
        None => g.requested_limit,
    };
    let what = format!("cannot update GPU container {id} without its driver-memory headroom");
    let or_else = "; the headroom granted at create stays while the container runs";
    let (limit, high) =
        carve(&what, requested, g.headroom, "granted at create", or_else, cfg, mem_total)?;
    Ok(GpuPlan { requested_limit: requested, limit, high, ..g.clone() })
}

/// The node's MemTotal (read for GPU containers only).
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Bytes (0: unknown), for GPU containers without a memory limit.
    pub mem_total: u64,
}

pub fn facts(ctx: &FactsContext, facts: &mut NodeFacts) -> Result<(), PlanError> {
    if is_gpu(ctx.request) {
        facts.insert(Facts { mem_total: host_mem_total() });
    }
    Ok(())
}

/// The grant, recorded ([`Effect::GpuHeadroom`]), and on the hooks.d path the lowered memory
/// limit the hook writes itself.
pub fn plan(
    id: &str,
    req: &Request,
    cfg: &Config,
    facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    let mem_total = facts.get::<Facts>().map_or(0, |f| f.mem_total);
    let Some(g) = decide(id, req, cfg, mem_total)? else { return Ok(()) };
    let memory = match (g.set_cgroup, g.limit) {
        (true, Some(limit)) => Some(Step::MemoryLimit { limit, high: g.high }),
        _ => None,
    };
    p.push(Step::Record(Effect::GpuHeadroom(g)));
    p.steps.extend(memory);
    Ok(())
}

/// The grant as recorded: with the init's memory cgroup now, before the container runs
/// anything (and after any step before it moved the init): `watch` kills only this cgroup,
/// never the one an init that moved (or a reused pid) is in later.
pub fn at_create(effect: &Effect, id: &str, pid: i32) -> Option<Effect> {
    let Effect::GpuHeadroom(g) = effect else { return None };
    let cgroup = memory_cgroup_of(pid);
    if cgroup.is_none() {
        tracing::warn!(container = %id, "cannot record the init's memory cgroup: watch falls back to the cgroup it finds at kill time");
    }
    Some(Effect::GpuHeadroom(GpuPlan { cgroup, ..g.clone() }))
}

/// A grant has nothing to undo on the node (a memory limit the hook wrote is an entry of its
/// own).
pub fn undo_recorded(_: &Ledger, _: &str, effect: &Effect) -> Option<Result<(), String>> {
    matches!(effect, Effect::GpuHeadroom(_)).then_some(Ok(()))
}

/// The node's MemTotal in bytes from a /proc/meminfo text (0 if absent).
pub fn mem_total(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
        .unwrap_or(0)
}

pub fn host_mem_total() -> u64 {
    crate::host::read_kernel_file("/proc/meminfo").map(|s| mem_total(&s)).unwrap_or(0)
}

/// Whether the host's memory controller is on a pure cgroup v2 hierarchy at /sys/fs/cgroup
/// (where runc applies `linux.resources.unified`).
pub fn host_memory_is_v2() -> bool {
    crate::host::cgroup::memory_hierarchy()
        .map(|h| {
            h.version == crate::host::cgroup::Version::V2 && h.mount == Path::new("/sys/fs/cgroup")
        })
        .unwrap_or(false)
}

/// The wrapper's spec edit for a decided plan (pure): [`lower_resources`] on
/// `linux.resources`, and [`LIMIT_ENV`] in the env of the hook entries whose path is `hook`
/// (the wrapper injects them before the features edit the spec). Returns false, and changes
/// nothing, when the spec has no such entry: lowering the limit without telling the hook would
/// make it lower the limit a second time.
pub fn edit_memory(raw: &mut Value, g: &GpuPlan, memory_v2: bool, hook: &Path) -> bool {
    let obj = raw.as_object_mut().expect("spec is an object");
    let hook = hook.display().to_string();
    let requested =
        g.requested_limit.map(|b| b.0.to_string()).unwrap_or_else(|| "unlimited".into());
    let mut marked = false;
    if let Some(hooks) = obj.get_mut("hooks").and_then(Value::as_object_mut) {
        for stage in MARKED_STAGES {
            let Some(list) = hooks.get_mut(stage).and_then(Value::as_array_mut) else { continue };
            for h in list.iter_mut().filter_map(Value::as_object_mut) {
                if h.get("path").and_then(Value::as_str) != Some(hook.as_str()) {
                    continue;
                }
                let env = h.entry("env").or_insert_with(|| json!([]));
                if !env.is_array() {
                    *env = json!([]);
                }
                let env = env.as_array_mut().expect("array");
                env.retain(|e| {
                    !e.as_str().is_some_and(|e| e.starts_with(&format!("{LIMIT_ENV}=")))
                });
                env.push(json!(format!("{LIMIT_ENV}={requested}")));
                marked = true;
            }
        }
    }
    if !marked {
        return false;
    }
    if g.limit.is_some() {
        let linux = object_at(obj, "linux");
        lower_resources(object_at(linux, "resources"), g, memory_v2);
    }
    true
}

/// `map[key]` as an object, made one if it is missing or something else.
fn object_at<'a>(
    map: &'a mut serde_json::Map<String, Value>,
    key: &str,
) -> &'a mut serde_json::Map<String, Value> {
    let v = map.entry(key.to_string()).or_insert_with(|| json!({}));
    if !v.is_object() {
        *v = json!({});
    }
    v.as_object_mut().expect("object")
}

/// Lowers an OCI `LinuxResources` object (a spec's `linux.resources` at create, `runc update
/// --resources` JSON at update) to the plan (pure): `memory.limit` is the lowered limit, `swap`
/// (memory+swap) keeps the swap allowance the pod asked for, `reservation` is clamped to the
/// limit, and on cgroup v2 `unified."memory.high"` is at most the plan's. Nothing when the plan
/// runs unlimited.
pub fn lower_resources(res: &mut serde_json::Map<String, Value>, g: &GpuPlan, memory_v2: bool) {
    let Some(limit) = g.limit else { return };
    let mem = object_at(res, "memory");
    mem.insert("limit".into(), json!(limit.0));
    // OCI `swap` is memory+swap: keep the same swap allowance under the lower limit.
    if let (Some(old), Some(swap)) = (g.requested_limit, mem.get("swap").and_then(Value::as_i64)) {
        if swap >= old.0 as i64 {
            mem.insert("swap".into(), json!(swap - (old.0 - limit.0) as i64));
        }
    }
    if let Some(r) = mem.get("reservation").and_then(Value::as_i64) {
        if r > limit.0 as i64 {
            mem.insert("reservation".into(), json!(limit.0));
        }
    }
    if let (true, Some(high)) = (memory_v2, g.high) {
        let unified = object_at(res, "unified");
        let keep = unified
            .get("memory.high")
            .and_then(Value::as_str)
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|u| u <= high.0);
        if !keep {
            unified.insert("memory.high".into(), json!(high.0.to_string()));
        }
    }
}

/// Wrapper: lower the spec's memory limit so the runtime applies it.
pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    if req.gpu.lowered_from.is_some() {
        return Ok(()); // edited by an earlier invocation (runc `create` retried): never lower twice
    }
    let id = ctx.container_id.unwrap_or("(no id)");
    let Some(g) = decide(id, req, ctx.config, host_mem_total())? else { return Ok(()) };
    let Some(hook) = ctx.hook_bin else { return Ok(()) }; // no hook to tell: the hook, if any, lowers it
    if !edit_memory(&mut b.raw, &g, host_memory_is_v2(), hook) {
        return Err(PlanError {
            what: format!("cannot give GPU container {id} its driver-memory headroom"),
            why: format!(
                "the spec has no hook entry for {} to tell that the limit was lowered",
                hook.display()
            ),
            fix: "this is a bug in dataplane-runtime: report it with the log".into(),
        });
    }
    tracing::info!(container = id, gpus = g.gpus, headroom = %g.headroom, limit = ?g.limit, "GPU container: memory limit lowered by its headroom");
    Ok(())
}

/// The memory cgroup of `pid` as `/proc/<pid>/cgroup` names it (None: not found).
pub fn memory_cgroup_of(pid: i32) -> Option<PathBuf> {
    let h = crate::host::cgroup::memory_hierarchy().ok()?;
    let lines = crate::host::proc::cgroups(pid).ok()?;
    h.line(&lines, "memory").map(|l| l.path.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(devices: &[&str], env: &[&str], limit: Option<i64>) -> Value {
        let mut s = json!({
            "ociVersion": "1.0.2",
            "process": {"args": ["sh"], "cwd": "/", "env": env},
            "linux": {"devices": devices.iter().map(|p| json!({"path": p, "type": "c", "major": 195, "minor": 0})).collect::<Vec<_>>()}
        });
        if let Some(l) = limit {
            s["linux"]["resources"] = json!({"memory": {"limit": l}});
        }
        s
    }
    fn host() -> HostGpus {
        HostGpus { nvidia: 8, render: 2 }
    }
    fn count(s: &Value, ann: &[(&str, &str)]) -> u32 {
        let a = ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        inspect(s, &a, &host()).unwrap().gpus
    }

    #[test]
    fn device_nodes_count_gpus_and_control_nodes_do_not() {
        assert_eq!(
            count(
                &spec(
                    &["/dev/nvidia0", "/dev/nvidia1", "/dev/nvidiactl", "/dev/nvidia-uvm"],
                    &[],
                    None
                ),
                &[]
            ),
            2
        );
        assert_eq!(
            count(
                &spec(&["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-modeset"], &[], None),
                &[]
            ),
            0
        );
        assert_eq!(count(&spec(&["/dev/dri/renderD128", "/dev/kfd"], &[], None), &[]), 1);
        assert_eq!(count(&spec(&["/dev/kfd"], &[], None), &[]), 1);
        assert_eq!(count(&spec(&["/dev/dri/card0", "/dev/fuse"], &[], None), &[]), 0);
        let mut s = spec(&[], &[], None);
        s["mounts"] =
            json!([{"destination": "/dev/nvidia3", "type": "bind", "source": "/dev/nvidia3"}]);
        assert_eq!(count(&s, &[]), 1);
    }

    #[test]
    fn visible_devices_env_follows_the_toolkit_rules() {
        for (v, n) in [
            ("0", 1),
            ("0,1,2", 3),
            ("GPU-aaa,GPU-bbb", 2),
            ("0,0", 1),
            ("all", 8),
            ("void", 0),
            ("none", 0),
            ("", 0),
            ("MIG-x", 1),
        ] {
            assert_eq!(
                count(&spec(&[], &[&format!("NVIDIA_VISIBLE_DEVICES={v}")], None), &[]),
                n,
                "{v}"
            );
        }
        assert_eq!(count(&spec(&[], &["AMD_VISIBLE_DEVICES=all"], None), &[]), 2);
        // The last definition wins (execve semantics).
        assert_eq!(
            count(
                &spec(&[], &["NVIDIA_VISIBLE_DEVICES=0", "NVIDIA_VISIBLE_DEVICES=void"], None),
                &[]
            ),
            0
        );
        // `all` on a host without GPUs: a CUDA base image on a CPU node is not a GPU container.
        let a = BTreeMap::new();
        assert_eq!(
            inspect(&spec(&[], &["NVIDIA_VISIBLE_DEVICES=all"], None), &a, &HostGpus::default())
                .unwrap()
                .gpus,
            0
        );
    }

    #[test]
    fn the_host_is_probed_only_for_all_and_at_most_once() {
        let probes = std::cell::Cell::new(0);
        let probe = || {
            probes.set(probes.get() + 1);
            host()
        };
        let none = BTreeMap::new();
        assert_eq!(
            inspect_with(
                &spec(&["/dev/nvidia0"], &["NVIDIA_VISIBLE_DEVICES=0"], None),
                &none,
                probe
            )
            .unwrap()
            .gpus,
            1
        );
        assert_eq!(probes.get(), 0, "no `all`: the host's /dev is not listed");
        let cdi_all =
            [("cdi.k8s.io/x".to_string(), "amd.com/gpu=all".to_string())].into_iter().collect();
        let s = spec(&[], &["NVIDIA_VISIBLE_DEVICES=all", "AMD_VISIBLE_DEVICES=all"], None);
        assert_eq!(inspect_with(&s, &cdi_all, probe).unwrap().gpus, 8);
        assert_eq!(probes.get(), 1);
    }

    #[test]
    fn cdi_annotations_count_gpu_class_devices() {
        let s = spec(&[], &[], None);
        assert_eq!(
            count(
                &s,
                &[("cdi.k8s.io/nvidia-device-plugin_uuid", "nvidia.com/gpu=0,nvidia.com/gpu=1")]
            ),
            2
        );
        assert_eq!(
            count(
                &s,
                &[("cdi.k8s.io/a", "nvidia.com/gpu=0"), ("cdi.k8s.io/b", "nvidia.com/gpu=0")]
            ),
            1
        );
        assert_eq!(count(&s, &[("cdi.k8s.io/x", "nvidia.com/gpu=all")]), 8);
        assert_eq!(count(&s, &[("cdi.k8s.io/x", "amd.com/gpu=all")]), 2);
        assert_eq!(count(&s, &[("cdi.k8s.io/x", "vendor.com/net=eth0")]), 0);
        assert_eq!(count(&s, &[("other/x", "nvidia.com/gpu=0")]), 0);
    }

    #[test]
    fn sources_describe_the_same_devices_so_the_count_is_their_maximum() {
        let s = spec(&["/dev/nvidia0", "/dev/nvidia1"], &["NVIDIA_VISIBLE_DEVICES=0,1"], None);
        assert_eq!(count(&s, &[("cdi.k8s.io/x", "nvidia.com/gpu=0")]), 2);
        let a = BTreeMap::new();
        let g = inspect(&s, &a, &host()).unwrap();
        assert!(g.evidence.contains(&"device /dev/nvidia0".to_string()), "{:?}", g.evidence);
        assert!(g.evidence.contains(&"NVIDIA_VISIBLE_DEVICES=0,1".to_string()), "{:?}", g.evidence);
    }

    fn req(s: &Value, ann: &[(&str, &str)]) -> Request {
        let a: BTreeMap<String, String> =
            ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut r = Request::parse(&a, &[]).unwrap();
        r.gpu = inspect(s, &a, &host()).unwrap();
        r
    }
    fn cfg(per_gpu: u64) -> Config {
        let mut c = Config::default();
        c.gpu.headroom_per_gpu = Bytes(per_gpu);
        c
    }
    const GI: u64 = 1 << 30;

    #[test]
    fn the_limit_is_lowered_by_the_headroom_per_gpu_or_the_annotation() {
        let s = spec(&["/dev/nvidia0", "/dev/nvidia1"], &[], Some(40 * GI as i64));
        let g = decide("c", &req(&s, &[]), &cfg(2 * GI), 0).unwrap().unwrap();
        assert_eq!(
            (g.gpus, g.headroom, g.limit, g.requested_limit),
            (2, Bytes(4 * GI), Some(Bytes(36 * GI)), Some(Bytes(40 * GI)))
        );
        assert!(g.set_cgroup);
        assert_eq!(g.high, Some(Bytes(((36 * GI) as f64 * 0.95) as u64 / PAGE * PAGE)));
        let g =
            decide("c", &req(&s, &[("dataplane-hook.io/gpu-headroom", "6Gi")]), &cfg(2 * GI), 0)
                .unwrap()
                .unwrap();
        assert_eq!((g.headroom, g.limit), (Bytes(6 * GI), Some(Bytes(34 * GI))));
        // Not a GPU container: nothing.
        assert_eq!(
            decide("c", &req(&spec(&[], &[], Some(GI as i64)), &[]), &cfg(GI), 0).unwrap(),
            None
        );
    }

    #[test]
    fn the_annotation_alone_does_not_make_a_gpu_container() {
        // Before: it did (one GPU), so any container could be tolerated and killed by `watch`.
        let e = decide(
            "abc",
            &req(&spec(&[], &[], Some(GI as i64)), &[("dataplane-hook.io/gpu-headroom", "256Mi")]),
            &cfg(GI),
            0,
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("cannot give container abc a GPU driver-memory headroom: dataplane-hook.io/gpu-headroom is set but the spec gives it no GPU"), "{e}");
        assert!(
            e.ends_with("(remove dataplane-hook.io/gpu-headroom, or give the container its GPU)"),
            "{e}"
        );
        // Unlimited too (the case where a headroom costs the container nothing).
        assert!(decide(
            "c",
            &req(&spec(&[], &[], None), &[("dataplane-hook.io/gpu-headroom", "1Gi")]),
            &cfg(GI),
            0
        )
        .is_err());
    }

    #[test]
    fn the_headroom_is_bounded_per_gpu_and_by_the_node() {
        let one = spec(&["/dev/nvidia0"], &[], None); // unlimited: the headroom is free to ask for
        let two = spec(&["/dev/nvidia0", "/dev/nvidia1"], &[], None);
        let mut c = cfg(GI);
        c.gpu.max_headroom_per_gpu = Bytes(8 * GI);
        let ann = |v: &str| [("dataplane-hook.io/gpu-headroom", v.to_string())];
        let d = |s: &Value, v: &str, c: &Config, total: u64| {
            let a = ann(v);
            let a: Vec<(&str, &str)> = a.iter().map(|(k, v)| (*k, v.as_str())).collect();
            decide("abc", &req(s, &a), c, total)
        };
        assert_eq!(
            d(&one, "8Gi", &c, 64 * GI).unwrap().unwrap().headroom,
            Bytes(8 * GI),
            "at the bound"
        );
        let e = d(&one, "8193Mi", &c, 64 * GI).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot give GPU container abc its driver-memory headroom: 8193Mi of headroom (dataplane-hook.io/gpu-headroom) is more than the 8Gi a container with 1 GPU may be granted (8Gi per GPU from [gpu] max_headroom_per_gpu) (lower dataplane-hook.io/gpu-headroom to at most 8Gi)"
        );
        assert_eq!(
            d(&two, "16Gi", &c, 64 * GI).unwrap().unwrap().headroom,
            Bytes(16 * GI),
            "per GPU"
        );
        for v in ["1Ei", "9Ei", "15Ei", "18446744073709551615"] {
            let e = d(&one, v, &c, 64 * GI).unwrap_err().to_string();
            assert!(e.contains("is more than the 8Gi"), "{v}: {e}");
        }
        // Never more than the node's memory, however many GPUs the spec names.
        let e = d(&two, "12Gi", &c, 10 * GI).unwrap_err().to_string();
        assert!(e.contains("more than the 10Gi a container with 2 GPUs may be granted (8Gi per GPU from [gpu] max_headroom_per_gpu, capped at the node's memory 10Gi)"), "{e}");
        let many: Vec<String> = (0..100_000).map(|i| format!("GPU-{i}")).collect();
        let env = format!("NVIDIA_VISIBLE_DEVICES={}", many.join(","));
        let inflated = spec(&[], &[&env], None);
        let e = decide("abc", &req(&inflated, &[]), &cfg(2 * GI), 64 * GI).unwrap_err().to_string();
        assert!(
            e.contains("(100000 GPU x 2Gi from [gpu] headroom_per_gpu) is more than the 64Gi")
                && e.contains("lower [gpu] headroom_per_gpu"),
            "{e}"
        );
    }

    #[test]
    fn a_limit_too_small_for_the_headroom_is_refused_clearly() {
        let s = spec(&["/dev/nvidia0"], &[], Some(GI as i64));
        let e = decide("abc", &req(&s, &[]), &cfg(GI), 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot give GPU container abc its driver-memory headroom: its memory limit 1Gi minus 1Gi of headroom (1 GPU x 1Gi from [gpu] headroom_per_gpu) leaves 0, below [gpu] min_memory_limit 64Mi (raise the container's memory limit to at least 1088Mi or lower dataplane-hook.io/gpu-headroom)"
        );
    }

    #[test]
    fn unlimited_containers_follow_the_policy() {
        let s = spec(&["/dev/nvidia0"], &[], None);
        let mut c = cfg(GI);
        let g = decide("c", &req(&s, &[]), &c, 24 * GI).unwrap().unwrap();
        assert_eq!(
            (g.limit, g.headroom),
            (None, Bytes(GI)),
            "allow: no limit, headroom still granted"
        );
        c.gpu.unlimited_policy = UnlimitedPolicy::Refuse;
        let e = decide("c", &req(&s, &[]), &c, 24 * GI).unwrap_err().to_string();
        assert!(
            e.contains("no memory limit")
                && e.contains("\"refuse\"")
                && e.contains("at least 1088Mi"),
            "{e}"
        );
        c.gpu.unlimited_policy = UnlimitedPolicy::LimitToNode;
        let g = decide("c", &req(&s, &[]), &c, 24 * GI).unwrap().unwrap();
        assert_eq!(g.limit, Some(Bytes(23 * GI)));
        assert!(
            decide("c", &req(&s, &[]), &c, 0).is_err(),
            "unknown node memory is refused, not guessed"
        );
    }

    const HOOK: &str = "/usr/bin/dataplane-hook";
    fn with_hooks(mut s: Value) -> Value {
        let entry = |stage: &str| json!([{"path": "/other"}, {"path": HOOK, "args": ["dataplane-hook", stage], "env": ["A=1"]}]);
        s["hooks"] =
            json!({"createRuntime": entry("createRuntime"), "poststop": entry("poststop")});
        s
    }

    #[test]
    fn wrapper_edit_lowers_limit_keeps_swap_allowance_and_tells_the_hook_in_its_entry() {
        let mut s = with_hooks(spec(&["/dev/nvidia0"], &[], Some(8 * GI as i64)));
        s["linux"]["resources"]["memory"]["swap"] = json!(10 * GI);
        s["linux"]["resources"]["memory"]["reservation"] = json!(8 * GI);
        let g = decide("c", &req(&s, &[]), &cfg(2 * GI), 0).unwrap().unwrap();
        assert!(edit_memory(&mut s, &g, true, Path::new(HOOK)));
        let m = &s["linux"]["resources"]["memory"];
        assert_eq!(m["limit"], json!(6 * GI));
        assert_eq!(m["swap"], json!(8 * GI), "2Gi of swap before and after");
        assert_eq!(m["reservation"], json!(6 * GI));
        assert_eq!(
            s["linux"]["resources"]["unified"]["memory.high"],
            json!(g.high.unwrap().0.to_string())
        );
        assert!(s.get("annotations").is_none(), "no annotation: a pod could forge one");
        let mark = format!("{LIMIT_ENV}={}", 8 * GI);
        assert_eq!(s["hooks"]["createRuntime"][1]["env"], json!(["A=1", mark]));
        assert!(
            s["hooks"]["createRuntime"][0].get("env").is_none(),
            "another hook is not ours to mark"
        );
        assert!(s["hooks"]["poststop"][1]["env"] == json!(["A=1"]), "poststop plans nothing");
        // The hook then reads its entry: same decision, nothing left for it to write.
        let h = decide("c", &req(&s, &[]), &cfg(2 * GI), 0).unwrap().unwrap();
        assert_eq!(
            (h.limit, h.requested_limit, h.set_cgroup),
            (Some(Bytes(6 * GI)), Some(Bytes(8 * GI)), false)
        );
        // A retried edit replaces the mark, never stacks a second one.
        assert!(edit_memory(&mut s, &h, true, Path::new(HOOK)));
        assert_eq!(s["hooks"]["createRuntime"][1]["env"], json!(["A=1", mark]));
        // A spec that disagrees with the wrapper's word is refused.
        let e = decide("c", &req(&s, &[]), &cfg(GI), 0).unwrap_err().to_string();
        assert!(e.contains("dataplane-runtime should have set"), "{e}");
        // No entry of ours: nothing is lowered (the hook would lower a second time).
        let mut s = spec(&["/dev/nvidia0"], &[], Some(8 * GI as i64));
        let before = s.clone();
        assert!(!edit_memory(&mut s, &g, true, Path::new(HOOK)));
        assert_eq!(s, before);
    }

    #[test]
    fn the_limit_marker_annotation_is_refused_and_proves_nothing() {
        // CRI-O copies every pod annotation into the spec; the hooks.d path reads the spec as it
        // comes. A forged marker used to make the hook write no limit while watch granted the
        // headroom.
        let s = spec(&["/dev/nvidia0"], &[], Some(8 * GI as i64));
        for v in [(8 * GI).to_string(), "unlimited".into(), "x".into()] {
            let a: BTreeMap<String, String> =
                [(LIMIT_MARKER.to_string(), v.clone())].into_iter().collect();
            let e = inspect(&s, &a, &host()).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!(
                    "cannot set up a GPU container: annotation {LIMIT_MARKER}={v:?} is reserved"
                )),
                "{e}"
            );
            assert!(e.ends_with(&format!("(remove the annotation {LIMIT_MARKER})")), "{e}");
        }
        // The pod's env is not a hook entry's env either.
        let s = spec(&["/dev/nvidia0"], &[&format!("{LIMIT_ENV}={}", 8 * GI)], Some(8 * GI as i64));
        assert_eq!(inspect(&s, &BTreeMap::new(), &host()).unwrap().lowered_from, None);
        // A hook entry's env is (prestart too); a bad or contradictory one is an error.
        let mut s = spec(&["/dev/nvidia0"], &[], Some(6 * GI as i64));
        s["hooks"] =
            json!({"prestart": [{"path": "/x", "env": [format!("{LIMIT_ENV}=unlimited")]}]});
        assert_eq!(inspect(&s, &BTreeMap::new(), &host()).unwrap().lowered_from, Some(None));
        s["hooks"]["createRuntime"] = json!([{"path": "/y", "env": [format!("{LIMIT_ENV}=1")]}]);
        assert!(inspect(&s, &BTreeMap::new(), &host())
            .unwrap_err()
            .to_string()
            .contains("disagree"));
        s["hooks"] =
            json!({"createRuntime": [{"path": "/y", "env": [format!("{LIMIT_ENV}=lots")]}]});
        assert!(inspect(&s, &BTreeMap::new(), &host())
            .unwrap_err()
            .to_string()
            .contains("not a byte count"));
    }

    #[test]
    fn wrapper_edit_on_v1_sets_no_unified_and_unlimited_allow_only_marks() {
        let mut s = with_hooks(spec(&["/dev/nvidia0"], &[], Some(8 * GI as i64)));
        let g = decide("c", &req(&s, &[]), &cfg(GI), 0).unwrap().unwrap();
        assert!(edit_memory(&mut s, &g, false, Path::new(HOOK)));
        assert!(s["linux"]["resources"].get("unified").is_none());
        let mut s = with_hooks(spec(&["/dev/nvidia0"], &[], None));
        let g = decide("c", &req(&s, &[]), &cfg(GI), 0).unwrap().unwrap();
        let before = s["linux"].clone();
        assert!(edit_memory(&mut s, &g, true, Path::new(HOOK)));
        assert_eq!(s["linux"], before);
        assert_eq!(
            s["hooks"]["createRuntime"][1]["env"][1],
            json!(format!("{LIMIT_ENV}=unlimited"))
        );
    }

    #[test]
    fn an_update_keeps_the_recorded_headroom_carved_out_of_the_new_limit() {
        let s = spec(&["/dev/nvidia0"], &[], Some(8 * GI as i64));
        let g = decide("c", &req(&s, &[]), &cfg(2 * GI), 0).unwrap().unwrap();
        // The config changed since create: the recorded headroom still rules.
        let c = cfg(GI);
        let u = replan("c", &g, Some(Some(16 * GI)), &c, 0).unwrap();
        assert_eq!(
            (u.headroom, u.requested_limit, u.limit),
            (Bytes(2 * GI), Some(Bytes(16 * GI)), Some(Bytes(14 * GI)))
        );
        assert_eq!(u.high, Some(Bytes(((14 * GI) as f64 * 0.95) as u64 / PAGE * PAGE)));
        assert_eq!((u.gpus, &u.evidence, u.set_cgroup), (g.gpus, &g.evidence, g.set_cgroup));
        assert_eq!(
            replan("c", &g, None, &c, 0).unwrap(),
            g,
            "no limit in the update: the recorded request stands"
        );
        assert_eq!(replan("c", &g, Some(None), &c, 0).unwrap().limit, None, "unlimited (allow)");
        let e = replan("abc", &g, Some(Some(2 * GI)), &c, 0).unwrap_err().to_string();
        assert_eq!(
            e,
            "cannot update GPU container abc without its driver-memory headroom: its memory limit 2Gi minus 2Gi of headroom (granted at create) leaves 0, below [gpu] min_memory_limit 64Mi (raise the container's memory limit to at least 2112Mi; the headroom granted at create stays while the container runs)"
        );
        // The update's resources JSON is lowered like the spec at create.
        let mut res = json!({"memory": {"limit": 16 * GI, "swap": 16 * GI, "reservation": 15 * GI}, "cpu": {"shares": 2}});
        lower_resources(res.as_object_mut().unwrap(), &u, true);
        assert_eq!(
            res["memory"],
            json!({"limit": 14 * GI, "swap": 14 * GI, "reservation": 14 * GI})
        );
        assert_eq!(res["unified"]["memory.high"], json!(u.high.unwrap().0.to_string()));
        assert_eq!(res["cpu"], json!({"shares": 2}));
    }

    #[test]
    fn host_gpus_are_counted_from_dev() {
        let t = tempfile::tempdir().unwrap();
        for f in ["nvidia0", "nvidia1", "nvidiactl", "nvidia-uvm"] {
            std::fs::write(t.path().join(f), "").unwrap();
        }
        std::fs::create_dir(t.path().join("dri")).unwrap();
        for f in ["renderD128", "card0"] {
            std::fs::write(t.path().join("dri").join(f), "").unwrap();
        }
        assert_eq!(HostGpus::probe_at(t.path()), HostGpus { nvidia: 2, render: 1 });
    }

    #[test]
    fn meminfo_total_parses() {
        assert_eq!(mem_total("MemTotal:       24684084 kB\nMemFree: 1 kB\n"), 24684084 * 1024);
        assert_eq!(mem_total(""), 0);
    }
}
