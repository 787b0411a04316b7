//! `dataplane-bench` (`make bench`): every benchmark of the product in one report.
//!
//! Each benchmark is a [`Section`] in [`SECTIONS`]: a function that measures and returns its
//! part of the report (markdown) plus its headline figures. Adding a benchmark adds a module
//! and one line there. The report (`BENCHMARKS.md`) is generated: all figures come from one
//! run, with the machine noted. Needs root (runc, mounts, cgroups, the hugepage pool).

mod concurrency;
mod env;
mod gc;
mod lifecycle;
mod scaling;
mod watchdog;

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use env::Ctx;

/// A section's result: its markdown body, (figure, value, target) rows for the summary, and
/// the figures that have a goal (issue #17), each judged met or missed.
pub struct Report {
    pub body: String,
    pub summary: Vec<(String, String, String)>,
    pub goals: Vec<Goal>,
}

pub struct Goal {
    pub figure: String,
    pub measured: String,
    pub goal: String,
    pub met: bool,
}

pub struct Section {
    pub key: &'static str,
    pub title: &'static str,
    pub run: fn(&Ctx) -> Result<Report>,
}

pub const SECTIONS: &[Section] = &[
    Section {
        key: "lifecycle",
        title: "Container lifecycle overhead vs plain runc",
        run: lifecycle::lifecycle,
    },
    Section {
        key: "breakdown",
        title: "Where the time goes, and the hook's peak RSS",
        run: lifecycle::breakdown,
    },
    Section { key: "concurrency", title: "Concurrent lifecycle throughput", run: concurrency::run },
    Section {
        key: "scaling",
        title: "Create throughput against creates in flight",
        run: scaling::run,
    },
    Section { key: "gc", title: "gc time against the number of ledger records", run: gc::run },
    Section { key: "watchdog", title: "Watchdog reaction time and idle cost", run: watchdog::run },
];

struct Args {
    bin_dir: PathBuf,
    out: Option<PathBuf>,
    runs: usize,
    only: Vec<String>,
}

const USAGE: &str = "usage: dataplane-bench [--bin-dir DIR] [--out FILE] [--runs N] [--only SECTION[,SECTION...]]\n\
  --bin-dir DIR  where dataplane-hook and dataplane-runtime are (default: beside this binary)\n\
  --out FILE     write the report there (default: print only)\n\
  --runs N       samples per variant in the timing sections (default 200)\n\
  --only LIST    run only these sections: lifecycle, breakdown, concurrency, scaling, gc, watchdog\n\
  (watchdog: at most 10 runs; DPH_WATCH_BENCH_IDLE=S sets its two idle windows, default 20 s)\n\
Needs root: it runs real containers with runc and sizes the 2Mi hugepage pool (restored after).";

fn parse_args() -> Result<Args> {
    let exe = std::env::current_exe()?;
    let mut a = Args {
        bin_dir: exe.parent().context("exe dir")?.to_path_buf(),
        out: None,
        runs: 200,
        only: vec![],
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value\n{USAGE}"));
        match arg.as_str() {
            "--bin-dir" => a.bin_dir = value()?.into(),
            "--out" => a.out = Some(value()?.into()),
            "--runs" => a.runs = value()?.parse().context("--runs")?,
            "--only" => a.only = value()?.split(',').map(String::from).collect(),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => bail!("unknown argument {arg}\n{USAGE}"),
        }
    }
    if a.runs < 3 {
        bail!("--runs must be at least 3");
    }
    for o in &a.only {
        if !SECTIONS.iter().any(|s| s.key == o) {
            bail!("unknown section {o}\n{USAGE}");
        }
    }
    Ok(a)
}

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(env::SHIM_FLAG) {
        std::process::exit(env::hook_shim(&argv[2..]));
    }
    if argv.get(1).map(String::as_str) == Some(env::EXEC_ONLY_FLAG) {
        std::process::exit(env::exec_only(&argv[2..]));
    }
    if let Err(e) = real_main() {
        eprintln!("dataplane-bench: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let args = parse_args()?;
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root (sudo make bench): the benchmark runs real containers and sizes the hugepage pool");
    }
    env::become_subreaper()?;
    let mut ctx = Ctx::new(&args.bin_dir, args.runs)?;
    // The plot goes next to the report, which references it by name.
    ctx.out_dir = args.out.as_ref().map(|o| match o.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    });
    let started = Instant::now();
    let machine = env::machine();
    let mut sections = String::new();
    let mut summary = vec![];
    let mut goals = vec![];
    let mut number = 0;
    for s in
        SECTIONS.iter().filter(|s| args.only.is_empty() || args.only.iter().any(|o| o == s.key))
    {
        eprintln!("bench: {} ...", s.title);
        let t = Instant::now();
        let r = (s.run)(&ctx).with_context(|| format!("section {}", s.key))?;
        env::reap_orphans();
        eprintln!("bench: {} done in {:.1}s", s.key, t.elapsed().as_secs_f64());
        number += 1;
        sections += &format!("\n## {number}. {}\n\n{}\n", s.title, r.body.trim_end());
        summary.extend(r.summary);
        goals.extend(r.goals);
    }
    let mut doc = String::from(
        "# Benchmarks\n\n\
         Generated by `make bench` (`bench/`, the `dataplane-bench` binary): every figure below comes from one run \
         on the machine described here. Do not edit by hand; re-run `make bench` to refresh.\n\n## Machine\n\n",
    );
    doc += &machine;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    doc += &format!("| load average at end | {} |\n", load.join(" "));
    doc += &format!("\nTotal benchmark time: {:.0} s. Wall-clock figures on a shared or busy machine are noisy: compare the ratios, \
                     which come from interleaved runs, and check the load average above.\n", started.elapsed().as_secs_f64());
    if !goals.is_empty() {
        doc +=
            "\n## Goals\n\nThe figures issue #17 sets goals for, judged on this run's medians.\n\n\
                | figure | measured | goal | |\n|---|---:|---|---|\n";
        for g in &goals {
            let verdict = if g.met { "met" } else { "**missed**" };
            doc += &format!("| {} | {} | {} | {verdict} |\n", g.figure, g.measured, g.goal);
        }
    }
    doc += "\n## Summary\n\n| figure | measured | target |\n|---|---|---|\n";
    for (f, v, t) in &summary {
        doc += &format!("| {f} | {v} | {t} |\n");
    }
    doc += &sections;
    if let Some(out) = &args.out {
        std::fs::write(out, &doc).with_context(|| format!("write {}", out.display()))?;
        eprintln!("bench: report written to {}", out.display());
    }
    print!("{doc}");
    Ok(())
}
