//! Owns G1/G4/G7 for hugepages: a private hugetlbfs per requested page size, sized to the
//! request and reserved in the kernel (`min_size`); the refusal when the node cannot meet the
//! request; the container's own view of the sysfs pool counters (DPDK sizes its memory from
//! `free_hugepages - resv_hugepages`); and the cgroup hugetlb limits.

use std::collections::BTreeMap;

use crate::config::Config;
use crate::features::{FactsContext, SpecContext};
use crate::host::cgroup::{Hierarchy, Version};
use crate::host::sysfs::{NodePool, Pool, Sysfs};
use crate::ledger::ContainerRecord;
use crate::oci::Bundle;
use crate::plan::{MountPlan, NodeFacts, Plan, PlanError, Step};
use crate::request::{Bytes, ContainerPath, PageSize, Request, PREFIX};

/// The node's hugepage pools, as planning (this feature's and a group's) sees them.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// Pools per page size the kernel supports.
    pub pools: BTreeMap<PageSize, Pool>,
    pub node_pools: BTreeMap<PageSize, Vec<NodePool>>,
    /// Pages reserved by live containers we manage, and how many containers hold them.
    pub ours: BTreeMap<PageSize, (u64, usize)>,
}

impl Facts {
    /// sysfs pools and what the live containers `live` already reserved.
    pub fn of(live: &[ContainerRecord]) -> Facts {
        let sysfs = Sysfs::default();
        let mut f = Facts::default();
        let nodes = sysfs.nodes();
        for size in PageSize::ALL {
            if let Some(p) = sysfs.pool(size) {
                f.pools.insert(size, p);
                f.node_pools.insert(size, sysfs.node_pools_of(&nodes, size));
            }
        }
        for rec in live {
            for size in PageSize::ALL {
                let pages = rec.reserved_pages(size);
                if pages > 0 {
                    let e = f.ours.entry(size).or_insert((0, 0));
                    e.0 += pages;
                    e.1 += 1;
                }
            }
        }
        f
    }
}

pub fn facts(ctx: &FactsContext, facts: &mut NodeFacts) -> Result<(), PlanError> {
    facts.insert(Facts::of(ctx.live));
    Ok(())
}

/// The pools in `facts` (none when nobody read them).
fn pools(facts: &NodeFacts) -> &Facts {
    static NONE: std::sync::OnceLock<Facts> = std::sync::OnceLock::new();
    facts.get::<Facts>().unwrap_or_else(|| NONE.get_or_init(Facts::default))
}

pub fn mount_path(cfg: &Config, size: PageSize) -> ContainerPath {
    let p = match size {
        PageSize::Size2Mi => &cfg.hugepages.mount_path_2mi,
        PageSize::Size1Gi => &cfg.hugepages.mount_path_1gi,
    };
    ContainerPath::parse(&p.to_string_lossy()).expect("config validated")
}

