//! Owns per-container attribution of uncharged memory: which GPU container the driver allocated
//! for. The kernel keeps no such account (that is the whole problem), so attribution needs a
//! provider that watches the driver's allocation path; without one the policy falls back to its
//! documented order (youngest GPU container first, re-measuring after each kill).
//!
//! ## The NVIDIA provider (design; needs CONFIG_KPROBES and the nvidia module)
//!
//! The incident write-up (shared/seeds/004) found the memory with exactly this probe:
//! nvidia.ko allocates system memory through `nvos_create_alloc(struct device *dev, NvU64
//! num_pages)` and frees it through `nvos_free_alloc(nv_alloc_t *at)`. A provider would:
//!
//! 1. mount tracefs (or use /sys/kernel/tracing) and create, in a private `instances/<name>`:
//!    `p:dph/nv_alloc nvos_create_alloc pages=%si:u64` (x86-64: 2nd argument in `%si`; arm64
//!    `%x1`), `r:dph/nv_alloc_ret nvos_create_alloc at=$retval:u64`, and
//!    `p:dph/nv_free nvos_free_alloc at=%di:u64 pages=+OFF(%di):u64` (OFF = offset of
//!    `num_pages` in `nv_alloc_t`, from the driver's BTF or a table per driver version);
//! 2. enable them and read `trace_pipe_raw` per CPU (binary, no formatting cost), or
//!    `trace_pipe` in a small thread, only while GPU containers run;
//! 3. map `common_pid` (the allocating task; the driver allocates in the ioctl caller's
//!    context) to its container through `/proc/<pid>/cgroup` → the ledger's GPU containers,
//!    caching by pid, and keep per container `allocated − freed` pages (matching frees to
//!    allocations by the `nv_alloc_t` pointer, since a free may run in another task);
//! 4. report bytes per container to [`Attribution::sample`].
//!
//! The cost is one event per driver allocation (the write-up saw ~8k allocations per
//! workload start, then few), nothing while GPU containers are idle. AMD (amdgpu) allocates
//! through TTM (`ttm_pool_alloc`, `ttm_tt_populate`): the same provider shape with other
//! symbols. Neither can run on this project's test hosts (no GPU; the dev kernel has no
//! kprobes), so only the interface and the fallback ship; the policy already ranks by what a
//! provider reports (furthest over its own headroom first).

use std::collections::BTreeMap;

use crate::watch::inventory::GpuContainer;

pub trait Attribution {
    fn name(&self) -> &'static str;
    /// Uncharged bytes attributed to each GPU container (by id), for those it knows; None when
    /// it has nothing to say (the policy then uses its order).
    fn sample(&mut self, containers: &[GpuContainer]) -> Option<BTreeMap<String, u64>>;
}

/// No provider: the policy's deterministic order decides.
pub struct Unattributed;

impl Attribution for Unattributed {
    fn name(&self) -> &'static str {
        "none (youngest GPU container first)"
    }
    fn sample(&mut self, _: &[GpuContainer]) -> Option<BTreeMap<String, u64>> {
        None
    }
}
