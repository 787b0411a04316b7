//! Owns DPDK multi-process groups (G2): containers with the same `dpdk-group` in the same scope
//! (the pod's Kubernetes namespace) share one runtime dir, one hugetlbfs and one PID namespace,
//! held by a holder process (see [`holder`]). The group's life is in the ledger: the wrapper
//! prepares a member (`prepare`: group + holder exist, member pending), the hook admits it
//! (`admit`), and the member's teardown leaves the group (`leave`), which goes with its last
//! member. gc handles a dead holder, dead members and lost poststops (`gc`).

pub mod holder;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::ledger::{now_unix, GroupRecord, Ledger, LedgerError};
use crate::request::{Bytes, GroupName, PageSize, PREFIX};

/// CRI annotations carrying the pod's namespace.
pub const SCOPE_ANNOTATIONS: &[&str] = &["io.kubernetes.cri.sandbox-namespace", "io.kubernetes.pod.namespace"];
/// Scope of containers that are not in a Kubernetes pod (cannot clash with a namespace name).
pub const NO_SCOPE: &str = "_";
/// How long a member the wrapper prepared may take to reach createRuntime.
pub const PENDING_GRACE_SECS: u64 = 120;

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot add container {id} to DPDK group {group}: {why} ({fix})")]
    Refused { id: String, group: String, why: String, fix: String },
    #[error("cannot reserve {bytes} of {size} hugepages for DPDK group {group}: the kernel refused ({fix})")]
    Reservation { group: String, size: PageSize, bytes: Bytes, fix: String },
    #[error("cannot start DPDK group {group}: {why} (see the log)")]
    Holder { group: String, why: String },
}

/// A group's identity: name within a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub scope: String,
    pub name: String,
}

impl GroupKey {
    pub fn new(name: &GroupName, annotations: &BTreeMap<String, String>) -> GroupKey {
        let scope = SCOPE_ANNOTATIONS
            .iter()
            .find_map(|k| annotations.get(*k))
            .filter(|ns| valid_scope(ns))
            .cloned()
            .unwrap_or_else(|| NO_SCOPE.to_string());
        GroupKey { scope, name: name.as_str().to_string() }
    }
    /// File-safe, unique: Kubernetes namespaces are DNS labels (no dots).
    pub fn key(&self) -> String {
        format!("{}.{}", self.scope, self.name)
    }
    pub fn display(&self) -> String {
        format!("{}/{}", self.scope, self.name)
    }
}

fn valid_scope(ns: &str) -> bool {
    GroupName::parse(ns).is_ok()
}

/// Refuses a member asking for more hugepages than the group was sized with.
pub fn check_size(g: &GroupRecord, id: &str, want: &BTreeMap<PageSize, Bytes>) -> Result<(), GroupError> {
    for (size, bytes) in want {
        let have = g.reservations.get(size).copied().unwrap_or(Bytes(0));
        if *bytes > have {
            return Err(GroupError::Refused {
                id: id.into(),
                group: format!("{}/{}", g.scope, g.name),
                why: format!(
                    "its first member sized it with {have} of {size} hugepages, this container asks for {bytes}"
                ),
                fix: format!("ask for at most {have} with {PREFIX}{} or use another group", size.annotation()),
            });
        }
    }
    Ok(())
}

/// How a new group is made: the first member's hugepages, whether to reserve them in the
/// kernel, and the binary that runs the holder.
pub struct Sizing<'a> {
    pub want: &'a BTreeMap<PageSize, Bytes>,
    pub reserve: bool,
    pub hook_bin: &'a Path,
}

