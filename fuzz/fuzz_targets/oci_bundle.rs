//! A bundle's config.json: `oci::Bundle::parse` (what `Bundle::load` does after reading the
//! file), then everything the wrapper and the hook read from it (annotations, hugepage limits,
//! rootfs, mounts, the request, the GPU facts and decision, the plan) and the wrapper's hook
//! injection, whose result must still be a spec the runtime (and we) can read.
#![no_main]

use std::path::Path;

use dataplane_hook::config::{Config, UnlimitedPolicy};
use dataplane_hook::features::gpu::{self, HostGpus};
use dataplane_hook::host::sysfs::{NodePool, Pool};
use dataplane_hook::oci::Bundle;
use dataplane_hook::plan::{self, NodeFacts};
use dataplane_hook::request::{PageSize, Request};
use dataplane_hook::runtime;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc");
    let Ok(mut b) = Bundle::parse(dir, data) else { return };
    let annotations = b.annotations();
    let limits = b.hugepage_limits();
    let _ = b.is_sandbox();
    let _ = b.mounts();
    assert!(b.rootfs().is_absolute());
    let inspected = gpu::inspect(&b.raw, &annotations, &HostGpus { nvidia: 2, render: 1 });
    if let (Ok(mut req), Ok(g)) = (Request::parse(&annotations, &limits), inspected) {
        // The GPU decision on what the spec says (its arithmetic meets the pod's numbers).
        req.gpu = g;
        for policy in
            [UnlimitedPolicy::Allow, UnlimitedPolicy::Refuse, UnlimitedPolicy::LimitToNode]
        {
            let mut cfg = Config::default();
            cfg.gpu.unlimited_policy = policy;
            for mem_total in [0, 64 << 30, u64::MAX] {
                match gpu::decide("abc", &req, &cfg, mem_total) {
                    Ok(Some(p)) => {
                        if let (Some(l), Some(r)) = (p.limit, p.requested_limit) {
                            assert!(l.0.saturating_add(p.headroom.0) <= r.0, "{p:?}");
                        }
                        if let (Some(h), Some(l)) = (p.high, p.limit) {
                            assert!(h <= l, "{p:?}");
                        }
                    }
                    Ok(None) => {}
                    Err(e) => {
                        assert!(!e.to_string().contains(['\n', '\r']), "multi-line error: {e}")
                    }
                }
            }
        }
        // The whole (pure) plan on a node with some pages free: what the hook would do.
        let pool = |total, free, reserved| Pool { total, free, reserved, surplus: 0 };
        let hugepages = dataplane_hook::features::hugepages::Facts {
            pools: [(PageSize::Size2Mi, pool(1024, 1000, 10)), (PageSize::Size1Gi, pool(4, 4, 0))]
                .into(),
            node_pools: [(
                PageSize::Size2Mi,
                vec![
                    NodePool { node: 0, total: 512, free: 500, surplus: 0 },
                    NodePool { node: 1, total: 512, free: 500, surplus: 0 },
                ],
            )]
            .into(),
            ours: [(PageSize::Size2Mi, (10, 1))].into(),
        };
        let facts = NodeFacts::default()
            .with(hugepages)
            .with(dataplane_hook::features::gpu::Facts { mem_total: 64 << 30 })
            .with(dataplane_hook::features::prefix::Facts { spec_mounts: b.mounts() });
        if let Err(e) = plan::plan("abc", &req, &Config::default(), &facts) {
            assert!(!e.to_string().contains(['\n', '\r']), "multi-line error: {e}");
        }
    }

    // What `save` writes parses back to the same document.
    let bytes = serde_json::to_vec(&b.raw).unwrap();
    let again = Bundle::parse(dir, &bytes).expect("a saved spec parses again");
    assert_eq!(again.raw, b.raw);

    // The wrapper's edit: idempotent, and the edited spec is still a valid one.
    let hook = Path::new("/usr/bin/dataplane-hook");
    for stage in ["createRuntime", "poststop"] {
        runtime::inject_hook(
            &mut b,
            hook,
            Some(Path::new("/etc/dataplane-hook/config.toml")),
            stage,
        );
    }
    let once = b.raw.clone();
    for stage in ["createRuntime", "poststop"] {
        runtime::inject_hook(&mut b, hook, None, stage);
    }
    assert_eq!(b.raw, once, "injecting the hook twice adds it once");
    let edited = Bundle::from_value(dir, b.raw.clone()).expect("the edited spec is still a spec");
    assert!(edited.spec.hooks().is_some());
});
