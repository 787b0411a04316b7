//! Owns G11: RDMA containers get working resource limits and a GID index that exists and is
//! usable on their devices.
//!
//! **Detection.** A container is an RDMA container when its spec gives it nodes under
//! `/dev/infiniband/` (`linux.devices`, or bind mounts) or it carries
//! `dataplane-hook.io/rdma-gid-index`. Its devices are the verbs devices behind its
//! `uverbsN` nodes (by major:minor, else by name); a container with only `rdma_cm`/`umad`
//! nodes, the whole `/dev/infiniband` directory, or just the annotation may reach any device.
//!
//! **Limits.** `RLIMIT_MEMLOCK` (`[rdma] memlock`, default unlimited: verbs pin every
//! registered buffer) and `RLIMIT_NOFILE` (`[rdma] nofile`: every QP, CQ and completion
//! channel is a file). The wrapper writes them into `process.rlimits`; on the hooks.d path the
//! hook raises them on the container's init with `prlimit` at createRuntime (per process:
//! nothing to undo). runc applies the spec's `process.rlimits` *after* createRuntime hooks, so
//! on the hooks.d path a limit the spec itself sets lower cannot be fixed by the hook and is
//! reported. Raising a hard limit needs `CAP_SYS_RESOURCE` (and NOFILE never exceeds
//! `fs.nr_open`); a host that cannot grant them gets an error or, with
//! `[rdma] on_unmet_limits = "warn"`, a warning and the most it can give.
//!
//! **GID index.** Read from the kernel's table
//! (`/sys/class/infiniband/<dev>/ports/<port>/{gids,gid_attrs/types,gid_attrs/ndevs}/<i>`).
//! An index is *usable* on a port when the slot exists and holds a non-zero GID, and on an
//! Ethernet (RoCE) port when its type is RoCE v2 (v1 too with `[rdma] allow_roce_v1`) and its
//! netdev is in the container's network namespace — a GID of a netdev elsewhere is not the
//! container's to use: MLNX_OFED's ib_core refuses it at QP modify (ENODEV), upstream sends
//! the traffic out of an interface the pod does not own. Ports whose every slot is unusable
//! are ignored for devices the container may merely reach; a device the spec names must have
//! a usable port. The index must be usable on every remaining port (`MC_GID_INDEX` and
//! `NCCL_IB_GID_INDEX` are process-wide).
//!
//! `auto` picks the best index by the ranking NCCL (`ncclIbGetGidIndex`: IPv4 family first,
//! then RoCE v2, link-local last) and Mooncake (`findBestGidIndex`: RoCE v2 with an
//! IPv4-mapped GID on a netdev first) both use — RoCE v2 IPv4-mapped, then IPv6 global, then
//! link-local; InfiniBand ports take index 0 — lowest index on ties, worst port decides — and
//! sets `MC_GID_INDEX` and `NCCL_IB_GID_INDEX` (wrapper path; hooks cannot change the
//! environment, so on hooks.d the choice is only logged). A given index, and any index
//! already in the environment, is checked; an unusable one fails the create with the valid
//! indexes. Negative values mean "the application chooses" (Mooncake ≥ v0.3.8, NCCL) and are
//! replaced only under `auto`; `MC_GID_INDEX=0` is checked as index 0 (Mooncake before v0.3.8
//! read it as auto).
//!
//! **Which network namespace.** At the wrapper (`create`), the container's namespace may not
//! exist yet: a spec `network` namespace with a `path` (Kubernetes pods join the sandbox's
//! namespace, which CNI has already set up; podman's pre-made namespace) is read through that
//! path; no `network` entry means the host's namespace; an entry without a path is a fresh,
//! empty namespace the runtime creates later — the wrapper then judges types and addresses
//! only. The hook re-validates at createRuntime against `/proc/<init>/ns/net`, the namespace
//! the application will really run in.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::config::{Config, OnUnmet, RdmaConfig};
use crate::features::{FactsContext, SpecContext};
use crate::host::rdma::{GidType, LinkLayer, NetnsView, PortTable, RdmaSysfs};
use crate::host::rlimit::{self, Grantable, Limit, Resource};
use crate::oci::Bundle;
use crate::plan::{NodeFacts, Plan, PlanError, RlimitStep, Step};
use crate::request::{GidIndex, Request, PREFIX};

/// The environment variables the chosen index goes into: Mooncake's and NCCL's.
pub const GID_ENV: [&str; 2] = ["MC_GID_INDEX", "NCCL_IB_GID_INDEX"];

const IB_DIR: &str = "/dev/infiniband";

// ---------------------------------------------------------------------------------------------
// What the spec says

/// A `/dev/infiniband/uverbsN` node the spec gives the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UverbsRef {
    /// The node's path as the spec names it (for messages).
    pub path: String,
    /// `major:minor` from `linux.devices`.
    pub devnum: Option<(i64, i64)>,
    /// The host node's name (`uverbs0`), when known from a bind mount or the path.
    pub name: String,
}

/// The container's network namespace as the spec describes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NetnsRef {
    /// No `network` namespace entry: the host's.
    #[default]
    Host,
    /// Joins an existing namespace.
    Path(PathBuf),
    /// A fresh namespace the runtime creates (empty at wrapper time).
    New,
}

/// The RDMA-relevant parts of a spec.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RdmaSpec {
    pub uverbs: Vec<UverbsRef>,
    /// Nodes other than uverbs (`rdma_cm`, `umad*`), or the whole directory.
    pub other_nodes: bool,
    pub whole_dir: bool,
    /// `GID_ENV` variables in `process.env`, as written.
    pub env: BTreeMap<String, String>,
    pub netns: NetnsRef,
    /// `process.rlimits` for the resources we manage.
    pub rlimits: BTreeMap<Resource, Limit>,
}

fn under_ib(p: &str) -> Option<&str> {
    let rest = p.strip_prefix(IB_DIR)?;
    if rest.is_empty() || rest == "/" {
        return Some("");
    }
    rest.strip_prefix('/').map(|r| r.trim_end_matches('/'))
}