/// Before a member would create its group: refuses, with the SPEC's message, hugepages the
/// node cannot reserve (the kernel's own refusal comes later, from the holder).
pub fn check_new(ledger: &Ledger, key: &GroupKey, id: &str, req: &crate::request::Request, cfg: &crate::config::Config) -> Result<(), crate::plan::PlanError> {
    if !cfg.hugepages.reserve || matches!(ledger.load_group(&key.key()), Ok(Some(_))) {
        return Ok(());
    }
    let facts = crate::hook::node_facts(ledger);
    for (&size, &bytes) in &req.hugepages {
        crate::features::hugepages::check_reservation(&format!("{id} (DPDK group {})", key.display()), size, bytes, cfg, &facts)?;
    }
    Ok(())
}

/// Makes sure the group exists with a live holder; creates it (sized by `sizing.want`) if not.
/// `pid_ns` overrides the group's PID namespace (hooks.d: the first member's own).
pub fn ensure(ledger: &Ledger, key: &GroupKey, id: &str, sizing: &Sizing, pid_ns: Option<u64>) -> Result<GroupRecord, GroupError> {
    let want = sizing.want;
    if let Some(g) = ledger.load_group(&key.key())? {
        if g.holder.is_some_and(|h| h.is_alive()) {
            check_size(&g, id, want)?;
            return Ok(g);
        }
        teardown(ledger, g)?;
    }
    let mut g = GroupRecord {
        key: key.key(),
        scope: key.scope.clone(),
        name: key.name.clone(),
        holder: None,
        pid_ns,
        reservations: want.clone(),
        members: vec![],
        pending: BTreeMap::new(),
        created: now_unix(),
    };
    // Intent before effect: a crash from here on leaves a record gc can undo.
    ledger.save_group(&g)?;
    let dir = ledger.group_dir(&g.key);
    let made = std::fs::DirBuilder::new()
        .recursive(true)
        .create(&dir)
        .map_err(|e| GroupError::Holder { group: key.display(), why: format!("mkdir {}: {e}", dir.display()) });
    let spawned = made.and_then(|()| {
        let sizes: Vec<(PageSize, Bytes)> = want.iter().map(|(s, b)| (*s, *b)).collect();
        holder::spawn(sizing.hook_bin, &dir, &sizes, sizing.reserve).map_err(|e| match e {
            holder::HolderError::NoReservation { size, .. } => GroupError::Reservation {
                group: key.display(),
                size,
                bytes: want.get(&size).copied().unwrap_or(Bytes(0)),
                fix: format!("free hugepages or lower {PREFIX}{}", size.annotation()),
            },
            other => GroupError::Holder { group: key.display(), why: other.to_string() },
        })
    });
    let h = match spawned {
        Ok(h) => h,
        Err(e) => {
            let _ = teardown(ledger, g);
            return Err(e);
        }
    };
    g.holder = Some(h);
    if sizing.reserve {
        for (size, bytes) in want {
            crate::metrics::note(crate::metrics::Event::Reserved { size: *size, pages: bytes.pages(*size) });
        }
    }
    if g.pid_ns.is_none() {
        g.pid_ns = holder::pid_ns_inode(h.pid, true);
    }
    ledger.save_group(&g)?;
    tracing::info!(group = %key.display(), holder = h.pid, reservations = ?want, "group created");
    Ok(g)
}

/// Wrapper side: the group exists, this container is pending in it. Returns the holder's pid
/// (whose PID namespace the container's spec joins).
pub fn prepare(ledger: &Ledger, key: &GroupKey, id: &str, sizing: &Sizing) -> Result<GroupRecord, GroupError> {
    // Concurrent first members: one of them creates the group and its holder, the others find it.
    let _lock = ledger.lock_group(&key.key())?;
    let mut g = ensure(ledger, key, id, sizing, None)?;
    g.pending.insert(id.to_string(), now_unix());
    ledger.save_group(&g)?;
    Ok(g)
}

