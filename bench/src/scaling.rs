//! Section: create throughput against the number of creates in flight (1 to 32), for plain
//! runc and for the product (nothing requested, 16Mi reserved each), with a PNG plot of it.
//! A lock held across a hook run, or any other node-wide serialization, shows here as a curve
//! that flattens while runc's keeps rising.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::env::*;
use crate::Report;

const IN_FLIGHT: &[usize] = &[1, 2, 4, 8, 16, 32];
const REPS: usize = 3;
/// Each batch makes at least this many creates (a worker makes them back to back), and each
/// worker at least 2: enough that one slow process start does not decide a batch.
const MIN_PER_BATCH: usize = 16;
/// Written next to the report (`--out`), referenced from it.
pub const PLOT_NAME: &str = "BENCHMARKS-scaling.png";
const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

fn per_worker(k: usize) -> usize {
    MIN_PER_BATCH.div_ceil(k).max(2)
}

/// `k` workers at once, each creating `per_worker(k)` containers back to back (timed; they stay
/// created), then every container deleted (untimed, in parallel). Creates per second.
fn batch(runner: &Runner, bundles: &[PathBuf], k: usize, tag: &str) -> Result<f64> {
    let per = per_worker(k);
    let t = Instant::now();
    let made: Vec<Vec<(String, i32)>> = std::thread::scope(|s| {
        let hs: Vec<_> = bundles[..k]
            .iter()
            .enumerate()
            .map(|(w, b)| {
                s.spawn(move || {
                    (0..per)
                        .map(|i| {
                            let id = format!("sc-{tag}-{w}-{i}");
                            runner.create(b, &id).map(|pid| (id, pid))
                        })
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().expect("worker panicked")).collect::<Result<Vec<_>>>()
    })?;
    let d = t.elapsed();
    std::thread::scope(|s| {
        let hs: Vec<_> = made
            .iter()
            .zip(bundles)
            .map(|(cs, b)| {
                s.spawn(move || -> Result<()> {
                    for (id, pid) in cs {
                        runner.run(&["delete", "--force", id], &b.join(format!("{id}.err")))?;
                        wait_exit(*pid)?;
                    }
                    Ok(())
                })
            })
            .collect();
        hs.into_iter().try_for_each(|h| h.join().expect("deleter panicked"))
    })?;
    Ok((k * per) as f64 / d.as_secs_f64())
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    if v.len() % 2 == 1 {
        v[v.len() / 2]
    } else {
        (v[v.len() / 2 - 1] + v[v.len() / 2]) / 2.0
    }
}

pub fn run(ctx: &Ctx) -> Result<Report> {
    let max = *IN_FLIGHT.last().expect("levels");
    let most = IN_FLIGHT.iter().map(|&k| k * per_worker(k)).max().expect("levels");
    // The 16Mi variant holds `most` containers of 8 pages at once.
    let pages = (most * 8) as u64;
    let _pool = pool_guard(pages)?;
    let runc = ctx.runc("sc-runc")?;
    let product = ctx.product("sc-product")?;
    let bundles = |name: &str, ann: &[(&str, &str)]| -> Result<Vec<PathBuf>> {
        (0..max).map(|w| make_bundle(&ctx.path(&format!("sc-{name}-{w}")), NOOP, ann)).collect()
    };
    let variants: Vec<(&str, Runner, Vec<PathBuf>)> = vec![
        ("runc", runc, bundles("runc", &[])?),
        ("dataplane-runtime, nothing requested", product.clone(), bundles("none", &[])?),
        ("dataplane-runtime, 16Mi each", product, bundles("huge", &[(RESERVATION_KEY, "16Mi")])?),
    ];
    // One warm-up batch each (page cache, runc's first start), then REPS rounds: in each, every
    // level and variant in turn, so load that comes and goes on the machine hits them alike.
    for (k, (_, r, b)) in variants.iter().enumerate() {
        batch(r, b, 4, &format!("warm-{k}"))?;
    }
    let mut rates = vec![vec![vec![]; IN_FLIGHT.len()]; variants.len()];
    for rep in 0..REPS {
        for (l, &k) in IN_FLIGHT.iter().enumerate() {
            for v in 0..variants.len() {
                // Rotate who goes first at each level.
                let v = (v + l + rep) % variants.len();
                let (_, r, b) = &variants[v];
                rates[v][l].push(batch(r, b, k, &format!("{rep}-{l}-{v}"))?);
            }
        }
    }
    let (t, f, r) = pool()?;
    if (t, f, r) != (pages, pages, 0) {
        bail!("the pool is not back at its baseline after the scaling runs: total {t}, free {f}, reserved {r}");
    }
    let med: Vec<Vec<f64>> = rates.iter().map(|v| v.iter().map(|s| median(s)).collect()).collect();

    let mut body = format!(
        "k creates in flight: k workers at once, each making {MIN_PER_BATCH}/k containers back to back (at least 2 \
         each), every one a `create` with `--pid-file` of a no-op container (for the product: the wrapper's spec \
         edit and the `createRuntime` hook, with the reservation for 16Mi); they stay created until the batch \
         ends and are then deleted, untimed. Creates per second of wall time, median of {REPS} batches (min–max \
         in brackets); levels and variants interleaved, after one warm-up batch each. Bundles, runc root and \
         state dir on tmpfs. On a machine with few cores every process also waits for a CPU, so the rates level \
         off near the core count: what matters is whether the product's curve follows runc's.\n\n\
         ![creates per second against creates in flight]({PLOT_NAME})\n\n\
         | in flight |"
    );
    for (name, _, _) in &variants {
        body += &format!(" {name} (creates/s) |");
    }
    body += " nothing requested vs runc | 16Mi vs runc |\n|---:|";
    for _ in 0..variants.len() + 2 {
        body += "---:|";
    }
    body += "\n";
    for (l, &k) in IN_FLIGHT.iter().enumerate() {
        body += &format!("| {k} |");
        for v in 0..variants.len() {
            let s = &rates[v][l];
            let (lo, hi) =
                s.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            body += &format!(" {:.1} ({lo:.0}–{hi:.0}) |", med[v][l]);
        }
        body += &format!(" {:.2}x | {:.2}x |\n", med[1][l] / med[0][l], med[2][l] / med[0][l]);
    }
    match ctx.out_dir.as_deref() {
        Some(dir) => {
            plot(&dir.join(PLOT_NAME), &variants.iter().map(|v| v.0).collect::<Vec<_>>(), &med)
                .context("the scaling plot")?;
            eprintln!("bench: plot written to {}", dir.join(PLOT_NAME).display());
        }
        None => body += "\n(No plot: the report was not written to a file.)\n",
    }
    let at = |k: usize| IN_FLIGHT.iter().position(|&x| x == k).expect("a level");
    let (l16, l32) = (at(16), at(32));
    let summary = vec![(
        "creates/s at 16 / 32 in flight: runc, product nothing requested, product 16Mi".to_string(),
        format!(
            "{:.1} / {:.1}, {:.1} / {:.1}, {:.1} / {:.1}",
            med[0][l16], med[0][l32], med[1][l16], med[1][l32], med[2][l16], med[2][l32]
        ),
        "reported".into(),
    )];
    Ok(Report { body, summary, goals: vec![] })
}

/// Creates/s against creates in flight (log2 axis), one line per variant.
fn plot(path: &Path, names: &[&str], med: &[Vec<f64>]) -> Result<()> {
    use plotters::prelude::*;
    // plotters draws text with ab_glyph from a font we hand it: no system font library needed,
    // only the font file (`make bench` installs fonts-dejavu-core when it is missing).
    let font = std::fs::read(FONT)
        .with_context(|| format!("{FONT} (apt-get install fonts-dejavu-core)"))?;
    plotters::style::register_font(
        "sans-serif",
        FontStyle::Normal,
        Box::leak(font.into_boxed_slice()),
    )
    .map_err(|_| anyhow::anyhow!("{FONT} is not a font plotters can use"))?;
    let top = med.iter().flatten().copied().fold(0.0, f64::max) * 1.15;
    let x_max = (*IN_FLIGHT.last().expect("levels") as f64).log2();
    let root = BitMapBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Concurrent creates: creates/s against creates in flight", ("sans-serif", 26))
        .margin(20)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.2f64..x_max + 0.2, 0f64..top)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("creates in flight")
        .y_desc("creates per second")
        .x_labels(IN_FLIGHT.len())
        .x_label_formatter(&|x| format!("{}", 2f64.powf(*x).round()))
        .label_style(("sans-serif", 16))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let colors = [BLACK, BLUE, RED];
    for (v, name) in names.iter().enumerate() {
        let c = colors[v % colors.len()];
        let pts: Vec<(f64, f64)> =
            IN_FLIGHT.iter().zip(&med[v]).map(|(&k, &r)| ((k as f64).log2(), r)).collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(3)))
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], c.stroke_width(3)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 5, c.filled())))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .label_font(("sans-serif", 18))
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The plot is a PNG of the size drawn (needs the font file `make bench` installs).
    #[test]
    fn the_scaling_plot_is_a_png() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join(super::PLOT_NAME);
        let med = vec![vec![20.0, 35.0, 50.0, 60.0, 62.0, 61.0]; 3];
        super::plot(&p, &["runc", "nothing requested", "16Mi each"], &med).unwrap();
        let png = std::fs::read(&p).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 960, "width");
    }
}