impl RdmaSpec {
    /// Reads the raw spec; None when the container is not an RDMA container.
    pub fn read(raw: &Value, req: &Request) -> Option<RdmaSpec> {
        let mut s = RdmaSpec::default();
        let devices =
            raw.pointer("/linux/devices").and_then(Value::as_array).cloned().unwrap_or_default();
        for d in &devices {
            let Some(path) = d.get("path").and_then(Value::as_str) else { continue };
            match under_ib(path) {
                Some(name) if name.starts_with("uverbs") => {
                    let devnum = match (
                        d.get("major").and_then(Value::as_i64),
                        d.get("minor").and_then(Value::as_i64),
                    ) {
                        (Some(a), Some(b)) => Some((a, b)),
                        _ => None,
                    };
                    s.uverbs.push(UverbsRef {
                        path: path.to_string(),
                        devnum,
                        name: name.to_string(),
                    });
                }
                Some("") => s.whole_dir = true,
                Some(_) => s.other_nodes = true,
                None => {}
            }
        }
        let mounts = raw.get("mounts").and_then(Value::as_array).cloned().unwrap_or_default();
        for m in &mounts {
            let dest = m.get("destination").and_then(Value::as_str).unwrap_or("");
            let src = m.get("source").and_then(Value::as_str).unwrap_or("");
            match (under_ib(src), under_ib(dest)) {
                (Some(""), _) | (_, Some("")) => s.whole_dir = true,
                (Some(name), _) if name.starts_with("uverbs") => s.uverbs.push(UverbsRef {
                    path: dest.to_string(),
                    devnum: None,
                    name: name.to_string(),
                }),
                (Some(_), _) | (_, Some(_)) => s.other_nodes = true,
                (None, None) => {}
            }
        }
        if s.uverbs.is_empty() && !s.other_nodes && !s.whole_dir && req.rdma_gid_index.is_none() {
            return None;
        }
        for e in raw.pointer("/process/env").and_then(Value::as_array).into_iter().flatten() {
            if let Some((k, v)) = e.as_str().and_then(|kv| kv.split_once('=')) {
                if GID_ENV.contains(&k) {
                    s.env.insert(k.to_string(), v.to_string());
                }
            }
        }
        let ns = raw.pointer("/linux/namespaces").and_then(Value::as_array).and_then(|a| {
            a.iter().find(|n| n.get("type").and_then(Value::as_str) == Some("network")).cloned()
        });
        s.netns = match ns {
            None => NetnsRef::Host,
            Some(n) => match n.get("path").and_then(Value::as_str).filter(|p| !p.is_empty()) {
                Some(p) => NetnsRef::Path(PathBuf::from(p)),
                None => NetnsRef::New,
            },
        };
        for r in raw.pointer("/process/rlimits").and_then(Value::as_array).into_iter().flatten() {
            let ty = r.get("type").and_then(Value::as_str).unwrap_or("");
            if let Some(res) = Resource::ALL.into_iter().find(|x| x.oci_name() == ty) {
                let v = |k| r.get(k).and_then(Value::as_u64).unwrap_or(0);
                s.rlimits.insert(res, Limit { soft: v("soft"), hard: v("hard") });
            }
        }
        Some(s)
    }

    /// The verbs devices the spec names; None: the container may reach any device.
    pub fn named_devices(&self, sysfs: &RdmaSysfs) -> Result<Option<BTreeSet<String>>, String> {
        if self.whole_dir || self.uverbs.is_empty() {
            return Ok(None);
        }
        let mut out = BTreeSet::new();
        for u in &self.uverbs {
            let dev = match u.devnum {
                Some((a, b)) => sysfs.uverbs_device_by_number(a, b),
                None => sysfs.uverbs_device(&u.name),
            };
            match dev {
                Some(d) => {
                    out.insert(d);
                }
                None => {
                    let num = u.devnum.map(|(a, b)| format!(" ({a}:{b})")).unwrap_or_default();
                    return Err(format!("{}{num} is not a verbs device on this node", u.path));
                }
            }
        }
        Ok(Some(out))
    }
}

// ---------------------------------------------------------------------------------------------
// GID tables: which index is usable, which is best

/// Why an index cannot be used on a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unusable {
    Beyond { len: usize },
    Empty,
    WrongType(GidType),
    OutsideNetns { ndev: String },
}

impl Unusable {
    fn describe(&self, index: u32) -> String {
        match self {
            Unusable::Beyond { len } => {
                format!(
                    "index {index} is beyond the GID table ({len} entr{})",
                    if *len == 1 { "y" } else { "ies" }
                )
            }
            Unusable::Empty => format!("index {index} is empty"),
            Unusable::WrongType(t) => format!("index {index} is {t}, not RoCE v2"),
            Unusable::OutsideNetns { ndev } => {
                format!("index {index} belongs to {ndev}, which is not in the container's network namespace")
            }
        }
    }
}

/// A port with its usable indexes and their scores.
type PortUse<'a> = (&'a PortTable, Vec<(u32, u8)>);

/// Everything needed to judge GID indexes for one container.
#[derive(Debug, Clone, PartialEq)]
pub struct GidContext {
    pub tables: Vec<PortTable>,
    /// Devices the spec names (each must offer a usable GID); None: any device it may reach.
    pub named: Option<BTreeSet<String>>,
    /// The container's network namespace; None: not known yet (wrapper, fresh namespace).
    pub netns: Option<NetnsView>,
    pub allow_roce_v1: bool,
}

impl GidContext {
    /// Score of a usable index (higher is better), or why it is unusable.
    pub fn judge(&self, t: &PortTable, index: u32) -> Result<u8, Unusable> {
        let Some(e) = t.entries.get(index as usize) else {
            return Err(Unusable::Beyond { len: t.entries.len() });
        };
        let gid = match e.gid {
            Some(g) if !g.is_zero() => g,
            _ => return Err(Unusable::Empty),
        };
        if t.link_layer == LinkLayer::InfiniBand {
            return Ok(10);
        }
        let family = if gid.ipv4_mapped().is_some() {
            3
        } else if gid.is_link_local() {
            1
        } else {
            2
        };
        let version = match &e.gid_type {
            Some(GidType::RoceV2) => 1,
            Some(GidType::IbRoceV1) if self.allow_roce_v1 => 0,
            Some(other) => return Err(Unusable::WrongType(other.clone())),
            // No type attribute (iWARP-style devices such as eRDMA): nothing to judge.
            None => 0,
        };
        if let (Some(ndev), Some(view)) = (&e.ndev, &self.netns) {
            if !view.holds(ndev, &gid) {
                return Err(Unusable::OutsideNetns { ndev: ndev.clone() });
            }
        }
        Ok(family * 2 + version)
    }

    fn usable(&self, t: &PortTable) -> Vec<(u32, u8)> {
        (0..t.entries.len() as u32).filter_map(|i| self.judge(t, i).ok().map(|s| (i, s))).collect()
    }

    fn netns_note(&self) -> String {
        match &self.netns {
            Some(v) => {
                format!(" (the container's network namespace has: {})", v.names().join(", "))
            }
            None => String::new(),
        }
    }