/// Hook side: admits container `id` whose init is `pid`. The container must be in the group's
/// PID namespace (the wrapper put it there; on hooks.d the members must already share one).
pub fn admit(ledger: &Ledger, key: &GroupKey, id: &str, pid: i32, sizing: &Sizing) -> Result<GroupRecord, GroupError> {
    let member_ns = holder::pid_ns_inode(pid, false);
    let _lock = ledger.lock_group(&key.key())?;
    let mut g = match ledger.load_group(&key.key())? {
        Some(g) if g.holder.is_some_and(|h| h.is_alive()) => g,
        // hooks.d path, first member: the group's PID namespace is this member's.
        _ => ensure(ledger, key, id, sizing, member_ns)?,
    };
    check_size(&g, id, sizing.want)?;
    if member_ns.is_none() || member_ns != g.pid_ns {
        let others = g.members.len();
        let why = if g.pending.contains_key(id) {
            "it is not in the group's PID namespace (its spec was edited for the group, but the runtime did not join it)".to_string()
        } else {
            format!("it does not share a PID namespace with the group's {others} other member(s), and DPDK secondaries in different PID namespaces collide on PID-named files")
        };
        // Leave no trace of a group this container alone created.
        g.pending.remove(id);
        if g.members.is_empty() && g.pending.is_empty() {
            let _ = teardown(ledger, g);
        } else {
            ledger.save_group(&g)?;
        }
        return Err(GroupError::Refused {
            id: id.into(),
            group: key.display(),
            why,
            fix: "run it with the `dataplane` runtime handler (RuntimeClass) so dataplane-runtime puts every member in the group's PID namespace".into(),
        });
    }
    g.pending.remove(id);
    if !g.members.iter().any(|m| m == id) {
        g.members.push(id.to_string());
    }
    ledger.save_group(&g)?;
    Ok(g)
}

/// A member leaves; the group goes with its last member.
pub fn leave(ledger: &Ledger, key: &str, id: &str) -> Result<(), GroupError> {
    let lock = ledger.lock_group(key)?;
    let Some(mut g) = ledger.load_group(key)? else { return Ok(()) };
    g.members.retain(|m| m != id);
    g.pending.remove(id);
    if g.members.is_empty() && g.pending.is_empty() {
        teardown(ledger, g)?;
        lock.remove();
    } else {
        ledger.save_group(&g)?;
    }
    Ok(())
}

/// Kills the holder (releasing its namespaces, mounts and reservation), removes the dir and
/// the record.
pub fn teardown(ledger: &Ledger, g: GroupRecord) -> Result<(), GroupError> {
    if let Some(h) = g.holder.filter(|h| h.is_alive()) {
        // Files still in the group's hugetlbfs when it goes were left by members (a member
        // that is still there keeps the group): seen through the holder's mount namespace.
        let root = Path::new("/proc").join(h.pid.to_string()).join("root");
        let dir = ledger.group_dir(&g.key);
        for size in g.reservations.keys() {
            let d = root.join(holder::hugetlbfs_dir(&dir, *size).strip_prefix("/").unwrap_or(Path::new("")));
            let (files, pages) = crate::metrics::hugetlbfs_usage(&d, *size);
            if files > 0 && h.is_alive() {
                tracing::info!(group = %g.key, "reclaiming {files} leaked hugepage files ({pages} pages of {size})");
                crate::metrics::note(crate::metrics::Event::Leaked { origin: "group", size: Some(*size), files, pages });
            }
        }
    }
    if let Some(h) = &g.holder {
        if !holder::kill_and_wait(h, Duration::from_secs(5)) {
            return Err(GroupError::Holder { group: format!("{}/{}", g.scope, g.name), why: format!("holder {} did not exit after SIGKILL", h.pid) });
        }
    }
    let dir = ledger.group_dir(&g.key);
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(group = %g.key, "remove {}: {e}", dir.display()),
    }
    ledger.remove_group(&g.key)?;
    if g.holder.is_some() {
        for (size, bytes) in &g.reservations {
            crate::metrics::note(crate::metrics::Event::Released { size: *size, pages: bytes.pages(*size) });
        }
    }
    tracing::info!(group = %g.key, "group released");
    Ok(())
}