/// Refuses a reservation the node cannot meet, with the SPEC's message.
pub fn check_reservation(
    id: &str,
    size: PageSize,
    bytes: Bytes,
    cfg: &Config,
    facts: &NodeFacts,
) -> Result<(), PlanError> {
    let what = format!("cannot reserve {bytes} of {size} hugepages for container {id}");
    let ann = format!("{PREFIX}{}", size.annotation());
    let facts = pools(facts);
    let Some(pool) = facts.pools.get(&size) else {
        return Err(PlanError {
            what,
            why: format!("this kernel has no {size} hugepage size"),
            fix: format!("remove {ann} or run on a node that supports {size} pages"),
        });
    };
    let want = bytes.pages(size);
    let (ours, n) = facts.ours.get(&size).copied().unwrap_or((0, 0));
    let reserved_by = if pool.reserved > ours {
        format!(
            "{} already reserved ({ours} by {n} containers, {} by other users)",
            pool.reserved,
            pool.reserved - ours
        )
    } else {
        format!("{} already reserved by {n} containers", pool.reserved)
    };
    if want > pool.available() {
        let fix = if pool.total == 0 {
            format!("the node has no {size} pool: set nr_hugepages in /sys/kernel/mm/hugepages/{}/ or the kernel command line, or remove {ann}", size.sysfs_dir())
        } else {
            format!("free hugepages or lower {ann}")
        };
        return Err(PlanError {
            what,
            why: format!("{} pages free, {reserved_by}", pool.free),
            fix,
        });
    }
    // At 1.0 there is no policy: the kernel's min_size reservation decides (G5). The cap could
    // then only fire on a torn view (the pool read before and the records after other creates
    // reserved), refusing a create the kernel would take with the wrong reason.
    let frac = cfg.hugepages.max_reserved_fraction;
    let cap = (pool.total as f64 * frac).floor() as u64;
    if frac < 1.0 && ours + want > cap {
        return Err(PlanError {
            what,
            why: format!(
                "containers may reserve at most {cap} of the {} pages (max_reserved_fraction = {frac}), {ours} already reserved by {n} containers",
                pool.total
            ),
            fix: format!("lower {ann} or raise [hugepages] max_reserved_fraction"),
        });
    }
    Ok(())
}

/// How many of `pages` each NUMA node shows in the container's view: nodes with the most free
/// pages first, each up to its free count; any rest goes to the first node.
pub fn split_over_nodes(pages: u64, nodes: &[NodePool]) -> Vec<(u32, u64)> {
    let mut order: Vec<&NodePool> = nodes.iter().collect();
    order.sort_by(|a, b| b.free.cmp(&a.free).then(a.node.cmp(&b.node)));
    let mut left = pages;
    let mut out: Vec<(u32, u64)> = nodes.iter().map(|n| (n.node, 0)).collect();
    for n in order {
        let take = left.min(n.free);
        if let Some(slot) = out.iter_mut().find(|(id, _)| *id == n.node) {
            slot.1 += take;
        }
        left -= take;
    }
    if left > 0 {
        if let Some(first) = out.first_mut() {
            first.1 += left;
        }
    }
    out
}

fn global_view(pages: u64) -> Vec<(String, String)> {
    [
        ("nr_hugepages", pages),
        ("nr_hugepages_mempolicy", pages),
        ("free_hugepages", pages),
        ("resv_hugepages", 0),
        ("surplus_hugepages", 0),
        ("nr_overcommit_hugepages", 0),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), format!("{v}\n")))
    .collect()
}

fn node_view(pages: u64) -> Vec<(String, String)> {
    [("nr_hugepages", pages), ("free_hugepages", pages), ("surplus_hugepages", 0)]
        .into_iter()
        .map(|(k, v)| (k.to_string(), format!("{v}\n")))
        .collect()
}

pub fn plan(
    id: &str,
    req: &Request,
    cfg: &Config,
    facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    if !req.wants_hugepages() {
        return Ok(());
    }
    if req.group.is_some() {
        // The group holds the hugetlbfs and its reservation (features::group).
        return Ok(());
    }
    if !req.hugepages.is_empty() {
        p.push(Step::HugetlbLimits(req.hugepages.iter().map(|(s, b)| (*s, *b)).collect()));
    }
    for (&size, &bytes) in &req.hugepages {
        if req.file_prefix.is_some() {
            // Prefix mode uses the host's hugetlbfs: nothing of ours to reserve there.
            continue;
        }
        if cfg.hugepages.reserve {
            check_reservation(id, size, bytes, cfg, facts)?;
        }
        p.push(Step::Mount(MountPlan::Hugetlbfs {
            size,
            bytes,
            reserve: cfg.hugepages.reserve,
            target: mount_path(cfg, size),
        }));
    }
    if req.file_prefix.is_some() {
        // Prefix mode shares the host's hugetlbfs: the host's counters are the truth there.
        return Ok(());
    }
    plan_views(&req.hugepages, facts, p);
    Ok(())
}