    /// The ports of the container's devices with their usable indexes: every port of a named
    /// device; for "any device", the ports that have a usable index at all.
    fn relevant(&self) -> Result<Vec<PortUse<'_>>, String> {
        let tables: Vec<&PortTable> = match &self.named {
            Some(n) => self.tables.iter().filter(|t| n.contains(&t.device)).collect(),
            None => self.tables.iter().collect(),
        };
        if tables.is_empty() {
            return Err("there are no RDMA devices on this node".into());
        }
        let all: Vec<_> = tables.into_iter().map(|t| (t, self.usable(t))).collect();
        if self.named.is_some() {
            return Ok(all);
        }
        let some: Vec<_> = all.into_iter().filter(|(_, u)| !u.is_empty()).collect();
        if some.is_empty() {
            return Err(format!("no RDMA port has a usable GID{}", self.netns_note()));
        }
        Ok(some)
    }

    /// Named devices none of whose ports has a usable index.
    fn dead_devices(&self, rel: &[PortUse]) -> Vec<String> {
        let Some(named) = &self.named else { return vec![] };
        named
            .iter()
            .filter(|d| !rel.iter().any(|(t, u)| &t.device == *d && !u.is_empty()))
            .cloned()
            .collect()
    }

    /// `valid indexes: 3 (mlx5_0 port 1: 1, 3; mlx5_1 port 1: 1, 3, 5)`.
    fn listing(&self, counted: &[PortUse]) -> String {
        let common = common_indexes(counted);
        let list = |v: &[u32]| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            }
        };
        let mut s = format!("valid indexes: {}", list(&common));
        if counted.len() > 1 {
            let per: Vec<String> = counted
                .iter()
                .map(|(t, u)| {
                    format!(
                        "{} port {}: {}",
                        t.device,
                        t.port,
                        list(&u.iter().map(|x| x.0).collect::<Vec<_>>())
                    )
                })
                .collect();
            let _ = write!(s, " ({})", per.join("; "));
        }
        if common.is_empty() {
            s.push_str(&self.netns_note());
        }
        s
    }

    /// Checks `index`: Err(why) names the failing ports and the valid indexes.
    pub fn check(&self, index: u32) -> Result<(), String> {
        let rel = self.relevant()?;
        let dead = self.dead_devices(&rel);
        let counted: Vec<_> = rel.iter().filter(|(_, u)| !u.is_empty()).cloned().collect();
        let failures: Vec<String> = rel
            .iter()
            .filter(|(t, u)| !u.is_empty() || dead.contains(&t.device))
            .filter_map(|(t, _)| {
                self.judge(t, index)
                    .err()
                    .map(|u| format!("on {} port {} {}", t.device, t.port, u.describe(index)))
            })
            .collect();
        if failures.is_empty() {
            return Ok(());
        }
        let listing = if dead.is_empty() {
            self.listing(&counted)
        } else {
            format!("valid indexes: none{}", self.netns_note())
        };
        Err(format!("{}; {listing}", failures.join("; ")))
    }

    /// The best index usable on every port that has any.
    pub fn choose(&self) -> Result<u32, String> {
        let rel = self.relevant()?;
        if let Some(d) = self.dead_devices(&rel).first() {
            return Err(format!("{d} has no usable GID{}", self.netns_note()));
        }
        let counted: Vec<_> = rel.into_iter().filter(|(_, u)| !u.is_empty()).collect();
        let best = common_indexes(&counted)
            .into_iter()
            .map(|i| {
                let worst = counted
                    .iter()
                    .map(|(_, u)| u.iter().find(|x| x.0 == i).map(|x| x.1).unwrap_or(0))
                    .min()
                    .unwrap_or(0);
                (worst, std::cmp::Reverse(i))
            })
            .max();
        match best {
            Some((_, std::cmp::Reverse(i))) => Ok(i),
            None => Err(format!(
                "no index is usable on every RDMA port of the container; {}",
                self.listing(&counted)
            )),
        }
    }
}

fn common_indexes(counted: &[PortUse]) -> Vec<u32> {
    let mut it = counted.iter().map(|(_, u)| u.iter().map(|x| x.0).collect::<BTreeSet<u32>>());
    let first = it.next().unwrap_or_default();
    it.fold(first, |acc, s| acc.intersection(&s).copied().collect()).into_iter().collect()
}

// ---------------------------------------------------------------------------------------------
// The GID decision (both paths)

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EnvIndex {
    /// Negative: the application chooses.
    AppAuto,
    Index(u32),
}

fn parse_env_index(var: &str, v: &str) -> Result<EnvIndex, String> {
    match v.trim().parse::<i64>() {
        Ok(n) if n < 0 => Ok(EnvIndex::AppAuto),
        Ok(n) => {
            u32::try_from(n).map(EnvIndex::Index).map_err(|_| format!("{var}={v} is out of range"))
        }
        Err(_) => Err(format!("{var}={v:?} in the container's environment is not an integer")),
    }
}

/// What the GID decision asks of the spec.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GidPlan {
    pub chosen: Option<u32>,
    /// Environment variables to set (`MC_GID_INDEX=3`).
    pub set_env: Vec<(String, String)>,
}

fn fix_for(source: &str) -> String {
    match source {
        "MC_GID_INDEX" => format!(
            "set MC_GID_INDEX to a valid index or -1, or remove it and use {PREFIX}rdma-gid-index: auto (Mooncake before v0.3.8 read 0 as auto; later versions read it as index 0)"
        ),
        "NCCL_IB_GID_INDEX" => {
            format!("set NCCL_IB_GID_INDEX to a valid index or -1, or remove it and use {PREFIX}rdma-gid-index: auto")
        }
        _ => format!("set {PREFIX}rdma-gid-index to auto or a valid index"),
    }
}

fn needs_gid(req_index: Option<GidIndex>, env: &BTreeMap<String, String>) -> bool {
    req_index.is_some()
        || env.iter().any(|(k, v)| !matches!(parse_env_index(k, v), Ok(EnvIndex::AppAuto)))
}

/// Checks every index the container will use and chooses one for `auto`. `ctx` is built only
/// when there is something to judge.
pub fn decide_gid(
    id: &str,
    req_index: Option<GidIndex>,
    env: &BTreeMap<String, String>,
    ctx: impl FnOnce() -> Result<GidContext, PlanError>,
) -> Result<GidPlan, PlanError> {
    if !needs_gid(req_index, env) {
        return Ok(GidPlan::default());
    }
    let mut parsed = BTreeMap::new();
    for (k, v) in env {
        let e = parse_env_index(k, v).map_err(|why| PlanError {
            what: format!("cannot use the RDMA GID index of container {id}"),
            why,
            fix: fix_for(k),
        })?;
        parsed.insert(k.as_str(), e);
    }
    let ctx = ctx()?;
    let refuse = |index: u32, source: &str, why: String| PlanError {
        what: format!(
            "cannot use RDMA GID index {index} ({}) for container {id}",
            if source.starts_with(PREFIX) {
                source.to_string()
            } else {
                format!("{source}={index} in its environment")
            }
        ),
        why,
        fix: fix_for(source),
    };
    for (k, e) in &parsed {
        if let EnvIndex::Index(i) = e {
            ctx.check(*i).map_err(|why| refuse(*i, k, why))?;
        }
    }
    let ann = format!("{PREFIX}rdma-gid-index");
    let chosen = match req_index {
        None => return Ok(GidPlan::default()),
        Some(GidIndex::Index(n)) => {
            ctx.check(n).map_err(|why| refuse(n, &ann, why))?;
            for (k, e) in &parsed {
                if let EnvIndex::Index(m) = e {
                    if *m != n {
                        return Err(PlanError {
                            what: format!("cannot use RDMA GID index {n} ({ann}) for container {id}"),
                            why: format!("its environment sets {k}={m}"),
                            fix: format!("make {k} and {ann} agree, or remove one of them"),
                        });
                    }
                }
            }
            n
        }
        Some(GidIndex::Auto) => ctx.choose().map_err(|why| PlanError {
            what: format!("cannot choose an RDMA GID index for container {id}"),
            why,
            fix: "give the container a RoCE netdev in its network namespace, or an RDMA device with a usable GID".into(),
        })?,
    };
    let set_env = GID_ENV
        .iter()
        .filter(|k| !matches!(parsed.get(**k), Some(EnvIndex::Index(_))))
        .map(|k| (k.to_string(), chosen.to_string()))
        .collect();
    Ok(GidPlan { chosen: Some(chosen), set_env })
}

