//! Owns carrying out a plan and undoing it: every effect is written to the ledger as an intent
//! before it is made and marked done after. [`teardown`] is the one undo path (poststop, gc and
//! a failed create all use it): it replays a record's entries backwards, tolerating "already
//! gone".

use std::path::{Path, PathBuf};

use crate::host::cgroup::{self, CgroupError, Hierarchy, Version};
use crate::host::mount::{self, Attachment, Detached, Missing, MountError, Source};
use crate::host::proc::{self, ProcessId};
use crate::host::sysfs::Sysfs;
use crate::ledger::{now_unix, ContainerRecord, Effect, Entry, Ledger, LedgerError, LockGuard};
use crate::plan::{MountPlan, Plan, Step};
use crate::request::{Bytes, PageSize, PREFIX};
use rustix::fs::OFlags;

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    #[error("cannot reserve {bytes} of {size} hugepages for container {id}: {why} (free hugepages or lower {PREFIX}hugepages-{size})")]
    Reservation { id: String, size: PageSize, bytes: Bytes, why: String },
    #[error("cannot set up mounts in container {id}: {source} (see the log for details)")]
    Mount { id: String, source: MountError },
    #[error("cannot set hugetlb cgroup limits for container {id}: {source} (check that the hugetlb controller is available: `dataplane-hook doctor`)")]
    Cgroup { id: String, source: CgroupError },
    #[error("cannot lower the memory limit of GPU container {id} by its driver-memory headroom: {source} (the container needs a memory cgroup of its own)")]
    Memory { id: String, source: CgroupError },
    #[error("cannot raise {resource} to {value} for container {id}: {source} (give the runtime CAP_SYS_RESOURCE, or set [rdma] on_unmet_limits = \"warn\")")]
    Rlimit { id: String, resource: &'static str, value: String, source: std::io::Error },
    #[error("container {id}: the init process {pid} is gone (the runtime must pass the init's pid in the state)")]
    NoInit { id: String, pid: i32 },
    #[error("cannot release everything of container {id}: {errors} (run `dataplane-hook gc` later; see the log)")]
    Teardown { id: String, errors: String },
}

/// A record being written, one entry per effect.
struct Recorder<'a> {
    ledger: &'a Ledger,
    rec: ContainerRecord,
    /// Entries [`Recorder::record`]ed since the last save.
    unsaved: bool,
}

impl Recorder<'_> {
    fn save(&mut self) -> Result<(), LedgerError> {
        self.ledger.save(&self.rec)?;
        self.unsaved = false;
        Ok(())
    }

    /// Writes the intent, runs `act`, marks it done (with the effect `act` returns, which may
    /// carry what was learned while acting).
    fn step<T, E: From<LedgerError>>(
        &mut self,
        intent: Effect,
        act: impl FnOnce() -> Result<(T, Effect), E>,
    ) -> Result<T, E> {
        self.rec.entries.push(Entry { effect: intent, done: false });
        self.save()?;
        let (v, effect) = act()?;
        let last = self.rec.entries.last_mut().expect("just pushed");
        *last = Entry { effect, done: true };
        self.save()?;
        Ok(v)
    }

    /// Writes the intents of several control-file values in one save, writes the files one by
    /// one with `write`, and marks them all done in one more save: a crash anywhere in between
    /// leaves every intent, with the value it replaces, on disk for gc to undo (undo writes the
    /// previous value back, harmless for a file not written yet).
    fn cgroup_values(
        &mut self,
        values: &[(PathBuf, String)],
        write: impl Fn(&Path, &str) -> Result<(), CgroupError>,
    ) -> Result<(), StepError> {
        if values.is_empty() {
            return Ok(());
        }
        let first = self.rec.entries.len();
        for (file, value) in values {
            let previous = cgroup::read(file).ok();
            self.rec.entries.push(Entry {
                effect: Effect::CgroupValue { file: file.clone(), value: value.clone(), previous },
                done: false,
            });
        }
        self.save()?;
        for (i, (file, value)) in values.iter().enumerate() {
            write(file, value)?;
            self.rec.entries[first + i].done = true;
        }
        self.save()?;
        Ok(())
    }

    /// Records an effect with nothing to undo on the host, or one that makes no change at
    /// create (prefix cleanup, the GPU grant), done, after it is made. It reaches the disk with
    /// the next save (at the latest [`Recorder::flush`] at the end of the create): a crash
    /// before that loses only an entry whose undo does nothing on the host yet.
    fn record(&mut self, effect: Effect) {
        self.rec.entries.push(Entry { effect, done: true });
        self.unsaved = true;
    }

    /// Saves what [`Recorder::record`] left unsaved.
    fn flush(&mut self) -> Result<(), LedgerError> {
        if self.unsaved {
            self.save()?;
        }
        Ok(())
    }
}

