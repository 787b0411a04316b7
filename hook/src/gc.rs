//! Owns garbage collection (G6): releasing what containers that are no longer alive left in
//! the ledger. Liveness is the container init's identity (pid + start time). Run by
//! `dataplane-hook gc` and at the start of every create.

use crate::apply;
use crate::ledger::{ContainerRecord, Ledger};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Containers released (or, with dry-run, that would be).
    pub released: Vec<String>,
    /// Live containers left alone.
    pub live: Vec<String>,
    /// Their records, for a caller that goes on under the same lock (a create plans with them
    /// instead of reading and checking every record again).
    #[serde(skip)]
    pub live_records: Vec<ContainerRecord>,
    /// Problems (corrupt records, partial teardown).
    pub errors: Vec<String>,
    /// DPDK groups released.
    pub groups_released: Vec<String>,
}

pub fn is_dead(rec: &ContainerRecord) -> bool {
    !rec.init.is_alive()
}

pub fn run(ledger: &Ledger, dry_run: bool) -> GcReport {
    let mut report = GcReport::default();
    let (records, corrupt) = ledger.containers();
    report.errors.extend(corrupt.iter().filter(|e| dry_run || !crate::ledger::remove_if_torn(e)).map(|e| e.to_string()));
    for rec in records {
        if !is_dead(&rec) {
            report.live.push(rec.id.clone());
            report.live_records.push(rec);
            continue;
        }
        let id = rec.id.clone();
        if dry_run {
            report.released.push(id);
            continue;
        }
        tracing::info!(container = %id, pid = rec.init.pid, "gc: init is gone, releasing");
        match apply::teardown(ledger, rec) {
            Ok(()) => report.released.push(id),
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    let (groups, errors) = crate::group::gc(ledger, dry_run);
    report.groups_released = groups;
    report.errors.extend(errors);
    if !dry_run {
        crate::metrics::note(crate::metrics::Event::Gc {
            released: report.released.len() as u64,
            groups: report.groups_released.len() as u64,
            errors: report.errors.len() as u64,
        });
    }
    report
}
