//! Owns cgroupfs: finding the hierarchy that has the hugetlb controller (v1, v2, or the unified
//! mount of a hybrid host), finding a process's cgroup in it, enabling the controller down a
//! v2 path, and reading/writing control files.

use std::path::{Component, Path, PathBuf};

use crate::host::proc::CgroupLine;
use crate::request::PageSize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Version {
    V1,
    V2,
}

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hierarchy {
    pub version: Version,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// The cgroup the mount shows at its top (mountinfo's root field; `/` on the host).
    pub root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup hierarchy has the hugetlb controller")]
    NoHugetlb,
    #[error("no cgroup hierarchy has the memory controller")]
    NoMemory,
    #[error("cannot find the cgroup of process {pid}: {why}")]
    NoCgroup { pid: i32, why: String },
    #[error("{op} {path}: {source}")]
    Io { op: &'static str, path: PathBuf, source: std::io::Error },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CgroupError + 'a {
    move |source| CgroupError::Io { op, path: path.to_path_buf(), source }
}

/// Every cgroup mount from a mountinfo text: (fstype, mount point, root, super options).
fn cgroup_mounts(mountinfo: &str) -> Vec<(String, PathBuf, PathBuf, String)> {
    super::mountinfo::parse(mountinfo)
        .filter(|m| m.is_cgroup())
        .map(|m| (m.fstype, m.mount_point, m.root, m.super_options))
        .collect()
}

/// The hierarchy carrying `controller`, from a mountinfo text. For v2 mounts the caller's
/// `has_controller` decides (it reads `cgroup.controllers`).
pub fn find_hierarchy(
    mountinfo: &str,
    controller: &str,
    has_controller: impl Fn(&Path) -> bool,
) -> Option<Hierarchy> {
    let mounts = cgroup_mounts(mountinfo);
    for (fstype, mount, root, sopts) in &mounts {
        if fstype == "cgroup" && sopts.split(',').any(|o| o == controller) {
            return Some(Hierarchy {
                version: Version::V1,
                mount: mount.clone(),
                root: root.clone(),
            });
        }
    }
    for (fstype, mount, root, _) in &mounts {
        if fstype == "cgroup2" && has_controller(mount) {
            return Some(Hierarchy {
                version: Version::V2,
                mount: mount.clone(),
                root: root.clone(),
            });
        }
    }
    None
}

pub fn v2_has_controller(dir: &Path, controller: &str) -> bool {
    super::read_kernel_file(dir.join("cgroup.controllers"))
        .map(|s| s.split_whitespace().any(|c| c == controller))
        .unwrap_or(false)
}

/// The host's hugetlb hierarchy.
pub fn hugetlb_hierarchy() -> Result<Hierarchy, CgroupError> {
    let mi = super::read_kernel_file("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    find_hierarchy(&mi, "hugetlb", |m| v2_has_controller(m, "hugetlb"))
        .ok_or(CgroupError::NoHugetlb)
}

/// The host's memory hierarchy (v1 on hybrid hosts, where only hugetlb may be on the unified one).
pub fn memory_hierarchy() -> Result<Hierarchy, CgroupError> {
    let mi = super::read_kernel_file("/proc/self/mountinfo")
        .map_err(io("read", Path::new("/proc/self/mountinfo")))?;
    find_hierarchy(&mi, "memory", |m| v2_has_controller(m, "memory")).ok_or(CgroupError::NoMemory)
}

impl Hierarchy {
    /// The directory of cgroup `path` (as written in /proc/<pid>/cgroup) in this mount.
    pub fn dir_of(&self, path: &Path) -> Option<PathBuf> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let mut d = self.mount.clone();
        for c in rel.components() {
            match c {
                Component::Normal(n) => d.push(n),
                Component::RootDir | Component::CurDir => {}
                _ => return None,
            }
        }
        Some(d)
    }

    /// The cgroup line of this hierarchy among a process's lines.
    pub fn line<'a>(&self, lines: &'a [CgroupLine], controller: &str) -> Option<&'a CgroupLine> {
        match self.version {
            Version::V2 => lines.iter().find(|l| l.hierarchy == 0 && l.controllers.is_empty()),
            Version::V1 => lines.iter().find(|l| l.controllers.iter().any(|c| c == controller)),
        }
    }

    /// Control file names for a hugetlb limit and its reservation limit.
    pub fn hugetlb_files(&self, size: PageSize) -> (String, String) {
        let n = size.cgroup_name();
        match self.version {
            Version::V2 => (format!("hugetlb.{n}.max"), format!("hugetlb.{n}.rsvd.max")),
            Version::V1 => {
                (format!("hugetlb.{n}.limit_in_bytes"), format!("hugetlb.{n}.rsvd.limit_in_bytes"))
            }
        }
    }
}