/// The container a create sets up.
#[derive(Debug, Clone)]
pub struct NewContainer<'a> {
    pub id: &'a str,
    /// Its init.
    pub pid: i32,
    pub bundle: &'a Path,
    pub rootfs: &'a Path,
    /// The key of the DPDK group it joined.
    pub group: Option<String>,
}

/// Carries out `plan`'s steps for container `c`, in order. On failure everything done so far
/// is undone and the record removed. `admission` is released once the plan's mounts (and so
/// its kernel reservations) are made.
pub fn create(
    ledger: &Ledger,
    c: NewContainer,
    plan: &Plan,
    admission: Option<LockGuard>,
) -> Result<ContainerRecord, ApplyError> {
    let (id, pid) = (c.id, c.pid);
    let init = ProcessId::of(pid).ok_or_else(|| ApplyError::NoInit { id: id.into(), pid })?;
    let rec = ContainerRecord {
        id: id.to_string(),
        init,
        bundle: c.bundle.to_path_buf(),
        created: now_unix(),
        group: c.group,
        reservations: plan.reservations(),
        entries: vec![],
    };
    ledger.save(&rec)?;
    let mut r = Recorder { ledger, rec, unsaved: false };
    match create_steps(&mut r, pid, c.rootfs, plan, admission) {
        Ok(()) => Ok(r.rec),
        Err(e) => {
            if let Err(te) = teardown(ledger, r.rec) {
                tracing::error!(container = id, error = %te, "rollback after failed create was incomplete");
            }
            Err(e)
        }
    }
}

/// Runs the steps; what each feature asked for is only data here.
fn create_steps(
    r: &mut Recorder,
    pid: i32,
    rootfs: &Path,
    plan: &Plan,
    mut admission: Option<LockGuard>,
) -> Result<(), ApplyError> {
    let id = r.rec.id.clone();
    let mut steps = plan.steps.iter().peekable();
    while let Some(step) = steps.next() {
        match step {
            Step::Rlimit(s) => {
                if let Err(source) = crate::host::rlimit::set(pid, s.resource, s.limit) {
                    let value = crate::host::rlimit::show(s.limit.hard);
                    if s.required {
                        return Err(ApplyError::Rlimit {
                            id,
                            resource: s.resource.oci_name(),
                            value,
                            source,
                        });
                    }
                    tracing::warn!(container = %id, "cannot raise {} to {value}: {source}", s.resource.oci_name());
                }
            }
            Step::Mount(first) => {
                // The mounts next to each other (a plan has them all together) are attached
                // in one entry into the container's mount namespace.
                let mut batch = vec![first.clone()];
                while let Some(Step::Mount(m)) = steps.peek() {
                    batch.push(m.clone());
                    steps.next();
                }
                let attachments = build_mounts(&id, &batch)?;
                // The pages are reserved in the kernel now (and the record counting them is on
                // disk): the admission decision is made, and attaching happens in the
                // container's files.
                drop(admission.take());
                // Mounts live and die with the container's mount namespace: nothing to undo on
                // the host, so no intent first (the record already carries the reservations).
                let done = mount::attach_in_container(pid, rootfs, attachments)
                    .map_err(|source| ApplyError::Mount { id: id.clone(), source })?;
                let targets = done.iter().map(|t| t.to_string()).collect();
                let reserved = crate::plan::reservations_of(&batch);
                r.record(Effect::ContainerMounts { targets, reserved });
            }
            Step::HugetlbLimits(limits) if limits.is_empty() => {}
            Step::HugetlbLimits(limits) => {
                set_hugetlb_limits(r, pid, limits).map_err(|e| match e {
                    StepError::Ledger(l) => ApplyError::Ledger(l),
                    StepError::Cgroup(source) => ApplyError::Cgroup { id: id.clone(), source },
                })?;
            }
            Step::MemoryLimit { limit, high } => {
                set_memory_limit(r, pid, *limit, *high).map_err(|e| match e {
                    StepError::Ledger(l) => ApplyError::Ledger(l),
                    StepError::Cgroup(source) => ApplyError::Memory { id: id.clone(), source },
                })?;
            }
            Step::Record(effect) => r.record(crate::features::at_create(effect, &id, pid)),
        }
    }
    r.flush()?;
    Ok(())
}

