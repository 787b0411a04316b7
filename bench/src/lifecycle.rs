//! Section: full-lifecycle time (create, start, exit, delete) of a no-op container through
//! dataplane-runtime against plain runc, from one interleaved run; and where the difference
//! goes (wrapper exec and spec rewrite, the two hook runs), with the hook's peak RSS.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::env::*;
use crate::Report;

const WARMUP: usize = 3;
const RESERVE: &str = "16Mi";

struct Variant<'a> {
    label: &'static str,
    runner: &'a Runner,
    bundle: &'a Path,
    target: Option<f64>,
    sample: Vec<Duration>,
}

pub fn lifecycle(ctx: &Ctx) -> Result<Report> {
    let _pool = PoolGuard::new(64)?;
    let runc = ctx.runc("lc-runc")?;
    let product = ctx.product("lc-product")?;
    let b_runc = make_bundle(&ctx.path("lc-runc-bundle"), NOOP, &[])?;
    let b_none = make_bundle(&ctx.path("lc-none-bundle"), NOOP, &[])?;
    let b_huge = make_bundle(&ctx.path("lc-huge-bundle"), NOOP, &[(RESERVATION_KEY, RESERVE)])?;
    let mut vs = [
        Variant { label: "runc", runner: &runc, bundle: &b_runc, target: None, sample: vec![] },
        Variant { label: "dataplane-runtime, nothing requested", runner: &product, bundle: &b_none, target: Some(1.10), sample: vec![] },
        Variant { label: "dataplane-runtime, 16Mi of 2Mi hugepages reserved", runner: &product, bundle: &b_huge, target: Some(1.30), sample: vec![] },
    ];
    let n = vs.len();
    for round in 0..WARMUP + ctx.runs {
        // Rotate who goes first, so no variant always runs right after another.
        for k in 0..n {
            let v = &mut vs[(round + k) % n];
            let id = format!("lc-{round}-{}", (round + k) % n);
            let d = v.runner.lifecycle(v.bundle, &id).with_context(|| format!("lifecycle of {}", v.label))?;
            if round >= WARMUP {
                v.sample.push(d);
            }
        }
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != (64, 64, 0) {
        bail!("the pool is not back at its baseline after the lifecycle runs: total {t}, free {f}, reserved {r}");
    }
    let records = std::fs::read_dir(ctx.path("lc-product/state/containers")).map(|d| d.count()).unwrap_or(0);
    if records != 0 {
        bail!("{records} ledger records left after the lifecycle runs");
    }

    let base = stats(&vs[0].sample).median;
    let mut body = format!(
        "{} lifecycles per variant (after {WARMUP} warm-up rounds), interleaved round-robin with the starting \
         variant rotated each round. One lifecycle = `create` (with `--pid-file`), `start`, wait for the init to \
         exit (the bench is the child subreaper, so it reaps the init without polling), `delete`. Container: \
         `/usr/bin/true` in a rootfs that bind-mounts the host's /usr read-only; private `--root` per runtime; \
         the product with its default configuration except a private state dir and log file under /run.\n\n\
         | variant | median ms | p10 ms | p90 ms | min ms | vs runc | target |\n|---|---:|---:|---:|---:|---:|---|\n",
        ctx.runs
    );
    let mut summary = vec![];
    for v in &vs {
        let s = stats(&v.sample);
        let ratio = s.median.as_secs_f64() / base.as_secs_f64();
        let target = match v.target {
            Some(t) if ratio <= t => format!("<= {t:.2}x: met"),
            Some(t) => format!("<= {t:.2}x: **missed**"),
            None => "baseline".into(),
        };
        body += &format!(
            "| {} | {} | {} | {} | {} | {ratio:.2}x | {target} |\n",
            v.label,
            ms(s.median),
            ms(s.p10),
            ms(s.p90),
            ms(s.min)
        );
        summary.push((format!("lifecycle: {}", v.label), format!("{} ms ({ratio:.2}x runc)", ms(s.median)), target));
    }
    body += &format!(
        "\nAfter all {} product lifecycles the 2Mi pool was exactly at its baseline and the ledger was empty.\n",
        2 * (WARMUP + ctx.runs)
    );
    ctx_store(ctx, "delta_none", stats(&vs[1].sample).median.saturating_sub(base));
    ctx_store(ctx, "delta_huge", stats(&vs[2].sample).median.saturating_sub(base));
    Ok(Report { body, summary })
}

fn ctx_store(ctx: &Ctx, key: &str, d: Duration) {
    ctx.notes.borrow_mut().insert(key.to_string(), d);
}

/// Where the product's extra time goes, measured part by part, and the hook's peak RSS.
pub fn breakdown(ctx: &Ctx) -> Result<Report> {
    let _pool = PoolGuard::new(64)?;
    let n = ctx.runs;
    let true_bin = "/bin/true";

    // 1. The wrapper alone: runtime_path = /bin/true, so `dataplane-runtime` does all its own
    // work (config lookup, and for create: parse, edit and rewrite config.json) and then execs
    // /bin/true instead of runc. Compared with exec'ing /bin/true directly.
    let cfg_true = ctx.product_config("bd-true", true_bin)?;
    let b_edit = make_bundle(&ctx.path("bd-edit-bundle"), NOOP, &[(RESERVATION_KEY, RESERVE)])?;
    let b_edit_s = b_edit.display().to_string();
    let mut direct = vec![];
    let mut pass = vec![];
    let mut edit = vec![];
    for i in 0..WARMUP + n {
        let (m0, _) = measure(Command::new(true_bin).args(["--root", "/x", "state", "x"]), b"")?;
        let (m1, e1) = measure(
            Command::new(&ctx.runtime).env("DATAPLANE_HOOK_CONFIG", &cfg_true).args(["--root", "/x", "state", "x"]),
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
        }
    }
    let exec_true = stats(&direct).median;
    let pass_cost = stats(&pass).median.saturating_sub(exec_true);
    let edit_cost = stats(&edit).median.saturating_sub(exec_true);

    // 2. The hook where runc really runs it: plain runc with the product's hooks in the spec,
    // each run through a shim (this binary) that times the hook process and takes its peak
    // RSS with wait4. Same bundles and configuration as the lifecycle section.
    let runc = ctx.runc("bd-runc")?;
    let cfg = ctx.product_config("bd-hook", "runc")?;
    let mut rows = vec![];
    let mut rss_max = 0u64;
    let mut rss_rows = String::new();
    for (label, ann) in [("nothing requested", vec![]), ("16Mi of 2Mi hugepages", vec![(RESERVATION_KEY, RESERVE)])] {
        let bundle = make_bundle(&ctx.path(&format!("bd-hook-{}", ann.len())), NOOP, &ann)?;
        let out = ctx.path(&format!("bd-hook-{}.times", ann.len()));
        add_shimmed_hooks(&bundle, &ctx.hook, &cfg, &out)?;
        for i in 0..WARMUP + n {
            if i == WARMUP {
                let _ = std::fs::remove_file(&out);
            }
            runc.lifecycle(&bundle, &format!("bd-{}-{i}", ann.len()))?;
        }
        let recs = read_shim_records(&out);
        let pick = |stage: &str| -> Vec<&ShimRecord> { recs.iter().filter(|r| r.stage == stage).collect() };
        let (create, post) = (pick("createRuntime"), pick("poststop"));
        if create.len() != n || post.len() != n {
            bail!("hook shim recorded {} createRuntime and {} poststop runs, expected {n} each", create.len(), post.len());
        }
        let rss = |v: &[&ShimRecord]| v.iter().map(|r| r.max_rss_kib).max().unwrap_or(0);
        let wall = |v: &[&ShimRecord]| stats(&v.iter().map(|r| r.wall).collect::<Vec<_>>()).median;
        let (rss_c, rss_p) = (rss(&create), rss(&post));
        rss_max = rss_max.max(rss_c).max(rss_p);
        rss_rows += &format!("| `createRuntime`, {label} | {:.1} MiB |\n| `poststop`, {label} | {:.1} MiB |\n", rss_c as f64 / 1024.0, rss_p as f64 / 1024.0);
        rows.push((label, wall(&create), wall(&post)));
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != (64, 64, 0) {
        bail!("the pool is not back at its baseline after the hook runs: total {t}, free {f}, reserved {r}");
    }
    // status and gc on an empty ledger, for completeness.
    for sub in [&["status"][..], &["gc"][..]] {
        let (m, e) = measure(Command::new(&ctx.hook).arg("--config").arg(&cfg).args(sub), b"")?;
        if !m.success {
            bail!("dataplane-hook {} failed: {e}", sub.join(" "));
        }
        rss_max = rss_max.max(m.max_rss_kib);
        rss_rows += &format!("| `{}` | {:.1} MiB |\n", sub.join(" "), m.max_rss_kib as f64 / 1024.0);
    }

    let notes = ctx.notes.borrow();
    let mut body = format!(
        "Each part measured on its own ({n} runs each, medians; the process spawn is included, as runc pays it).\n\n\
         | part | median ms |\n|---|---:|\n\
         | exec `/bin/true` (the floor for any process the lifecycle spawns) | {} |\n\
         | wrapper pass-through (`start`, `delete`: config lookup + exec), over the floor | {} |\n\
         | wrapper `create` (parse config.json, edit, atomic rewrite + fsync, exec), over the floor | {} |\n",
        ms(exec_true),
        ms(pass_cost),
        ms(edit_cost)
    );
    for (label, c, p) in &rows {
        body += &format!("| hook `createRuntime`, {label} (whole process) | {} |\n| hook `poststop`, {label} (whole process) | {} |\n", ms(*c), ms(*p));
    }
    for ((label, c, p), key) in rows.iter().zip(["delta_none", "delta_huge"]) {
        let expected = edit_cost + 2 * pass_cost + *c + *p;
        match notes.get(key) {
            Some(measured) => {
                body += &format!(
                    "\nExpected overhead, {label}: create edit {} + 2 x pass-through {} + createRuntime {} + poststop {} = **{} ms**; \
                     measured in the lifecycle section: **{} ms**.",
                    ms(edit_cost),
                    ms(pass_cost),
                    ms(*c),
                    ms(*p),
                    ms(expected),
                    ms(*measured)
                );
            }
            None => body += &format!("\nExpected overhead, {label}: **{} ms** (lifecycle section not run).", ms(expected)),
        }
    }
    body += "\n";
    body += &format!("\n### Hook peak RSS\n\nru_maxrss of each `dataplane-hook` process (wait4), maximum over all runs above.\n\n| run | peak RSS |\n|---|---:|\n{rss_rows}");
    let summary = vec![
        ("hook peak RSS (any command)".to_string(), format!("{:.1} MiB", rss_max as f64 / 1024.0), "reported".to_string()),
        (
            "hook createRuntime / poststop, 16Mi".to_string(),
            format!("{} / {} ms", ms(rows[1].1), ms(rows[1].2)),
            "reported".to_string(),
        ),
    ];
    Ok(Report { body, summary })
}