pub fn read(path: &Path) -> Result<String, CgroupError> {
    super::read_kernel_file(path).map(|s| s.trim().to_string()).map_err(io("read", path))
}

pub fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(io("write", path))
}

/// Pids in a cgroup (v1 `tasks`-free: uses `cgroup.procs`).
pub fn procs(dir: &Path) -> Result<Vec<i32>, CgroupError> {
    let p = dir.join("cgroup.procs");
    Ok(read(&p)?.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// v2: the directories from the mount down to `dir`'s parent whose `cgroup.subtree_control`
/// lacks `controller` (the ones where it must be enabled for `dir` to get its files).
pub fn v2_missing_controller(mount: &Path, dir: &Path, controller: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rel) = dir.strip_prefix(mount) else { return out };
    let mut cur = mount.to_path_buf();
    for c in rel.components() {
        let enabled = super::read_kernel_file(cur.join("cgroup.subtree_control"))
            .map(|s| s.split_whitespace().any(|x| x == controller))
            .unwrap_or(false);
        if !enabled {
            out.push(cur.clone());
        }
        cur.push(c);
    }
    out
}

pub fn enable_controller(dir: &Path, controller: &str) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.subtree_control"), &format!("+{controller}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1: &str = "36 31 0:33 / /sys/fs/cgroup/hugetlb rw - cgroup cgroup rw,hugetlb\n41 31 0:38 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
    const V2NS: &str =
        "30 23 0:26 /kubepods/pod1 /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";

    #[test]
    fn hybrid_host_finds_unified_mount_when_it_has_hugetlb() {
        let h = find_hierarchy(HYBRID, "hugetlb", |m| m == Path::new("/sys/fs/cgroup/unified"))
            .unwrap();
        assert_eq!(h.version, Version::V2);
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(find_hierarchy(HYBRID, "hugetlb", |_| false).is_none());
    }

    #[test]
    fn v1_hugetlb_wins_over_an_empty_unified_mount() {
        let h = find_hierarchy(V1, "hugetlb", |_| false).unwrap();
        assert_eq!(h.version, Version::V1);
        assert_eq!(h.hugetlb_files(PageSize::Size2Mi).0, "hugetlb.2MB.limit_in_bytes");
    }

    #[test]
    fn paths_map_through_a_mount_root() {
        let h = find_hierarchy(V2NS, "hugetlb", |_| true).unwrap();
        assert_eq!(
            h.dir_of(Path::new("/kubepods/pod1/c1")),
            Some(PathBuf::from("/sys/fs/cgroup/c1"))
        );
        assert_eq!(h.dir_of(Path::new("/other")), None);
        assert_eq!(h.hugetlb_files(PageSize::Size1Gi).1, "hugetlb.1GB.rsvd.max");
    }

    #[test]
    fn missing_controller_lists_every_level_above_that_lacks_it() {
        let t = tempfile::tempdir().unwrap();
        let m = t.path();
        std::fs::create_dir_all(m.join("a/b/c")).unwrap();
        std::fs::write(m.join("cgroup.subtree_control"), "cpu hugetlb\n").unwrap();
        std::fs::write(m.join("a/cgroup.subtree_control"), "memory\n").unwrap();
        // a/b has no subtree_control file at all: counts as lacking it.
        assert_eq!(
            v2_missing_controller(m, &m.join("a/b/c"), "hugetlb"),
            vec![m.join("a"), m.join("a/b")]
        );
        assert!(
            v2_missing_controller(m, &m.join("a"), "hugetlb").is_empty(),
            "the mount's own is enough for a child"
        );
        assert!(
            v2_missing_controller(m, Path::new("/elsewhere"), "hugetlb").is_empty(),
            "outside the mount: nothing"
        );
    }

    #[test]
    fn escaped_mount_points_and_roots_are_decoded() {
        // The octal escapes themselves are host::mountinfo's tests; here: this parser uses it.
        let mi = "36 25 0:31 / /mnt/x\\777\\040y rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            find_hierarchy(mi, "hugetlb", |_| true).unwrap().mount,
            PathBuf::from("/mnt/x\\777 y")
        );
        let mi = "36 25 0:31 /kube\\040pods /sys/fs/cgroup/a\\011b rw - cgroup cgroup rw,hugetlb\n";
        let h = find_hierarchy(mi, "hugetlb", |_| false).unwrap();
        assert_eq!(h.mount, PathBuf::from("/sys/fs/cgroup/a\tb"));
        assert_eq!(h.root, PathBuf::from("/kube pods"));
    }
}
