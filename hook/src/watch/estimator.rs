//! Owns the estimate of memory that no cgroup is charged for — the signature of GPU driver
//! allocations (nvidia.ko `nv_alloc_system_pages`, amdgpu TTM pools: plain `alloc_pages`
//! without `__GFP_ACCOUNT`), which a container's memory limit never sees.
//!
//! The estimator, in bytes, from /proc/meminfo, /proc/zoneinfo and (v2) the cgroup tree:
//!
//! ```text
//!   U = (MemTotal − MemFree)                       memory in use by anything
//!     − (Active + Inactive + Unevictable)           every anon, file and shmem page on an LRU:
//!                                                   all process memory, charged or not
//!     − (Slab + KernelStack + PageTables
//!        + SecPageTables + Percpu)                  kernel memory meminfo attributes
//!     − [Hugetlb]                                    only with `count_hugetlb = false`
//!     − pcp                                          free pages parked on per-CPU lists
//!                                                   (/proc/zoneinfo `count:`), which MemFree
//!                                                   does not include
//!     − charged raw kernel memory (v2)               Σ over top-level cgroups of memory.stat
//!                                                   `kernel − slab − kernel_stack − pagetables
//!                                                   − sec_pagetables − percpu + sock`: pipe
//!                                                   buffers, accounted vmalloc, socket memory
//! ```
//!
//! What is left is memory allocated straight from the page allocator that nobody is charged
//! for — driver memory, hugetlb pool pages (no memory cgroup pays for those either: the tests
//! grow the pool to emulate a driver), uncharged vmalloc — plus a small constant (kernel
//! allocations made at boot) and noise (pages in flight between lists). `watch` compares its
//! growth over a baseline with the headroom granted to GPU containers.
//!
//! Why not `MemTotal − MemAvailable` against the sum of cgroup usage: page cache and processes
//! outside any limited cgroup (host daemons, a build) would count as "uncharged" and their
//! growth would get GPU containers killed. LRU pages are process memory whoever owns them;
//! they are excluded whole. Measured on this project's 2-core test host under a parallel
//! build: without the per-CPU lists the estimate swings by ~450 MiB within seconds, with them
//! by ~45 MiB — hence `[watch] tolerance` defaults to 256Mi.
//!
//! Cost: the fast estimate reads /proc/meminfo only (a few µs). The pcp and cgroup terms only
//! ever lower the estimate, so they are read only when the fast one is over budget.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};

/// The /proc/meminfo fields the estimate uses, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub total: u64,
    pub free: u64,
    pub available: u64,
    pub lru: u64,
    pub kernel: u64,
    pub hugetlb: u64,
}

impl Meminfo {
    pub fn parse(text: &str) -> Option<Meminfo> {
        let mut m = Meminfo::default();
        let (mut hp_total, mut hp_size, mut have_hugetlb) = (0, 0, false);
        let mut seen = 0u32;
        for line in text.lines() {
            let Some((k, v)) = line.split_once(':') else { continue };
            let mut it = v.split_whitespace();
            let Some(n) = it.next().and_then(|n| n.parse::<u64>().ok()) else { continue };
            let bytes = if it.next() == Some("kB") { n.saturating_mul(1024) } else { n };
            match k {
                "MemTotal" => {
                    m.total = bytes;
                    seen |= 1;
                }
                "MemFree" => {
                    m.free = bytes;
                    seen |= 2;
                }
                "MemAvailable" => m.available = bytes,
                "Active" | "Inactive" | "Unevictable" => {
                    m.lru = m.lru.saturating_add(bytes);
                    seen |= 4;
                }
                "Slab" | "KernelStack" | "PageTables" | "SecPageTables" | "Percpu" => {
                    m.kernel = m.kernel.saturating_add(bytes)
                }
                "Hugetlb" => {
                    m.hugetlb = bytes;
                    have_hugetlb = true;
                }
                "HugePages_Total" => hp_total = n,
                "Hugepagesize" => hp_size = bytes,
                _ => {}
            }
        }
        if !have_hugetlb {
            m.hugetlb = hp_total.saturating_mul(hp_size); // kernels before 4.16: the default size only
        }
        (seen == 7).then_some(m)
    }

    /// Memory in use that meminfo attributes to nothing (see the module comment).
    pub fn unattributed(&self, count_hugetlb: bool) -> i64 {
        // i128: no u64 field can wrap the difference; the result saturates into an i64.
        let mut u = self.total as i128 - self.free as i128 - self.lru as i128 - self.kernel as i128;
        if !count_hugetlb {
            u -= self.hugetlb as i128;
        }
        super::policy::saturate(u)
    }
}

/// Pages on the per-CPU free lists, from a /proc/zoneinfo text (`count:` under `pagesets`).
pub fn pcp_pages(zoneinfo: &str) -> u64 {
    zoneinfo
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("count:"))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .fold(0, u64::saturating_add)
}