/// G10 on the hooks.d path (no wrapper lowered the spec): the lowered limit written to the
/// container's own memory cgroup — v2 `memory.max` and `memory.high` below it, v1
/// `memory.limit_in_bytes` — with the previous values in the ledger for teardown.
fn set_memory_limit(
    r: &mut Recorder,
    pid: i32,
    limit: Bytes,
    high: Option<Bytes>,
) -> Result<(), StepError> {
    let h = cgroup::memory_hierarchy()?;
    let lines =
        proc::cgroups(pid).map_err(|e| CgroupError::NoCgroup { pid, why: e.to_string() })?;
    let line = h
        .line(&lines, "memory")
        .ok_or_else(|| CgroupError::NoCgroup { pid, why: "not in the memory hierarchy".into() })?;
    let dir = h.dir_of(&line.path).ok_or_else(|| CgroupError::NoCgroup {
        pid,
        why: format!("cgroup {} is outside the mount", line.path.display()),
    })?;
    if !is_dedicated(&h, &dir, pid)? {
        return Err(CgroupError::NoCgroup {
            pid,
            why: format!("its memory cgroup {} is shared with other processes", dir.display()),
        }
        .into());
    }
    let mut values = vec![];
    match h.version {
        Version::V2 => {
            values.push((dir.join("memory.max"), limit.0.to_string()));
            values.extend(high.map(|hi| (dir.join("memory.high"), hi.0.to_string())));
        }
        Version::V1 => values.push((dir.join("memory.limit_in_bytes"), limit.0.to_string())),
    }
    r.cgroup_values(&values, cgroup::write)
}

/// Creates the detached filesystems of the plan. A reservation the kernel refuses becomes the
/// SPEC's refusal message with fresh counters.
fn build_mounts(id: &str, mounts: &[MountPlan]) -> Result<Vec<Attachment>, ApplyError> {
    let mut out = Vec::new();
    for m in mounts {
        let (mount, target, missing) = match m {
            MountPlan::Hugetlbfs { size, bytes, reserve, target } => {
                let d = Detached::hugetlbfs(*size, bytes.0, *reserve).map_err(|e| match e {
                    MountError::NoReservation { .. } => {
                        let p = Sysfs::default().pool(*size).unwrap_or_default();
                        ApplyError::Reservation {
                            id: id.into(),
                            size: *size,
                            bytes: *bytes,
                            why: format!(
                                "the kernel refused: {} pages free, {} already reserved",
                                p.free, p.reserved
                            ),
                        }
                    }
                    source => ApplyError::Mount { id: id.into(), source },
                })?;
                (d, target.clone(), Missing::Create)
            }
            MountPlan::EmptyDir { target } => {
                let d = Detached::tmpfs(crate::plan::EMPTY_DIR_BYTES, crate::plan::EMPTY_DIR_MODE)
                    .map_err(|source| ApplyError::Mount { id: id.into(), source })?;
                (d, target.clone(), Missing::Create)
            }
            MountPlan::FromNamespace { pid, path, target } => {
                out.push(Attachment {
                    source: Source::InNamespace { pid: *pid, path: path.clone() },
                    target: target.clone(),
                    missing: Missing::Create,
                });
                continue;
            }
            MountPlan::View { target, files } => {
                let d = Detached::tmpfs(64 << 10, "0555")
                    .map_err(|source| ApplyError::Mount { id: id.into(), source })?;
                for (name, content) in files {
                    d.write_file(Path::new(name), content)
                        .map_err(|source| ApplyError::Mount { id: id.into(), source })?;
                }
                d.set_readonly().map_err(|source| ApplyError::Mount { id: id.into(), source })?;
                (d, target.clone(), Missing::Skip)
            }
        };
        out.push(Attachment { source: Source::Detached(mount), target, missing });
    }
    Ok(out)
}

#[derive(Debug)]
enum StepError {
    Ledger(LedgerError),
    Cgroup(CgroupError),
}
impl From<LedgerError> for StepError {
    fn from(e: LedgerError) -> Self {
        StepError::Ledger(e)
    }
}
impl From<CgroupError> for StepError {
    fn from(e: CgroupError) -> Self {
        StepError::Cgroup(e)
    }
}

/// Name of the cgroup we create for containers whose hugetlb cgroup is not their own (a hybrid
/// host where the runtime left them in a shared unified cgroup).
pub const OWN_CGROUP_PARENT: &str = "dataplane-hook";

