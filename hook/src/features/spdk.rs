//! Owns G12, the SPDK preflight: with `spdk-iobuf`, the bytes SPDK's iobuf pools will take
//! from hugepages are computed with SPDK's own defaults and rounding, and a container whose
//! hugepages cannot hold them is refused at create — instead of SPDK failing its init
//! (`could not allocate ... pool`) and then asserting at shutdown (spdk#3242).
//!
//! # The formula (SPDK `lib/thread/iobuf.c`)
//!
//! `spdk_iobuf_initialize()` rounds each buffer size up to `IOBUF_ALIGNMENT` (4096) and makes,
//! per pool, one DMA allocation of `bufsize * count` bytes (`spdk_malloc(..., SPDK_MALLOC_DMA)`,
//! i.e. from hugepages) plus an `spdk_ring` of `count` pointers (`rte_ring` with
//! `RING_F_EXACT_SZ`: `next_pow2(count + 1)` 8-byte slots and a 384-byte header, also in
//! hugepages). Defaults: small 8 KiB, large 132 KiB buffers (8192 and 1024 of them).
//! Buffer sizes below the minimums (4 KiB small, 8 KiB large) are raised to them (v23.05 to
//! v24.01 raise them; v24.05 and later refuse the RPC, so the app fails clearly anyway).
//!
//! This matches SPDK **v23.05 through v26.05** (checked against the tags' iobuf.c): the
//! 4096 rounding and the 8 KiB / 132 KiB defaults came with v23.05 (`iobuf: allocate 4k
//! aligned buffers`, `iobuf no longer uses an spdk_mempool`). With `enable_numa` (v25.01+)
//! SPDK makes one set of pools per NUMA node: multiply the counts by the node count in the
//! annotation. SPDK v23.01, where iobuf first appeared, used an `spdk_mempool` of
//! unrounded elements with different defaults (9728 B small, 74240 B large); there the number
//! computed here, with the sizes given explicitly, is a lower bound (mempool headers add a
//! cache line per buffer).
//!
//! The check is necessary, not sufficient: SPDK also takes hugepages for its bdev_io pool,
//! message pools and DPDK's own memzones.

use crate::config::Config;
use crate::features::SpecContext;
use crate::oci::Bundle;
use crate::plan::{NodeFacts, Plan, PlanError};
use crate::request::{Bytes, PageSize, Request, SpdkIobuf, PREFIX};

pub const IOBUF_ALIGNMENT: u64 = 4096;
pub const DEFAULT_SMALL_BUFSIZE: u64 = 8 * 1024;
pub const DEFAULT_LARGE_BUFSIZE: u64 = 132 * 1024;
pub const MIN_SMALL_BUFSIZE: u64 = 4096;
pub const MIN_LARGE_BUFSIZE: u64 = 8192;
/// `sizeof(struct rte_ring)` on x86-64 (DPDK 21.11 to 24.11).
pub const RTE_RING_HEADER: u64 = 384;

/// What the iobuf pools take from hugepages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IobufNeed {
    /// Buffer sizes after SPDK's minimums and 4 KiB rounding.
    pub small_bufsize: u64,
    pub large_bufsize: u64,
    /// The two pool allocations (`bufsize * count`).
    pub small_pool: u64,
    pub large_pool: u64,
    /// The two rings' memory.
    pub rings: u64,
}