/// Raw kernel memory charged to a v2 cgroup, from its memory.stat text: `kernel` minus the parts
/// meminfo already attributes, plus socket memory (charged separately from `kernel`).
pub fn charged_raw_kernel_v2(stat: &str) -> u64 {
    let get = |key: &str| -> u64 {
        stat.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    let attributed = super::policy::granted(
        ["slab", "kernel_stack", "pagetables", "sec_pagetables", "percpu"].map(get),
    );
    get("kernel").saturating_sub(attributed).saturating_add(get("sock"))
}

/// One full estimate and its parts, for logs and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Estimate {
    /// The meminfo-only estimate (an upper bound of `uncharged`).
    pub fast: i64,
    pub pcp: u64,
    pub charged_kernel: u64,
    /// The estimate: memory no cgroup is charged for.
    pub uncharged: i64,
    pub meminfo: Meminfo,
}

/// `fast − pcp − charged_kernel`, saturated.
fn uncharged(fast: i64, pcp: u64, charged_kernel: u64) -> i64 {
    super::policy::saturate(fast as i128 - pcp as i128 - charged_kernel as i128)
}

/// The estimate from recorded texts (pure; what the unit tests feed).
pub fn estimate(
    meminfo: &str,
    zoneinfo: &str,
    v2_stats: &[&str],
    page_size: u64,
    count_hugetlb: bool,
) -> Option<Estimate> {
    let m = Meminfo::parse(meminfo)?;
    let fast = m.unattributed(count_hugetlb);
    let pcp = pcp_pages(zoneinfo).saturating_mul(page_size);
    let charged_kernel = super::policy::granted(v2_stats.iter().map(|s| charged_raw_kernel_v2(s)));
    Some(Estimate {
        fast,
        pcp,
        charged_kernel,
        uncharged: uncharged(fast, pcp, charged_kernel),
        meminfo: m,
    })
}

/// Reads the node: /proc/meminfo through a kept-open fd (no allocation on the fast path).
pub struct Estimator {
    meminfo: File,
    buf: Vec<u8>,
    proc_dir: PathBuf,
    /// The v2 hierarchy's mount, when memory is on v2: its top-level cgroups are summed.
    v2_root: Option<PathBuf>,
    page_size: u64,
    count_hugetlb: bool,
}

