//! Owns reading the kernel's hugepage pool counters from sysfs (global and per NUMA node).

use std::path::{Path, PathBuf};

use crate::request::PageSize;

/// Counters of one hugepage pool (`/sys/kernel/mm/hugepages/hugepages-<n>kB/`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Pool {
    pub total: u64,
    pub free: u64,
    pub reserved: u64,
    pub surplus: u64,
}

impl Pool {
    /// Pages that a new reservation could take: free and not reserved by anyone.
    pub fn available(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Per-NUMA-node counters (nodes have no `resv_hugepages`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodePool {
    pub node: u32,
    pub total: u64,
    pub free: u64,
    pub surplus: u64,
}

#[derive(Debug, Clone)]
pub struct Sysfs {
    root: PathBuf,
}

impl Default for Sysfs {
    fn default() -> Self {
        Sysfs { root: PathBuf::from("/sys") }
    }
}

fn read_u64(p: &Path) -> Option<u64> {
    super::read_kernel_file(p).ok()?.trim().parse().ok()
}

impl Sysfs {
    /// A sysfs rooted elsewhere (recorded trees in unit tests).
    pub fn at(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    fn global_dir(&self, size: PageSize) -> PathBuf {
        self.root.join("kernel/mm/hugepages").join(size.sysfs_dir())
    }

    /// Whether the kernel supports this page size at all.
    pub fn has_size(&self, size: PageSize) -> bool {
        self.global_dir(size).is_dir()
    }

    pub fn pool(&self, size: PageSize) -> Option<Pool> {
        let d = self.global_dir(size);
        Some(Pool {
            total: read_u64(&d.join("nr_hugepages"))?,
            free: read_u64(&d.join("free_hugepages"))?,
            reserved: read_u64(&d.join("resv_hugepages"))?,
            surplus: read_u64(&d.join("surplus_hugepages")).unwrap_or(0),
        })
    }

    pub fn nodes(&self) -> Vec<u32> {
        let mut v: Vec<u32> = std::fs::read_dir(self.root.join("devices/system/node"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
            .collect();
        v.sort_unstable();
        v
    }

    pub fn node_pool(&self, node: u32, size: PageSize) -> Option<NodePool> {
        let d = self
            .root
            .join(format!("devices/system/node/node{node}/hugepages"))
            .join(size.sysfs_dir());
        Some(NodePool {
            node,
            total: read_u64(&d.join("nr_hugepages"))?,
            free: read_u64(&d.join("free_hugepages"))?,
            surplus: read_u64(&d.join("surplus_hugepages")).unwrap_or(0),
        })
    }

    pub fn node_pools(&self, size: PageSize) -> Vec<NodePool> {
        self.node_pools_of(&self.nodes(), size)
    }

    /// [`Sysfs::node_pools`] of nodes listed once for every page size.
    pub fn node_pools_of(&self, nodes: &[u32], size: PageSize) -> Vec<NodePool> {
        nodes.iter().filter_map(|&n| self.node_pool(n, size)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_recorded_tree() {
        let t = tempfile::tempdir().unwrap();
        let g = t.path().join("kernel/mm/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&g).unwrap();
        for (f, v) in [
            ("nr_hugepages", "64"),
            ("free_hugepages", "40"),
            ("resv_hugepages", "30"),
            ("surplus_hugepages", "0"),
        ] {
            std::fs::write(g.join(f), format!("{v}\n")).unwrap();
        }
        let n = t.path().join("devices/system/node/node0/hugepages/hugepages-2048kB");
        std::fs::create_dir_all(&n).unwrap();
        for (f, v) in [("nr_hugepages", "64"), ("free_hugepages", "40"), ("surplus_hugepages", "0")]
        {
            std::fs::write(n.join(f), v).unwrap();
        }
        let s = Sysfs::at(t.path());
        let p = s.pool(PageSize::Size2Mi).unwrap();
        assert_eq!(p, Pool { total: 64, free: 40, reserved: 30, surplus: 0 });
        assert_eq!(p.available(), 10);
        assert!(s.pool(PageSize::Size1Gi).is_none());
        assert_eq!(
            s.node_pools(PageSize::Size2Mi),
            vec![NodePool { node: 0, total: 64, free: 40, surplus: 0 }]
        );
    }
}
