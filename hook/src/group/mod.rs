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

/// Where a pod's namespace comes from: each runtime's own key, read only when that runtime's
/// own keys say it wrote the spec. On CRI-O every pod annotation reaches the spec, so a key
/// CRI-O does not itself write (containerd's `io.kubernetes.cri.sandbox-namespace`, or
/// `io.kubernetes.cri-o.Namespace`, which CRI-O sets only on the sandbox) is the pod author's
/// to choose. CRI-O writes its own keys after the pod's annotations, and the kubelet's container
/// labels (`io.kubernetes.pod.namespace` among them) last, as annotations and as the JSON
/// object `io.kubernetes.cri-o.Labels` (internal/factory/container SpecAddAnnotations).
/// containerd's CRI writes `io.kubernetes.cri.*` and passes pod annotations only through the
/// handler's `pod_annotations` allowlist (`dataplane-hook.io/*` as configured).
pub const CONTAINERD_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// Keys CRI-O itself writes on every container (they override a pod's own values).
pub const CRIO_OWN_KEYS: &[&str] =
    &["io.kubernetes.cri-o.ContainerType", "io.kubernetes.cri-o.SandboxID"];
pub const CRIO_LABELS: &str = "io.kubernetes.cri-o.Labels";
/// The kubelet's container label with the pod's namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
const CONTAINERD_PREFIX: &str = "io.kubernetes.cri.";
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
    #[error("cannot scope DPDK group {group} by the pod's namespace: {why} ({fix})")]
    Scope { group: String, why: String, fix: String },
    #[error("cannot start DPDK group {group}: {why} (see the log)")]
    Holder { group: String, why: String },
    /// The admission policy (`max_reserved_fraction`) refused the group's first reservation.
    #[error(transparent)]
    Admission(#[from] crate::plan::PlanError),
}

/// A group's identity: name within a scope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupKey {
    pub scope: String,
    pub name: String,
}

