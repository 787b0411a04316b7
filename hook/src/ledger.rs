//! Owns the state dir: one JSON record per container (and per group), each effect written as
//! an intent before it is made and marked done after, atomically (temp file, rename). poststop
//! and gc undo a record's entries in reverse (see `apply`).
//!
//! There is no node-wide lock. Each container and each group has a lock of its own
//! (`locks/c.<id>`, `locks/g.<key>`: flock, taken by the one run that changes that record), so
//! creates and teardowns of different containers never wait on each other, and a run stuck on
//! one container (whatever that container did) holds up nobody else. Lock order: a container's
//! lock, then its group's, then `locks/admission` (the short critical section of a policy that
//! counts every container's reservation, `max_reserved_fraction`); only non-blocking tries go
//! the other way. Every wait is bounded by the run's deadline (`crate::deadline`). Readers take
//! no lock: records are replaced atomically, so each one read is whole.
//!
//! Records are not fsynced. What they describe — mounts, kernel hugepage reservations, cgroups,
//! processes — does not survive a reboot, and a write that a crashed hook or runtime left half
//! done is still whole or absent for the next reader (the page cache is coherent; rename is
//! atomic). Only a power loss can leave a torn record behind, and then everything it describes
//! is gone with the old boot: liveness carries the boot id, and gc removes a record that does
//! not parse and was last written before this boot. fsync would cost every create tens of
//! milliseconds on a disk-backed state dir for nothing.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::host::proc::ProcessId;
use crate::request::{Bytes, PageSize};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("cannot use state dir {path}: {source} (check `state_dir` in the config; it must be writable by root)")]
    Io { path: PathBuf, source: std::io::Error },
    #[error(
        "state dir {path} is not safe: {why} (it must be a root-owned directory with mode 0700)"
    )]
    Unsafe { path: PathBuf, why: String },
    #[error("{what} is held by another dataplane-hook for more than {secs}s (look for a hung dataplane-hook process with `ps`; the log names what it waits on)")]
    LockTimeout { what: String, secs: u64 },
    #[error("cannot use container id {id:?} in the state dir: {why} (this is the runtime's id; report it)")]
    BadName { id: String, why: &'static str },
    #[error("corrupt record {path}: {why} (inspect it; `dataplane-hook gc` skips it until it is fixed or removed)")]
    Corrupt { path: PathBuf, why: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LedgerError + '_ {
    move |source| LedgerError::Io { path: path.to_path_buf(), source }
}

/// One thing the product did to the node, with what is needed to undo it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Effect {
    /// Mounts attached inside the container's mount namespace (hugetlbfs with its kernel
    /// reservation, runtime dir, sysfs views). They live and die with that namespace, so undo
    /// has nothing to do on the host; recorded for status and audit.
    ContainerMounts { targets: Vec<String>, reserved: BTreeMap<PageSize, Bytes> },
    /// `+controller` written to a v2 `cgroup.subtree_control`. Kept on undo: it is node
    /// configuration that other containers may rely on, and it limits nothing by itself.
    ControllerEnabled { dir: PathBuf, controller: String },
    /// A cgroup directory we created. Undo: rmdir (a `shared` parent may stay busy).
    CgroupCreated {
        dir: PathBuf,
        #[serde(default)]
        shared: bool,
    },
    /// A control file value we wrote. Undo: write `previous` back if the file still exists.
    CgroupValue { file: PathBuf, value: String, previous: Option<String> },
    /// A directory we created under the state dir. Undo: remove it recursively.
    StateDir { path: PathBuf },
    /// G10: the driver-memory headroom granted to a GPU container: what `watch` tolerates as
    /// uncharged memory for it, and what makes it a container `watch` may kill. Nothing to undo
    /// on the node (a memory limit the hook wrote is a `CgroupValue` entry of its own).
    GpuHeadroom(crate::features::gpu::GpuPlan),
    /// Prefix mode (G3): nothing to do at create; undo removes the prefix's unlocked hugepage
    /// files and its runtime dir from the host paths the container used.
    PrefixFiles(crate::plan::PrefixCleanup),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub effect: Effect,
    /// false: intent written, effect maybe made; true: effect made.
    pub done: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    /// The container's init: liveness is this process's identity, not a runtime's state dir.
    pub init: ProcessId,
    pub bundle: PathBuf,
    /// Unix seconds.
    pub created: u64,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub reservations: BTreeMap<PageSize, Bytes>,
    #[serde(default)]
    pub entries: Vec<Entry>,
}

