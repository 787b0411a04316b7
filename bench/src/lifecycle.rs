//! Section: full-lifecycle time (create, start, exit, delete) of a no-op container through
//! dataplane-runtime against plain runc, from one interleaved run; and where the difference
//! goes (wrapper exec and spec rewrite, the two hook runs), with the hook's peak RSS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::env::*;
use crate::{Goal, Report};

const WARMUP: usize = 3;
const RESERVE: &str = "16Mi";
/// Issue #17's goals for the lifecycle's median against plain runc's (the exec-only floor is
/// about 1.04x).
const GOAL_NONE: f64 = 1.05;
const GOAL_HUGE: f64 = 1.12;

struct Variant {
    /// Index into the storage groups (tmpfs, /run's filesystem).
    group: usize,
    label: &'static str,
    runner: Runner,
    bundle: std::path::PathBuf,
    target: Option<f64>,
    /// The exec-only wrapper: a reference, neither the baseline nor a product variant.
    reference: bool,
    sample: Vec<Duration>,
    cpu: Vec<Duration>,
}

/// Where bundles, runc roots and the product's state dir and log live: ctx path prefix, title.
fn groups() -> [(&'static str, String); 2] {
    let run_fs = fs_type(Path::new("/run"));
    [
        ("", "on tmpfs (what /run is on most Linux hosts)".to_string()),
        ("run/", format!("on this machine's /run ({run_fs}), the default state dir's filesystem")),
    ]
}

pub fn lifecycle(ctx: &Ctx) -> Result<Report> {
    let _pool = pool_guard(64)?;
    let mut vs = vec![];
    for (g, (prefix, _)) in groups().iter().enumerate() {
        let p = |n: &str| ctx.path(&format!("{prefix}{n}"));
        let runc = ctx.runc(&format!("{prefix}lc-runc"))?;
        let product = ctx.product(&format!("{prefix}lc-product"))?;
        let exec_only = ctx.exec_only(&format!("{prefix}lc-exec-only"))?;
        let v = |label, runner: &Runner, bundle, target| Variant {
            group: g,
            label,
            runner: runner.clone(),
            bundle,
            target,
            reference: false,
            sample: vec![],
            cpu: vec![],
        };
        vs.push(v("runc", &runc, make_bundle(&p("lc-runc-bundle"), NOOP, &[])?, None));
        vs.push(Variant {
            reference: true,
            ..v(
                "reference: a wrapper that only execs runc",
                &exec_only,
                make_bundle(&p("lc-exec-only-bundle"), NOOP, &[])?,
                None,
            )
        });
        vs.push(v(
            "dataplane-runtime, nothing requested",
            &product,
            make_bundle(&p("lc-none-bundle"), NOOP, &[])?,
            Some(GOAL_NONE),
        ));
        vs.push(v(
            "dataplane-runtime, 16Mi of 2Mi hugepages reserved",
            &product,
            make_bundle(&p("lc-huge-bundle"), NOOP, &[(RESERVATION_KEY, RESERVE)])?,
            Some(GOAL_HUGE),
        ));
    }
    let n = vs.len();
    for round in 0..WARMUP + ctx.runs {
        // Rotate who goes first, so no variant always runs right after another.
        for k in 0..n {
            let i = (round + k) % n;
            let v = &mut vs[i];
            let (d, cpu) = v
                .runner
                .lifecycle_cpu(&v.bundle, &format!("lc-{round}-{i}"))
                .with_context(|| format!("lifecycle of {}", v.label))?;
            if round >= WARMUP {
                v.sample.push(d);
                v.cpu.push(cpu);
            }
        }
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != (64, 64, 0) {
        bail!("the pool is not back at its baseline after the lifecycle runs: total {t}, free {f}, reserved {r}");
    }
    for (prefix, _) in groups() {
        let records = std::fs::read_dir(ctx.path(&format!("{prefix}lc-product/state/containers")))
            .map(|d| d.count())
            .unwrap_or(0);
        if records != 0 {
            bail!("{records} ledger records left after the lifecycle runs");
        }
    }

    let mut body = format!(
        "{} lifecycles per variant (after {WARMUP} warm-up rounds), all {n} variants interleaved round-robin with \
         the starting variant rotated each round. One lifecycle = `create` (with `--pid-file`), `start`, wait for \
         the init to exit (the bench is the child subreaper, so it reaps the init without polling), `delete`. \
         Container: `/usr/bin/true` in a rootfs that bind-mounts the host's /usr read-only; private `--root` per \
         runtime; the product with its default configuration except a private state dir and log file. \
         The state dir's filesystem can matter (the ledger writes records by temp file and rename): each variant runs with \
         its bundle, runc root, state dir and log on tmpfs, and again on this machine's /run. Ratios are against \
         plain runc with the same storage. The reference variant is the bench binary itself (static, like the product's) \
         as a wrapper that does nothing but exec runc: every runc-compatible wrapper pays that much (one more exec per \
         command), whatever it does. The 95% CI (bootstrap of both samples) is how far this run's noise alone \
         could move a ratio.\n\n\
         CPU = user + system time of every process of the lifecycle (runc, wrapper, hooks, container), from \
         getrusage(RUSAGE_CHILDREN): what the node pays, however busy it is.\n",
        ctx.runs
    );
    let mut summary = vec![];
    let mut goals = vec![];
    for (g, (_, title)) in groups().iter().enumerate() {
        body += &format!(
            "\n**Storage {title}**\n\n\
             | variant | median ms | p10 ms | p90 ms | min ms | vs runc | 95% CI | target | CPU ms (median) | CPU vs runc |\n\
             |---|---:|---:|---:|---:|---:|---|---|---:|---:|\n"
        );
        let base_v = vs
            .iter()
            .find(|v| v.group == g && v.target.is_none() && !v.reference)
            .expect("a runc variant per group");
        let base = stats(&base_v.sample).median;
        let base_cpu = stats(&base_v.cpu).median;
        for v in vs.iter().filter(|v| v.group == g) {
            let s = stats(&v.sample);
            let ratio = s.median.as_secs_f64() / base.as_secs_f64();
            let target = match v.target {
                Some(t) if ratio <= t => format!("<= {t:.2}x: met"),
                Some(t) => format!("<= {t:.2}x: **missed**"),
                None if v.reference => "the floor for any exec wrapper".into(),
                None => "baseline".into(),
            };
            let cpu = stats(&v.cpu).median;
            let ci = if v.target.is_some() || v.reference {
                let (lo, hi) = ratio_ci(&v.sample, &base_v.sample);
                format!("{lo:.2}–{hi:.2}x")
            } else {
                String::new()
            };
            body += &format!(
                "| {} | {} | {} | {} | {} | {ratio:.2}x | {ci} | {target} | {} | {:.2}x |\n",
                v.label,
                ms(s.median),
                ms(s.p10),
                ms(s.p90),
                ms(s.min),
                ms(cpu),
                cpu.as_secs_f64() / base_cpu.as_secs_f64()
            );
            let storage = if g == 0 { "tmpfs" } else { "/run" };
            summary.push((
                format!("lifecycle ({storage}): {}", v.label),
                format!(
                    "{} ms ({ratio:.2}x runc{}; CPU {:.2}x)",
                    ms(s.median),
                    if ci.is_empty() { String::new() } else { format!(", 95% CI {ci}") },
                    cpu.as_secs_f64() / base_cpu.as_secs_f64()
                ),
                target,
            ));
            if let Some(t) = v.target {
                let what = if t == GOAL_HUGE { "16Mi reserved" } else { "nothing requested" };
                goals.push(Goal {
                    figure: format!("lifecycle, {what}, vs runc ({storage})"),
                    measured: format!("{ratio:.2}x"),
                    goal: format!("<= {t:.2}x"),
                    met: ratio <= t,
                });
            }
            if v.target == Some(GOAL_NONE) {
                ctx_store(ctx, &format!("delta_none_{g}"), s.median.saturating_sub(base));
            } else if v.target == Some(GOAL_HUGE) {
                ctx_store(ctx, &format!("delta_huge_{g}"), s.median.saturating_sub(base));
            }
        }
    }
    body += &format!(
        "\nAfter all {} product lifecycles the 2Mi pool was exactly at its baseline and the ledgers were empty.\n",
        4 * (WARMUP + ctx.runs)
    );
    Ok(Report { body, summary, goals })
}

fn ctx_store(ctx: &Ctx, key: &str, d: Duration) {
    ctx.notes.borrow_mut().insert(key.to_string(), d);
}

/// One storage group's parts of the product's cost (medians).
struct Parts {
    exec_true: Duration,
    pass_cost: Duration,
    edit_cost: Duration,
    /// CPU time (user + system) of the same three, medians.
    cpu: [Duration; 3],
    /// Per request (nothing, 16Mi): (createRuntime wall, CPU, peak RSS KiB), (poststop ...).
    hooks: Vec<[(Duration, Duration, u64); 2]>,
}

const REQUESTS: [(&str, &[(&str, &str)]); 2] =
    [("nothing requested", &[]), ("16Mi of 2Mi hugepages", &[(RESERVATION_KEY, RESERVE)])];

fn parts(ctx: &Ctx, prefix: &str) -> Result<Parts> {
    let n = ctx.runs;
    let true_bin = "/bin/true";
    let p = |name: &str| format!("{prefix}{name}");

    // 1. The wrapper alone: runtime_path = /bin/true, so `dataplane-runtime` does all its own
    // work (config lookup, and for create: parse, edit and rewrite config.json) and then execs
    // /bin/true instead of runc. Compared with exec'ing /bin/true directly.
    let cfg_true = ctx.product_config(&p("bd-true"), true_bin)?;
    let b_edit = make_bundle(&ctx.path(&p("bd-edit-bundle")), NOOP, &[(RESERVATION_KEY, RESERVE)])?;
    let b_edit_s = b_edit.display().to_string();
    let (mut direct, mut pass, mut edit) = (vec![], vec![], vec![]);
    let mut cpu: [Vec<Duration>; 3] = Default::default();
    for i in 0..WARMUP + n {
        let (m0, _) = measure(Command::new(true_bin).args(["--root", "/x", "state", "x"]), b"")?;
        let (m1, e1) = measure(
            Command::new(&ctx.runtime)
                .env("DATAPLANE_HOOK_CONFIG", &cfg_true)
                .args(["--root", "/x", "state", "x"]),
            b"",
        )?;
        let (m2, e2) = measure(
            Command::new(&ctx.runtime)
                .env("DATAPLANE_HOOK_CONFIG", &cfg_true)
                .args(["--root", "/x", "create", "--bundle", &b_edit_s, "x"]),
            b"",
        )?;
        if !m1.success || !m2.success {
            bail!("dataplane-runtime with runtime_path=/bin/true failed: {e1}{e2}");
        }
        if i >= WARMUP {
            direct.push(m0.wall);
            pass.push(m1.wall);
            edit.push(m2.wall);
            for (c, m) in cpu.iter_mut().zip([m0, m1, m2]) {
                c.push(m.cpu);
            }
        }
    }
    let exec_true = stats(&direct).median;
    let pass_cost = stats(&pass).median.saturating_sub(exec_true);
    let edit_cost = stats(&edit).median.saturating_sub(exec_true);

    // 2. The hook where runc really runs it: plain runc with the product's hooks in the spec,
    // each run through a shim (this binary) that times the hook process and takes its peak
    // RSS with wait4.
    let runc = ctx.runc(&p("bd-runc"))?;
    let cfg = ctx.product_config(&p("bd-hook"), "runc")?;
    let mut hooks = vec![];
    for (k, (_, ann)) in REQUESTS.iter().enumerate() {
        let bundle = make_bundle(&ctx.path(&p(&format!("bd-hook-{k}"))), NOOP, ann)?;
        let out = ctx.path(&p(&format!("bd-hook-{k}.times")));
        add_shimmed_hooks(&bundle, &ctx.hook, &cfg, &out)?;
        for i in 0..WARMUP + n {
            if i == WARMUP {
                let _ = std::fs::remove_file(&out);
            }
            runc.lifecycle(&bundle, &format!("bd-{k}-{i}"))?;
        }
        let recs = read_shim_records(&out);
        let mut pair = [(Duration::ZERO, Duration::ZERO, 0u64); 2];
        for (j, stage) in ["createRuntime", "poststop"].iter().enumerate() {
            let r: Vec<&ShimRecord> = recs.iter().filter(|r| r.stage == *stage).collect();
            if r.len() != n {
                bail!("hook shim recorded {} {stage} runs, expected {n}", r.len());
            }
            pair[j] = (
                stats(&r.iter().map(|r| r.wall).collect::<Vec<_>>()).median,
                stats(&r.iter().map(|r| r.cpu).collect::<Vec<_>>()).median,
                r.iter().map(|r| r.max_rss_kib).max().unwrap_or(0),
            );
        }
        hooks.push(pair);
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != (64, 64, 0) {
        bail!("the pool is not back at its baseline after the hook runs: total {t}, free {f}, reserved {r}");
    }
    let cpu = [stats(&cpu[0]).median, stats(&cpu[1]).median, stats(&cpu[2]).median];
    Ok(Parts { exec_true, pass_cost, edit_cost, cpu, hooks })
}

/// Where the product's extra time goes, measured part by part, and the hook's peak RSS.
pub fn breakdown(ctx: &Ctx) -> Result<Report> {
    let _pool = pool_guard(64)?;
    let gs = groups();
    let all: Vec<Parts> = gs.iter().map(|(prefix, _)| parts(ctx, prefix)).collect::<Result<_>>()?;
    let mib = |k: u64| format!("{:.1} MiB", k as f64 / 1024.0);

    let mut body = format!(
        "Each part measured on its own, {} runs each, medians in ms (process spawn included: runc pays it too). \
         The wrapper is timed with `runtime_path = \"/bin/true\"`, so it does all its own work and then execs \
         /bin/true instead of runc. The hooks are timed where runc really runs them: plain runc with the product's \
         hooks in the spec, each through a shim that times the hook process and takes its CPU time and peak RSS \
         (wait4). On a busy machine every extra process also waits for a CPU, so the measured wall overhead can \
         exceed the sum of the parts; the CPU figures do not depend on the load.\n\n\
         | part | {} | {} |\n|---|---:|---:|\n",
        ctx.runs,
        "storage on tmpfs",
        "storage on /run"
    );
    let row = |label: String, f: &dyn Fn(&Parts) -> String| {
        format!("| {label} | {} | {} |\n", f(&all[0]), f(&all[1]))
    };
    body += &row("exec `/bin/true` (the floor for any process spawn): wall (CPU)".into(), &|p| {
        format!("{} ({})", ms(p.exec_true), ms(p.cpu[0]))
    });
    body += &row(
        "wrapper pass-through (`start`, `delete`: config lookup, exec), over the floor: wall (CPU)"
            .into(),
        &|p| format!("{} ({})", ms(p.pass_cost), ms(p.cpu[1].saturating_sub(p.cpu[0]))),
    );
    body += &row("wrapper `create` (parse config.json, edit, rewrite atomically, exec), over the floor: wall (CPU)".into(), &|p| {
        format!("{} ({})", ms(p.edit_cost), ms(p.cpu[2].saturating_sub(p.cpu[0])))
    });
    for (k, (label, _)) in REQUESTS.iter().enumerate() {
        // Nothing requested: the wrapper's fast path runs no hook; the hooks.d path (podman,
        // CRI-O) still runs both.
        let path = if k == 0 { " (hooks.d path only)" } else { "" };
        for (j, stage) in ["createRuntime", "poststop"].iter().enumerate() {
            body += &row(format!("hook `{stage}`, {label}{path}: wall (CPU)"), &|p| {
                let (w, c, _) = p.hooks[k][j];
                format!("{} ({})", ms(w), ms(c))
            });
        }
    }
    let notes = ctx.notes.borrow();
    for (k, (label, _)) in REQUESTS.iter().enumerate() {
        let key = if k == 0 { "delta_none" } else { "delta_huge" };
        if k == 0 {
            body += &row(format!("**sum: expected overhead of a lifecycle, {label}** (create + 2 pass-through; the fast path runs no hook)"), &|p| {
                format!("**{}**", ms(p.edit_cost + 2 * p.pass_cost))
            });
        } else {
            body += &row(format!("**sum: expected overhead of a lifecycle, {label}** (create + 2 pass-through + both hooks)"), &|p| {
                format!("**{}**", ms(p.edit_cost + 2 * p.pass_cost + p.hooks[k][0].0 + p.hooks[k][1].0))
            });
        }
        if notes.contains_key(&format!("{key}_0")) {
            let g = |i: usize| {
                notes.get(&format!("{key}_{i}")).map(|d| ms(*d)).unwrap_or_else(|| "?".into())
            };
            body += &format!(
                "| measured overhead in the lifecycle section, {label} | {} | {} |\n",
                g(0),
                g(1)
            );
        }
    }

    // Peak RSS: every hook run above, and `status`/`gc` on an empty ledger.
    let cfg = ctx.product_config("bd-rss", "runc")?;
    let mut rss_rows = String::new();
    let mut rss_max = 0u64;
    for (k, (label, _)) in REQUESTS.iter().enumerate() {
        for (j, stage) in ["createRuntime", "poststop"].iter().enumerate() {
            let r = all.iter().map(|p| p.hooks[k][j].2).max().unwrap_or(0);
            rss_max = rss_max.max(r);
            rss_rows += &format!("| `{stage}`, {label} | {} |\n", mib(r));
        }
    }
    for sub in [&["status"][..], &["gc"][..]] {
        let (m, e) = measure(Command::new(&ctx.hook).arg("--config").arg(&cfg).args(sub), b"")?;
        if !m.success {
            bail!("dataplane-hook {} failed: {e}", sub.join(" "));
        }
        rss_max = rss_max.max(m.max_rss_kib);
        rss_rows += &format!("| `{}` | {} |\n", sub.join(" "), mib(m.max_rss_kib));
    }
    body += &format!(
        "\n### Hook peak RSS\n\nru_maxrss of each `dataplane-hook` process (wait4), maximum over all runs above.\n\n\
         | run | peak RSS |\n|---|---:|\n{rss_rows}"
    );
    let h = &all[0].hooks[1];
    let summary = vec![
        ("hook peak RSS (any command)".to_string(), mib(rss_max), "reported".to_string()),
        (
            "hook createRuntime / poststop, 16Mi, tmpfs: wall (CPU)".to_string(),
            format!("{} ({}) / {} ({}) ms", ms(h[0].0), ms(h[0].1), ms(h[1].0), ms(h[1].1)),
            "reported".to_string(),
        ),
    ];
    Ok(Report { body, summary, goals: vec![] })
}
