//! Owns G1's private DPDK runtime dir: an empty directory of the container's own at the DPDK
//! runtime path (`dpdk-runtime-dir`, default `[dpdk] runtime_dir`), so DPDK's default
//! `/var/run/dpdk/rte` never meets another container's.

use crate::config::Config;
use crate::plan::{MountPlan, NodeFacts, Plan, PlanError, Step};
use crate::request::{ContainerPath, Request, RuntimeDir};

pub fn target(req: &Request, cfg: &Config) -> Option<ContainerPath> {
    match &req.runtime_dir {
        Some(RuntimeDir::None) => None,
        Some(RuntimeDir::At(p)) => Some(p.clone()),
        None => Some(
            ContainerPath::parse(&cfg.dpdk.runtime_dir.to_string_lossy())
                .expect("config validated"),
        ),
    }
}

pub fn plan(
    _id: &str,
    req: &Request,
    cfg: &Config,
    _facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    // Prefix mode keeps the host's runtime dir; groups get a shared one (their own feature).
    if req.file_prefix.is_some() || req.group.is_some() {
        return Ok(());
    }
    if let Some(target) = target(req, cfg) {
        p.push(Step::Mount(MountPlan::EmptyDir { target }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::FilePrefix;

    #[test]
    fn default_path_none_and_custom() {
        let cfg = Config::default();
        let mut p = Plan::default();
        plan("c", &Request::default(), &cfg, &NodeFacts::default(), &mut p).unwrap();
        assert_eq!(
            p.mounts().cloned().collect::<Vec<_>>(),
            vec![MountPlan::EmptyDir { target: ContainerPath::parse("/var/run/dpdk").unwrap() }]
        );
        let mut p = Plan::default();
        let r = Request { runtime_dir: Some(RuntimeDir::None), ..Default::default() };
        plan("c", &r, &cfg, &NodeFacts::default(), &mut p).unwrap();
        assert!(p.is_empty());
        let mut p = Plan::default();
        let r = Request { file_prefix: Some(FilePrefix::Auto), ..Default::default() };
        plan("c", &r, &cfg, &NodeFacts::default(), &mut p).unwrap();
        assert!(p.is_empty(), "prefix mode keeps host dirs");
    }
}