/// [`ContainerRecord`] less its entries (see [`Ledger::container_heads`]): unknown fields,
/// `entries` among them, are skipped by serde.
#[derive(Deserialize)]
struct RecordHead {
    id: String,
    init: ProcessId,
    bundle: PathBuf,
    created: u64,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    reservations: BTreeMap<PageSize, Bytes>,
}

impl ContainerRecord {
    pub fn reserved_pages(&self, size: PageSize) -> u64 {
        self.reservations.get(&size).map(|b| b.pages(size)).unwrap_or(0)
    }
}

/// A DPDK group (G2): the holder process that owns the group's PID and mount namespaces (and
/// so its hugetlbfs, reservation and runtime dir), and its members.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// `<scope>.<name>`: file-safe and unique (scopes are Kubernetes namespaces, DNS labels).
    pub key: String,
    pub scope: String,
    pub name: String,
    /// The holder: PID 1 of the group's PID namespace. None until it has started.
    pub holder: Option<ProcessId>,
    /// Inode of the group's PID namespace (members must be in it).
    pub pid_ns: Option<u64>,
    /// Sized by the first member.
    #[serde(default)]
    pub reservations: BTreeMap<PageSize, Bytes>,
    /// Container ids set up in the group.
    #[serde(default)]
    pub members: Vec<String>,
    /// Container ids the wrapper prepared (spec edited) whose createRuntime has not run yet,
    /// with the time (unix seconds) they were added.
    #[serde(default)]
    pub pending: BTreeMap<String, u64>,
    pub created: u64,
}

/// The state dir. Opening it takes no lock: see the module doc for the per-record locks.
#[derive(Debug)]
pub struct Ledger {
    dir: PathBuf,
}

/// An exclusive lock on one record of the state dir, held for as long as this value lives.
#[derive(Debug)]
pub struct LockGuard {
    _file: File,
    path: PathBuf,
}

impl LockGuard {
    /// Unlinks the lock file while still holding it (what it locked is gone). A run waiting on
    /// it then finds it unlinked and opens a new one.
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How a lock is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Wait, at most until the run's deadline.
    Bounded,
    /// Take it only if nobody holds it (gc: a record somebody holds is being created or
    /// released right now, and is none of gc's business).
    Try,
}

fn ensure_private_dir(path: &Path) -> Result<(), LedgerError> {
    // Every hook finds the dirs made: one lstat then, instead of mkdir + stat + lstat.
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => meta,
        _ => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(path)
                .map_err(io(path))?;
            std::fs::symlink_metadata(path).map_err(io(path))?
        }
    };
    if !meta.is_dir() {
        return Err(LedgerError::Unsafe { path: path.into(), why: "not a directory".into() });
    }
    if meta.uid() != 0 && nix::unistd::geteuid().is_root() {
        return Err(LedgerError::Unsafe {
            path: path.into(),
            why: format!("owned by uid {}", meta.uid()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).map_err(io(path))?;
    }
    Ok(())
}

/// A record's name must stay one file name in its directory.
fn check_name(id: &str) -> Result<&str, LedgerError> {
    let why = if id.is_empty() {
        "it is empty"
    } else if id.contains('/') || id.contains('\0') {
        "it contains a slash or NUL"
    } else if id.starts_with('.') {
        "it starts with a dot"
    } else if id.len() > 1024 {
        "it is longer than 1024 bytes"
    } else {
        return Ok(id);
    };
    Err(LedgerError::BadName { id: id.chars().take(64).collect(), why })
}

/// Takes the flock on `path` (created root-only, never through a symlink). A lock file
/// unlinked by its holder while we waited ([`LockGuard::remove`]) is opened again.
fn acquire(
    path: &Path,
    what: impl Fn() -> String,
    wait: Wait,
) -> Result<Option<LockGuard>, LedgerError> {
    let start = Instant::now();
    // Give up a little before the run's deadline, so the caller still says what it waited on
    // (rather than the deadline guard's general message).
    let left = crate::deadline::remaining();
    let bound = left.saturating_sub((left / 4).min(Duration::from_secs(1)));
    let mut pause = Duration::from_micros(200);
    loop {
        let file = open_lock_file(path).map_err(io(path))?;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    if wait == Wait::Try {
                        return Ok(None);
                    }
                    if start.elapsed() >= bound {
                        return Err(LedgerError::LockTimeout {
                            what: what(),
                            secs: bound.as_secs().max(1),
                        });
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(5));
                }
                Err(e) => return Err(io(path)(e.into())),
            }
        }
        // Still the file at `path`? (Not unlinked, nor replaced, while we waited.)
        let held = rustix::fs::fstat(&file).map_err(|e| io(path)(e.into()))?;
        match rustix::fs::lstat(path) {
            Ok(now)
                if now.st_ino == held.st_ino && now.st_dev == held.st_dev && held.st_nlink > 0 =>
            {
                return Ok(Some(LockGuard { _file: file, path: path.to_path_buf() }))
            }
            Ok(_) | Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => return Err(io(path)(e.into())),
        }
    }
}

