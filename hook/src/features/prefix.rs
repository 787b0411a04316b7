//! Owns G3, prefix mode: a container that must keep the host's `/dev/hugepages` and
//! `/var/run/dpdk` gets a unique DPDK file prefix (`DPDK_FILE_PREFIX` in its environment on the
//! wrapper path) and, at teardown, that prefix's unlocked `<prefix>map_<n>` hugepage files and
//! `<runtime dir>/<prefix>` are removed from the host paths it mounted. Nothing of another
//! prefix is touched; files a live process still locks (DPDK holds a lock on every hugepage
//! file it uses) are left alone.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use serde_json::{json, Value};

use crate::config::Config;
use crate::features::{hugepages, runtime_dir, SpecContext};
use crate::oci::Bundle;
use crate::plan::{NodeFacts, Plan, PlanError, PrefixCleanup};
use crate::request::{FilePrefix, Request};

pub const ENV: &str = "DPDK_FILE_PREFIX";

/// The prefix a container uses: the given one, or for `auto` one derived from its id
/// (`dph` + 12 hex digits of a 64-bit FNV-1a hash: unique per container, stable across the
/// wrapper and the hook).
pub fn prefix_for(id: &str, fp: &FilePrefix) -> String {
    match fp {
        FilePrefix::Explicit(p) => p.clone(),
        FilePrefix::Auto => {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in id.bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
            format!("dph{:012x}", h & 0xffff_ffff_ffff)
        }
    }
}

/// The host path behind container path `target`, through the spec's bind mounts (longest
/// destination wins).
pub fn host_path(mounts: &[(PathBuf, Option<String>, Option<PathBuf>, Vec<String>)], target: &Path) -> Option<PathBuf> {
    mounts
        .iter()
        .filter(|(_, typ, _, opts)| typ.as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind"))
        .filter_map(|(dest, _, src, _)| {
            let rest = target.strip_prefix(dest).ok()?;
            Some((dest.components().count(), src.as_ref()?.join(rest)))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, p)| p)
        .filter(|p| p.is_absolute())
}

pub fn plan(id: &str, req: &Request, cfg: &Config, facts: &NodeFacts, p: &mut Plan) -> Result<(), PlanError> {
    let Some(fp) = &req.file_prefix else { return Ok(()) };
    let mut dirs: Vec<PathBuf> = Vec::new();
    for size in crate::request::PageSize::ALL {
        if let Some(h) = host_path(&facts.spec_mounts, hugepages::mount_path(cfg, size).as_path()) {
            dirs.push(h);
        }
    }
    // Any other bind mount may be a hugetlbfs too (checked at cleanup by the filesystem type).
    for (_, _, src, opts) in &facts.spec_mounts {
        if let Some(s) = src {
            if s.is_absolute() && (opts.iter().any(|o| o == "bind" || o == "rbind")) && !dirs.contains(s) {
                dirs.push(s.clone());
            }
        }
    }
    let rt = runtime_dir::target(req, cfg).and_then(|t| host_path(&facts.spec_mounts, t.as_path()));
    p.prefix = Some(PrefixCleanup { prefix: prefix_for(id, fp), hugetlbfs_dirs: dirs, runtime_dir: rt });
    Ok(())
}

/// Wrapper: `DPDK_FILE_PREFIX=<prefix>` in the process environment.
pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    let Some(fp) = &req.file_prefix else { return Ok(()) };
    let Some(id) = ctx.container_id else {
        return Err(PlanError { what: "cannot choose a DPDK file prefix".into(), why: "no container id on the command line".into(), fix: "call dataplane-runtime like runc: create [flags] <id>".into() });
    };
    set_env(b, ENV, &prefix_for(id, fp));
    Ok(())
}

/// Sets `NAME=value` in `process.env`, replacing an existing entry.
pub fn set_env(b: &mut Bundle, name: &str, value: &str) {
    let process = b.raw_object_mut(&["process"]);
    let env = process.entry("env").or_insert_with(|| json!([]));
    if !env.is_array() {
        *env = json!([]);
    }
    let arr = env.as_array_mut().expect("array");
    arr.retain(|e| !e.as_str().is_some_and(|s| s.split('=').next() == Some(name)));
    arr.push(Value::String(format!("{name}={value}")));
}

