//! Owns the OCI hook stages: `createRuntime`/`prestart` set a container up from its request,
//! `poststop` tears it down. Both read the runtime's state JSON on stdin.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;

use crate::apply;
use crate::config::Config;
use crate::features::{hugepages, FactsContext, FEATURES};
use crate::gc;
use crate::group::{self, GroupKey};
use crate::ledger::{ContainerRecord, Ledger};
use crate::oci::{Bundle, State};
use crate::plan::{self, NodeFacts};
use crate::request::Request;

/// Node facts for planning: sysfs pools and what live containers and DPDK groups already
/// reserved (a group holds its members' pages; one whose holder is not up yet is being made
/// and counts too; one whose holder is gone is gc's to release).
pub fn node_facts(ledger: &Ledger) -> NodeFacts {
    let (records, _) = ledger.containers();
    let live: Vec<ContainerRecord> = records.into_iter().filter(|r| r.init.is_alive()).collect();
    let mut h = hugepages::Facts::of(&live);
    for g in ledger.groups().0 {
        if g.holder.is_some_and(|h| !h.is_alive()) {
            continue;
        }
        for (size, bytes) in &g.reservations {
            let pages = bytes.pages(*size);
            if pages > 0 {
                let e = h.ours.entry(*size).or_insert((0, 0));
                e.0 += pages;
                e.1 += 1;
            }
        }
    }
    NodeFacts::default().with(h)
}

/// [`node_facts`] with the live containers' records in hand (a create has them from its gc).
pub fn node_facts_of(live: &[ContainerRecord]) -> NodeFacts {
    NodeFacts::default().with(hugepages::Facts::of(live))
}

/// What the hook decided to do with a container.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    PassThrough(&'static str),
    AlreadySetUp,
    SetUp,
}

pub fn create_runtime(cfg: &Config, input: impl Read) -> anyhow::Result<Outcome> {
    let state = State::from_reader(input)?;
    crate::deadline::about(format!("container {}", state.id));
    let span = tracing::info_span!("createRuntime", container = %state.id);
    let _g = span.enter();
    let bundle = Bundle::load(&state.bundle)?;
    if bundle.is_sandbox() {
        return Ok(Outcome::PassThrough("pod sandbox"));
    }
    let mut annotations: BTreeMap<String, String> = bundle.annotations();
    annotations.extend(state.annotations.clone());
    let mut req = Request::parse(&annotations, &bundle.hugepage_limits())?;
    req.gpu = crate::features::gpu::inspect_bundle(&bundle, &annotations)?;
    if req.enabled == Some(false) {
        return Ok(Outcome::PassThrough("disabled by annotation"));
    }
    let pid = state
        .pid
        .filter(|p| *p > 0)
        .with_context(|| format!("cannot set up container {}: the state has no init pid (run this hook at createRuntime or prestart)", state.id))?;

    let ledger = Ledger::open(&cfg.state_dir)?;
    let report = gc::run_within(&ledger, false, gc::budget_at_create());
    for e in &report.errors {
        tracing::warn!("gc: {e}");
    }
    // This container's own lock, for the whole create: its poststop, a retried create and gc
    // wait for it or leave it alone; no other container's create waits on it.
    let lock = ledger.lock_container(&state.id)?;
    if let Some(existing) = ledger.load(&state.id)? {
        if existing.init.pid == pid && existing.init.is_alive() {
            return Ok(Outcome::AlreadySetUp);
        }
        anyhow::bail!(
            "cannot set up container {}: a live container with this id is already recorded (pid {}) (delete it first)",
            state.id,
            existing.init.pid
        );
    }
    let ctx = FactsContext {
        config: cfg,
        bundle: &bundle,
        request: &req,
        container_id: &state.id,
        pid,
        live: &report.live_records,
    };
    let mut facts = NodeFacts::default();
    for f in FEATURES {
        (f.facts)(&ctx, &mut facts)?;
    }
    let mut group_key = None;
    if let Some(name) = &req.group {
        let key = GroupKey::new(name, &annotations)?;
        group::check_new(&ledger, &key, &state.id, &req, cfg)?;
        let hook_bin = std::env::current_exe()?;
        let sizing = group::Sizing {
            want: &req.hugepages,
            reserve: cfg.hugepages.reserve,
            hook_bin: &hook_bin,
            cfg,
        };
        let g = group::admit(&ledger, &key, &state.id, pid, &sizing)?;
        group_key = Some(g.key.clone());
        facts.insert(crate::features::group::Facts { group: g });
    }
    // A policy that counts every container's reservation (max_reserved_fraction) decides under
    // the admission lock, with the records as they are now, until this container's pages are
    // reserved in the kernel; without one the kernel's own min_size reservation decides.
    let admission = if needs_admission(cfg, &req) && group_key.is_none() {
        let l = ledger.lock_admission()?;
        // Containers and groups alike, as they are now under the lock.
        if let Some(fresh) = node_facts(&ledger).get::<hugepages::Facts>() {
            facts.insert(fresh.clone());
        }
        Some(l)
    } else {
        None
    };
    let plan = match plan::plan(&state.id, &req, cfg, &facts) {
        Ok(p) => p,
        Err(e) => {
            if let Some(k) = &group_key {
                let _ = group::leave(&ledger, k, &state.id);
            }
            lock.remove();
            return Err(e.into());
        }
    };
    tracing::info!(?req, ?plan, "plan");
    for w in &plan.warnings {
        tracing::warn!("{w}");
    }
    let container = apply::NewContainer {
        id: &state.id,
        pid,
        bundle: &state.bundle,
        rootfs: &bundle.rootfs(),
        group: group_key,
    };
    match apply::create(&ledger, container, &plan, admission) {
        Ok(_) => {}
        Err(e) => {
            // The rollback removed the record: nothing is left for the lock to guard.
            if matches!(ledger.load(&state.id), Ok(None)) {
                lock.remove();
            }
            return Err(e.into());
        }
    }
    crate::metrics::granted(&req, &plan, cfg.hugepages.reserve);
    tracing::info!(reservations = ?plan.reservations(), "set up");
    Ok(Outcome::SetUp)
}

/// Whether a create's reservation is subject to a policy over all containers' reservations.
fn needs_admission(cfg: &Config, req: &Request) -> bool {
    cfg.hugepages.max_reserved_fraction < 1.0 && !req.hugepages.is_empty()
}

pub fn poststop(cfg: &Config, input: impl Read) -> anyhow::Result<()> {
    let state = State::from_reader(input)?;
    crate::deadline::about(format!("container {}", state.id));
    let span = tracing::info_span!("poststop", container = %state.id);
    let _g = span.enter();
    let ledger = Ledger::open(&cfg.state_dir)?;
    let lock = ledger.lock_container(&state.id)?;
    match ledger.load(&state.id)? {
        Some(rec) => {
            if rec.init.is_alive() {
                // A poststop for a container whose init still runs (id reuse or a runtime bug):
                // tearing down would pull the floor from under it.
                anyhow::bail!(
                    "refusing to release container {}: its init (pid {}) is still running (stop it first; gc releases it once it is gone)",
                    state.id,
                    rec.init.pid
                );
            }
            apply::teardown(&ledger, rec)?;
            lock.remove();
        }
        None => {
            tracing::debug!("nothing recorded");
            lock.remove();
        }
    }
    Ok(())
}