impl Ledger {
    /// Opens (creating it root-only if needed) the state dir.
    pub fn open(state_dir: &Path) -> Result<Ledger, LedgerError> {
        ensure_private_dir(state_dir)?;
        for sub in ["containers", "groups", "locks"] {
            ensure_private_dir(&state_dir.join(sub))?;
        }
        Ok(Ledger { dir: state_dir.to_path_buf() })
    }

    fn lock_path(&self, kind: char, name: &str) -> PathBuf {
        self.dir.join("locks").join(format!("{kind}.{name}"))
    }

    /// Container `id`'s lock: held by the run that creates, updates or releases its record.
    /// Waits at most until the run's deadline.
    pub fn lock_container(&self, id: &str) -> Result<LockGuard, LedgerError> {
        Ok(self
            .container_lock(id, Wait::Bounded)?
            .expect("a bounded wait returns a lock or an error"))
    }

    /// [`Ledger::lock_container`] only if nobody holds it.
    pub fn try_lock_container(&self, id: &str) -> Result<Option<LockGuard>, LedgerError> {
        self.container_lock(id, Wait::Try)
    }

    fn container_lock(&self, id: &str, wait: Wait) -> Result<Option<LockGuard>, LedgerError> {
        let id = check_name(id)?;
        acquire(&self.lock_path('c', id), || format!("container {id}"), wait)
    }

    /// A DPDK group's lock: held while its record (members, holder) changes.
    pub fn lock_group(&self, key: &str) -> Result<LockGuard, LedgerError> {
        Ok(self.group_lock(key, Wait::Bounded)?.expect("a bounded wait returns a lock or an error"))
    }

    /// [`Ledger::lock_group`] only if nobody holds it.
    pub fn try_lock_group(&self, key: &str) -> Result<Option<LockGuard>, LedgerError> {
        self.group_lock(key, Wait::Try)
    }

    fn group_lock(&self, key: &str, wait: Wait) -> Result<Option<LockGuard>, LedgerError> {
        let key = check_name(key)?;
        acquire(&self.lock_path('g', key), || format!("DPDK group {key}"), wait)
    }

    /// The admission lock: around a check that counts every live container's reservation and
    /// the reservation it admits (`max_reserved_fraction`). Never held across I/O on a
    /// container's files.
    pub fn lock_admission(&self) -> Result<LockGuard, LedgerError> {
        let p = self.dir.join("locks").join("admission");
        Ok(acquire(&p, || "the hugepage admission lock".to_string(), Wait::Bounded)?
            .expect("a bounded wait returns a lock or an error"))
    }

