//! Owns `dataplane-hook configure`: writing the integration files for containerd, CRI-O and
//! podman with this binary's real paths, as drop-ins, never clobbering the user's config.

use std::path::PathBuf;

use crate::config::Loaded;

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigureArgs {
    /// Which runtime to configure
    #[arg(long, value_parser = ["containerd", "crio", "podman"])]
    pub runtime: String,
    /// Print what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// hooks.d directory (crio, podman)
    #[arg(long, value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,
    /// containerd's main config file
    #[arg(long, value_name = "FILE")]
    pub containerd_config: Option<PathBuf>,
    /// CRI-O drop-in directory
    #[arg(long, value_name = "DIR")]
    pub crio_config_dir: Option<PathBuf>,
}

pub fn run(_loaded: &Loaded, _args: &ConfigureArgs) -> anyhow::Result<()> {
    anyhow::bail!("configure is not implemented in this build yet (see shim-config/ for the files to install by hand)")
}
