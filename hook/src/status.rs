//! Owns `status`: what the ledger holds (containers, their reservations and groups) and the
//! node's pools, as text or JSON (SPEC "State").

use std::collections::BTreeMap;

use serde::Serialize;

use crate::host::sysfs::{Pool, Sysfs};
use crate::ledger::{ContainerRecord, Ledger};
use crate::request::PageSize;

#[derive(Debug, Serialize)]
pub struct ContainerStatus {
    pub id: String,
    pub group: Option<String>,
    pub reservations: BTreeMap<PageSize, String>,
    pub pid: i32,
    pub alive: bool,
    pub created: u64,
    pub bundle: String,
    pub mounts: Vec<String>,
    /// How the hook got into the container's spec: "nri" (the NRI plugin's adjustment), else
    /// null (the runtime handler's wrapper or hooks.d). Read from the bundle, which only the
    /// runtime writes.
    pub path: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct GroupStatus {
    pub name: String,
    pub scope: String,
    pub key: String,
    pub members: Vec<String>,
    pub pending: Vec<String>,
    pub holder: Option<i32>,
    pub holder_alive: bool,
    pub pid_ns: Option<u64>,
    pub reservations: BTreeMap<PageSize, String>,
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub containers: Vec<ContainerStatus>,
    pub groups: Vec<GroupStatus>,
    pub pools: BTreeMap<PageSize, Pool>,
    pub errors: Vec<String>,
}

fn container(rec: &ContainerRecord) -> ContainerStatus {
    let mounts = rec
        .entries
        .iter()
        .filter_map(|e| match &e.effect {
            crate::ledger::Effect::ContainerMounts { targets, .. } => Some(targets.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    ContainerStatus {
        id: rec.id.clone(),
        group: rec.group.clone(),
        reservations: rec.reservations.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        pid: rec.init.pid,
        alive: rec.init.is_alive(),
        created: rec.created,
        bundle: rec.bundle.display().to_string(),
        mounts,
        path: injection_path(&rec.bundle),
    }
}

/// The `io.dataplane-hook.path` annotation of a bundle's config.json (bounded read: status must
/// not stall on a huge spec), None when absent or unreadable (the bundle is gone after delete).
fn injection_path(bundle: &std::path::Path) -> Option<String> {
    use std::io::Read;
    let f = std::fs::File::open(bundle.join("config.json")).ok()?;
    let mut text = Vec::new();
    f.take(16 << 20).read_to_end(&mut text).ok()?;
    let spec: serde_json::Value = serde_json::from_slice(&text).ok()?;
    spec.pointer("/annotations")?
        .get(crate::nri::adjust::PATH_ANNOTATION)?
        .as_str()
        .map(String::from)
}

pub fn collect(ledger: &Ledger) -> Status {
    let (records, mut corrupt) = ledger.containers();
    let (groups, bad_groups) = ledger.groups();
    corrupt.extend(bad_groups);
    let sysfs = Sysfs::default();
    Status {
        containers: records.iter().map(container).collect(),
        groups: groups
            .iter()
            .map(|g| GroupStatus {
                name: g.name.clone(),
                scope: g.scope.clone(),
                key: g.key.clone(),
                members: g.members.clone(),
                pending: g.pending.keys().cloned().collect(),
                holder: g.holder.map(|h| h.pid),
                holder_alive: g.holder.is_some_and(|h| h.is_alive()),
                pid_ns: g.pid_ns,
                reservations: g.reservations.iter().map(|(k, v)| (*k, v.to_string())).collect(),
            })
            .collect(),
        pools: PageSize::ALL.iter().filter_map(|s| sysfs.pool(*s).map(|p| (*s, p))).collect(),
        errors: corrupt.iter().map(|e| e.to_string()).collect(),
    }
}

pub fn render_text(s: &Status) -> String {
    let mut out = String::new();
    for (size, p) in &s.pools {
        out += &format!(
            "pool {size}: {} total, {} free, {} reserved, {} surplus\n",
            p.total, p.free, p.reserved, p.surplus
        );
    }
    out += &format!("containers: {}\n", s.containers.len());
    for c in &s.containers {
        let res: Vec<String> = c.reservations.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!(
            "  {} pid {} {} group {} reservations [{}]{}\n",
            c.id,
            c.pid,
            if c.alive { "alive" } else { "dead (gc will release it)" },
            c.group.as_deref().unwrap_or("-"),
            res.join(", "),
            c.path.as_deref().map(|p| format!(" via {p}")).unwrap_or_default()
        );
    }
    out += &format!("groups: {}\n", s.groups.len());
    for g in &s.groups {
        let res: Vec<String> = g.reservations.iter().map(|(k, v)| format!("{k}={v}")).collect();
        out += &format!(
            "  {}/{} holder {} {} members [{}] pending [{}] reservations [{}]\n",
            g.scope,
            g.name,
            g.holder.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
            if g.holder_alive { "alive" } else { "dead (gc will release it)" },
            g.members.join(", "),
            g.pending.join(", "),
            res.join(", ")
        );
    }
    for e in &s.errors {
        out += &format!("error: {e}\n");
    }
    out
}