/// The container's view of every pool the kernel has: `reserved` pages of its own, or nothing.
pub fn plan_views(
    reserved: &std::collections::BTreeMap<PageSize, Bytes>,
    facts: &NodeFacts,
    p: &mut Plan,
) {
    let facts = pools(facts);
    for &size in facts.pools.keys() {
        let pages = reserved.get(&size).map(|b| b.pages(size)).unwrap_or(0);
        p.push(Step::Mount(MountPlan::View {
            target: ContainerPath::parse(&format!("/sys/kernel/mm/hugepages/{}", size.sysfs_dir()))
                .unwrap(),
            files: global_view(pages),
        }));
        let nodes = facts.node_pools.get(&size).map(Vec::as_slice).unwrap_or(&[]);
        for (node, n) in split_over_nodes(pages, nodes) {
            p.push(Step::Mount(MountPlan::View {
                target: ContainerPath::parse(&format!(
                    "/sys/devices/system/node/node{node}/hugepages/{}",
                    size.sysfs_dir()
                ))
                .unwrap(),
                files: node_view(n),
            }));
        }
    }
}

/// Whether the runtime (runc/crun, which pick v1 or v2 by what `/sys/fs/cgroup` is) can apply
/// the spec's `hugepageLimits` itself on this host.
pub fn runtime_can_apply_limits(h: Option<&Hierarchy>) -> bool {
    match h {
        Some(h) if h.version == Version::V1 => true,
        Some(h) => h.mount == std::path::Path::new("/sys/fs/cgroup"),
        None => false,
    }
}