/// Builds the GID context from the node's sysfs for the spec's devices, judged in `netns`.
pub fn gid_context(
    spec: &RdmaSpec,
    cfg: &RdmaConfig,
    sysfs: &RdmaSysfs,
    netns: Option<NetnsView>,
    id: &str,
) -> Result<GidContext, PlanError> {
    let err = |why: String| PlanError {
        what: format!("cannot check the RDMA GID index of container {id}"),
        why,
        fix: "check the container's RDMA devices (`ibv_devinfo -v`, `rdma link`)".into(),
    };
    let named = spec.named_devices(sysfs).map_err(err)?;
    let mut tables = Vec::new();
    let devices: Vec<String> = match &named {
        Some(n) => n.iter().cloned().collect(),
        None => sysfs.devices(),
    };
    for d in devices {
        tables.extend(sysfs.tables(&d).map_err(|e| err(e.to_string()))?);
    }
    Ok(GidContext { tables, named, netns, allow_roce_v1: cfg.allow_roce_v1 })
}

// ---------------------------------------------------------------------------------------------
// Limits

/// The limits RDMA containers get.
pub fn wanted(cfg: &RdmaConfig) -> BTreeMap<Resource, u64> {
    [(Resource::Memlock, cfg.memlock_bytes()), (Resource::Nofile, cfg.nofile)].into_iter().collect()
}

/// Limits to set, and what cannot be granted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitPlan {
    pub set: Vec<(Resource, Limit)>,
    pub unmet: Vec<String>,
}

fn why_capped(r: Resource, g: &Grantable) -> String {
    if r == Resource::Nofile && !g.cap_sys_resource {
        format!("no CAP_SYS_RESOURCE to raise the hard limit; fs.nr_open is {}", g.nr_open)
    } else if r == Resource::Nofile {
        format!("fs.nr_open is {}", g.nr_open)
    } else {
        "no CAP_SYS_RESOURCE to raise the hard limit".into()
    }
}

/// Wrapper path: what to write into `process.rlimits`. The runtime the wrapper execs applies
/// them from a process with the wrapper's limits and capabilities (`own`).
pub fn limits_for_spec(
    want: &BTreeMap<Resource, u64>,
    spec: &BTreeMap<Resource, Limit>,
    own: &BTreeMap<Resource, Limit>,
    g: Grantable,
) -> LimitPlan {
    let mut lp = LimitPlan::default();
    for (&r, &w) in want {
        let cur = spec.get(&r).copied();
        if cur.is_some_and(|c| c.soft >= w && c.hard >= w) {
            continue;
        }
        let own_hard = own.get(&r).map(|l| l.hard).unwrap_or(0);
        let max = g.max_hard(r, own_hard);
        let base = cur.unwrap_or(Limit { soft: 0, hard: 0 });
        let give = if w <= max {
            w
        } else {
            lp.unmet.push(format!(
                "{} {} (the runtime can grant at most {}: {})",
                r.oci_name(),
                rlimit::show(w),
                rlimit::show(max),
                why_capped(r, &g)
            ));
            max
        };
        let new = Limit { soft: base.soft.max(give), hard: base.hard.max(give) };
        if Some(new) != cur {
            lp.set.push((r, new));
        }
    }
    lp
}

/// Hook path: what to `prlimit` on the init (`init`: its current limits). Limits the spec sets
/// are applied by runc after createRuntime hooks, so a low one there cannot be fixed here.
pub fn limits_for_init(
    want: &BTreeMap<Resource, u64>,
    spec: &BTreeMap<Resource, Limit>,
    init: &BTreeMap<Resource, Limit>,
    g: Grantable,
) -> LimitPlan {
    let mut lp = LimitPlan::default();
    for (&r, &w) in want {
        if let Some(s) = spec.get(&r) {
            if s.soft < w || s.hard < w {
                lp.unmet.push(format!(
                    "{} {}: the spec's process.rlimits sets {}:{}, which the runtime applies after hooks (raise it where the spec is made: podman --ulimit, CRI-O default_ulimits, or use the dataplane runtime handler)",
                    r.oci_name(),
                    rlimit::show(w),
                    rlimit::show(s.soft),
                    rlimit::show(s.hard)
                ));
            }
            continue;
        }
        let cur = init.get(&r).copied().unwrap_or(Limit { soft: 0, hard: 0 });
        if cur.soft >= w && cur.hard >= w {
            continue;
        }
        let max = g.max_hard(r, cur.hard);
        let give = if w <= max {
            w
        } else {
            lp.unmet.push(format!(
                "{} {} (at most {} can be granted: {})",
                r.oci_name(),
                rlimit::show(w),
                rlimit::show(max),
                why_capped(r, &g)
            ));
            max
        };
        let new = Limit { soft: cur.soft.max(give), hard: cur.hard.max(give) };
        if new != cur {
            lp.set.push((r, new));
        }
    }
    lp
}

fn unmet_error(id: &str, unmet: &[String]) -> PlanError {
    PlanError {
        what: format!("cannot give RDMA container {id} its resource limits"),
        why: unmet.join("; "),
        fix: "run the runtime with CAP_SYS_RESOURCE or higher hard limits (e.g. LimitMEMLOCK=infinity, LimitNOFILE= in its service), lower [rdma] memlock/nofile, or set [rdma] on_unmet_limits = \"warn\"".into(),
    }
}

fn warn_line(msg: &str) -> String {
    format!("RDMA limits not fully granted: {msg}; the container gets what the host can give")
}

// ---------------------------------------------------------------------------------------------
// Spec edit (wrapper) and plan (hook)

fn set_env(raw: &mut Value, k: &str, v: &str) {
    let process = raw
        .as_object_mut()
        .expect("spec is an object")
        .entry("process")
        .or_insert_with(|| json!({}));
    let env = process.as_object_mut().map(|p| p.entry("env").or_insert_with(|| json!([])));
    let Some(env) = env.and_then(Value::as_array_mut) else { return };
    let line = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.as_str().is_some_and(|s| s.split_once('=').map(|x| x.0) == Some(k)))
    {
        Some(e) => *e = json!(line),
        None => env.push(json!(line)),
    }
}