impl IobufNeed {
    pub fn total(&self) -> u64 {
        self.small_pool + self.large_pool + self.rings
    }
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

/// `rte_ring_get_memsize()` for a ring created with `RING_F_EXACT_SZ` and `count` elements.
pub fn ring_bytes(count: u64) -> u64 {
    let slots = (count + 1).next_power_of_two();
    align_up(RTE_RING_HEADER + 8 * slots, 64)
}

pub fn need(io: &SpdkIobuf) -> IobufNeed {
    let small_bufsize = align_up(
        io.small_bufsize.unwrap_or(DEFAULT_SMALL_BUFSIZE).max(MIN_SMALL_BUFSIZE),
        IOBUF_ALIGNMENT,
    );
    let large_bufsize = align_up(
        io.large_bufsize.unwrap_or(DEFAULT_LARGE_BUFSIZE).max(MIN_LARGE_BUFSIZE),
        IOBUF_ALIGNMENT,
    );
    IobufNeed {
        small_bufsize,
        large_bufsize,
        small_pool: small_bufsize.saturating_mul(io.small_count),
        large_pool: large_bufsize.saturating_mul(io.large_count),
        rings: ring_bytes(io.small_count) + ring_bytes(io.large_count),
    }
}

/// `2.31GiB`-style rendering for messages (the exact byte count is printed beside it).
fn human(b: u64) -> String {
    const G: f64 = (1u64 << 30) as f64;
    const M: f64 = (1u64 << 20) as f64;
    let f = b as f64;
    if f >= G {
        format!("{:.2}GiB", f / G)
    } else {
        format!("{:.1}MiB", f / M)
    }
}

/// Refuses a container whose hugepages cannot hold its iobuf pools.
pub fn check(
    id: &str,
    io: &SpdkIobuf,
    hugepages: &std::collections::BTreeMap<PageSize, Bytes>,
) -> Result<IobufNeed, PlanError> {
    let n = need(io);
    let have: u64 = hugepages.values().map(|b| b.0).sum();
    if have >= n.total() {
        return Ok(n);
    }
    let what = format!("cannot start SPDK container {id}");
    let pools = format!(
        "{PREFIX}spdk-iobuf needs {} bytes ({}) of hugepages for its iobuf pools ({} x {} B small, {} x {} B large, with rings)",
        n.total(),
        human(n.total()),
        io.small_count,
        n.small_bufsize,
        io.large_count,
        n.large_bufsize
    );
    let why = if have == 0 {
        format!("{pools} but the container has no hugepages")
    } else {
        format!("{pools} but the container has only {} bytes ({}) of hugepages", have, human(have))
    };
    // Suggest the smallest reservation of the size the container already uses (2Mi if none).
    let size = hugepages.keys().next_back().copied().unwrap_or(PageSize::Size2Mi);
    let others: u64 = hugepages.iter().filter(|(s, _)| **s != size).map(|(_, b)| b.0).sum();
    let needed_here = Bytes(align_up(n.total() - others, size.bytes()));
    let fix = format!(
        "set {PREFIX}{} to at least {needed_here}, or lower the pool counts in {PREFIX}spdk-iobuf",
        size.annotation()
    );
    Err(PlanError { what, why, fix })
}

pub fn plan(
    id: &str,
    req: &Request,
    _cfg: &Config,
    _facts: &NodeFacts,
    _p: &mut Plan,
) -> Result<(), PlanError> {
    if let Some(io) = &req.spdk_iobuf {
        let n = check(id, io, &req.hugepages)?;
        tracing::info!(container = id, need = n.total(), "spdk iobuf pools fit the hugepages");
    }
    Ok(())
}

/// The wrapper refuses too, before the runtime creates anything.
pub fn edit_spec(req: &Request, _b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    if let Some(io) = &req.spdk_iobuf {
        check(ctx.container_id.unwrap_or("(unnamed)"), io, &req.hugepages)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn io(s: &str) -> SpdkIobuf {
        SpdkIobuf::parse(s).unwrap()
    }

    fn huge(pairs: &[(PageSize, u64)]) -> BTreeMap<PageSize, Bytes> {
        pairs.iter().map(|&(s, b)| (s, Bytes(b))).collect()
    }

    #[test]
    fn the_seed_pools_need_2_31_gib() {
        // shared/seeds/001: iobuf_set_options small_pool_count=32767 large_pool_count=16383.
        let n = need(&io("small=32767,large=16383"));
        assert_eq!((n.small_bufsize, n.large_bufsize), (8192, 135168));
        assert_eq!(n.small_pool, 32767 * 8192);
        assert_eq!(n.large_pool, 16383 * 135168);
        assert_eq!(n.small_pool + n.large_pool, 2_482_884_608);
        // rte_ring_get_memsize(32768) = 384 + 32768*8 (DPDK 22.11 measured), and 16384 slots.
        assert_eq!(n.rings, 262_528 + 131_456);
        assert_eq!(n.total(), 2_483_278_592);
        assert_eq!(format!("{:.2}", n.total() as f64 / (1u64 << 30) as f64), "2.31");
    }

    #[test]
    fn spdk_defaults_and_rounding() {
        // SPDK's own defaults: 8192 x 8 KiB + 1024 x 132 KiB = 64 MiB + 132 MiB.
        let n = need(&io("small=8192,large=1024"));
        assert_eq!(n.small_pool + n.large_pool, (64 << 20) + (132 << 20));
        // Sizes are rounded up to 4 KiB: 9000 -> 12288, 65537 -> 69632.
        let n = need(&io("small=64,large=8,small-bufsize=9000,large-bufsize=65537"));
        assert_eq!((n.small_bufsize, n.large_bufsize), (12288, 69632));
        // Below SPDK's minimums they are raised to them.
        let n = need(&io("small=64,large=8,small-bufsize=512,large-bufsize=4Ki"));
        assert_eq!((n.small_bufsize, n.large_bufsize), (4096, 8192));
        assert_eq!(ring_bytes(8191), 384 + 8192 * 8);
        assert_eq!(ring_bytes(8192), 384 + 16384 * 8);
    }

    #[test]
    fn too_small_a_reservation_is_refused_with_both_numbers() {
        let e = check("c1", &io("small=32767,large=16383"), &huge(&[(PageSize::Size2Mi, 1 << 30)]))
            .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("cannot start SPDK container c1: "), "{msg}");
        assert!(msg.contains("needs 2483278592 bytes (2.31GiB)"), "{msg}");
        assert!(msg.contains("has only 1073741824 bytes (1.00GiB)"), "{msg}");
        // 2483278592 / 2 MiB = 1184.1 pages -> 1185 pages = 2370Mi.
        assert!(msg.contains("hugepages-2Mi to at least 2370Mi"), "{msg}");
        assert!(!msg.contains('\n'));
        let e = check("c1", &io("small=64,large=8"), &BTreeMap::new()).unwrap_err().to_string();
        assert!(
            e.contains("but the container has no hugepages")
                && e.contains("hugepages-2Mi to at least 2Mi"),
            "{e}"
        );
    }

    #[test]
    fn enough_hugepages_of_any_size_pass() {
        let seed = io("small=32767,large=16383");
        check("c", &seed, &huge(&[(PageSize::Size2Mi, 2370 << 20)])).unwrap();
        assert!(check("c", &seed, &huge(&[(PageSize::Size2Mi, 2368 << 20)])).is_err());
        check("c", &seed, &huge(&[(PageSize::Size1Gi, 3 << 30)])).unwrap();
        let e = check("c", &seed, &huge(&[(PageSize::Size1Gi, 2 << 30)])).unwrap_err().to_string();
        assert!(e.contains("hugepages-1Gi to at least 3Gi"), "{e}");
        // Both sizes count.
        check("c", &seed, &huge(&[(PageSize::Size1Gi, 2 << 30), (PageSize::Size2Mi, 322 << 20)]))
            .unwrap();
    }
}
