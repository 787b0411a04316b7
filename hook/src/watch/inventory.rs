//! Owns which containers the watchdog may act on: the GPU containers in the ledger (those whose
//! record holds a completed `GpuHeadroom` entry, written by the hook at create) and the headroom
//! granted to each. Everything else in the ledger is only ever protected, never killed.

use crate::host::proc::ProcessId;
use crate::ledger::{ContainerRecord, Effect};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuContainer {
    pub id: String,
    pub init: ProcessId,
    pub gpus: u32,
    pub headroom: u64,
    /// Unix seconds.
    pub created: u64,
    /// The init's memory cgroup recorded at create (as `/proc/<pid>/cgroup` names it): the
    /// only cgroup the killer may kill. None: a record from before it was kept.
    pub cgroup: Option<std::path::PathBuf>,
}

/// Splits records into GPU containers and the inits of every other container (pure).
pub fn classify(records: &[ContainerRecord]) -> (Vec<GpuContainer>, Vec<ProcessId>) {
    let mut gpus = Vec::new();
    let mut others = Vec::new();
    for r in records {
        let grant = r.entries.iter().find_map(|e| match &e.effect {
            Effect::GpuHeadroom(g) if e.done => Some(g),
            _ => None,
        });
        match grant {
            Some(g) => gpus.push(GpuContainer {
                id: r.id.clone(),
                init: r.init,
                gpus: g.gpus,
                headroom: g.headroom.0,
                created: r.created,
                cgroup: g.cgroup.clone(),
            }),
            None => others.push(r.init),
        }
    }
    (gpus, others)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::features::gpu::GpuPlan;
    use crate::ledger::Entry;
    use crate::request::Bytes;

    fn rec(id: &str, entries: Vec<Entry>) -> ContainerRecord {
        // Through JSON, as `watch` reads records (and so fields added later keep their defaults).
        serde_json::from_value(serde_json::json!({
            "id": id, "init": {"pid": 7, "start_time": 9}, "bundle": "/b", "created": 1, "entries": entries,
        }))
        .unwrap()
    }
    fn grant(done: bool) -> Entry {
        let g = GpuPlan {
            gpus: 2,
            evidence: vec![],
            headroom: Bytes(4 << 30),
            requested_limit: None,
            limit: None,
            high: None,
            set_cgroup: false,
            cgroup: Some("/kubepods/pod1/c1".into()),
        };
        Entry { effect: Effect::GpuHeadroom(g), done }
    }

    #[test]
    fn only_completed_grants_make_gpu_containers() {
        let (g, o) = classify(&[
            rec("gpu", vec![grant(true)]),
            rec("half", vec![grant(false)]),
            rec("dpdk", vec![]),
        ]);
        assert_eq!(g.len(), 1);
        assert_eq!((g[0].id.as_str(), g[0].gpus, g[0].headroom), ("gpu", 2, 4 << 30));
        assert_eq!(g[0].cgroup.as_deref(), Some(std::path::Path::new("/kubepods/pod1/c1")));
        assert_eq!(o.len(), 2, "an unfinished grant is protected like any other container");
    }

    #[test]
    fn a_recorded_ledger_file_round_trips() {
        let r = rec("gpu", vec![grant(true)]);
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"kind\":\"gpu_headroom\""), "{text}");
        let back: ContainerRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(classify(&[back]).0.len(), 1);
    }

    #[test]
    fn a_record_from_before_the_cgroup_was_kept_still_reads() {
        let old = serde_json::json!({"kind": "gpu_headroom", "done": true, "gpus": 1, "evidence": [], "headroom": 268435456,
            "requested_limit": null, "limit": null, "high": null, "set_cgroup": false});
        let e: Entry = serde_json::from_value(old).unwrap();
        let (g, _) = classify(&[rec("old", vec![e])]);
        assert_eq!((g.len(), g[0].cgroup.clone()), (1, None));
    }
}