    /// Removes lock files that lock nothing: no record of theirs exists and nobody holds them
    /// (a create that failed before its record, a run killed at its deadline). gc runs it.
    pub fn sweep_locks(&self) {
        let names = |sub: &str| -> std::collections::HashSet<String> {
            std::fs::read_dir(self.dir.join(sub))
                .map(|rd| {
                    rd.flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let Ok(rd) = std::fs::read_dir(self.dir.join("locks")) else { return };
        let (containers, groups) = (names("containers"), names("groups"));
        for e in rd.flatten() {
            let Ok(n) = e.file_name().into_string() else { continue };
            let orphan = match n.split_once('.') {
                Some(("c", id)) if !containers.contains(id) => self.try_lock_container(id),
                Some(("g", key)) if !groups.contains(key) => self.try_lock_group(key),
                _ => continue,
            };
            if let Ok(Some(lock)) = orphan {
                // Re-check under the lock: a create may have written its record meanwhile.
                let sub = if n.starts_with("c.") { "containers" } else { "groups" };
                if !self.dir.join(sub).join(format!("{}.json", &n[2..])).exists() {
                    lock.remove();
                }
            }
        }
    }

    /// Whether somebody holds container `id`'s lock right now (its create or teardown runs).
    pub fn container_busy(&self, id: &str) -> bool {
        // Without creating a lock file for an id nobody locks.
        let Ok(id) = check_name(id) else { return false };
        let Ok(f) = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(self.lock_path('c', id))
        else {
            return false;
        };
        matches!(
            rustix::fs::flock(&f, rustix::fs::FlockOperation::NonBlockingLockShared),
            Err(rustix::io::Errno::WOULDBLOCK)
        )
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn record_path(&self, id: &str) -> Result<PathBuf, LedgerError> {
        Ok(self.dir.join("containers").join(format!("{}.json", check_name(id)?)))
    }

    pub fn load(&self, id: &str) -> Result<Option<ContainerRecord>, LedgerError> {
        read_json(&self.record_path(id)?)
    }

    /// Every container record; corrupt ones are returned as errors beside the good ones.
    pub fn containers(&self) -> (Vec<ContainerRecord>, Vec<LedgerError>) {
        read_containers_unlocked(&self.dir)
    }

    /// Every container record without its `entries` (left empty): what a scan for liveness and
    /// reservations needs (gc before every create, on a node with thousands of containers).
    /// serde skips the entries' text without building them, and their flattened, tagged form
    /// is most of a record's parse time. Whoever acts on a record (a release) loads it whole.
    /// A record that is not JSON is an error here too; one whose entries alone are malformed
    /// is caught by the full load of its release.
    pub fn container_heads(&self) -> (Vec<ContainerRecord>, Vec<LedgerError>) {
        let (heads, bad) = read_all::<RecordHead>(&self.dir.join("containers"));
        let recs = heads
            .into_iter()
            .map(|h| ContainerRecord {
                id: h.id,
                init: h.init,
                bundle: h.bundle,
                created: h.created,
                group: h.group,
                reservations: h.reservations,
                entries: vec![],
            })
            .collect();
        (recs, bad)
    }

    pub fn save(&self, rec: &ContainerRecord) -> Result<(), LedgerError> {
        atomic_write(
            &self.record_path(&rec.id)?,
            &serde_json::to_vec_pretty(rec).expect("serializes"),
        )
    }

    pub fn remove(&self, id: &str) -> Result<(), LedgerError> {
        remove_record(&self.record_path(id)?)
    }
}

impl Ledger {
    fn group_path(&self, key: &str) -> PathBuf {
        self.dir.join("groups").join(format!("{key}.json"))
    }

    /// Directory the holder mounts the group's filesystems on (in its own mount namespace only).
    pub fn group_dir(&self, key: &str) -> PathBuf {
        self.dir.join("groups").join(format!("{key}.d"))
    }

    pub fn load_group(&self, key: &str) -> Result<Option<GroupRecord>, LedgerError> {
        read_json(&self.group_path(key))
    }

    /// Every group record; corrupt ones are returned as errors beside the good ones.
    pub fn groups(&self) -> (Vec<GroupRecord>, Vec<LedgerError>) {
        read_all(&self.dir.join("groups"))
    }

    pub fn save_group(&self, g: &GroupRecord) -> Result<(), LedgerError> {
        atomic_write(&self.group_path(&g.key), &serde_json::to_vec_pretty(g).expect("serializes"))
    }

    pub fn remove_group(&self, key: &str) -> Result<(), LedgerError> {
        remove_record(&self.group_path(key))
    }
}

/// Every container record under `state_dir`, read without the lock: records are replaced
/// atomically (rename), so a reader sees a whole old or a whole new one. For readers that must
/// never make a hook wait (`watch`); corrupt records come back as errors beside the good ones.
/// Every container record, read without taking the lock (records are replaced atomically, so
/// each one read is whole): for readers such as the watchdog that must not block creates.
pub fn read_containers_unlocked(state_dir: &Path) -> (Vec<ContainerRecord>, Vec<LedgerError>) {
    read_all(&state_dir.join("containers"))
}

/// One JSON record; None when it does not exist.
fn read_json<T: serde::de::DeserializeOwned>(p: &Path) -> Result<Option<T>, LedgerError> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| LedgerError::Corrupt { path: p.to_path_buf(), why: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p)(e)),
    }
}

/// Every `*.json` record in `dir`, in name order; unreadable ones as errors beside the rest.
/// Each record is opened relative to the directory (no path walk from `/` per record) into one
/// reused buffer: a scan of thousands of records is mostly these opens and parses.
fn read_all<T: serde::de::DeserializeOwned>(dir: &Path) -> (Vec<T>, Vec<LedgerError>) {
    use rustix::fs::{openat, Mode, OFlags};
    let mut ok = Vec::new();
    let mut bad = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else { return (ok, bad) };
    let mut names: Vec<String> = rd
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    let Ok(dfd) = openat(
        rustix::fs::CWD,
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return (ok, bad);
    };
    let mut buf = Vec::new();
    for n in names {
        let f = match openat(&dfd, n.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()) {
            Ok(f) => File::from(f),
            // Released between the readdir and the open.
            Err(rustix::io::Errno::NOENT) => continue,
            Err(e) => {
                let p = dir.join(&n);
                bad.push(io(&p)(e.into()));
                continue;
            }
        };
        let len = match crate::host::read_into(&f, &mut buf) {
            Ok(len) => len,
            Err(e) => {
                let p = dir.join(&n);
                bad.push(io(&p)(e));
                continue;
            }
        };
        match serde_json::from_slice(&buf[..len]) {
            Ok(r) => ok.push(r),
            Err(e) => bad.push(LedgerError::Corrupt { path: dir.join(&n), why: e.to_string() }),
        }
    }
    (ok, bad)
}

fn remove_record(p: &Path) -> Result<(), LedgerError> {
    match std::fs::remove_file(p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(p)(e)),
    }
}