fn set_rlimit(raw: &mut Value, r: Resource, l: Limit) {
    let process = raw
        .as_object_mut()
        .expect("spec is an object")
        .entry("process")
        .or_insert_with(|| json!({}));
    let Some(list) =
        process.as_object_mut().map(|p| p.entry("rlimits").or_insert_with(|| json!([])))
    else {
        return;
    };
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("array");
    let entry = json!({"type": r.oci_name(), "hard": l.hard, "soft": l.soft});
    match arr.iter_mut().find(|e| e.get("type").and_then(Value::as_str) == Some(r.oci_name())) {
        Some(e) => *e = entry,
        None => arr.push(entry),
    }
}

fn own_limits() -> BTreeMap<Resource, Limit> {
    Resource::ALL.into_iter().filter_map(|r| rlimit::get(0, r).ok().map(|l| (r, l))).collect()
}

/// The wrapper's view of the container's network namespace (see the module doc).
fn wrapper_netns(spec: &RdmaSpec, id: &str) -> Result<Option<NetnsView>, PlanError> {
    let path = match &spec.netns {
        NetnsRef::New => return Ok(None),
        NetnsRef::Host => Path::new("/proc/self/ns/net").to_path_buf(),
        NetnsRef::Path(p) => p.clone(),
    };
    crate::host::rdma::netns_view(&path).map(Some).map_err(|e| PlanError {
        what: format!("cannot check the RDMA GID index of container {id}"),
        why: e.to_string(),
        fix: "check the network namespace path in the spec".into(),
    })
}

pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    let Some(spec) = RdmaSpec::read(&b.raw, req) else { return Ok(()) };
    let id = ctx.container_id.unwrap_or("(unnamed)");
    let cfg = &ctx.config.rdma;
    let lp = limits_for_spec(&wanted(cfg), &spec.rlimits, &own_limits(), rlimit::grantable());
    if !lp.unmet.is_empty() {
        match cfg.on_unmet_limits {
            OnUnmet::Error => return Err(unmet_error(id, &lp.unmet)),
            OnUnmet::Warn => {
                let msg = warn_line(&lp.unmet.join("; "));
                tracing::warn!(container = id, "{msg}");
                eprintln!("dataplane-hook: warning: container {id}: {msg}");
            }
        }
    }
    for (r, l) in &lp.set {
        set_rlimit(&mut b.raw, *r, *l);
    }
    let gp = decide_gid(id, req.rdma_gid_index, &spec.env, || {
        let netns = wrapper_netns(&spec, id)?;
        gid_context(&spec, cfg, &RdmaSysfs::default(), netns, id)
    })?;
    for (k, v) in &gp.set_env {
        set_env(&mut b.raw, k, v);
    }
    if let Some(i) = gp.chosen {
        tracing::info!(container = id, index = i, "RDMA GID index");
    }
    Ok(())
}

/// What the hook knows about an RDMA container (read at createRuntime, judged in [`plan`]).
#[derive(Debug, Clone, PartialEq)]
pub struct RdmaFacts {
    pub spec: RdmaSpec,
    /// The init's current limits.
    pub init_limits: BTreeMap<Resource, Limit>,
    pub grantable: Grantable,
    /// The GID tables judged in the init's network namespace; None when no index is asked for.
    pub gid: Option<GidContext>,
}

/// G11: the RDMA container's spec, limits and GID tables, read by the hook.
pub fn facts(ctx: &FactsContext, facts: &mut NodeFacts) -> Result<(), PlanError> {
    let c = ctx;
    if let Some(f) = hook_facts(c.config, c.bundle, c.request, c.container_id, c.pid)? {
        facts.insert(f);
    }
    Ok(())
}

/// Reads the facts for an RDMA container whose init is `pid`; None for other containers.
pub fn hook_facts(
    cfg: &Config,
    bundle: &Bundle,
    req: &Request,
    id: &str,
    pid: i32,
) -> Result<Option<RdmaFacts>, PlanError> {
    let Some(spec) = RdmaSpec::read(&bundle.raw, req) else { return Ok(None) };
    let mut init_limits = BTreeMap::new();
    for r in Resource::ALL {
        let l = rlimit::get(pid, r).map_err(|e| PlanError {
            what: format!("cannot read the resource limits of container {id}"),
            why: format!("prlimit on its init (pid {pid}): {e}"),
            fix: "run the hook at createRuntime, where the runtime passes the init's pid".into(),
        })?;
        init_limits.insert(r, l);
    }
    let gid = if needs_gid(req.rdma_gid_index, &spec.env) {
        let ns = PathBuf::from(format!("/proc/{pid}/ns/net"));
        let view = crate::host::rdma::netns_view(&ns).map_err(|e| PlanError {
            what: format!("cannot check the RDMA GID index of container {id}"),
            why: e.to_string(),
            fix: "run the hook at createRuntime, where the runtime passes the init's pid".into(),
        })?;
        Some(gid_context(&spec, &cfg.rdma, &RdmaSysfs::default(), Some(view), id)?)
    } else {
        None
    };
    Ok(Some(RdmaFacts { spec, init_limits, grantable: rlimit::grantable(), gid }))
}

