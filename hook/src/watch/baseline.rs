//! Owns the baseline: the node's uncharged memory when no GPU container runs (kernel memory
//! from boot, the hugetlb pool as configured, ...). `watch` follows it while the node has no GPU
//! container and freezes it while one runs, so only growth since then counts against the
//! granted headroom. It is kept in `<state_dir>/watch/baseline.json` with the boot id, so a
//! restarted daemon does not take a baseline that already holds running containers' driver
//! memory (which would make it react late by that much).

use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    pub boot_id: String,
    pub count_hugetlb: bool,
    pub bytes: i64,
    /// Unix seconds.
    pub taken: u64,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join("watch").join("baseline.json")
}

/// This boot's id as the kernel writes it; empty where it cannot be read (no baseline then
/// matches: see `load`).
pub fn boot_id() -> String {
    crate::host::proc::BootId::current().map(|b| b.to_string()).unwrap_or_default()
}

/// The saved baseline if it was taken in this boot with the same counting rule.
pub fn load(state_dir: &Path, boot_id: &str, count_hugetlb: bool) -> Option<Saved> {
    let s: Saved = serde_json::from_slice(&std::fs::read(path(state_dir)).ok()?).ok()?;
    (s.boot_id == boot_id && !boot_id.is_empty() && s.count_hugetlb == count_hugetlb).then_some(s)
}

pub fn save(state_dir: &Path, s: &Saved) -> std::io::Result<()> {
    let p = path(state_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p.parent().expect("has a parent"))?;
    crate::ledger::atomic_write(&p, &serde_json::to_vec(s).expect("serializes"))
        .map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_baseline_is_reused_only_in_the_same_boot_with_the_same_rule() {
        let t = tempfile::tempdir().unwrap();
        let s = Saved { boot_id: "b1".into(), count_hugetlb: true, bytes: 123, taken: 1 };
        save(t.path(), &s).unwrap();
        assert_eq!(load(t.path(), "b1", true), Some(s));
        assert_eq!(load(t.path(), "b2", true), None);
        assert_eq!(load(t.path(), "b1", false), None);
        assert_eq!(load(t.path(), "", true), None);
        assert!(!boot_id().is_empty());
    }
}
