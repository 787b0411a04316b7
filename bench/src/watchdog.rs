//! Section: `dataplane-hook watch` (G10) idle cost — CPU time and peak RSS of the daemon on a
//! node with no GPU container, in dry-run mode with a private ledger (so it can kill nothing).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

use crate::env::*;
use crate::Report;

const IDLE: Duration = Duration::from_secs(10);

pub fn run(ctx: &Ctx) -> Result<Report> {
    let cfg = ctx.product_config("watch", "runc")?;
    let metrics = ctx.path("watch/watch.prom");
    let mut text = std::fs::read_to_string(&cfg)?;
    text += &format!("[watch]\ndry_run = true\nmetrics_file = \"{}\"\n", metrics.display());
    std::fs::write(&cfg, text)?;
    let err = ctx.path("watch/stderr");
    let child = Command::new(&ctx.hook)
        .arg("--config")
        .arg(&cfg)
        .arg("watch")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err)?)
        .spawn()?;
    let pid = child.id() as i32;
    let t = Instant::now();
    std::thread::sleep(IDLE);
    // Still running? (WNOHANG: it must not have exited on its own.)
    let mut status = 0;
    // SAFETY: waitpid on our own child.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != 0 {
        bail!("dataplane-hook watch exited early: {}", std::fs::read_to_string(&err).unwrap_or_default().trim());
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    // SAFETY: zeroed rusage is a valid out-parameter; `child` is not waited on afterwards.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::wait4(pid, &mut status, 0, &mut ru) } < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    let wall = t.elapsed();
    let tv = |t: libc::timeval| Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64);
    let cpu = tv(ru.ru_utime) + tv(ru.ru_stime);
    let per_min = cpu.as_secs_f64() * 1e3 * 60.0 / wall.as_secs_f64();
    let rss = ru.ru_maxrss as f64 / 1024.0;
    let body = format!(
        "`dataplane-hook watch` with `[watch] dry_run = true`, a private (empty) ledger and its metrics file in a \
         temp dir, left alone for {:.0} s on this node (no GPU container), then stopped with SIGTERM; wait4 gives its \
         CPU time and peak RSS.\n\n\
         | figure | value |\n|---|---:|\n\
         | CPU time while idle | {} ms in {:.1} s ({per_min:.1} ms per minute, {:.3}% of one core) |\n\
         | peak RSS | {rss:.1} MiB |\n\n\
         Not measured yet: reaction time (a GPU container's uncharged memory crossing its headroom until its kill) \
         and the cost while GPU containers run; both need a GPU container on the bench machine.\n",
        IDLE.as_secs_f64(),
        ms(cpu),
        wall.as_secs_f64(),
        per_min / 600.0,
    );
    let summary = vec![
        ("watchdog idle CPU".into(), format!("{per_min:.1} ms/min"), "reported".into()),
        ("watchdog peak RSS".into(), format!("{rss:.1} MiB"), "reported".into()),
        ("watchdog reaction time".into(), "not measured (needs a GPU container)".into(), "-".into()),
    ];
    Ok(Report { body, summary })
}