pub fn plan(
    id: &str,
    req: &Request,
    cfg: &Config,
    facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    let Some(f) = facts.get::<RdmaFacts>() else { return Ok(()) };
    let policy = cfg.rdma.on_unmet_limits;
    let lp = limits_for_init(&wanted(&cfg.rdma), &f.spec.rlimits, &f.init_limits, f.grantable);
    if !lp.unmet.is_empty() {
        match policy {
            OnUnmet::Error => return Err(unmet_error(id, &lp.unmet)),
            OnUnmet::Warn => p.warnings.push(warn_line(&lp.unmet.join("; "))),
        }
    }
    for (resource, limit) in lp.set {
        p.push(Step::Rlimit(RlimitStep { resource, limit, required: policy == OnUnmet::Error }));
    }
    let gp = decide_gid(id, req.rdma_gid_index, &f.spec.env, || {
        f.gid.clone().ok_or_else(|| PlanError {
            what: format!("cannot check the RDMA GID index of container {id}"),
            why: "the GID tables were not read".into(),
            fix: "report this as a bug".into(),
        })
    })?;
    if !gp.set_env.is_empty() {
        let vars: Vec<String> = gp.set_env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        p.warnings.push(format!(
            "RDMA GID index {} is usable, but a hook cannot set {} in the container's environment (use the dataplane runtime handler, or set them in the pod spec)",
            gp.chosen.map(|c| c.to_string()).unwrap_or_default(),
            vars.join(" ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::rdma::{fixture, Interface};
    use crate::host::rlimit::UNLIMITED;
    use std::net::IpAddr;

    fn iface(addrs: &[&str], mac: [u8; 6]) -> Interface {
        Interface {
            addrs: addrs.iter().map(|a| a.parse::<IpAddr>().unwrap()).collect(),
            mac: Some(mac),
        }
    }

    /// The host's namespace of the mlx5 fixture: the PF netdevs.
    fn host_ns() -> NetnsView {
        let mut v = NetnsView::default();
        v.interfaces.insert("lo".into(), iface(&["127.0.0.1", "::1"], [0; 6]));
        v.interfaces.insert(
            "ens1f0np0".into(),
            iface(
                &["10.110.0.33", "fe80::ac0:ebff:fe3d:ca54"],
                [0x08, 0xc0, 0xeb, 0x3d, 0xca, 0x54],
            ),
        );
        v.interfaces.insert(
            "ens1f1np1".into(),
            iface(
                &["10.111.0.33", "fdaa::22", "fe80::ac0:ebff:fe3d:ca55"],
                [0x08, 0xc0, 0xeb, 0x3d, 0xca, 0x55],
            ),
        );
        v
    }

    /// A pod's namespace: its own eth0 (a veth) and the macvlan net1 on mlx5_0's PF.
    fn pod_ns() -> NetnsView {
        let mut v = NetnsView::default();
        v.interfaces.insert("lo".into(), iface(&["127.0.0.1"], [0; 6]));
        v.interfaces
            .insert("eth0".into(), iface(&["10.244.1.5"], [0x0a, 0x58, 0x0a, 0xf4, 0x01, 0x05]));
        v.interfaces.insert(
            "net1".into(),
            iface(
                &["10.110.1.101", "fe80::4c1e:5aff:fe00:a01"],
                [0x4e, 0x1e, 0x5a, 0x00, 0x0a, 0x01],
            ),
        );
        v
    }

    fn ctx(texts: &[&str], named: Option<&[&str]>, netns: Option<NetnsView>) -> GidContext {
        let t = fixture::tree(texts);
        let sysfs = RdmaSysfs::at(t.path());
        let devices: Vec<String> = match named {
            Some(n) => n.iter().map(|s| s.to_string()).collect(),
            None => sysfs.devices(),
        };
        let tables = devices.iter().flat_map(|d| sysfs.tables(d).unwrap()).collect();
        GidContext {
            tables,
            named: named.map(|n| n.iter().map(|s| s.to_string()).collect()),
            netns,
            allow_roce_v1: false,
        }
    }

    #[test]
    fn mlx5_auto_takes_roce_v2_ipv4_and_worst_port_decides() {
        // One device: its IPv4 RoCE v2 GID.
        assert_eq!(ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(host_ns())).choose(), Ok(3));
        // mlx5_1 has IPv6 at 3 and IPv4 at 5.
        assert_eq!(ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_1"]), Some(host_ns())).choose(), Ok(5));
        // Both: one index for the process; 3 is IPv4 on mlx5_0 and IPv6 on mlx5_1, better than
        // link-local 1 on both; 5 is not usable on mlx5_0 (net1 is not in the host namespace).
        let both = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0", "mlx5_1"]), Some(host_ns()));
        assert_eq!(both.choose(), Ok(3));
        let e = both.check(5).unwrap_err();
        assert!(e.contains("on mlx5_0 port 1 index 5 belongs to net1, which is not in the container's network namespace"), "{e}");
        assert!(
            e.contains("valid indexes: 1, 3 (mlx5_0 port 1: 1, 3; mlx5_1 port 1: 1, 3, 5)"),
            "{e}"
        );
    }

    #[test]
    fn roce_v1_and_empty_slots_are_refused() {
        let c = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(host_ns()));
        assert_eq!(
            c.check(2).unwrap_err(),
            "on mlx5_0 port 1 index 2 is IB/RoCE v1, not RoCE v2; valid indexes: 1, 3"
        );
        assert_eq!(
            c.check(9).unwrap_err(),
            "on mlx5_0 port 1 index 9 is empty; valid indexes: 1, 3"
        );
        assert!(c
            .check(300)
            .unwrap_err()
            .contains("index 300 is beyond the GID table (255 entries)"));
        c.check(1).unwrap();
        let v1 = GidContext { allow_roce_v1: true, ..c };
        v1.check(2).unwrap();
        assert_eq!(v1.choose(), Ok(3), "v2 still ranks above v1");
    }

    #[test]
    fn in_a_pod_only_the_macvlan_gids_are_usable() {
        let c = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(pod_ns()));
        assert_eq!(c.choose(), Ok(7));
        let e = c.check(3).unwrap_err();
        assert_eq!(e, "on mlx5_0 port 1 index 3 belongs to ens1f0np0, which is not in the container's network namespace; valid indexes: 5, 7");
        // mlx5_1 has no netdev in the pod: naming it fails with the namespace's interfaces.
        let e = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0", "mlx5_1"]), Some(pod_ns()))
            .choose()
            .unwrap_err();
        assert_eq!(
            e,
            "mlx5_1 has no usable GID (the container's network namespace has: eth0, lo, net1)"
        );
        // Reaching any device (rdma_cm only): mlx5_1 is someone else's and is ignored.
        assert_eq!(ctx(&[fixture::MLX5_ROCE], None, Some(pod_ns())).choose(), Ok(7));
    }

    #[test]
    fn a_named_device_whose_netdevs_are_all_elsewhere_says_where_its_gids_belong() {
        let c = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_1"]), Some(pod_ns()));
        assert_eq!(
            c.check(5).unwrap_err(),
            "on mlx5_1 port 1 index 5 belongs to ens1f1np1, which is not in the container's network namespace; valid indexes: none (the container's network namespace has: eth0, lo, net1)"
        );
        assert_eq!(
            c.choose().unwrap_err(),
            "mlx5_1 has no usable GID (the container's network namespace has: eth0, lo, net1)"
        );
    }

    #[test]
    fn a_same_named_netdev_in_the_pod_does_not_fool_the_check() {
        // The pod has its own "ens1f0np0" with another address: the host PF's GIDs stay out.
        let mut v = pod_ns();
        v.interfaces.insert("ens1f0np0".into(), iface(&["192.168.7.7"], [2, 0, 0, 0, 0, 7]));
        let c = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(v));
        assert!(c.check(3).is_err());
        assert_eq!(c.choose(), Ok(7));
    }

    #[test]
    fn erdma_has_only_index_0() {
        // shared/seeds/003: MC_GID_INDEX=1 -> "GID 1 not available: Invalid argument".
        let c = ctx(&[fixture::ERDMA], Some(&["erdma_0"]), Some(host_ns()));
        assert_eq!(c.choose(), Ok(0));
        assert_eq!(
            c.check(1).unwrap_err(),
            "on erdma_0 port 1 index 1 is beyond the GID table (1 entry); valid indexes: 0"
        );
        c.check(0).unwrap();
    }

    #[test]
    fn rxe_and_infiniband() {
        // The pod-side veth of the VM payload, as the container's namespace shows it.
        let mut ns = NetnsView::default();
        ns.interfaces.insert("lo".into(), iface(&["127.0.0.1"], [0; 6]));
        ns.interfaces.insert(
            "dph-vc".into(),
            iface(&["10.77.0.2", "fe80::d4e9:6ff:fec4:debc"], [0xd6, 0xe9, 0x06, 0xc4, 0xde, 0xbc]),
        );
        let c = ctx(&[fixture::RXE], Some(&["rxe1"]), Some(ns.clone()));
        assert_eq!(c.choose(), Ok(1));
        c.check(0).unwrap();
        assert_eq!(c.check(2).unwrap_err(), "on rxe1 port 1 index 2 is empty; valid indexes: 0, 1");
        // The same table seen from the host's namespace (dph-vc is elsewhere): nothing usable.
        let c = ctx(&[fixture::RXE], Some(&["rxe1"]), Some(host_ns()));
        assert_eq!(c.choose().unwrap_err(), "rxe1 has no usable GID (the container's network namespace has: ens1f0np0, ens1f1np1, lo)");
        let ib = ctx(&[fixture::IB], Some(&["mlx5_2"]), Some(NetnsView::default()));
        assert_eq!(ib.choose(), Ok(0));
        assert!(ib.check(1).unwrap_err().contains("index 1 is empty; valid indexes: 0"));
        // Unknown namespace (wrapper, fresh netns): types and addresses only.
        let c = ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), None);
        assert_eq!(c.choose(), Ok(3));
        c.check(7).unwrap();
    }

    #[test]
    fn no_devices_is_a_clear_error() {
        let c = ctx(&[], None, Some(host_ns()));
        assert_eq!(c.choose().unwrap_err(), "there are no RDMA devices on this node");
    }

    fn spec(v: Value) -> Option<RdmaSpec> {
        RdmaSpec::read(&v, &Request::default())
    }

    #[test]
    fn rdma_containers_are_detected_from_devices_mounts_or_the_annotation() {
        assert!(
            spec(json!({"process": {"env": ["MC_GID_INDEX=1"]}})).is_none(),
            "env alone is not RDMA"
        );
        let s = spec(json!({
            "linux": {"devices": [
                {"path": "/dev/infiniband/uverbs0", "type": "c", "major": 231, "minor": 192},
                {"path": "/dev/infiniband/rdma_cm", "type": "c", "major": 10, "minor": 58},
                {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229}
            ], "namespaces": [{"type": "network", "path": "/var/run/netns/cni-1"}]},
            "process": {"env": ["PATH=/bin", "MC_GID_INDEX=1", "NCCL_IB_GID_INDEX=-1"],
                        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]}
        }))
        .unwrap();
        assert_eq!(
            s.uverbs,
            vec![UverbsRef {
                path: "/dev/infiniband/uverbs0".into(),
                devnum: Some((231, 192)),
                name: "uverbs0".into()
            }]
        );
        assert!(s.other_nodes && !s.whole_dir);
        assert_eq!(s.netns, NetnsRef::Path("/var/run/netns/cni-1".into()));
        assert_eq!(s.env.len(), 2);
        assert_eq!(s.rlimits[&Resource::Nofile], Limit { soft: 1024, hard: 1024 });
        let s = spec(json!({"mounts": [{"destination": "/dev/infiniband", "source": "/dev/infiniband", "type": "bind"}],
                            "linux": {"namespaces": [{"type": "network"}]}}))
        .unwrap();
        assert!(s.whole_dir);
        assert_eq!(s.netns, NetnsRef::New);
        let s = spec(json!({"mounts": [{"destination": "/dev/infiniband/uverbs1", "source": "/dev/infiniband/uverbs1", "type": "bind"}]})).unwrap();
        assert_eq!(s.uverbs[0].name, "uverbs1");
        assert_eq!(s.netns, NetnsRef::Host);
        let r = Request { rdma_gid_index: Some(GidIndex::Auto), ..Default::default() };
        assert!(RdmaSpec::read(&json!({}), &r).is_some());
        assert!(
            spec(json!({"linux": {"devices": [{"path": "/dev/infinibandx/uverbs0"}]}})).is_none()
        );
    }

    #[test]
    fn named_devices_map_by_device_number_then_name() {
        let t = fixture::tree(&[fixture::MLX5_ROCE]);
        let sysfs = RdmaSysfs::at(t.path());
        let mut s = RdmaSpec::default();
        // Numbers win over the name inside the container.
        s.uverbs.push(UverbsRef {
            path: "/dev/infiniband/uverbs0".into(),
            devnum: Some((231, 193)),
            name: "uverbs0".into(),
        });
        assert_eq!(s.named_devices(&sysfs), Ok(Some(["mlx5_1".to_string()].into_iter().collect())));
        s.uverbs.push(UverbsRef {
            path: "/dev/infiniband/uverbs7".into(),
            devnum: Some((231, 199)),
            name: "uverbs7".into(),
        });
        assert_eq!(
            s.named_devices(&sysfs).unwrap_err(),
            "/dev/infiniband/uverbs7 (231:199) is not a verbs device on this node"
        );
        s.whole_dir = true;
        assert_eq!(s.named_devices(&sysfs), Ok(None));
    }

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn erdma() -> Result<GidContext, PlanError> {
        Ok(ctx(&[fixture::ERDMA], Some(&["erdma_0"]), Some(host_ns())))
    }

    #[test]
    fn the_seed_mc_gid_index_1_on_erdma_is_refused_with_the_valid_indexes() {
        let e =
            decide_gid("c1", None, &env(&[("MC_GID_INDEX", "1")]), erdma).unwrap_err().to_string();
        assert!(e.starts_with("cannot use RDMA GID index 1 (MC_GID_INDEX=1 in its environment) for container c1: "), "{e}");
        assert!(e.contains("index 1 is beyond the GID table (1 entry); valid indexes: 0"), "{e}");
        assert!(e.contains("Mooncake before v0.3.8 read 0 as auto"), "{e}");
        assert!(!e.contains('\n'));
        // The annotation names itself.
        let e =
            decide_gid("c1", Some(GidIndex::Index(1)), &env(&[]), erdma).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "cannot use RDMA GID index 1 (dataplane-hook.io/rdma-gid-index) for container c1"
            ),
            "{e}"
        );
        assert!(
            e.ends_with("(set dataplane-hook.io/rdma-gid-index to auto or a valid index)"),
            "{e}"
        );
    }

    #[test]
    fn auto_fills_missing_and_app_auto_variables_and_keeps_valid_ones() {
        let g = decide_gid("c", Some(GidIndex::Auto), &env(&[]), erdma).unwrap();
        assert_eq!(g.chosen, Some(0));
        assert_eq!(
            g.set_env,
            vec![("MC_GID_INDEX".into(), "0".into()), ("NCCL_IB_GID_INDEX".into(), "0".into())]
        );
        let mlx = || Ok(ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(host_ns())));
        let g = decide_gid(
            "c",
            Some(GidIndex::Auto),
            &env(&[("MC_GID_INDEX", "1"), ("NCCL_IB_GID_INDEX", "-1")]),
            mlx,
        )
        .unwrap();
        assert_eq!(g.chosen, Some(3));
        assert_eq!(
            g.set_env,
            vec![("NCCL_IB_GID_INDEX".into(), "3".into())],
            "a valid MC_GID_INDEX=1 is the user's to keep"
        );
    }

    #[test]
    fn given_indexes_are_checked_and_must_agree_with_the_environment() {
        let mlx = || Ok(ctx(&[fixture::MLX5_ROCE], Some(&["mlx5_0"]), Some(host_ns())));
        let g = decide_gid("c", Some(GidIndex::Index(1)), &env(&[("NCCL_IB_GID_INDEX", "1")]), mlx)
            .unwrap();
        assert_eq!(g.set_env, vec![("MC_GID_INDEX".into(), "1".into())]);
        let e = decide_gid("c", Some(GidIndex::Index(1)), &env(&[("NCCL_IB_GID_INDEX", "3")]), mlx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("its environment sets NCCL_IB_GID_INDEX=3"), "{e}");
        let e = decide_gid("c", None, &env(&[("NCCL_IB_GID_INDEX", "three")]), mlx)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an integer"), "{e}");
    }

    #[test]
    fn nothing_to_judge_reads_nothing() {
        let never = || -> Result<GidContext, PlanError> { panic!("must not read the GID tables") };
        assert_eq!(decide_gid("c", None, &env(&[]), never).unwrap(), GidPlan::default());
        assert_eq!(
            decide_gid("c", None, &env(&[("MC_GID_INDEX", "-1")]), never).unwrap(),
            GidPlan::default()
        );
    }

    const MIB8: u64 = 8 << 20;

    fn want() -> BTreeMap<Resource, u64> {
        wanted(&RdmaConfig::default())
    }

    fn lim(m: u64, n: u64) -> BTreeMap<Resource, Limit> {
        [
            (Resource::Memlock, Limit { soft: m, hard: m }),
            (Resource::Nofile, Limit { soft: n, hard: n }),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn spec_limits_with_cap_sys_resource_are_granted() {
        let g = Grantable { cap_sys_resource: true, nr_open: 1 << 20 };
        let spec: BTreeMap<_, _> =
            [(Resource::Nofile, Limit { soft: 1024, hard: 1024 })].into_iter().collect();
        let lp = limits_for_spec(&want(), &spec, &lim(MIB8, 20000), g);
        assert!(lp.unmet.is_empty());
        assert_eq!(
            lp.set,
            vec![
                (Resource::Memlock, Limit { soft: UNLIMITED, hard: UNLIMITED }),
                (Resource::Nofile, Limit { soft: 1 << 20, hard: 1 << 20 })
            ]
        );
        // Already high enough: untouched.
        assert_eq!(
            limits_for_spec(&want(), &lim(UNLIMITED, 1 << 21), &lim(0, 0), g),
            LimitPlan::default()
        );
    }

    #[test]
    fn without_cap_sys_resource_the_host_cannot_grant_and_says_why() {
        // This machine: memlock hard 8 MiB, nofile hard 20000, no CAP_SYS_RESOURCE.
        let g = Grantable { cap_sys_resource: false, nr_open: 1 << 20 };
        let spec: BTreeMap<_, _> =
            [(Resource::Nofile, Limit { soft: 1024, hard: 1024 })].into_iter().collect();
        let lp = limits_for_spec(&want(), &spec, &lim(MIB8, 20000), g);
        assert_eq!(lp.unmet.len(), 2);
        assert_eq!(lp.unmet[0], "RLIMIT_MEMLOCK unlimited (the runtime can grant at most 8388608: no CAP_SYS_RESOURCE to raise the hard limit)");
        assert!(
            lp.unmet[1].starts_with("RLIMIT_NOFILE 1048576 (the runtime can grant at most 20000"),
            "{:?}",
            lp.unmet
        );
        // Best effort for "warn": the most the host can give.
        assert_eq!(
            lp.set,
            vec![
                (Resource::Memlock, Limit { soft: MIB8, hard: MIB8 }),
                (Resource::Nofile, Limit { soft: 20000, hard: 20000 })
            ]
        );
        let e = unmet_error("c9", &lp.unmet).to_string();
        assert!(
            e.starts_with(
                "cannot give RDMA container c9 its resource limits: RLIMIT_MEMLOCK unlimited"
            ),
            "{e}"
        );
        assert!(e.ends_with("or set [rdma] on_unmet_limits = \"warn\")"), "{e}");
    }

    #[test]
    fn hook_limits_cannot_beat_the_spec_and_raise_the_init_otherwise() {
        let g = Grantable { cap_sys_resource: true, nr_open: 1 << 20 };
        let spec: BTreeMap<_, _> =
            [(Resource::Nofile, Limit { soft: 1024, hard: 1024 })].into_iter().collect();
        let lp = limits_for_init(&want(), &spec, &lim(64 << 10, 1024), g);
        assert_eq!(lp.set, vec![(Resource::Memlock, Limit { soft: UNLIMITED, hard: UNLIMITED })]);
        assert_eq!(lp.unmet.len(), 1);
        assert!(
            lp.unmet[0].contains(
                "the spec's process.rlimits sets 1024:1024, which the runtime applies after hooks"
            ),
            "{:?}",
            lp.unmet
        );
        // No CAP_SYS_RESOURCE: soft up to the hard limit, and the rest reported.
        let g = Grantable { cap_sys_resource: false, nr_open: 1 << 20 };
        let init: BTreeMap<_, _> = [
            (Resource::Memlock, Limit { soft: 64 << 10, hard: MIB8 }),
            (Resource::Nofile, Limit { soft: 1024, hard: 20000 }),
        ]
        .into_iter()
        .collect();
        let lp = limits_for_init(&want(), &BTreeMap::new(), &init, g);
        assert_eq!(
            lp.set,
            vec![
                (Resource::Memlock, Limit { soft: MIB8, hard: MIB8 }),
                (Resource::Nofile, Limit { soft: 20000, hard: 20000 })
            ]
        );
        assert_eq!(lp.unmet.len(), 2);
    }

    #[test]
    fn spec_edits_replace_or_append() {
        let mut raw = json!({"process": {"env": ["A=1", "MC_GID_INDEX=-1"], "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1, "soft": 1}]}});
        set_env(&mut raw, "MC_GID_INDEX", "3");
        set_env(&mut raw, "NCCL_IB_GID_INDEX", "3");
        set_rlimit(&mut raw, Resource::Nofile, Limit { soft: 5, hard: 6 });
        set_rlimit(&mut raw, Resource::Memlock, Limit { soft: UNLIMITED, hard: UNLIMITED });
        assert_eq!(raw["process"]["env"], json!(["A=1", "MC_GID_INDEX=3", "NCCL_IB_GID_INDEX=3"]));
        assert_eq!(
            raw["process"]["rlimits"],
            json!([{"type": "RLIMIT_NOFILE", "hard": 6, "soft": 5}, {"type": "RLIMIT_MEMLOCK", "hard": u64::MAX, "soft": u64::MAX}])
        );
    }
}
