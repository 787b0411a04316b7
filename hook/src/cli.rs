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
    long_about = None,
    after_help = "Runtimes run the hook stages (createRuntime, poststop) themselves: through the `dataplane` runtime handler \
(dataplane-runtime, containerd/CRI-O) or hooks.d files (podman, CRI-O). Set a node up with:\n  \
dataplane-hook configure --runtime containerd|crio|podman\n  dataplane-hook doctor\n\
Errors are one line: `dataplane-hook: <what>: <why> (<what to do>)`; the log file has the details.",
    after_long_help = "Runtimes run the hook stages (createRuntime, poststop) themselves: through the `dataplane` runtime handler \
(dataplane-runtime, containerd/CRI-O) or hooks.d files (podman, CRI-O). Set a node up with:\n  \
dataplane-hook configure --runtime containerd|crio|podman\n  dataplane-hook doctor\n\
Errors are one line: `dataplane-hook: <what>: <why> (<what to do>)`; the log file has the details.\n\n\
Shell completions: dataplane-hook completions bash|zsh|fish. Manual page: dataplane-hook manpage."
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
    ///
    /// Run by the OCI runtime (runc, crun) at the createRuntime stage with the container's state
    /// JSON on stdin. Reads the bundle's annotations (dataplane-hook.io/*) and hugepage limits,
    /// reserves hugepages in the kernel, attaches a private hugetlbfs and DPDK runtime dir inside
    /// the container, sets hugetlb cgroup limits, and records every step in the state dir.
    /// A request the node cannot meet fails the create with a one-line error.
    #[command(name = "createRuntime")]
    CreateRuntime,
    /// OCI hook: same as createRuntime (CRI-O turns prestart into createRuntime)
    ///
    /// Does exactly what createRuntime does, with the container's state JSON on stdin. For
    /// hooks.d files and runtimes that only run the deprecated prestart stage; CRI-O turns a
    /// prestart hook into a createRuntime one. Never run both for one container.
    #[command(name = "prestart")]
    Prestart,
    /// OCI hook: release everything of the container (state JSON on stdin); idempotent
    ///
    /// Undoes what createRuntime recorded, backwards: the reservation (HugePages_Rsvd returns
    /// to its value before the container), cgroup settings, prefix-mode hugepage files, the
    /// DPDK group when its last member leaves. Refuses while the container's init still runs.
    #[command(name = "poststop")]
    Poststop,
    /// Release what containers that are gone left behind
    ///
    /// A lost poststop (runc never retries one; a node or runtime crash) leaves records in the
    /// state dir. gc releases every recorded container whose init process is gone (identified by
    /// pid and start time, never by a runtime's state) and every DPDK group without members.
    /// Live containers are never touched. Also run at the start of every create, and by
    /// dataplane-hook-gc.timer. Prints `released <id>`, `live <id>`, `released group <key>`.
    Gc {
        /// Show what would be released without releasing it
        #[arg(long)]
        dry_run: bool,
    },
    /// Show reservations, groups and pools
    ///
    /// What the state dir holds: containers with their reservations and mounts, DPDK groups
    /// with their members and holder, and the kernel's hugepage pools. --json prints an object
    /// with `containers`, `groups`, `pools` and `errors`.
    Status {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Check whether this node is ready: one line per check with pass/warn/fail and the fix
    ///
    /// Checks hugepage pools per size and NUMA node, the hugetlb cgroup controller and the
    /// cgroup layout (v1, v2, hybrid) and driver, the runtimes installed and their versions,
    /// whether containerd/CRI-O/podman are configured to run this install, the state dir, the
    /// log file, the kernel features the hook uses (openat2, the new mount API, hugetlbfs, PSI,
    /// cgroup.kill), CAP_SYS_RESOURCE, the GPU watchdog and the metrics directories. Lines read
    /// `pass|warn|fail|skip <check>: <finding> (fix: <what to do>)`; the exit status is non-zero
    /// when any check fails. Changes nothing on the node.
    Doctor,
    /// Write the integration files for a container runtime (drop-ins; never clobbers)
    ///
    /// containerd: a runtime handler `dataplane` in a drop-in beside containerd's config (one
    /// imports entry added to the main file, with a backup); crio: a handler drop-in and hooks.d
    /// files; podman: hooks.d files. The files name this binary's real path. Use --dry-run to
    /// see every change first; restart the runtime afterwards.
    Configure(crate::configure::ConfigureArgs),
    /// Node watchdog daemon: kill GPU containers whose uncharged driver memory outgrows their headroom
    ///
    /// GPU drivers allocate memory no cgroup is charged for. watch estimates that memory against
    /// a baseline taken without GPU containers and kills the offending GPU container's cgroup
    /// early — when it outgrows the headroom granted to GPU containers, or when memory pressure
    /// (PSI) crosses the [watch] pressure_trigger — before the node thrashes. Runs in the
    /// foreground (dataplane-hook-watch.service or the DaemonSet); writes [watch] metrics_file.
    Watch,
    /// NRI plugin: the product on containerd >= 1.7 / CRI-O without the runtime handler
    ///
    /// Connects to the runtime's NRI socket, registers, and answers containers that opt in by
    /// dataplane-hook.io/* pod annotations with an adjustment that adds this hook (createRuntime,
    /// poststop) with the same config, copies the annotations, and sets what the features' spec
    /// edits set (DPDK_FILE_PREFIX, rlimits, memory limit). DPDK groups are refused: NRI before
    /// v0.10 cannot set a PID namespace. Reconnects when the runtime restarts; runs gc at connect
    /// and on container stop/remove. Runs in the foreground.
    Nri(crate::nri::NriArgs),
    /// Print a shell completion script: bash, zsh, fish, elvish or powershell
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff, section 8)
    #[command(hide = true)]
    Manpage,
}