impl Estimator {
    pub fn new(
        proc_dir: &Path,
        v2_root: Option<PathBuf>,
        count_hugetlb: bool,
    ) -> std::io::Result<Estimator> {
        let meminfo = File::open(proc_dir.join("meminfo"))?;
        // SAFETY: sysconf has no preconditions.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as u64,
            _ => 4096,
        };
        Ok(Estimator {
            meminfo,
            buf: Vec::with_capacity(8192),
            proc_dir: proc_dir.to_path_buf(),
            v2_root,
            page_size,
            count_hugetlb,
        })
    }

    fn read_meminfo(&mut self) -> std::io::Result<Meminfo> {
        self.buf.clear();
        self.meminfo.rewind()?;
        (&self.meminfo).read_to_end(&mut self.buf)?;
        let text = std::str::from_utf8(&self.buf)
            .map_err(|_| std::io::Error::other("meminfo is not UTF-8"))?;
        Meminfo::parse(text)
            .ok_or_else(|| std::io::Error::other("meminfo lacks MemTotal/MemFree/LRU fields"))
    }

    /// The meminfo-only estimate (an upper bound).
    pub fn fast(&mut self) -> std::io::Result<(i64, Meminfo)> {
        let m = self.read_meminfo()?;
        Ok((m.unattributed(self.count_hugetlb), m))
    }

    /// The full estimate.
    pub fn full(&mut self) -> std::io::Result<Estimate> {
        let (fast, meminfo) = self.fast()?;
        let zone =
            crate::host::read_kernel_file(self.proc_dir.join("zoneinfo")).unwrap_or_default();
        let pcp = pcp_pages(&zone).saturating_mul(self.page_size);
        let mut charged_kernel = 0;
        if let Some(root) = &self.v2_root {
            if let Ok(rd) = std::fs::read_dir(root) {
                for e in rd.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if let Ok(s) = crate::host::read_kernel_file(e.path().join("memory.stat")) {
                            charged_kernel =
                                charged_raw_kernel_v2(&s).saturating_add(charged_kernel);
                        }
                    }
                }
            }
        }
        Ok(Estimate {
            fast,
            pcp,
            charged_kernel,
            uncharged: uncharged(fast, pcp, charged_kernel),
            meminfo,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE_MI: &str = include_str!("fixtures/host-v1-base.meminfo");
    const BASE_ZI: &str = include_str!("fixtures/host-v1-base.zoneinfo");
    const POOL_MI: &str = include_str!("fixtures/host-v1-pool256m.meminfo");
    const POOL_ZI: &str = include_str!("fixtures/host-v1-pool256m.zoneinfo");
    const ANON_MI: &str = include_str!("fixtures/host-v1-anon512m.meminfo");
    const ANON_ZI: &str = include_str!("fixtures/host-v1-anon512m.zoneinfo");
    const MI: i64 = 1 << 20;

    fn est(mi: &str, zi: &str, count_hugetlb: bool) -> Estimate {
        estimate(mi, zi, &[], 4096, count_hugetlb).unwrap()
    }

    #[test]
    fn recorded_meminfo_parses() {
        let m = Meminfo::parse(BASE_MI).unwrap();
        assert!(m.total > 20 << 30 && m.free > 0 && m.lru > 0 && m.kernel > 0);
        assert_eq!(Meminfo::parse(POOL_MI).unwrap().hugetlb, 256 << 20);
        assert!(
            Meminfo::parse("MemTotal: 1 kB\n").is_none(),
            "missing fields are an error, not zeros"
        );
    }

    #[test]
    fn growing_the_hugetlb_pool_shows_as_uncharged_memory_one_to_one() {
        // Recorded on the test host: the 2Mi pool grown from 0 to 128 pages (256 MiB).
        let d = est(POOL_MI, POOL_ZI, true).uncharged - est(BASE_MI, BASE_ZI, true).uncharged;
        assert!((d - 256 * MI).abs() < 48 * MI, "pool growth of 256 MiB seen as {} MiB", d / MI);
        // ... and is ignored when the node says its pool is not uncharged memory.
        let d = est(POOL_MI, POOL_ZI, false).uncharged - est(BASE_MI, BASE_ZI, false).uncharged;
        assert!(d.abs() < 48 * MI, "{} MiB", d / MI);
    }

    #[test]
    fn process_memory_does_not_count_however_large() {
        // Recorded: a host process touched 512 MiB of anonymous memory (no memory limit).
        let base = est(BASE_MI, BASE_ZI, true);
        let anon = est(ANON_MI, ANON_ZI, true);
        let used = (anon.meminfo.total - anon.meminfo.free) as i64
            - (base.meminfo.total - base.meminfo.free) as i64;
        assert!(used > 400 * MI, "the snapshot really used more memory: {} MiB", used / MI);
        let d = anon.uncharged - base.uncharged;
        assert!(d.abs() < 48 * MI, "anon memory moved the estimate by {} MiB", d / MI);
    }

    #[test]
    fn per_cpu_lists_are_free_memory() {
        let zi = "Node 0, zone   Normal\n  pagesets\n    cpu: 0\n              count: 100\n              high:  200\n    cpu: 1\n              count: 28\n";
        assert_eq!(pcp_pages(zi), 128);
        let e = est(BASE_MI, zi, true);
        assert_eq!(e.fast - e.uncharged, 128 * 4096);
        assert!(pcp_pages(BASE_ZI) > 0);
    }

    #[test]
    fn v2_charged_raw_kernel_memory_is_subtracted() {
        let stat = "anon 1000\nfile 2000\nkernel 10000\nkernel_stack 100\npagetables 200\nsec_pagetables 0\npercpu 50\nsock 4096\nvmalloc 0\nslab 5000\nslab_reclaimable 3000\n";
        assert_eq!(charged_raw_kernel_v2(stat), 10000 - 5350 + 4096);
        assert_eq!(charged_raw_kernel_v2(""), 0);
        let e = estimate(BASE_MI, BASE_ZI, &[stat, stat], 4096, true).unwrap();
        assert_eq!(e.charged_kernel, 2 * (10000 - 5350 + 4096));
        // `slab_reclaimable` must not be read as `slab`.
        assert_eq!(charged_raw_kernel_v2("kernel 100\nslab_reclaimable 100\n"), 100);
    }

    #[test]
    fn absurd_kernel_numbers_saturate_instead_of_wrapping() {
        let max = u64::MAX;
        let mi = format!("MemTotal: {max} kB\nMemFree: 0 kB\nActive: 1 kB\nInactive: 0 kB\nUnevictable: 0 kB\nSlab: {max} kB\nKernelStack: {max} kB\n");
        let m = Meminfo::parse(&mi).unwrap();
        assert_eq!((m.total, m.kernel), (max, max));
        assert_eq!(m.unattributed(true), -1024, "total − kernel − lru: no wrap");
        let e = estimate(
            &mi,
            &format!("count: {max}\ncount: {max}\n"),
            &[&format!("kernel {max}\nsock {max}\n")],
            4096,
            true,
        )
        .unwrap();
        assert_eq!((e.pcp, e.charged_kernel, e.uncharged), (max, max, i64::MIN));
        let big = format!(
            "MemTotal: {max} kB\nMemFree: 0 kB\nActive: 0 kB\nInactive: 0 kB\nUnevictable: 0 kB\n"
        );
        assert_eq!(Meminfo::parse(&big).unwrap().unattributed(false), i64::MAX);
    }

    #[test]
    fn the_estimator_reads_this_node() {
        let mut e = Estimator::new(Path::new("/proc"), None, true).unwrap();
        let (fast, m) = e.fast().unwrap();
        assert!(m.total > 0 && fast > 0);
        let full = e.full().unwrap();
        assert!(full.uncharged <= full.fast);
    }
}