/// gc: drops members without a container record and stale pending members; tears down groups
/// that are empty or whose holder died. Returns the keys released.
pub fn gc(ledger: &Ledger, dry_run: bool) -> (Vec<String>, Vec<String>) {
    let (groups, corrupt) = ledger.groups();
    let mut released = Vec::new();
    let mut errors: Vec<String> =
        corrupt.iter().filter(|e| dry_run || !crate::ledger::remove_if_torn(e)).map(|e| e.to_string()).collect();
    let now = now_unix();
    // A member whose record is not written yet, or is being released, is busy: its create
    // admitted it and holds its lock until the record is on disk (a try never waits).
    let exists = |id: &str| matches!(ledger.load(id), Ok(Some(_))) || ledger.container_busy(id);
    for seen in groups {
        // A group somebody is changing right now is theirs; the next gc looks again.
        let lock = match ledger.try_lock_group(&seen.key) {
            Ok(Some(l)) => l,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let mut g = match ledger.load_group(&seen.key) {
            Ok(Some(g)) => g,
            Ok(None) => continue,
            Err(e) => {
                errors.push(e.to_string());
                continue;
            }
        };
        let before = g.clone();
        let holder_dead = g.holder.map_or(now.saturating_sub(g.created) > PENDING_GRACE_SECS, |h| !h.is_alive());
        g.members.retain(|m| exists(m));
        g.pending.retain(|id, t| now.saturating_sub(*t) <= PENDING_GRACE_SECS || exists(id));
        if holder_dead || (g.members.is_empty() && g.pending.is_empty()) {
            released.push(g.key.clone());
            if !dry_run {
                match teardown(ledger, g) {
                    Ok(()) => lock.remove(),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        } else if !dry_run && g != before {
            if let Err(e) = ledger.save_group(&g) {
                errors.push(e.to_string());
            }
        }
    }
    (released, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn groups_are_scoped_by_the_pod_namespace() {
        let n = GroupName::parse("pktgen").unwrap();
        let a = GroupKey::new(&n, &ann(&[("io.kubernetes.cri.sandbox-namespace", "team-a")]));
        let b = GroupKey::new(&n, &ann(&[("io.kubernetes.pod.namespace", "team-b")]));
        let none = GroupKey::new(&n, &ann(&[]));
        assert_eq!(a.key(), "team-a.pktgen");
        assert_eq!(b.key(), "team-b.pktgen");
        assert_eq!(none.key(), "_.pktgen");
        assert_ne!(a.key(), b.key());
        // A hostile namespace value cannot escape the state dir or alias another scope.
        let evil = GroupKey::new(&n, &ann(&[("io.kubernetes.pod.namespace", "../x")]));
        assert_eq!(evil.key(), "_.pktgen");
    }

    #[test]
    fn a_later_member_asking_for_more_is_refused() {
        let g = GroupRecord {
            key: "_.g".into(),
            scope: "_".into(),
            name: "g".into(),
            holder: None,
            pid_ns: None,
            reservations: [(PageSize::Size2Mi, Bytes(64 << 20))].into_iter().collect(),
            members: vec!["a".into()],
            pending: BTreeMap::new(),
            created: 0,
        };
        check_size(&g, "b", &[(PageSize::Size2Mi, Bytes(32 << 20))].into_iter().collect()).unwrap();
        check_size(&g, "b", &BTreeMap::new()).unwrap();
        let e = check_size(&g, "b", &[(PageSize::Size2Mi, Bytes(128 << 20))].into_iter().collect()).unwrap_err().to_string();
        assert!(e.contains("sized it with 64Mi") && e.contains("asks for 128Mi"), "{e}");
        let e = check_size(&g, "b", &[(PageSize::Size1Gi, Bytes(1 << 30))].into_iter().collect()).unwrap_err().to_string();
        assert!(e.contains("with 0 of 1Gi"), "{e}");
    }
}
