//! Section: `dataplane-hook gc` time against the number of ledger records. Two cases: N records
//! of dead containers to release (what gc does after a node crash), and N records of live
//! containers to leave alone (the scan every create pays, since create runs gc first).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Result};
use dataplane_hook::host::proc::ProcessId;
use dataplane_hook::ledger::{ContainerRecord, Effect, Entry};
use dataplane_hook::request::{Bytes, PageSize};

use crate::env::*;
use crate::{Goal, Report};

const SIZES: &[usize] = &[1, 100, 10_000];

/// Writes `n` records shaped like a real container's (mounts + a cgroup value) into the
/// ledger at `state_dir`. Written plainly (no fsync): only gc's side is being measured.
fn write_records(state_dir: &Path, n: usize, init: ProcessId) -> Result<()> {
    let dir = state_dir.join("containers");
    std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir)?;
    let reserved: BTreeMap<PageSize, Bytes> =
        [(PageSize::Size2Mi, Bytes(16 << 20))].into_iter().collect();
    for i in 0..n {
        let id = format!("gc-bench-{i:05}");
        let rec = ContainerRecord {
            id: id.clone(),
            init,
            bundle: "/nonexistent/bundle".into(),
            created: 0,
            group: None,
            reservations: reserved.clone(),
            entries: vec![
                Entry {
                    effect: Effect::ContainerMounts {
                        targets: vec!["/dev/hugepages".into(), "/var/run/dpdk".into()],
                        reserved: reserved.clone(),
                    },
                    done: true,
                },
                Entry {
                    effect: Effect::CgroupValue {
                        file: format!("/nonexistent/cgroup/{id}/hugetlb.2MB.max").into(),
                        value: (16u64 << 20).to_string(),
                        previous: Some("max".into()),
                    },
                    done: true,
                },
            ],
        };
        std::fs::write(dir.join(format!("{id}.json")), serde_json::to_vec_pretty(&rec)?)?;
    }
    Ok(())
}

fn count(state_dir: &Path) -> usize {
    std::fs::read_dir(state_dir.join("containers")).map(|d| d.count()).unwrap_or(0)
}

/// (release N dead, scan N live) medians for each size, with the state dir at `prefix`.
fn measure_sizes(ctx: &Ctx, prefix: &str) -> Result<Vec<(Duration, Duration)>> {
    let me = ProcessId::of(std::process::id() as i32).expect("own identity");
    let dead = ProcessId { start_time: me.start_time + 1, ..me };
    let mut out = vec![];
    for &n in SIZES {
        let reps = if n >= 10_000 { 1 } else { 5 };
        let name = format!("{prefix}gc-{n}");
        let cfg = ctx.product_config(&name, "runc")?;
        let state = ctx.path(&format!("{name}/state"));
        let mut release = vec![];
        for _ in 0..reps {
            write_records(&state, n, dead)?;
            let (m, e) = measure(Command::new(&ctx.hook).arg("--config").arg(&cfg).arg("gc"), b"")?;
            if !m.success || count(&state) != 0 {
                bail!("gc over {n} dead records failed or left {} behind: {e}", count(&state));
            }
            release.push(m.wall);
        }
        write_records(&state, n, me)?;
        let mut scan = vec![];
        for _ in 0..reps.max(3) {
            let (m, e) = measure(Command::new(&ctx.hook).arg("--config").arg(&cfg).arg("gc"), b"")?;
            if !m.success || count(&state) != n {
                bail!("gc touched live records ({} of {n} left): {e}", count(&state));
            }
            scan.push(m.wall);
        }
        std::fs::remove_dir_all(ctx.path(&name))?;
        out.push((stats(&release).median, stats(&scan).median));
    }
    Ok(out)
}

pub fn run(ctx: &Ctx) -> Result<Report> {
    let run_fs = fs_type(Path::new("/run"));
    let tmpfs = measure_sizes(ctx, "")?;
    let run = measure_sizes(ctx, "run/")?;
    let mut body = format!(
        "N records shaped like a real container's (mounts, a cgroup value) are written into a fresh state dir, then \
         `dataplane-hook gc` runs as a process; wall time, median of 5 runs (1 run for 10 000 dead records). Dead \
         records carry the bench's own pid with a wrong start time (pid reuse: must count as dead); live records \
         the bench's own identity (gc must leave them). Since every create runs gc first and then reads the \
         ledger again for the node's reservations, the live scan is a cost each create pays on a node with N \
         containers. State dir on tmpfs, and on this machine's /run ({run_fs}).\n\n\
         | records | release N dead, tmpfs (ms) | per record | release N dead, /run (ms) | per record | scan N live, tmpfs (ms) | scan N live, /run (ms) |\n\
         |---:|---:|---:|---:|---:|---:|---:|\n"
    );
    let per = |d: Duration, n: usize| format!("{:.3}", d.as_secs_f64() * 1e3 / n as f64);
    let mut summary = vec![];
    let mut goals = vec![];
    // Issue #17: the scan every create pays on a node with 10 000 containers.
    const GOAL_MS: f64 = 50.0;
    for (i, &n) in SIZES.iter().enumerate() {
        let ((rt, st), (rr, sr)) = (tmpfs[i], run[i]);
        body += &format!(
            "| {n} | {} | {} | {} | {} | {} | {} |\n",
            ms(rt),
            per(rt, n),
            ms(rr),
            per(rr, n),
            ms(st),
            ms(sr)
        );
        if n == 10_000 {
            for (storage, d) in [("tmpfs", st), ("ext4 /run", sr)] {
                let m = d.as_secs_f64() * 1e3;
                goals.push(Goal {
                    figure: format!("gc scan of 10 000 live records ({storage})"),
                    measured: format!("{m:.1} ms"),
                    goal: format!("<= {GOAL_MS:.0} ms"),
                    met: m <= GOAL_MS,
                });
            }
        }
        if n == 100 || n == 10_000 {
            summary.push((
                format!("gc: release {n} dead records (tmpfs / /run)"),
                format!("{} / {} ms", ms(rt), ms(rr)),
                "reported".into(),
            ));
            summary.push((
                format!("gc: scan {n} live records (tmpfs / /run)"),
                format!("{} / {} ms", ms(st), ms(sr)),
                "reported".into(),
            ));
        }
    }
    Ok(Report { body, summary, goals })
}