impl GroupKey {
    /// The group `name` in the scope the runtime wrote into the spec's annotations (see
    /// [`CONTAINERD_NAMESPACE`]); `_` outside Kubernetes. Refuses a spec whose runtime keys
    /// contradict each other: that is a pod author forging the other runtime's key.
    pub fn new(
        name: &GroupName,
        annotations: &BTreeMap<String, String>,
    ) -> Result<GroupKey, GroupError> {
        let scope = scope_of(annotations).map_err(|(why, fix)| GroupError::Scope {
            group: name.as_str().to_string(),
            why,
            fix,
        })?;
        Ok(GroupKey { scope, name: name.as_str().to_string() })
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

/// The pod's namespace, from the keys of the runtime that wrote the spec; (why, fix) if the
/// keys cannot be trusted.
fn scope_of(a: &BTreeMap<String, String>) -> Result<String, (String, String)> {
    let crio = CRIO_OWN_KEYS.iter().any(|k| a.contains_key(*k));
    let containerd_keys: Vec<&str> =
        a.keys().filter(|k| k.starts_with(CONTAINERD_PREFIX)).map(String::as_str).collect();
    let forged = |key: &str, what: String| {
        (what, format!("remove the {key} annotation from the pod; the runtime writes the pod's namespace itself"))
    };
    let scope = if crio {
        if let Some(k) =
            containerd_keys.iter().find(|k| **k == CONTAINERD_NAMESPACE).or(containerd_keys.first())
        {
            return Err(forged(k, format!("the spec has CRI-O's own keys and containerd's {k}, which CRI-O never writes (a pod annotation)")));
        }
        // CRI-O's record of the kubelet's labels; the plain annotation must say the same.
        let labels: Option<BTreeMap<String, serde_json::Value>> =
            a.get(CRIO_LABELS).and_then(|l| serde_json::from_str(l).ok());
        let from_labels = labels
            .as_ref()
            .and_then(|l| l.get(POD_NAMESPACE))
            .and_then(|v| v.as_str())
            .map(str::to_string);
        match (&from_labels, a.get(POD_NAMESPACE)) {
            (Some(l), Some(p)) if l != p => {
                return Err(forged(
                    POD_NAMESPACE,
                    format!(
                        "CRI-O's {CRIO_LABELS} say namespace {l:?}, {POD_NAMESPACE} says {p:?}"
                    ),
                ));
            }
            (None, Some(p)) => {
                return Err(forged(
                    POD_NAMESPACE,
                    format!(
                        "{POD_NAMESPACE} is {p:?} but CRI-O's {CRIO_LABELS} has no pod namespace"
                    ),
                ));
            }
            _ => {}
        }
        from_labels
    } else if !containerd_keys.is_empty() {
        let ns = a.get(CONTAINERD_NAMESPACE).cloned();
        if let (Some(ns), Some(p)) = (&ns, a.get(POD_NAMESPACE)) {
            if ns != p {
                return Err(forged(POD_NAMESPACE, format!("containerd's {CONTAINERD_NAMESPACE} says {ns:?}, {POD_NAMESPACE} says {p:?}")));
            }
        }
        ns
    } else {
        // No Kubernetes runtime wrote this spec: a namespace key here is not a runtime's.
        None
    };
    match scope {
        None => Ok(NO_SCOPE.to_string()),
        Some(ns) if valid_scope(&ns) => Ok(ns),
        Some(ns) => Err((
            format!("the pod namespace {ns:?} is not a DNS label"),
            "check the runtime that created this container".into(),
        )),
    }
}

/// Refuses a member asking for more hugepages than the group was sized with.
pub fn check_size(
    g: &GroupRecord,
    id: &str,
    want: &BTreeMap<PageSize, Bytes>,
) -> Result<(), GroupError> {
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
    /// The node's config: a new group's reservation is subject to `max_reserved_fraction`.
    pub cfg: &'a crate::config::Config,
}

/// Before a member would create its group: refuses, with the SPEC's message, hugepages the
/// node cannot reserve (the kernel's own refusal comes later, from the holder).
pub fn check_new(
    ledger: &Ledger,
    key: &GroupKey,
    id: &str,
    req: &crate::request::Request,
    cfg: &crate::config::Config,
) -> Result<(), crate::plan::PlanError> {
    if !cfg.hugepages.reserve || matches!(ledger.load_group(&key.key()), Ok(Some(_))) {
        return Ok(());
    }
    let facts = crate::hook::node_facts(ledger);
    for (&size, &bytes) in &req.hugepages {
        crate::features::hugepages::check_reservation(
            &format!("{id} (DPDK group {})", key.display()),
            size,
            bytes,
            cfg,
            &facts,
        )?;
    }
    Ok(())
}

/// Makes sure the group exists with a live holder; creates it (sized by `sizing.want`) if not.
/// `pid_ns` overrides the group's PID namespace (hooks.d: the first member's own).
pub fn ensure(
    ledger: &Ledger,
    key: &GroupKey,
    id: &str,
    sizing: &Sizing,
    pid_ns: Option<u64>,
) -> Result<GroupRecord, GroupError> {
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
    // A policy over every reservation decides under the admission lock (taken inside this
    // group's lock, the documented order), with the records as they are now, until this group's
    // record, which counts its pages, is on disk: concurrent first members of different groups
    // then cannot each see room for themselves. Without the policy the kernel decides.
    let admission =
        if sizing.reserve && sizing.cfg.hugepages.max_reserved_fraction < 1.0 && !want.is_empty() {
            let l = ledger.lock_admission()?;
            let facts = crate::hook::node_facts(ledger);
            for (&size, &bytes) in want {
                crate::features::hugepages::check_reservation(
                    &format!("{id} (DPDK group {})", key.display()),
                    size,
                    bytes,
                    sizing.cfg,
                    &facts,
                )?;
            }
            Some(l)
        } else {
            None
        };
    // Intent before effect: a crash from here on leaves a record gc can undo.
    ledger.save_group(&g)?;
    drop(admission);
    let dir = ledger.group_dir(&g.key);
    let made = std::fs::DirBuilder::new().recursive(true).create(&dir).map_err(|e| {
        GroupError::Holder { group: key.display(), why: format!("mkdir {}: {e}", dir.display()) }
    });
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
            crate::metrics::note(crate::metrics::Event::Reserved {
                size: *size,
                pages: bytes.pages(*size),
            });
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
pub fn prepare(
    ledger: &Ledger,
    key: &GroupKey,
    id: &str,
    sizing: &Sizing,
) -> Result<GroupRecord, GroupError> {
    // Concurrent first members: one of them creates the group and its holder, the others find it.
    let _lock = ledger.lock_group(&key.key())?;
    let mut g = ensure(ledger, key, id, sizing, None)?;
    g.pending.insert(id.to_string(), now_unix());
    ledger.save_group(&g)?;
    Ok(g)
}

/// Hook side: admits container `id` whose init is `pid`. The container must be in the group's
/// PID namespace (the wrapper put it there; on hooks.d the members must already share one).
pub fn admit(
    ledger: &Ledger,
    key: &GroupKey,
    id: &str,
    pid: i32,
    sizing: &Sizing,
) -> Result<GroupRecord, GroupError> {
    let member_ns = holder::pid_ns_inode(pid, false);
    let _lock = ledger.lock_group(&key.key())?;
    // A member in the host's PID namespace would make it the group's (hooks.d: the first
    // member's namespace becomes the group's), and every later member would join the host's.
    if member_ns.is_some() && member_ns == holder::own_pid_ns_inode() {
        return Err(GroupError::Refused {
            id: id.into(),
            group: key.display(),
            why: "it runs in the host's PID namespace, and a DPDK group's members share one PID namespace that must not be the host's".into(),
            fix: "give the container its own PID namespace: no hostPID, no --pid=host".into(),
        });
    }
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
        for size in g.reservations.keys() {
            let d =
                root.join(holder::hugetlbfs_dir(*size).strip_prefix("/").unwrap_or(Path::new("")));
            let (files, pages) = crate::metrics::hugetlbfs_usage(&d, *size);
            if files > 0 && h.is_alive() {
                tracing::info!(group = %g.key, "reclaiming {files} leaked hugepage files ({pages} pages of {size})");
                crate::metrics::note(crate::metrics::Event::Leaked {
                    origin: "group",
                    size: Some(*size),
                    files,
                    pages,
                });
            }
        }
    }
    if let Some(h) = &g.holder {
        if !holder::kill_and_wait(h, Duration::from_secs(5)) {
            return Err(GroupError::Holder {
                group: format!("{}/{}", g.scope, g.name),
                why: format!("holder {} did not exit after SIGKILL", h.pid),
            });
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
            crate::metrics::note(crate::metrics::Event::Released {
                size: *size,
                pages: bytes.pages(*size),
            });
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
    let mut errors: Vec<String> = corrupt
        .iter()
        .filter(|e| dry_run || !crate::ledger::remove_if_torn(e))
        .map(|e| e.to_string())
        .collect();
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
        let holder_dead =
            g.holder.map_or(now.saturating_sub(g.created) > PENDING_GRACE_SECS, |h| !h.is_alive());
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

    fn crio(ns: &str) -> Vec<(String, String)> {
        vec![
            ("io.kubernetes.cri-o.ContainerType".into(), "container".into()),
            ("io.kubernetes.cri-o.SandboxID".into(), "sbx".into()),
            (
                CRIO_LABELS.into(),
                format!(r#"{{"io.kubernetes.pod.namespace":"{ns}","io.kubernetes.pod.name":"p"}}"#),
            ),
            (POD_NAMESPACE.into(), ns.into()),
        ]
    }

    fn key(pairs: Vec<(String, String)>) -> Result<String, String> {
        let n = GroupName::parse("pktgen").unwrap();
        GroupKey::new(&n, &pairs.into_iter().collect()).map(|k| k.key()).map_err(|e| e.to_string())
    }

    fn with(mut v: Vec<(String, String)>, k: &str, val: &str) -> Vec<(String, String)> {
        v.retain(|(x, _)| x != k);
        v.push((k.into(), val.into()));
        v
    }

    #[test]
    fn groups_are_scoped_by_the_namespace_key_of_the_runtime_that_wrote_the_spec() {
        let containerd = |ns: &str| {
            vec![
                ("io.kubernetes.cri.container-type".to_string(), "container".to_string()),
                (CONTAINERD_NAMESPACE.to_string(), ns.to_string()),
            ]
        };
        assert_eq!(key(containerd("team-a")).unwrap(), "team-a.pktgen");
        assert_eq!(key(crio("team-b")).unwrap(), "team-b.pktgen");
        assert_eq!(key(vec![]).unwrap(), "_.pktgen");
        // Without a Kubernetes runtime's own keys, a namespace key is nobody's: no scope.
        assert_eq!(key(vec![(POD_NAMESPACE.into(), "team-b".into())]).unwrap(), "_.pktgen");
        assert_eq!(
            key(vec![("io.kubernetes.cri-o.Namespace".into(), "team-b".into())]).unwrap(),
            "_.pktgen"
        );
        // CRI-O does not write io.kubernetes.cri-o.Namespace on containers: a pod's value is ignored.
        assert_eq!(
            key(with(crio("team-a"), "io.kubernetes.cri-o.Namespace", "team-b")).unwrap(),
            "team-a.pktgen"
        );
    }

    #[test]
    fn forged_or_contradicting_scope_keys_are_refused() {
        // On CRI-O, containerd's key can only be a pod annotation.
        let e = key(with(crio("team-a"), CONTAINERD_NAMESPACE, "team-b")).unwrap_err();
        assert!(
            e.starts_with("cannot scope DPDK group pktgen by the pod's namespace: ")
                && e.contains(CONTAINERD_NAMESPACE)
                && e.contains("CRI-O"),
            "{e}"
        );
        assert!(key(with(crio("team-a"), "io.kubernetes.cri.sandbox-id", "x")).is_err());
        // CRI-O's labels and the plain annotation disagree, or the labels lack a namespace.
        assert!(key(with(crio("team-a"), POD_NAMESPACE, "team-b")).unwrap_err().contains("team-b"));
        let no_label = with(crio("team-a"), CRIO_LABELS, "{}");
        assert!(key(no_label.clone()).unwrap_err().contains("has no pod namespace"));
        assert_eq!(
            key(no_label.into_iter().filter(|(k, _)| k != POD_NAMESPACE).collect()).unwrap(),
            "_.pktgen"
        );
        // containerd with a pod namespace annotation saying otherwise.
        let c = vec![
            (CONTAINERD_NAMESPACE.to_string(), "team-a".to_string()),
            (POD_NAMESPACE.to_string(), "team-b".to_string()),
        ];
        assert!(key(c).is_err());
        // A hostile namespace value cannot escape the state dir or alias another scope.
        let e = key(vec![(CONTAINERD_NAMESPACE.into(), "../x".into())]).unwrap_err();
        assert!(e.contains("not a DNS label"), "{e}");
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
        let e = check_size(&g, "b", &[(PageSize::Size2Mi, Bytes(128 << 20))].into_iter().collect())
            .unwrap_err()
            .to_string();
        assert!(e.contains("sized it with 64Mi") && e.contains("asks for 128Mi"), "{e}");
        let e = check_size(&g, "b", &[(PageSize::Size1Gi, Bytes(1 << 30))].into_iter().collect())
            .unwrap_err()
            .to_string();
        assert!(e.contains("with 0 of 1Gi"), "{e}");
    }
}