/// G7: `hugetlb.<size>.max` and `.rsvd.max` (v1: `limit_in_bytes`) equal to the reservation.
fn set_hugetlb_limits(
    r: &mut Recorder,
    pid: i32,
    limits: &[(PageSize, Bytes)],
) -> Result<(), StepError> {
    let h = cgroup::hugetlb_hierarchy()?;
    let lines =
        proc::cgroups(pid).map_err(|e| CgroupError::NoCgroup { pid, why: e.to_string() })?;
    let line = h
        .line(&lines, "hugetlb")
        .ok_or_else(|| CgroupError::NoCgroup { pid, why: "not in the hugetlb hierarchy".into() })?;
    let mut dir = h.dir_of(&line.path).ok_or_else(|| CgroupError::NoCgroup {
        pid,
        why: format!("cgroup {} is outside the mount", line.path.display()),
    })?;
    if h.version == Version::V2 {
        if !is_dedicated(&h, &dir, pid)? {
            dir = own_cgroup(r, &h, pid)?;
        }
        for parent in cgroup::v2_missing_controller(&h.mount, &dir, "hugetlb") {
            r.step(
                Effect::ControllerEnabled { dir: parent.clone(), controller: "hugetlb".into() },
                || {
                    cgroup::enable_controller(&parent, "hugetlb")?;
                    Ok::<_, StepError>((
                        (),
                        Effect::ControllerEnabled {
                            dir: parent.clone(),
                            controller: "hugetlb".into(),
                        },
                    ))
                },
            )?;
        }
    }
    let mut values = vec![];
    for (size, bytes) in limits {
        let (max, rsvd) = h.hugetlb_files(*size);
        for name in [max, rsvd] {
            let file = dir.join(&name);
            if name.contains("rsvd") && !file.exists() {
                continue; // kernels before 5.7 have no reservation accounting
            }
            values.push((file, bytes.0.to_string()));
        }
    }
    r.cgroup_values(&values, cgroup::write)
}

/// Whether `dir` is the container's own cgroup: not the hierarchy's root, and holding no
/// process but the container's init (at createRuntime nothing else runs in it).
fn is_dedicated(h: &Hierarchy, dir: &Path, pid: i32) -> Result<bool, CgroupError> {
    if dir == h.mount {
        return Ok(false);
    }
    Ok(cgroup::procs(dir)?.iter().all(|&p| p == pid))
}

/// Creates `<mount>/dataplane-hook/<id>` and moves the init there.
fn own_cgroup(r: &mut Recorder, h: &Hierarchy, pid: i32) -> Result<PathBuf, StepError> {
    let parent = h.mount.join(OWN_CGROUP_PARENT);
    let dir = parent.join(&r.rec.id);
    for (d, shared) in [(&parent, true), (&dir, false)] {
        if d.exists() {
            continue;
        }
        if d == &dir {
            for p in cgroup::v2_missing_controller(&h.mount, &dir, "hugetlb") {
                r.step(
                    Effect::ControllerEnabled { dir: p.clone(), controller: "hugetlb".into() },
                    || {
                        cgroup::enable_controller(&p, "hugetlb")?;
                        Ok::<_, StepError>((
                            (),
                            Effect::ControllerEnabled {
                                dir: p.clone(),
                                controller: "hugetlb".into(),
                            },
                        ))
                    },
                )?;
            }
        }
        r.step(Effect::CgroupCreated { dir: d.clone(), shared }, || {
            std::fs::create_dir(d).map_err(|e| CgroupError::Io {
                op: "mkdir",
                path: d.clone(),
                source: e,
            })?;
            Ok::<_, StepError>(((), Effect::CgroupCreated { dir: d.clone(), shared }))
        })?;
    }
    cgroup::write(&dir.join("cgroup.procs"), &pid.to_string())?;
    Ok(dir)
}