/// On hosts where the runtime cannot apply `hugepageLimits` (hybrid: hugetlb only on the
/// unified mount; runc then fails the create), take them out of the spec and keep the request
/// as annotations: the hook sets the same limits in the unified hierarchy (G7).
pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    if runtime_can_apply_limits(ctx.hugetlb) || b.hugepage_limits().is_empty() {
        return Ok(());
    }
    let annotations = b.raw_object_mut(&["annotations"]);
    for (size, bytes) in &req.hugepages {
        let key = format!("{PREFIX}{}", size.annotation());
        annotations.entry(key).or_insert_with(|| serde_json::Value::String(bytes.0.to_string()));
    }
    if let Some(res) =
        b.raw.get_mut("linux").and_then(|l| l.get_mut("resources")).and_then(|r| r.as_object_mut())
    {
        res.remove("hugepageLimits");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::sysfs::Pool;

    fn pools(total: u64, free: u64, resv: u64, ours: (u64, usize)) -> Facts {
        let mut f = Facts::default();
        f.pools.insert(PageSize::Size2Mi, Pool { total, free, reserved: resv, surplus: 0 });
        f.node_pools.insert(PageSize::Size2Mi, vec![NodePool { node: 0, total, free, surplus: 0 }]);
        f.ours.insert(PageSize::Size2Mi, ours);
        f
    }

    fn facts(total: u64, free: u64, resv: u64, ours: (u64, usize)) -> NodeFacts {
        NodeFacts::default().with(pools(total, free, resv, ours))
    }

    #[test]
    fn refusal_message_matches_the_spec() {
        let e = check_reservation(
            "abc",
            PageSize::Size2Mi,
            Bytes(256 << 20),
            &Config::default(),
            &facts(64, 40, 30, (30, 2)),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "cannot reserve 256Mi of 2Mi hugepages for container abc: 40 pages free, 30 already reserved by 2 containers (free hugepages or lower dataplane-hook.io/hugepages-2Mi)"
        );
    }

    #[test]
    fn request_that_fits_passes_and_one_page_more_does_not() {
        let f = facts(64, 40, 30, (30, 2));
        check_reservation("a", PageSize::Size2Mi, Bytes(10 * (2 << 20)), &Config::default(), &f)
            .unwrap();
        assert!(check_reservation(
            "a",
            PageSize::Size2Mi,
            Bytes(11 * (2 << 20)),
            &Config::default(),
            &f
        )
        .is_err());
    }

    #[test]
    fn others_reservations_are_told_apart() {
        let e = check_reservation(
            "a",
            PageSize::Size2Mi,
            Bytes(64 << 20),
            &Config::default(),
            &facts(64, 40, 30, (10, 1)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("30 already reserved (10 by 1 containers, 20 by other users)"), "{e}");
    }

    #[test]
    fn max_reserved_fraction_caps_the_share() {
        let mut cfg = Config::default();
        cfg.hugepages.max_reserved_fraction = 0.5;
        let f = facts(64, 64, 16, (16, 1));
        check_reservation("a", PageSize::Size2Mi, Bytes(16 * (2 << 20)), &cfg, &f).unwrap();
        let e = check_reservation("a", PageSize::Size2Mi, Bytes(17 * (2 << 20)), &cfg, &f)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("at most 32 of the 64 pages") && e.contains("max_reserved_fraction"),
            "{e}"
        );
    }

    #[test]
    fn missing_pool_and_missing_size_say_what_to_do() {
        let e = check_reservation(
            "a",
            PageSize::Size2Mi,
            Bytes(2 << 20),
            &Config::default(),
            &facts(0, 0, 0, (0, 0)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no 2Mi pool"), "{e}");
        let e = check_reservation(
            "a",
            PageSize::Size1Gi,
            Bytes(1 << 30),
            &Config::default(),
            &facts(0, 0, 0, (0, 0)),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no 1Gi hugepage size"), "{e}");
    }

    #[test]
    fn plan_mounts_reserves_and_views_the_request() {
        let mut hp = pools(64, 64, 0, (0, 0));
        hp.pools.insert(PageSize::Size1Gi, Pool::default());
        let f = NodeFacts::default().with(hp);
        let req = Request {
            hugepages: [(PageSize::Size2Mi, Bytes(16 << 20))].into_iter().collect(),
            ..Default::default()
        };
        let mut p = Plan::default();
        plan("c", &req, &Config::default(), &f, &mut p).unwrap();
        assert_eq!(p.hugetlb_limits(), vec![(PageSize::Size2Mi, Bytes(16 << 20))]);
        assert!(p.mounts().any(|m| m
            == &MountPlan::Hugetlbfs {
                size: PageSize::Size2Mi,
                bytes: Bytes(16 << 20),
                reserve: true,
                target: ContainerPath::parse("/dev/hugepages").unwrap()
            }));
        let views: Vec<_> = p
            .mounts()
            .filter_map(|m| match m {
                MountPlan::View { target, files } => Some((target.to_string(), files.clone())),
                _ => None,
            })
            .collect();
        let g2 = &views
            .iter()
            .find(|(t, _)| t == "/sys/kernel/mm/hugepages/hugepages-2048kB")
            .unwrap()
            .1;
        assert!(g2.contains(&("free_hugepages".into(), "8\n".into())));
        assert!(g2.contains(&("resv_hugepages".into(), "0\n".into())));
        let g1 = &views
            .iter()
            .find(|(t, _)| t == "/sys/kernel/mm/hugepages/hugepages-1048576kB")
            .unwrap()
            .1;
        assert!(g1.contains(&("free_hugepages".into(), "0\n".into())));
        let n0 = &views
            .iter()
            .find(|(t, _)| t == "/sys/devices/system/node/node0/hugepages/hugepages-2048kB")
            .unwrap()
            .1;
        assert!(n0.contains(&("free_hugepages".into(), "8\n".into())));
    }

    #[test]
    fn nodes_split_by_free_pages() {
        let nodes = [
            NodePool { node: 0, total: 10, free: 2, surplus: 0 },
            NodePool { node: 1, total: 10, free: 6, surplus: 0 },
        ];
        assert_eq!(split_over_nodes(7, &nodes), vec![(0, 1), (1, 6)]);
        assert_eq!(split_over_nodes(10, &nodes), vec![(0, 4), (1, 6)]);
    }
}
