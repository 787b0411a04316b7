//! Owns the `dataplane-hook` command line.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Loaded;
use crate::ledger::Ledger;
use crate::{gc, hook, status};

#[derive(Debug, Parser)]
#[command(
    name = "dataplane-hook",
    version,
    about = "OCI hook that gives DPDK/SPDK/RDMA/GPU containers private hugepages, runtime dirs and kernel reservations",
    long_about = None
)]
pub struct Cli {
    /// Configuration file (default: $DATAPLANE_HOOK_CONFIG, else /etc/dataplane-hook/config.toml, else built-in defaults)
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// OCI hook: set the container up (state JSON on stdin)
    #[command(name = "createRuntime")]
    CreateRuntime,
    /// OCI hook: same as createRuntime (CRI-O turns prestart into createRuntime)
    #[command(name = "prestart")]
    Prestart,
    /// OCI hook: release everything of the container (state JSON on stdin); idempotent
    #[command(name = "poststop")]
    Poststop,
    /// Release what containers that are gone left behind
    Gc {
        /// Show what would be released without releasing it
        #[arg(long)]
        dry_run: bool,
    },
    /// Show reservations, groups and pools
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check whether this node is ready: one line per check with pass/warn/fail and the fix
    Doctor,
    /// Write the integration files for a container runtime (drop-ins; never clobbers)
    Configure(crate::configure::ConfigureArgs),
    /// Node watchdog daemon: kill GPU containers whose uncharged driver memory outgrows their headroom
    Watch,
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut cmd, "dataplane-hook", &mut std::io::stdout());
            return Ok(());
        }
        // A config that does not load is one of doctor's findings, not a reason not to run.
        Command::Doctor => return crate::doctor::run(cli.config.as_deref()),
        _ => {}
    }
    let loaded = Loaded::resolve(cli.config.as_deref())?;
    crate::log::init(&loaded.config, "dataplane-hook");
    let cfg = &loaded.config;
    match cli.command {
        Command::CreateRuntime | Command::Prestart => {
            let r = hook::create_runtime(cfg, std::io::stdin().lock());
            crate::metrics::hook_done(cfg, "createRuntime", started.elapsed(), r.as_ref().err());
            let outcome = r?;
            tracing::debug!(?outcome, "createRuntime done");
        }
        Command::Poststop => {
            let r = hook::poststop(cfg, std::io::stdin().lock());
            crate::metrics::hook_done(cfg, "poststop", started.elapsed(), r.as_ref().err());
            r?
        }
        Command::Gc { dry_run } => {
            let ledger = Ledger::open(&cfg.state_dir)?;
            let r = gc::run(&ledger, dry_run);
            drop(ledger);
            crate::metrics::flush_logged(cfg);
            let verb = if dry_run { "would release" } else { "released" };
            for id in &r.released {
                println!("{verb} {id}");
            }
            for id in &r.live {
                println!("live {id}");
            }
            for g in &r.groups_released {
                println!("{verb} group {g}");
            }
            for e in &r.errors {
                eprintln!("dataplane-hook: gc: {e}");
            }
            if !r.errors.is_empty() {
                anyhow::bail!("gc could not release everything ({} problems above)", r.errors.len());
            }
        }
        Command::Status { json } => {
            let ledger = Ledger::open(&cfg.state_dir)?;
            let s = status::collect(&ledger);
            if json {
                println!("{}", serde_json::to_string_pretty(&s)?);
            } else {
                print!("{}", status::render_text(&s));
            }
        }
        Command::Doctor | Command::Completions { .. } => unreachable!("handled before the config is loaded"),
        Command::Configure(args) => crate::configure::run(&loaded, &args)?,
        Command::Watch => crate::watch::run(&loaded)?,
    }
    Ok(())
}