/// Undoes one effect, tolerating "already gone". Returns an error only for what is still there.
fn undo(ledger: &Ledger, id: &str, effect: &Effect) -> Result<(), String> {
    if let Some(done) = crate::features::undo(ledger, id, effect) {
        return done;
    }
    match effect {
        // A feature's own entries: undone by their feature, above.
        Effect::PrefixFiles(_) | Effect::GpuHeadroom(_) => Ok(()),
        Effect::ContainerMounts { .. } => Ok(()),
        Effect::ControllerEnabled { .. } => Ok(()),
        // A record is only ever written by us, but a tampered or confused one must never make
        // teardown write or delete outside cgroupfs and the state dir: such an entry is refused
        // (kept in the record, logged) instead.
        Effect::CgroupValue { file, previous, .. } => {
            let Some(prev) = previous else { return Ok(()) };
            let f = match open_on_cgroupfs(
                file,
                OFlags::WRONLY
                    | OFlags::NOFOLLOW
                    | OFlags::NONBLOCK
                    | OFlags::NOCTTY
                    | OFlags::CLOEXEC,
            ) {
                Ok(Some(f)) => f,
                Ok(None) => return Ok(()),
                Err(why) => return Err(refused(id, "restore", file, &why)),
            };
            match rustix::io::write(&f, prev.as_bytes()) {
                Ok(_) => Ok(()),
                Err(rustix::io::Errno::NOENT) | Err(rustix::io::Errno::NODEV) => Ok(()),
                Err(e) => Err(format!("restore {}: {e}", file.display())),
            }
        }
        Effect::CgroupCreated { dir, shared } => {
            let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
                return Err(refused(id, "rmdir", dir, "not a cgroup directory"));
            };
            let p = match open_on_cgroupfs(
                parent,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            ) {
                Ok(Some(p)) => p,
                Ok(None) => return Ok(()),
                Err(why) => return Err(refused(id, "rmdir", dir, &why)),
            };
            // rmdir of an entry of a cgroupfs directory: a cgroup (or a mount point, EBUSY).
            match rustix::fs::unlinkat(&p, name, rustix::fs::AtFlags::REMOVEDIR) {
                Ok(()) | Err(rustix::io::Errno::NOENT) => Ok(()),
                Err(rustix::io::Errno::BUSY) | Err(rustix::io::Errno::NOTEMPTY) if *shared => {
                    Ok(())
                }
                Err(e) => Err(format!("rmdir {}: {e}", dir.display())),
            }
        }
        Effect::StateDir { path } => {
            let below = match path.strip_prefix(ledger.dir()) {
                Ok(b)
                    if b.components().count() > 0
                        && b.components().all(|c| matches!(c, std::path::Component::Normal(_))) =>
                {
                    b
                }
                _ => {
                    return Err(refused(
                        id,
                        "remove",
                        path,
                        &format!("not below the state dir {}", ledger.dir().display()),
                    ))
                }
            };
            let (parent, name) = (
                below.parent().unwrap_or(Path::new("")),
                below.file_name().expect("a normal last component"),
            );
            use crate::features::prefix::{open_host_dir, remove_beneath, Opened, BOUNDS};
            let hd = crate::plan::HostDir {
                source: ledger.dir().to_path_buf(),
                below: parent.to_path_buf(),
                identity: None,
            };
            let d = match open_host_dir(&hd) {
                Opened::Dir(d) => d,
                Opened::Gone => return Ok(()),
                Opened::Refused(why) => return Err(refused(id, "remove", path, &why)),
            };
            match remove_beneath(
                std::os::fd::AsFd::as_fd(&d),
                &name.to_string_lossy(),
                path,
                BOUNDS,
            ) {
                Ok(_) => Ok(()),
                Err(e) => Err(format!("remove {}: {e}", path.display())),
            }
        }
    }
}

/// A refused undo entry: logged for a human, and the message that keeps it in the record.
fn refused(id: &str, op: &str, path: &Path, why: &str) -> String {
    tracing::error!(container = id, "refused to {op} {} from the record: {why}", path.display());
    format!("refused to {op} {}: {why}", path.display())
}

const CGROUP_SUPER_MAGIC: i64 = 0x27e0eb;
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

/// Opens `path` (plain components only, no symlink in its last one) and checks that what was
/// opened lies on a cgroup filesystem (v1 or v2). `Ok(None)`: it is gone. The check is on the
/// open file itself, so no path trick in between can point the write or rmdir elsewhere.
fn open_on_cgroupfs(path: &Path, flags: OFlags) -> Result<Option<std::os::fd::OwnedFd>, String> {
    if !path.is_absolute()
        || path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir | std::path::Component::CurDir))
    {
        return Err("not a plain absolute path".into());
    }
    let f = match rustix::fs::open(path, flags, rustix::fs::Mode::empty()) {
        Ok(f) => f,
        Err(rustix::io::Errno::NOENT) => return Ok(None),
        Err(e) => return Err(format!("cannot open it: {e}")),
    };
    // No O_TRUNC in `flags`: the file is not known to be a cgroup file until it is open (a
    // cgroup file takes a write as the whole new value anyway). The tests' plain files are cut
    // here instead, once they are known to be the tests'.
    #[cfg(test)]
    if tests::FAKE_CGROUPFS.with(|r| r.borrow().as_ref().is_some_and(|root| path.starts_with(root)))
    {
        if flags.contains(OFlags::WRONLY) {
            let _ = rustix::fs::ftruncate(&f, 0);
        }
        return Ok(Some(f));
    }
    match rustix::fs::fstatfs(&f) {
        Ok(s) if matches!(s.f_type, CGROUP_SUPER_MAGIC | CGROUP2_SUPER_MAGIC) => Ok(Some(f)),
        Ok(_) => Err("not on a cgroup filesystem".into()),
        Err(e) => Err(format!("cannot tell its filesystem: {e}")),
    }
}

