//! Owns `dataplane-hook watch`, the node watchdog for GPU driver memory (G10).

use crate::config::Loaded;

pub fn run(_loaded: &Loaded) -> anyhow::Result<()> {
    anyhow::bail!("watch is not implemented in this build yet")
}