/// gc's power-loss rule for a record `read_all` could not read: one that is not even JSON and
/// was last written before this boot was torn by a power loss, and nothing it described
/// survived the reboot, so it is removed (returns true). Anything else is left for a human.
pub fn remove_if_torn(err: &LedgerError) -> bool {
    let LedgerError::Corrupt { path, .. } = err else { return false };
    let Some(btime) = crate::host::proc::boot_time() else { return false };
    let written = std::fs::symlink_metadata(path)
        .ok()
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok());
    let parses = std::fs::read(path)
        .ok()
        .is_some_and(|b| serde_json::from_slice::<serde_json::Value>(&b).is_ok());
    if parses || written.is_none_or(|w| w.as_secs() >= btime) || std::fs::remove_file(path).is_err()
    {
        return false;
    }
    tracing::warn!("gc: removed {}: unreadable and written before this boot (a power loss tore it; what it described did not survive the reboot)", path.display());
    true
}

/// Opens a lock file in the state dir, creating it root-only, never through a symlink.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Replaces a record atomically, root-only (see the module doc for why no fsync).
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), LedgerError> {
    use crate::host::atomic_file::{write, Mode, Options};
    write(path, bytes, Options::new(Mode::Exactly(0o600))).map_err(io(path))
}

pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            init: ProcessId { pid: 1, start_time: 2, boot: None },
            bundle: "/b".into(),
            created: 3,
            group: None,
            reservations: [(PageSize::Size2Mi, Bytes(8 << 20))].into_iter().collect(),
            entries: vec![Entry {
                effect: Effect::CgroupValue {
                    file: "/x".into(),
                    value: "1".into(),
                    previous: Some("max".into()),
                },
                done: false,
            }],
        }
    }

    /// gc's scan reads records as heads: everything but the entries, which are left empty; a
    /// record that is not JSON is still reported, beside the good ones.
    #[test]
    fn a_scan_reads_every_record_but_its_entries_and_reports_one_that_is_not_json() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(&t.path().join("state")).unwrap();
        l.save(&rec("a")).unwrap();
        l.save(&rec("b")).unwrap();
        std::fs::write(t.path().join("state/containers/c.json"), b"{\"id\": \"c\", ").unwrap();
        let (heads, bad) = l.container_heads();
        let bare = |id| ContainerRecord { entries: vec![], ..rec(id) };
        assert_eq!(heads, vec![bare("a"), bare("b")]);
        assert_eq!(bad.len(), 1, "{bad:?}");
        assert!(bad[0].to_string().starts_with("corrupt record "), "{}", bad[0]);
        assert_eq!(l.containers().0, vec![rec("a"), rec("b")], "a full read keeps the entries");
    }

    #[test]
    fn records_round_trip_and_dir_is_private() {
        let t = tempfile::tempdir().unwrap();
        let sd = t.path().join("state");
        let l = Ledger::open(&sd).unwrap();
        assert_eq!(std::fs::metadata(&sd).unwrap().mode() & 0o777, 0o700);
        l.save(&rec("a")).unwrap();
        l.save(&rec("b")).unwrap();
        assert_eq!(l.load("a").unwrap().unwrap(), rec("a"));
        assert_eq!(l.load("a").unwrap().unwrap().reserved_pages(PageSize::Size2Mi), 4);
        let (all, bad) = l.containers();
        assert_eq!((all.len(), bad.len()), (2, 0));
        l.remove("a").unwrap();
        l.remove("a").unwrap();
        assert!(l.load("a").unwrap().is_none());
        let leftovers: Vec<_> = std::fs::read_dir(sd.join("containers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(leftovers.len(), 1, "no temp files left: {leftovers:?}");
    }

    #[test]
    fn corrupt_records_are_reported_not_fatal() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(t.path()).unwrap();
        l.save(&rec("good")).unwrap();
        std::fs::write(t.path().join("containers/bad.json"), "{").unwrap();
        let (all, bad) = l.containers();
        assert_eq!(all.len(), 1);
        assert_eq!(bad.len(), 1);
        assert!(bad[0].to_string().contains("bad.json"));
    }

    #[test]
    fn torn_records_from_before_this_boot_are_removed_and_recent_ones_kept() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(t.path()).unwrap();
        l.save(&rec("good")).unwrap();
        let dir = t.path().join("containers");
        std::fs::write(dir.join("torn.json"), "").unwrap();
        std::fs::write(dir.join("fresh.json"), "{").unwrap();
        let old = std::fs::File::options().write(true).open(dir.join("torn.json")).unwrap();
        old.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)).unwrap();
        let good_old = std::fs::File::options().write(true).open(dir.join("good.json")).unwrap();
        good_old.set_modified(std::time::UNIX_EPOCH + Duration::from_secs(1_000_000)).unwrap();
        let (_, bad) = l.containers();
        let removed: Vec<PathBuf> = bad
            .iter()
            .filter(|e| remove_if_torn(e))
            .map(|e| match e {
                LedgerError::Corrupt { path, .. } => path.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(removed, vec![dir.join("torn.json")]);
        let (all, bad) = l.containers();
        assert_eq!(all.len(), 1, "a whole record is never removed here (gc decides by liveness)");
        assert_eq!(
            bad.len(),
            1,
            "a corrupt record written in this boot stays for a human: {bad:?}"
        );
    }

    #[test]
    fn a_container_lock_excludes_a_second_holder_of_that_container_only() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(t.path()).unwrap();
        let held = l.lock_container("a").unwrap();
        assert!(l.container_busy("a"));
        assert!(l.try_lock_container("a").unwrap().is_none(), "a try does not wait");
        assert!(l.try_lock_container("b").unwrap().is_some(), "another container is not held up");
        assert!(l.try_lock_group("g").unwrap().is_some(), "nor a group");
        let p = t.path().to_path_buf();
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let l2 = Ledger::open(&p).unwrap();
            let _g = l2.lock_container("a").unwrap();
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_millis(100));
        let released = Instant::now();
        held.remove();
        let acquired = rx.recv().unwrap();
        h.join().unwrap();
        assert!(acquired >= released, "the second holder waited for the first");
        assert!(!l.container_busy("a"));
    }

    #[test]
    fn a_lock_unlinked_by_its_holder_is_taken_again_on_a_new_file() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(t.path()).unwrap();
        let g = l.lock_container("a").unwrap();
        let path = t.path().join("locks/c.a");
        let first = std::fs::metadata(&path).unwrap().ino();
        g.remove();
        assert!(!path.exists());
        let _g = l.lock_container("a").unwrap();
        assert!(path.exists());
        let _ = first;
    }

    #[test]
    fn names_that_are_not_one_file_name_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let l = Ledger::open(t.path()).unwrap();
        for bad in ["", "../x", "a/b", ".hidden", "..", "a\0b"] {
            let e = l.load(bad).unwrap_err().to_string();
            assert!(e.contains("cannot use container id"), "{bad:?}: {e}");
            assert!(l.try_lock_container(bad).is_err(), "{bad:?}");
        }
        assert!(l.load("ok-id_1.2").unwrap().is_none());
    }
}