/// The one undo path: replays `rec`'s entries backwards and removes the record. What cannot be
/// undone yet stays in the record for the next gc.
pub fn teardown(ledger: &Ledger, mut rec: ContainerRecord) -> Result<(), ApplyError> {
    let mut errors = Vec::new();
    let mut kept = Vec::new();
    for entry in rec.entries.iter().rev() {
        if let Err(e) = undo(ledger, &rec.id, &entry.effect) {
            errors.push(e);
            kept.push(entry.clone());
        }
    }
    if errors.is_empty() {
        if let Some(key) = &rec.group {
            // Leaving the group releases it (holder, mounts, reservation) with its last member.
            if let Err(e) = crate::group::leave(ledger, key, &rec.id) {
                errors.push(e.to_string());
            }
        }
    }
    if errors.is_empty() {
        ledger.remove(&rec.id)?;
        tracing::info!(container = %rec.id, "released");
        for (size, bytes) in &rec.reservations {
            crate::metrics::note(crate::metrics::Event::Released {
                size: *size,
                pages: bytes.pages(*size),
            });
        }
        crate::metrics::note(crate::metrics::Event::Teardown { complete: true });
        Ok(())
    } else {
        crate::metrics::note(crate::metrics::Event::Teardown { complete: false });
        kept.reverse();
        rec.entries = kept;
        ledger.save(&rec)?;
        Err(ApplyError::Teardown { id: rec.id, errors: errors.join("; ") })
    }
}

#[cfg(test)]
mod tests {
    //! The ledger side of G6 for control-file values, with plain files standing in for cgroupfs
    //! (undo writes the previous value back either way; [`FAKE_CGROUPFS`] lets undo take a temp
    //! dir for a cgroup filesystem), and undo's refusal of entries outside cgroupfs and the
    //! state dir.
    use super::*;

    thread_local! {
        /// A directory undo treats as if it were on cgroupfs (tests only).
        pub(super) static FAKE_CGROUPFS: std::cell::RefCell<Option<PathBuf>> = const { std::cell::RefCell::new(None) };
    }

    fn fake_cgroupfs(root: &Path) {
        FAKE_CGROUPFS.with(|r| *r.borrow_mut() = Some(root.to_path_buf()));
    }

    const NEW: &str = "16777216";

    /// A recorder for container `c`, two "control files" holding `max`, and their new values.
    fn setup(t: &Path) -> (Ledger, Vec<(PathBuf, String)>) {
        fake_cgroupfs(t);
        let ledger = Ledger::open(&t.join("state")).unwrap();
        let values: Vec<(PathBuf, String)> = ["hugetlb.2MB.max", "hugetlb.2MB.rsvd.max"]
            .iter()
            .map(|n| (t.join(n), NEW.to_string()))
            .collect();
        for (f, _) in &values {
            std::fs::write(f, "max").unwrap();
        }
        (ledger, values)
    }

