//! Owns G2 for a container: the wrapper's spec edit (prepare the group, join its PID namespace)
//! and the member's mounts (clones of the holder's hugetlbfs and runtime dir, views sized by
//! the group's reservation, hugetlb limits). Group lifecycle itself is in `crate::group`.

use serde_json::{json, Value};

use crate::config::Config;
use crate::features::{hugepages, runtime_dir, SpecContext};
use crate::group::{self, holder, GroupKey};
use crate::ledger::GroupRecord;
use crate::ledger::Ledger;
use crate::oci::Bundle;
use crate::plan::{MountPlan, NodeFacts, Plan, PlanError, Step};
use crate::request::Request;

/// The DPDK group this container joins, admitted before planning (`hook::create_runtime`).
#[derive(Debug, Clone)]
pub struct Facts {
    pub group: GroupRecord,
}

pub fn plan(
    _id: &str,
    req: &Request,
    cfg: &Config,
    facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    if req.group.is_none() {
        return Ok(());
    }
    let Some(Facts { group: g }) = facts.get::<Facts>() else {
        return Err(PlanError {
            what: "cannot plan a DPDK group member".into(),
            why: "the group is not set up".into(),
            fix: "this is a bug: report it with the log".into(),
        });
    };
    let Some(h) = g.holder else {
        return Err(PlanError {
            what: format!("cannot join DPDK group {}", g.key),
            why: "its holder is not running".into(),
            fix: "retry; gc will clean it up".into(),
        });
    };
    // Paths inside the holder's own root.
    for &size in g.reservations.keys() {
        p.push(Step::Mount(MountPlan::FromNamespace {
            pid: h.pid,
            path: holder::hugetlbfs_dir(size),
            target: hugepages::mount_path(cfg, size),
        }));
    }
    if !g.reservations.is_empty() {
        p.push(Step::HugetlbLimits(g.reservations.iter().map(|(s, b)| (*s, *b)).collect()));
    }
    if let Some(target) = runtime_dir::target(req, cfg) {
        p.push(Step::Mount(MountPlan::FromNamespace {
            pid: h.pid,
            path: holder::runtime_dir(),
            target,
        }));
    }
    if !g.reservations.is_empty() {
        hugepages::plan_views(&g.reservations, facts, p);
    }
    Ok(())
}

/// Wrapper: prepares the group (creating it and its holder when this is the first member) and
/// puts the container in the group's PID namespace.
pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    let Some(name) = &req.group else { return Ok(()) };
    let (Some(id), Some(hook_bin)) = (ctx.container_id, ctx.hook_bin) else {
        return Err(PlanError {
            what: "cannot join a DPDK group".into(),
            why: "no container id on the command line".into(),
            fix: "call dataplane-runtime like runc: create [flags] <id>".into(),
        });
    };
    let key = GroupKey::new(name, &b.annotations()).map_err(|e| match e {
        group::GroupError::Scope { group, why, fix } => PlanError {
            what: format!("cannot scope DPDK group {group} by the pod's namespace"),
            why,
            fix,
        },
        other => PlanError {
            what: format!("cannot join DPDK group {}", name.as_str()),
            why: other.to_string(),
            fix: "see the log".into(),
        },
    })?;
    let err = |e: String| PlanError {
        what: format!("cannot prepare DPDK group {} for container {id}", key.display()),
        why: e,
        fix: "see the log".into(),
    };
    let ledger = Ledger::open(&ctx.config.state_dir).map_err(|e| err(e.to_string()))?;
    let _ = crate::gc::run_within(&ledger, false, crate::gc::budget_at_create());
    group::check_new(&ledger, &key, id, req, ctx.config)?;
    let sizing = group::Sizing {
        want: &req.hugepages,
        reserve: ctx.config.hugepages.reserve,
        hook_bin,
        cfg: ctx.config,
    };
    let g = group::prepare(&ledger, &key, id, &sizing).map_err(|e| match e {
        group::GroupError::Admission(p) => p,
        e => PlanError {
            what: format!("DPDK group {}", key.display()),
            why: e.to_string(),
            fix: "see the log".into(),
        },
    })?;
    let holder = g.holder.expect("prepared groups have a holder");
    set_pid_namespace(b, &format!("/proc/{}/ns/pid", holder.pid));
    Ok(())
}

/// Sets (or adds) the `pid` entry of `linux.namespaces` to join `path`.
pub fn set_pid_namespace(b: &mut Bundle, path: &str) {
    let linux = b.raw_object_mut(&["linux"]);
    let ns = linux.entry("namespaces").or_insert_with(|| json!([]));
    if !ns.is_array() {
        *ns = json!([]);
    }
    let arr = ns.as_array_mut().expect("array");
    match arr.iter_mut().find(|n| n.get("type").and_then(Value::as_str) == Some("pid")) {
        Some(entry) => entry["path"] = json!(path),
        None => arr.push(json!({"type": "pid", "path": path})),
    }
}
