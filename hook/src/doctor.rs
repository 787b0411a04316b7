//! Owns `dataplane-hook doctor`: one line per readiness check with pass/warn/fail and the fix.

use crate::config::Loaded;

pub fn run(_loaded: &Loaded) -> anyhow::Result<()> {
    anyhow::bail!("doctor is not implemented in this build yet")
}