    fn recorder(ledger: &Ledger) -> Recorder<'_> {
        let rec = ContainerRecord {
            id: "c".into(),
            init: ProcessId { pid: 1, start_time: 0, boot: None },
            bundle: "/b".into(),
            created: 0,
            group: None,
            reservations: Default::default(),
            entries: vec![],
        };
        Recorder { ledger, rec, unsaved: false }
    }

    fn content(f: &Path) -> String {
        std::fs::read_to_string(f).unwrap()
    }

    fn intent(file: &Path, done: bool) -> Entry {
        Entry {
            effect: Effect::CgroupValue {
                file: file.into(),
                value: NEW.into(),
                previous: Some("max".into()),
            },
            done,
        }
    }

    #[test]
    fn every_value_is_intended_on_disk_before_the_first_write_and_done_after_the_last() {
        let t = tempfile::tempdir().unwrap();
        let (ledger, values) = setup(t.path());
        let mut r = recorder(&ledger);
        r.record(Effect::ContainerMounts {
            targets: vec!["/dev/hugepages".into()],
            reserved: Default::default(),
        });
        r.cgroup_values(&values, |f, v| {
            let on_disk = ledger.load("c").unwrap().unwrap();
            assert!(
                matches!(
                    on_disk.entries[0],
                    Entry { effect: Effect::ContainerMounts { .. }, done: true }
                ),
                "the unsaved entry went with the intents"
            );
            for (e, (file, _)) in on_disk.entries[1..].iter().zip(&values) {
                assert_eq!(
                    e,
                    &intent(file, false),
                    "intent on disk before writing {}",
                    f.display()
                );
            }
            cgroup::write(f, v)
        })
        .unwrap();
        let on_disk = ledger.load("c").unwrap().unwrap();
        assert_eq!(
            on_disk.entries[1..],
            values.iter().map(|(f, _)| intent(f, true)).collect::<Vec<_>>()[..]
        );
        assert!(values.iter().all(|(f, _)| content(f) == NEW));
    }

    /// The hook dies after the first of two writes: on disk there is exactly what the batch saved
    /// before writing (a failed write stands in for the crash; nothing is saved between writes).
    /// What gc and poststop do with that record restores both files.
    #[test]
    fn a_crash_between_two_cgroup_writes_is_undone_for_both_by_teardown() {
        let t = tempfile::tempdir().unwrap();
        let (ledger, values) = setup(t.path());
        let mut r = recorder(&ledger);
        let writes = std::cell::Cell::new(0);
        let crashed = r.cgroup_values(&values, |f, v| {
            writes.set(writes.get() + 1);
            if writes.get() == 2 {
                return Err(CgroupError::Io {
                    op: "write",
                    path: f.into(),
                    source: std::io::Error::other("the hook died here"),
                });
            }
            cgroup::write(f, v)
        });
        assert!(crashed.is_err());
        assert_eq!(
            (content(&values[0].0), content(&values[1].0)),
            (NEW.to_string(), "max".to_string())
        );
        let left = ledger.load("c").unwrap().unwrap();
        assert_eq!(left.entries, values.iter().map(|(f, _)| intent(f, false)).collect::<Vec<_>>());

        teardown(&ledger, left).unwrap();
        assert!(values.iter().all(|(f, _)| content(f) == "max"), "both values restored");
        assert!(ledger.load("c").unwrap().is_none(), "record removed");
    }

    /// A record as the code before the features refactor (#16) wrote it, every kind of entry
    /// in it (a prefix entry of the oldest, joined form; a GPU grant from before the init's
    /// cgroup was kept), still tears down through the one undo path: control values restored,
    /// created cgroups removed, the prefix's runtime dir gone and another prefix's kept, the
    /// state dir entry removed, and the record with it.
    #[test]
    fn a_record_written_before_the_features_refactor_still_tears_down() {
        let t = tempfile::tempdir().unwrap();
        let t = t.path();
        fake_cgroupfs(t);
        let state = t.join("state");
        let ledger = Ledger::open(&state).unwrap();
        let (cg, rt, hp) = (t.join("cg"), t.join("rt"), t.join("hp"));
        for d in [cg.join("dataplane-hook/old"), rt.join("app1"), rt.join("other"), hp.clone()] {
            std::fs::create_dir_all(d).unwrap();
        }
        for f in [rt.join("app1/config"), rt.join("other/config")] {
            std::fs::write(f, "").unwrap();
        }
        let (max, mem) = (cg.join("hugetlb.2MB.max"), cg.join("memory.max"));
        std::fs::write(&max, "16777216").unwrap();
        std::fs::write(&mem, "1073741824").unwrap();
        std::fs::create_dir_all(state.join("groups/x.d/sub")).unwrap();
        let old = serde_json::json!({
            "id": "old",
            "init": {"pid": 1, "start_time": 0},
            "bundle": "/b",
            "created": 0,
            "group": null,
            "reservations": {"2Mi": 16777216},
            "entries": [
                {"kind": "container_mounts", "targets": ["/dev/hugepages", "/var/run/dpdk"],
                 "reserved": {"2Mi": 16777216}, "done": true},
                {"kind": "prefix_files", "prefix": "app1", "hugetlbfs_dirs": [hp],
                 "runtime_dir": rt, "done": true},
                {"kind": "controller_enabled", "dir": cg, "controller": "hugetlb", "done": true},
                {"kind": "cgroup_created", "dir": cg.join("dataplane-hook"), "shared": true,
                 "done": true},
                {"kind": "cgroup_created", "dir": cg.join("dataplane-hook/old"), "done": true},
                {"kind": "cgroup_value", "file": max, "value": "16777216", "previous": "max",
                 "done": true},
                {"kind": "gpu_headroom", "gpus": 1, "evidence": [], "headroom": 268435456,
                 "requested_limit": null, "limit": 1073741824, "high": null,
                 "set_cgroup": true, "done": true},
                {"kind": "cgroup_value", "file": mem, "value": "1073741824", "previous": "max",
                 "done": false},
                {"kind": "state_dir", "path": state.join("groups/x.d"), "done": true},
            ],
        });
        let rec: ContainerRecord = serde_json::from_value(old).unwrap();
        assert_eq!(rec.entries.len(), 9, "every entry read");
        ledger.save(&rec).unwrap();
        let rec = ledger.load("old").unwrap().unwrap();

        teardown(&ledger, rec).unwrap();
        assert_eq!((content(&max), content(&mem)), ("max".into(), "max".into()));
        assert!(!cg.join("dataplane-hook").exists(), "created cgroups removed");
        assert!(!rt.join("app1").exists(), "the prefix's runtime dir removed");
        assert!(rt.join("other/config").exists(), "another prefix's kept");
        assert!(!state.join("groups/x.d").exists(), "state dir entry removed");
        assert!(ledger.load("old").unwrap().is_none(), "record removed");
    }

    fn undo_one(ledger: &Ledger, e: Effect) -> Result<(), String> {
        undo(ledger, "c", &e)
    }

    #[test]
    fn a_cgroup_value_outside_cgroupfs_is_refused_and_the_file_kept() {
        let t = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&t.path().join("state")).unwrap();
        let file = t.path().join("passwd");
        std::fs::write(&file, "root:x:0:0\n").unwrap();
        let e = undo_one(
            &ledger,
            Effect::CgroupValue {
                file: file.clone(),
                value: "1".into(),
                previous: Some("x".into()),
            },
        )
        .unwrap_err();
        assert!(e.contains("refused") && e.contains("not on a cgroup filesystem"), "{e}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "root:x:0:0\n");
        // `..` is refused before anything is opened, even below a cgroup mount.
        let e = undo_one(
            &ledger,
            Effect::CgroupValue {
                file: "/sys/fs/cgroup/../../etc/passwd".into(),
                value: "1".into(),
                previous: Some("x".into()),
            },
        )
        .unwrap_err();
        assert!(e.contains("not a plain absolute path"), "{e}");
        // A FIFO there is never waited on (O_NONBLOCK: no reader means ENXIO, not a hang).
        let fifo = t.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        assert!(undo_one(
            &ledger,
            Effect::CgroupValue { file: fifo, value: "1".into(), previous: Some("x".into()) }
        )
        .is_err());
        // Gone is fine.
        undo_one(
            &ledger,
            Effect::CgroupValue {
                file: t.path().join("gone"),
                value: "1".into(),
                previous: Some("x".into()),
            },
        )
        .unwrap();
    }

    #[test]
    fn a_cgroup_dir_outside_cgroupfs_is_refused_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(&t.path().join("state")).unwrap();
        let dir = t.path().join("empty");
        std::fs::create_dir(&dir).unwrap();
        let e = undo_one(&ledger, Effect::CgroupCreated { dir: dir.clone(), shared: false })
            .unwrap_err();
        assert!(e.contains("refused") && e.contains("cgroup"), "{e}");
        assert!(dir.exists());
        // Through the (test) cgroupfs the same rmdir is done.
        fake_cgroupfs(t.path());
        undo_one(&ledger, Effect::CgroupCreated { dir: dir.clone(), shared: false }).unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn a_state_dir_entry_outside_the_state_dir_is_refused_and_kept() {
        let t = tempfile::tempdir().unwrap();
        let state = t.path().join("state");
        let ledger = Ledger::open(&state).unwrap();
        let host = t.path().join("host");
        std::fs::create_dir_all(host.join("a")).unwrap();
        std::fs::write(host.join("a/f"), "data").unwrap();
        for p in
            [host.clone(), state.join("../host"), state.clone(), state.join("groups/../../host")]
        {
            let e = undo_one(&ledger, Effect::StateDir { path: p.clone() }).unwrap_err();
            assert!(e.contains("refused"), "{}: {e}", p.display());
            assert!(host.join("a/f").exists(), "{}", p.display());
        }
        // A symlink inside the state dir pointing out is not followed either.
        std::os::unix::fs::symlink(&host, state.join("groups/link")).unwrap();
        let e =
            undo_one(&ledger, Effect::StateDir { path: state.join("groups/link/a") }).unwrap_err();
        assert!(e.contains("symlink"), "{e}");
        undo_one(&ledger, Effect::StateDir { path: state.join("groups/link") }).unwrap();
        assert!(
            !state.join("groups/link").exists() && host.join("a/f").exists(),
            "the link goes, its target stays"
        );
        // A real dir below the state dir is removed.
        std::fs::create_dir_all(state.join("groups/g.d/sub")).unwrap();
        std::fs::write(state.join("groups/g.d/sub/x"), "x").unwrap();
        undo_one(&ledger, Effect::StateDir { path: state.join("groups/g.d") }).unwrap();
        assert!(!state.join("groups/g.d").exists());
        undo_one(&ledger, Effect::StateDir { path: state.join("groups/g.d") }).unwrap();
    }
}