/// The hook stages' command lines as runtimes run them (`[--config PATH] createRuntime|prestart|poststop`),
/// read without building clap's parser for every subcommand: each container runs the hook
/// twice. Anything else (help, other subcommands, unusual forms) is None: clap reads it.
pub fn hook_stage(args: &[String]) -> Option<Cli> {
    let (config, stage) = match args {
        [_, stage] => (None, stage),
        [_, flag, path, stage]
            if flag == "--config" && !path.is_empty() && !path.starts_with('-') =>
        {
            (Some(PathBuf::from(path)), stage)
        }
        [_, flag, stage] => {
            (Some(PathBuf::from(flag.strip_prefix("--config=").filter(|p| !p.is_empty())?)), stage)
        }
        _ => return None,
    };
    let command = match stage.as_str() {
        "createRuntime" => Command::CreateRuntime,
        "prestart" => Command::Prestart,
        "poststop" => Command::Poststop,
        _ => return None,
    };
    Some(Cli { config, command })
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    match &cli.command {
        Command::Completions { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut cmd, "dataplane-hook", &mut out);
            let mut text = String::from_utf8_lossy(&out).into_owned();
            if *shell == clap_complete::Shell::Bash {
                // clap_complete spells a hyphenated bin name two ways in bash (clap-rs/clap#6421):
                // the dispatch arms never match and subcommands' options never complete.
                text = text.replace("dataplane__subcmd__hook__", "dataplane__hook__");
            }
            std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes())?;
            return Ok(());
        }
        Command::Manpage => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd).section("8").render(&mut std::io::stdout())?;
            return Ok(());
        }
        // A config that does not load is one of doctor's findings, not a reason not to run.
        Command::Doctor => return crate::doctor::run(cli.config.as_deref()),
        _ => {}
    }
    let loaded = Loaded::resolve(cli.config.as_deref())?;
    crate::log::init(&loaded.config, "dataplane-hook");
    let cfg = &loaded.config;
    let bound = std::time::Duration::from_secs(cfg.hook_timeout_secs);
    match &cli.command {
        Command::CreateRuntime | Command::Prestart => {
            crate::deadline::arm(bound, "createRuntime".into())
        }
        Command::Poststop => crate::deadline::arm(bound, "poststop".into()),
        Command::Gc { .. } => crate::deadline::arm(bound, "gc".into()),
        _ => {}
    }
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
            // One write for the whole list (stdout is line-buffered: a write per line of a
            // node with thousands of containers).
            let mut out = String::new();
            for id in &r.released {
                out += &format!("{verb} {id}\n");
            }
            for id in &r.live {
                out += &format!("live {id}\n");
            }
            for g in &r.groups_released {
                out += &format!("{verb} group {g}\n");
            }
            std::io::Write::write_all(&mut std::io::stdout().lock(), out.as_bytes())?;
            for e in &r.errors {
                eprintln!("dataplane-hook: gc: {e}");
            }
            if !r.errors.is_empty() {
                anyhow::bail!(
                    "gc could not release everything ({} problems above)",
                    r.errors.len()
                );
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
        Command::Doctor | Command::Completions { .. } | Command::Manpage => {
            unreachable!("handled before the config is loaded")
        }
        Command::Configure(args) => crate::configure::run(&loaded, &args)?,
        Command::Watch => crate::watch::run(&loaded)?,
        Command::Nri(args) => crate::nri::run(&loaded, &args)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_args as v;

    #[test]
    fn hook_stages_read_without_clap_as_clap_reads_them() {
        for args in [
            &["dataplane-hook", "createRuntime"][..],
            &["dataplane-hook", "prestart"],
            &["dataplane-hook", "poststop"],
            &["/usr/bin/dataplane-hook", "--config", "/etc/x.toml", "createRuntime"],
            &["dataplane-hook", "--config=/etc/x.toml", "poststop"],
        ] {
            let fast = hook_stage(&v(args)).unwrap_or_else(|| panic!("{args:?} is a hook stage"));
            let clap = Cli::try_parse_from(args).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{args:?}");
        }
    }

    #[test]
    fn everything_else_is_left_to_clap() {
        for args in [
            &["dataplane-hook"][..],
            &["dataplane-hook", "gc"],
            &["dataplane-hook", "--help"],
            &["dataplane-hook", "createruntime"],
            &["dataplane-hook", "createRuntime", "extra"],
            &["dataplane-hook", "--config", "createRuntime"],
            &["dataplane-hook", "--config", "--help", "poststop"],
            &["dataplane-hook", "--config=", "poststop"],
            // Fuzz find (runtime_args): clap refuses an empty path, the fast path took it.
            &["dataplane-hook", "--config", "", "poststop"],
            &["dataplane-hook", "--verbose", "poststop"],
            &["dataplane-hook", "poststop", "--config", "/x"],
        ] {
            assert!(hook_stage(&v(args)).is_none(), "{args:?}");
        }
    }
}
