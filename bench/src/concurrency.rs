//! Section: concurrent lifecycle and create throughput — several creators at once, as a node
//! does when a deployment scales up. Product creates of different containers take no common
//! lock; this shows what they cost against plain runc.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::env::*;
use crate::{Goal, Report};

const WORKERS: usize = 4;
const PER_WORKER: usize = 6;
const REPS: usize = 5;

/// Runs `work(w, bundle)` for every worker at once, one thread each; their results in order.
fn on_workers<T: Send>(
    bundles: &[PathBuf],
    work: impl Fn(usize, &PathBuf) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> =
            bundles.iter().enumerate().map(|(w, b)| s.spawn(move || work(w, b))).collect();
        handles.into_iter().map(|h| h.join().expect("worker panicked")).collect()
    })
}

/// Every worker runs PER_WORKER full lifecycles back to back.
fn batch(runner: &Runner, bundles: &[PathBuf], tag: &str) -> Result<Duration> {
    let t = Instant::now();
    on_workers(bundles, |w, b| {
        (0..PER_WORKER)
            .try_for_each(|i| runner.lifecycle(b, &format!("cc-{tag}-{w}-{i}")).map(drop))
    })?;
    Ok(t.elapsed())
}

/// Concurrent creates only: every worker creates PER_WORKER containers back to back (timed;
/// they stay created, holding their reservations), then all are deleted (untimed).
fn create_batch(runner: &Runner, bundles: &[PathBuf], tag: &str) -> Result<Duration> {
    let t = Instant::now();
    let made = on_workers(bundles, |w, b| {
        (0..PER_WORKER)
            .map(|i| {
                let id = format!("cr-{tag}-{w}-{i}");
                runner.create(b, &id).map(|pid| (id, pid))
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let d = t.elapsed();
    for (w, containers) in made.iter().enumerate() {
        for (id, pid) in containers {
            runner.run(&["delete", "--force", id], &bundles[w].join(format!("{id}.err")))?;
            wait_exit(*pid)?;
        }
    }
    Ok(d)
}

pub fn run(ctx: &Ctx) -> Result<Report> {
    // WORKERS containers at once, 8 pages each at most; the create-only batches hold all
    // WORKERS * PER_WORKER containers (8 pages each) at once.
    let _pool = pool_guard((WORKERS * PER_WORKER * 8) as u64)?;
    let baseline = ((WORKERS * PER_WORKER * 8) as u64, (WORKERS * PER_WORKER * 8) as u64, 0);
    let run_fs = fs_type(std::path::Path::new("/run"));
    let mut variants: Vec<(String, Runner, Vec<PathBuf>)> = vec![];
    for (prefix, storage) in [("", "tmpfs".to_string()), ("run/", format!("/run ({run_fs})"))] {
        let runc = ctx.runc(&format!("{prefix}cc-runc"))?;
        let product = ctx.product(&format!("{prefix}cc-product"))?;
        let bundles = |name: &str, ann: &[(&str, &str)]| -> Result<Vec<PathBuf>> {
            (0..WORKERS)
                .map(|w| make_bundle(&ctx.path(&format!("{prefix}cc-{name}-{w}")), NOOP, ann))
                .collect()
        };
        variants.push((format!("{storage}: runc"), runc, bundles("runc", &[])?));
        variants.push((
            format!("{storage}: dataplane-runtime, nothing requested"),
            product.clone(),
            bundles("none", &[])?,
        ));
        variants.push((
            format!("{storage}: dataplane-runtime, 16Mi of 2Mi hugepages each"),
            product,
            bundles("huge", &[(RESERVATION_KEY, "16Mi")])?,
        ));
    }
    let mut samples: Vec<Vec<Duration>> = vec![vec![]; variants.len()];
    let mut creates: Vec<Vec<Duration>> = vec![vec![]; variants.len()];
    // Warm-up batch of each, then REPS interleaved batches.
    for rep in 0..=REPS {
        for (k, (_, runner, b)) in variants.iter().enumerate() {
            let d = batch(runner, b, &format!("{rep}-{k}"))?;
            let c = create_batch(runner, b, &format!("{rep}-{k}"))?;
            if rep > 0 {
                samples[k].push(d);
                creates[k].push(c);
            }
        }
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != baseline {
        bail!("the pool is not back at its baseline after the concurrent runs: total {t}, free {f}, reserved {r}");
    }
    let total = WORKERS * PER_WORKER;
    let rate = |d: Duration| total as f64 / d.as_secs_f64();
    let mut body = format!(
        "{WORKERS} workers, each running {PER_WORKER} lifecycles back to back ({total} per batch); {REPS} batches per \
         variant, all interleaved, after one warm-up batch each. Throughput = lifecycles per second of wall time \
         (each lifecycle is a create, start, exit and delete: creates run concurrently with other containers' \
         starts and deletes, as on a node), \
         median batch. Bundles, runc roots and the product's state dir on tmpfs, and on this machine's /run.\n\n\
         | variant | lifecycles/s | vs runc (same storage) |\n|---|---:|---:|\n"
    );
    let mut summary = vec![];
    let mut goals = vec![];
    // Issue #17: the product's concurrent rates with 16Mi each at least this share of runc's.
    const GOAL: f64 = 0.95;
    let storage = |k: usize| if k < 3 { "tmpfs" } else { "ext4 /run" };
    for (k, ((label, _, _), s)) in variants.iter().zip(&samples).enumerate() {
        let base = rate(stats(&samples[k - k % 3]).median);
        let r = rate(stats(s).median);
        if k % 3 == 2 {
            goals.push(Goal {
                figure: format!("concurrent lifecycles, 16Mi each, vs runc ({})", storage(k)),
                measured: format!("{:.2}x", r / base),
                goal: format!(">= {GOAL:.2}x"),
                met: r / base >= GOAL,
            });
        }
        body += &format!("| {label} | {r:.1} | {:.2}x |\n", r / base);
        summary.push((
            format!("concurrent throughput, {label}"),
            format!("{r:.1}/s ({:.2}x runc)", r / base),
            "reported".into(),
        ));
    }
    body += &format!(
        "\n**Creates only.** The same workers each create {PER_WORKER} containers back to back (`create` with \
         `--pid-file`, which for the product includes the wrapper's spec edit and the `createRuntime` hook with its \
         reservation); all {total} stay created until the batch ends, then are deleted untimed. Same interleaving.\n\n\
         | variant | creates/s | vs runc (same storage) |\n|---|---:|---:|\n"
    );
    for (k, ((label, _, _), s)) in variants.iter().zip(&creates).enumerate() {
        let base = rate(stats(&creates[k - k % 3]).median);
        let r = rate(stats(s).median);
        if k % 3 == 2 {
            goals.insert(
                goals.len() / 2,
                Goal {
                    figure: format!("concurrent creates, 16Mi each, vs runc ({})", storage(k)),
                    measured: format!("{:.2}x", r / base),
                    goal: format!(">= {GOAL:.2}x"),
                    met: r / base >= GOAL,
                },
            );
        }
        body += &format!("| {label} | {r:.1} | {:.2}x |\n", r / base);
        summary.push((
            format!("concurrent creates, {label}"),
            format!("{r:.1}/s ({:.2}x runc)", r / base),
            "reported".into(),
        ));
    }
    Ok(Report { body, summary, goals })
}
