//! Owns garbage collection (G6): releasing what containers that are no longer alive left in
//! the ledger. Liveness is the container init's identity (pid + start time). Run by
//! `dataplane-hook gc` and at the start of every create.
//!
//! The scan takes no lock. A record whose init is gone is released by whoever takes its lock
//! first; one somebody holds (its create or poststop is running) is skipped, so gc never
//! frees a container being created and never waits on another run. Each release runs in a
//! worker thread against a time budget: a release stuck on something a container left behind
//! is abandoned (it ends with this process, and the next gc tries again), never the caller's
//! create (G8).

use std::time::Duration;

use crate::apply;
use crate::ledger::{ContainerRecord, Ledger};

#[derive(Debug, Default, serde::Serialize)]
pub struct GcReport {
    /// Containers released (or, with dry-run, that would be).
    pub released: Vec<String>,
    /// Live containers left alone.
    pub live: Vec<String>,
    /// Their records, for a create that plans with them (instead of reading and checking every
    /// record again); without their entries (see `Ledger::container_heads`).
    #[serde(skip)]
    pub live_records: Vec<ContainerRecord>,
    /// Dead containers whose lock another run holds (it is releasing them), or whose release
    /// did not finish within the budget.
    pub skipped: Vec<String>,
    /// Problems (corrupt records, partial teardown).
    pub errors: Vec<String>,
    /// DPDK groups released.
    pub groups_released: Vec<String>,
}

pub fn is_dead(rec: &ContainerRecord) -> bool {
    !rec.init.is_alive()
}

/// gc with the whole remaining run time as its budget (`dataplane-hook gc`).
pub fn run(ledger: &Ledger, dry_run: bool) -> GcReport {
    run_within(ledger, dry_run, crate::deadline::remaining())
}

/// The share of a create's bound its gc may spend releasing other containers.
pub fn budget_at_create() -> Duration {
    crate::deadline::remaining() / 4
}

/// gc that spends at most `budget` releasing dead containers.
pub fn run_within(ledger: &Ledger, dry_run: bool, budget: Duration) -> GcReport {
    let start = std::time::Instant::now();
    let mut report = GcReport::default();
    // Liveness and reservations are all the scan needs; a release loads its record whole.
    let (records, corrupt) = ledger.container_heads();
    report.errors.extend(
        corrupt
            .iter()
            .filter(|e| dry_run || !crate::ledger::remove_if_torn(e))
            .map(|e| e.to_string()),
    );
    let mut worker = Worker::default();
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
        let left = budget.saturating_sub(start.elapsed());
        match release(ledger, &id, left, &mut worker) {
            Release::Done => report.released.push(id),
            Release::Live(rec) => {
                report.live.push(id);
                report.live_records.push(*rec);
            }
            Release::Busy => report.skipped.push(id),
            Release::Gone => {}
            Release::Failed(e) => report.errors.push(e),
            Release::TimedOut => {
                tracing::warn!(container = %id, "gc: releasing it did not finish within {}ms; left for the next gc", left.as_millis());
                report.skipped.push(id);
            }
        }
    }
    let (groups, errors) = crate::group::gc(ledger, dry_run);
    report.groups_released = groups;
    report.errors.extend(errors);
    if !dry_run {
        ledger.sweep_locks();
        crate::metrics::note(crate::metrics::Event::Gc {
            released: report.released.len() as u64,
            groups: report.groups_released.len() as u64,
            errors: report.errors.len() as u64,
        });
    }
    report
}

enum Release {
    Done,
    /// Its record changed meanwhile and its init is alive (a new container with this id).
    Live(Box<ContainerRecord>),
    Busy,
    Gone,
    Failed(String),
    TimedOut,
}

type Job = (ContainerRecord, crate::ledger::LockGuard);
type Channels = (std::sync::mpsc::Sender<Job>, std::sync::mpsc::Receiver<Result<(), String>>);

/// The one thread a gc run tears down on, so that the run can give up on a teardown that
/// overruns its budget (a container's files can block) and still end on time. One thread for
/// the whole run, not one per record: 10 000 dead records would pay 10 000 spawns.
#[derive(Default)]
struct Worker {
    chan: Option<Channels>,
    /// A teardown overran: the thread is still in it, so nothing more is released this run.
    stuck: bool,
}

impl Worker {
    fn run(&mut self, ledger: &Ledger, job: Job, budget: Duration) -> Release {
        if self.chan.is_none() {
            let worker_ledger = match Ledger::open(ledger.dir()) {
                Ok(l) => l,
                Err(e) => return Release::Failed(e.to_string()),
            };
            let (jobs, jobs_rx) = std::sync::mpsc::channel::<Job>();
            let (done_tx, done) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new().name("gc-release".into()).spawn(move || {
                for (rec, lock) in jobs_rx {
                    let r = apply::teardown(&worker_ledger, rec);
                    if r.is_ok() {
                        lock.remove();
                    }
                    // The container's lock is held until here, also past a gc that gave up.
                    if done_tx.send(r.map_err(|e| e.to_string())).is_err() {
                        return;
                    }
                }
            });
            if let Err(e) = spawned {
                return Release::Failed(format!("cannot start a gc worker: {e}"));
            }
            self.chan = Some((jobs, done));
        }
        let (jobs, done) = self.chan.as_ref().expect("started above");
        if jobs.send(job).is_err() {
            return Release::Failed("the gc worker ended".into());
        }
        match done.recv_timeout(budget) {
            Ok(Ok(())) => Release::Done,
            Ok(Err(e)) => Release::Failed(e),
            Err(_) => {
                self.stuck = true;
                Release::TimedOut
            }
        }
    }
}

/// Releases container `id` if nobody holds it and its init is still gone once locked.
fn release(ledger: &Ledger, id: &str, budget: Duration, worker: &mut Worker) -> Release {
    if worker.stuck {
        return Release::TimedOut;
    }
    let lock = match ledger.try_lock_container(id) {
        Ok(Some(l)) => l,
        Ok(None) => return Release::Busy,
        Err(e) => return Release::Failed(e.to_string()),
    };
    // Re-read under the lock: the record we scanned may have been released or replaced.
    let rec = match ledger.load(id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            lock.remove();
            return Release::Gone;
        }
        Err(e) => return Release::Failed(e.to_string()),
    };
    if !is_dead(&rec) {
        return Release::Live(Box::new(rec));
    }
    tracing::info!(container = %id, pid = rec.init.pid, "gc: init is gone, releasing");
    worker.run(ledger, (rec, lock), budget)
}