const HUGETLBFS_MAGIC: i64 = 0x958458f6;

fn is_prefix_file(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("map_"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Removes `prefix`'s unlocked hugepage files from `dir` (only if it is a hugetlbfs). Returns
/// how many were removed.
pub fn clean_hugetlbfs(dir: &Path, prefix: &str) -> std::io::Result<usize> {
    clean_hugetlbfs_counted(dir, prefix).map(|c| c.files as usize)
}

/// What a cleanup removed: files, the hugepages they held, and the mount's page size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub files: u64,
    pub pages: u64,
    pub size: Option<crate::request::PageSize>,
}

/// [`clean_hugetlbfs`], counting the pages the removed files held (for metrics).
pub fn clean_hugetlbfs_counted(dir: &Path, prefix: &str) -> std::io::Result<Cleaned> {
    let Ok(d) = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()) else {
        return Ok(Cleaned::default());
    };
    let page = match rustix::fs::fstatfs(&d) {
        Ok(s) if s.f_type as i64 == HUGETLBFS_MAGIC => s.f_bsize as u64,
        _ => return Ok(Cleaned::default()),
    };
    let size = crate::request::PageSize::ALL.into_iter().find(|s| s.bytes() == page);
    let mut out = Cleaned { size, ..Default::default() };
    let names: Vec<String> = std::fs::read_dir(dir)?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| is_prefix_file(n, prefix))
        .collect();
    for name in names {
        let Ok(f) = rustix::fs::openat(&d, name.as_str(), OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()) else {
            continue;
        };
        // A live DPDK process holds a lock on every hugepage file it uses.
        if rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            continue;
        }
        let blocks = rustix::fs::fstat(&f).map(|st| st.st_blocks as u64).unwrap_or(0);
        if rustix::fs::unlinkat(&d, name.as_str(), rustix::fs::AtFlags::empty()).is_ok() {
            out.files += 1;
            out.pages += (blocks * 512).div_ceil(page.max(1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(dest: &str, src: &str) -> (PathBuf, Option<String>, Option<PathBuf>, Vec<String>) {
        (dest.into(), Some("bind".into()), Some(src.into()), vec!["rbind".into()])
    }

    #[test]
    fn auto_prefixes_are_unique_short_and_stable() {
        let a = prefix_for("0123456789abcdef0123", &FilePrefix::Auto);
        let b = prefix_for("0123456789abcdef0124", &FilePrefix::Auto);
        assert_ne!(a, b);
        assert_eq!(a, prefix_for("0123456789abcdef0123", &FilePrefix::Auto));
        assert!(FilePrefix::parse(&a).is_ok(), "{a} is a valid prefix");
        assert_eq!(prefix_for("x", &FilePrefix::Explicit("app1".into())), "app1");
    }

    #[test]
    fn prefix_files_match_exactly() {
        assert!(is_prefix_file("rtemap_0", "rte"));
        assert!(is_prefix_file("app1map_12", "app1"));
        assert!(!is_prefix_file("rte2map_0", "rte"));
        assert!(!is_prefix_file("rtemap_", "rte"));
        assert!(!is_prefix_file("rtemap_0x", "rte"));
        assert!(!is_prefix_file("fbarray_memseg-2048k-0-0", "rte"));
    }

    #[test]
    fn host_paths_follow_the_longest_bind() {
        let ms = vec![m("/dev/hugepages", "/dev/hugepages"), m("/var/run", "/run/host"), m("/var/run/dpdk", "/srv/dpdk")];
        assert_eq!(host_path(&ms, Path::new("/var/run/dpdk")), Some(PathBuf::from("/srv/dpdk")));
        assert_eq!(host_path(&ms, Path::new("/var/run/other")), Some(PathBuf::from("/run/host/other")));
        assert_eq!(host_path(&ms, Path::new("/dev/hugepages")), Some(PathBuf::from("/dev/hugepages")));
        assert_eq!(host_path(&ms, Path::new("/opt")), None);
    }
}
