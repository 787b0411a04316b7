//! Section: `dataplane-hook gc` time against the number of ledger records. Two cases: N records
//! of dead containers to release (what gc does after a node crash), and N records of live
//! containers to leave alone (the scan every create pays, since create runs gc first).

use std::collections::BTreeMap;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Result};
use dataplane_hook::host::proc::ProcessId;
use dataplane_hook::ledger::{ContainerRecord, Effect, Entry};
use dataplane_hook::request::{Bytes, PageSize};

use crate::env::*;
use crate::Report;

const SIZES: &[usize] = &[1, 100, 10_000];

/// Writes `n` records shaped like a real container's (mounts + a cgroup value) into the
/// ledger at `state_dir`. Written plainly (no fsync): only gc's side is being measured.
fn write_records(state_dir: &Path, n: usize, init: ProcessId) -> Result<()> {
    let dir = state_dir.join("containers");
    std::fs::DirBuilder::new().mode(0o700).recursive(true).create(&dir)?;
    let reserved: BTreeMap<PageSize, Bytes> = [(PageSize::Size2Mi, Bytes(16 << 20))].into_iter().collect();
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

pub fn run(ctx: &Ctx) -> Result<Report> {
    let me = ProcessId::of(std::process::id() as i32).expect("own identity");
    let dead = ProcessId { pid: me.pid, start_time: me.start_time + 1 };
    let mut body = String::from(
        "Records are written into a fresh state dir under /run (the default state dir's filesystem), then \
         `dataplane-hook gc` runs as a process (wall time, median of up to 5 runs; 1 run for 10 000 dead records). \
         Dead records point at the bench's own pid with a wrong start time (pid reuse: must be treated as dead); \
         live records at the bench's own identity.\n\n\
         | records | release N dead (ms) | per record (ms) | scan N live (ms) |\n|---:|---:|---:|---:|\n",
    );
    let mut summary = vec![];
    for &n in SIZES {
        let reps = if n >= 10_000 { 1 } else { 5 };
        let cfg = ctx.product_config(&format!("gc-{n}"), "runc")?;
        let state = ctx.path(&format!("gc-{n}/state"));
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
        std::fs::remove_dir_all(ctx.path(&format!("gc-{n}")))?;
        let rel = stats(&release).median;
        let sc = stats(&scan).median;
        body += &format!(
            "| {n} | {} | {:.3} | {} |\n",
            ms(rel),
            rel.as_secs_f64() * 1e3 / n as f64,
            ms(sc)
        );
        if n == SIZES[SIZES.len() - 1] {
            summary.push((format!("gc: release {n} dead records"), format!("{} ms", ms(rel)), "reported".into()));
            summary.push((format!("gc: scan {n} live records"), format!("{} ms", ms(sc)), "reported".into()));
        }
    }
    Ok(Report { body, summary })
}
