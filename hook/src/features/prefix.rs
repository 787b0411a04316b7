//! Owns G3, prefix mode: a container that must keep the host's `/dev/hugepages` and
//! `/var/run/dpdk` gets a unique DPDK file prefix (`DPDK_FILE_PREFIX` in its environment on the
//! wrapper path) and, at teardown, that prefix's unlocked `<prefix>map_<n>` hugepage files and
//! `<runtime dir>/<prefix>` are removed from the host paths it mounted. Nothing of another
//! prefix is touched; files a live process still locks (DPDK holds a lock on every hugepage
//! file it uses) are left alone.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde_json::{json, Value};

use crate::config::Config;
use crate::features::{hugepages, runtime_dir, FactsContext, SpecContext};
use crate::ledger::{Effect, Ledger};
use crate::oci::Bundle;
use crate::plan::{HostDir, NodeFacts, Plan, PlanError, PrefixCleanup, Step};
use crate::request::{FilePrefix, Request};

/// The container spec's mounts: (destination, type, source, options); the host paths behind
/// the container's hugetlbfs and runtime dir are found through them.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub spec_mounts: Vec<crate::oci::SpecMount>,
}

pub fn facts(ctx: &FactsContext, facts: &mut NodeFacts) -> Result<(), PlanError> {
    facts.insert(Facts { spec_mounts: ctx.bundle.mounts() });
    Ok(())
}

pub const ENV: &str = "DPDK_FILE_PREFIX";

/// The prefix a container uses: the given one, or for `auto` one derived from its id
/// (`dph` + 12 hex digits of a 64-bit FNV-1a hash: unique per container, stable across the
/// wrapper and the hook).
pub fn prefix_for(id: &str, fp: &FilePrefix) -> String {
    match fp {
        FilePrefix::Explicit(p) => p.clone(),
        FilePrefix::Auto => {
            let mut h: u64 = 0xcbf29ce484222325;
            for b in id.bytes() {
                h ^= b as u64;
                h = h.wrapping_mul(0x100000001b3);
            }
            format!("dph{:012x}", h & 0xffff_ffff_ffff)
        }
    }
}

/// The host path behind container path `target`, through the spec's bind mounts (longest
/// destination wins).
pub fn host_path(mounts: &[crate::oci::SpecMount], target: &Path) -> Option<PathBuf> {
    host_dir(mounts, target).map(|d| d.source.join(&d.below))
}

fn is_bind(typ: &Option<String>, opts: &[String]) -> bool {
    typ.as_deref() == Some("bind") || opts.iter().any(|o| o == "bind" || o == "rbind")
}

/// [`host_path`] kept in its two parts: the bind mount's source (trusted, from the bundle) and
/// the rest of `target` below the mount's destination (chosen by the container).
pub fn host_dir(mounts: &[crate::oci::SpecMount], target: &Path) -> Option<HostDir> {
    mounts
        .iter()
        .filter(|(_, typ, _, opts)| is_bind(typ, opts))
        .filter_map(|(dest, _, src, _)| {
            let rest = target.strip_prefix(dest).ok()?;
            let src = src.as_ref().filter(|s| s.is_absolute())?;
            Some((
                dest.components().count(),
                HostDir { source: src.clone(), below: rest.to_path_buf(), identity: identity(src) },
            ))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, d)| d)
}

/// `(st_dev, st_ino)` of a host directory, to recognise it at teardown.
fn identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()))
}

pub fn plan(
    id: &str,
    req: &Request,
    cfg: &Config,
    facts: &NodeFacts,
    p: &mut Plan,
) -> Result<(), PlanError> {
    let Some(fp) = &req.file_prefix else { return Ok(()) };
    let spec_mounts = facts.get::<Facts>().map(|f| f.spec_mounts.as_slice()).unwrap_or(&[]);
    let mut dirs: Vec<HostDir> = Vec::new();
    for size in crate::request::PageSize::ALL {
        if let Some(h) = host_dir(spec_mounts, hugepages::mount_path(cfg, size).as_path()) {
            dirs.push(h);
        }
    }
    // Any other bind mount may be a hugetlbfs too (checked at cleanup by the filesystem type).
    for (_, typ, src, opts) in spec_mounts {
        if let Some(s) = src {
            if s.is_absolute()
                && is_bind(typ, opts)
                && !dirs.iter().any(|d| &d.source == s && d.below.as_os_str().is_empty())
            {
                // Only directories (files such as /etc/resolv.conf are bound too).
                if let Some(id) = identity(s) {
                    dirs.push(HostDir {
                        source: s.clone(),
                        below: PathBuf::new(),
                        identity: Some(id),
                    });
                }
            }
        }
    }
    let rt = runtime_dir::target(req, cfg).and_then(|t| host_dir(spec_mounts, t.as_path()));
    p.push(Step::Record(Effect::PrefixFiles(PrefixCleanup {
        prefix: prefix_for(id, fp),
        hugetlbfs_dirs: vec![],
        runtime_dir: None,
        hugetlbfs: dirs,
        runtime: rt,
    })));
    Ok(())
}

/// Teardown of a [`Effect::PrefixFiles`] entry: [`undo`], keeping the runtime dir while
/// another live container shares an explicit prefix.
pub fn undo_recorded(ledger: &Ledger, id: &str, effect: &Effect) -> Option<Result<(), String>> {
    let Effect::PrefixFiles(pc) = effect else { return None };
    let shared = ledger.containers().0.iter().any(|r| {
        r.id != id
            && r.init.is_alive()
            && r.entries
                .iter()
                .any(|e| matches!(&e.effect, Effect::PrefixFiles(o) if o.prefix == pc.prefix))
    });
    Some(undo(id, pc, shared))
}

/// Wrapper: `DPDK_FILE_PREFIX=<prefix>` in the process environment.
pub fn edit_spec(req: &Request, b: &mut Bundle, ctx: &SpecContext) -> Result<(), PlanError> {
    let Some(fp) = &req.file_prefix else { return Ok(()) };
    let Some(id) = ctx.container_id else {
        return Err(PlanError {
            what: "cannot choose a DPDK file prefix".into(),
            why: "no container id on the command line".into(),
            fix: "call dataplane-runtime like runc: create [flags] <id>".into(),
        });
    };
    set_env(b, ENV, &prefix_for(id, fp));
    Ok(())
}

/// Sets `NAME=value` in `process.env`, replacing an existing entry.
pub fn set_env(b: &mut Bundle, name: &str, value: &str) {
    let process = b.raw_object_mut(&["process"]);
    let env = process.entry("env").or_insert_with(|| json!([]));
    if !env.is_array() {
        *env = json!([]);
    }
    let arr = env.as_array_mut().expect("array");
    arr.retain(|e| e.as_str().is_none_or(|s| s.split('=').next() != Some(name)));
    arr.push(Value::String(format!("{name}={value}")));
}

const HUGETLBFS_MAGIC: i64 = 0x958458f6;

fn is_prefix_file(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix("map_"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How far one teardown walk may go: a container can fill its volume or hugetlbfs with
/// millions of entries or nest directories thousands deep, and poststop runs with the state-dir
/// lock held. Past a bound the walk stops and leaves the rest, which lies inside the
/// container's own volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Directory entries looked at.
    pub entries: u64,
    /// Directory levels below the removed one.
    pub depth: u32,
    pub time: Duration,
}

pub const BOUNDS: Bounds = Bounds { entries: 100_000, depth: 64, time: Duration::from_secs(5) };

/// Why a walk stopped short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WalkError {
    #[error("more than {0} entries (left the rest)")]
    TooManyEntries(u64),
    #[error("deeper than {0} levels (left the rest)")]
    TooDeep(u32),
    #[error("took longer than {0:?} (left the rest)")]
    TooSlow(Duration),
    #[error("another mount at {0} (left it)")]
    OtherMount(PathBuf),
    #[error("changed while it was removed: {path}")]
    Changed { path: PathBuf },
    #[error("{path}: {errno}")]
    Io { path: PathBuf, errno: Errno },
}

/// One walk's budget.
struct Walk {
    bounds: Bounds,
    start: Instant,
    entries: u64,
    /// The filesystem the walk stays on.
    dev: u64,
}

impl Walk {
    fn new(bounds: Bounds, dev: u64) -> Walk {
        Walk { bounds, start: Instant::now(), entries: 0, dev }
    }
    fn tick(&mut self) -> Result<(), WalkError> {
        self.entries += 1;
        if self.entries > self.bounds.entries {
            return Err(WalkError::TooManyEntries(self.bounds.entries));
        }
        if self.start.elapsed() > self.bounds.time {
            return Err(WalkError::TooSlow(self.bounds.time));
        }
        Ok(())
    }
}

fn cstr(name: &str) -> CString {
    CString::new(name).unwrap_or_default()
}

fn io_err(path: &Path) -> impl FnOnce(Errno) -> WalkError + '_ {
    move |errno| WalkError::Io { path: path.to_path_buf(), errno }
}

/// Removes entry `name` of the open directory `parent` and, when it is a directory, all below
/// it: fd-relative, no symlink followed (a symlink is unlinked itself), nothing opened but
/// directories (O_NOFOLLOW | O_NONBLOCK: a FIFO or device is never opened, only unlinked), never
/// into another mount (a directory on another device than `parent` is left and reported), and
/// within `bounds`. `Ok(false)`: there was nothing to remove. `path` names `parent/name` for
/// messages only.
pub fn remove_beneath(
    parent: BorrowedFd<'_>,
    name: &str,
    path: &Path,
    bounds: Bounds,
) -> Result<bool, WalkError> {
    let dev = rustix::fs::fstat(parent).map_err(io_err(path))?.st_dev;
    let mut w = Walk::new(bounds, dev);
    remove_entry(&mut w, parent, &cstr(name), path, 0)
}

fn remove_entry(
    w: &mut Walk,
    parent: BorrowedFd<'_>,
    name: &CStr,
    path: &Path,
    depth: u32,
) -> Result<bool, WalkError> {
    w.tick()?;
    let st = match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(Errno::NOENT) => return Ok(false),
        Err(e) => return Err(io_err(path)(e)),
    };
    if FileType::from_raw_mode(st.st_mode) != FileType::Directory {
        return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(Errno::NOENT) => Ok(false),
            Err(e) => Err(io_err(path)(e)),
        };
    }
    if st.st_dev != w.dev {
        return Err(WalkError::OtherMount(path.to_path_buf()));
    }
    if depth >= w.bounds.depth {
        return Err(WalkError::TooDeep(w.bounds.depth));
    }
    let d = match rustix::fs::openat(
        parent,
        name,
        OFlags::RDONLY
            | OFlags::DIRECTORY
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::NOCTTY
            | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(Errno::NOENT) => return Ok(false),
        // Swapped for a symlink or a file since the stat: the container is still at work.
        Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
            return Err(WalkError::Changed { path: path.to_path_buf() })
        }
        Err(e) => return Err(io_err(path)(e)),
    };
    let now = rustix::fs::fstat(&d).map_err(io_err(path))?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino) {
        return Err(WalkError::Changed { path: path.to_path_buf() });
    }
    // Names first, then removal: removing while reading a directory stream may skip entries.
    // Reading counts against the budget too, so a huge directory stops the walk early.
    let mut children = Vec::new();
    for e in rustix::fs::Dir::read_from(&d).map_err(io_err(path))? {
        let e = e.map_err(io_err(path))?;
        let n = e.file_name();
        if n == c"." || n == c".." {
            continue;
        }
        if w.entries + children.len() as u64 >= w.bounds.entries {
            return Err(WalkError::TooManyEntries(w.bounds.entries));
        }
        children.push(n.to_owned());
    }
    for c in &children {
        let p = path.join(std::ffi::OsStr::from_bytes(c.to_bytes()));
        remove_entry(w, d.as_fd(), c, &p, depth + 1)?;
    }
    match rustix::fs::unlinkat(parent, name, AtFlags::REMOVEDIR) {
        Ok(()) => Ok(true),
        Err(Errno::NOENT) => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A [`HostDir`] opened for teardown, or why not.
#[derive(Debug)]
pub enum Opened {
    Dir(OwnedFd),
    /// Nothing there: nothing to clean.
    Gone,
    /// Not safe to touch; the reason is logged.
    Refused(String),
}

/// Opens `d` for teardown: its source as the host has it (trusted; the same directory as at
/// create when the record pinned it), then the container-controlled rest beneath it with
/// openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS): a symlink anywhere
/// in the rest, or a `..`, refuses.
pub fn open_host_dir(d: &HostDir) -> Opened {
    let shown = || d.source.join(&d.below).display().to_string();
    let src = match rustix::fs::open(
        &d.source,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(f) => f,
        // Not there, or not a directory (any more): nothing of ours to clean in it.
        Err(Errno::NOENT) | Err(Errno::NOTDIR) => return Opened::Gone,
        Err(e) => return Opened::Refused(format!("cannot open {}: {e}", d.source.display())),
    };
    if let Some(id) = d.identity {
        match rustix::fs::fstat(&src) {
            Ok(st) if (st.st_dev, st.st_ino) == id => {}
            _ => {
                return Opened::Refused(format!(
                    "{} is not the directory the container was given at create (replaced since)",
                    d.source.display()
                ))
            }
        }
    }
    if d.below.as_os_str().is_empty() {
        return Opened::Dir(src);
    }
    if !d.below.components().all(|c| matches!(c, Component::Normal(_))) {
        return Opened::Refused(format!(
            "{}: the path below {} is not plain",
            shown(),
            d.source.display()
        ));
    }
    match crate::host::openat2(
        &src,
        &d.below,
        // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS already refuses a symlink in the last component,
        // with ELOOP (O_NOFOLLOW | O_DIRECTORY would say ENOTDIR and hide why).
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(f) => Opened::Dir(f),
        Err(Errno::NOENT) => Opened::Gone,
        Err(Errno::LOOP) => Opened::Refused(format!(
            "{}: a symlink in the part below {} that the container controls",
            shown(),
            d.source.display()
        )),
        Err(Errno::XDEV) => Opened::Refused(format!("{}: leaves {}", shown(), d.source.display())),
        Err(Errno::NOTDIR) => Opened::Refused(format!("{}: not a directory", shown())),
        Err(e) => Opened::Refused(format!("cannot open {}: {e}", shown())),
    }
}

/// A record written before the trusted/untrusted split: the whole joined path is treated as
/// container-controlled (beneath `/`, no symlink anywhere), so a symlink the container planted
/// is refused — and so, conservatively, is a host symlink such as `/var/run` (logged).
fn legacy(p: &Path) -> HostDir {
    HostDir {
        source: PathBuf::from("/"),
        below: p.strip_prefix("/").unwrap_or(p).to_path_buf(),
        identity: None,
    }
}

/// Undoes prefix mode for container `id`: cleans the prefix's hugepage files from every
/// hugetlbfs the container bind-mounted, and removes `<runtime dir>/<prefix>` unless another
/// live container of ours uses the same prefix (`shared`) or a live DPDK primary holds it.
/// What is refused or stops short is logged and not retried (it lies inside the container's
/// own volume); only an error on something we may touch is returned.
pub fn undo(id: &str, pc: &PrefixCleanup, shared: bool) -> Result<(), String> {
    // One time budget for all of it: a spec can bind many hugetlbfs mounts.
    let start = Instant::now();
    let left = || Bounds { time: BOUNDS.time.saturating_sub(start.elapsed()), ..BOUNDS };
    let dirs = pc.hugetlbfs.iter().cloned().chain(pc.hugetlbfs_dirs.iter().map(|p| legacy(p)));
    for d in dirs {
        let shown = d.source.join(&d.below);
        match clean_hugetlbfs_dir(&d, &pc.prefix, left()) {
            Ok(c) if c.files == 0 => {}
            Ok(c) => {
                tracing::info!(container = id, prefix = %pc.prefix, "removed {} leaked hugepage files ({} pages) from {}", c.files, c.pages, shown.display());
                crate::metrics::note(crate::metrics::Event::Leaked {
                    origin: "prefix",
                    size: c.size,
                    files: c.files,
                    pages: c.pages,
                });
            }
            Err(e) => return Err(format!("clean {}: {e}", shown.display())),
        }
    }
    if shared {
        return Ok(());
    }
    let rt = pc.runtime.clone().or_else(|| pc.runtime_dir.as_deref().map(legacy));
    let Some(rt) = rt else { return Ok(()) };
    let shown = rt.source.join(&rt.below).join(&pc.prefix);
    let dir = match open_host_dir(&rt) {
        Opened::Dir(f) => f,
        Opened::Gone => return Ok(()),
        Opened::Refused(why) => {
            tracing::warn!(container = id, prefix = %pc.prefix, "not removing the DPDK runtime dir {}: {why}", shown.display());
            return Ok(());
        }
    };
    if let Some(holder) = primary_lock(dir.as_fd(), &pc.prefix) {
        tracing::warn!(container = id, prefix = %pc.prefix, "not removing the DPDK runtime dir {}: its config is locked by a live DPDK primary ({holder}) that is not this container", shown.display());
        return Ok(());
    }
    match remove_beneath(dir.as_fd(), &pc.prefix, &shown, left()) {
        Ok(_) => Ok(()),
        Err(WalkError::Io { path, errno }) if errno != Errno::NOTEMPTY => {
            Err(format!("remove {}: {errno}", path.display()))
        }
        Err(e) => {
            tracing::warn!(container = id, prefix = %pc.prefix, "did not remove all of the DPDK runtime dir {}: {e}", shown.display());
            Ok(())
        }
    }
}

/// Whether a live process holds a lock on `<dir>/<prefix>/config`, the file a DPDK primary
/// locks (fcntl F_SETLK, write lock on part of it) for as long as it runs. Only a regular file
/// reached without a symlink is opened, non-blocking, and only to test the lock (F_OFD_GETLK
/// over the whole file). Returns who holds it, for the log.
pub fn primary_lock(dir: BorrowedFd<'_>, prefix: &str) -> Option<String> {
    let flags =
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
    let p = rustix::fs::openat(dir, cstr(prefix).as_c_str(), flags, Mode::empty()).ok()?;
    let f = open_regular(p.as_fd(), c"config")?;
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    match nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl)) {
        Ok(_) if fl.l_type == libc::F_UNLCK as i16 => None,
        Ok(_) if fl.l_pid > 0 => Some(format!("pid {}", fl.l_pid)),
        Ok(_) => Some("an open file description".into()),
        // Cannot tell: leaving the dir is the safe side.
        Err(e) => Some(format!("cannot test the lock: {e}")),
    }
}

/// Opens `name` in `dir` only if it is a regular file: type checked without following
/// (fstatat AT_SYMLINK_NOFOLLOW), opened O_NONBLOCK | O_NOFOLLOW | O_NOCTTY (a FIFO or device
/// swapped in meanwhile cannot block or become a terminal), and checked again to be the same
/// regular file after opening.
fn open_regular(dir: BorrowedFd<'_>, name: &CStr) -> Option<OwnedFd> {
    let st = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return None;
    }
    let f = rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let now = rustix::fs::fstat(&f).ok()?;
    (FileType::from_raw_mode(now.st_mode) == FileType::RegularFile
        && (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino))
        .then_some(f)
}

/// Removes `prefix`'s unlocked hugepage files from `dir` (only if it is a hugetlbfs). Returns
/// how many were removed.
pub fn clean_hugetlbfs(dir: &Path, prefix: &str) -> std::io::Result<usize> {
    clean_hugetlbfs_counted(dir, prefix).map(|c| c.files as usize)
}

/// What a cleanup removed: files, the hugepages they held, and the mount's page size; and how
/// many entries named like the prefix's files it left because they are not regular files.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cleaned {
    pub files: u64,
    pub pages: u64,
    pub size: Option<crate::request::PageSize>,
    pub skipped: u64,
}

/// [`clean_hugetlbfs`], counting the pages the removed files held (for metrics). `dir` is
/// trusted as a whole (a bind mount's source).
pub fn clean_hugetlbfs_counted(dir: &Path, prefix: &str) -> std::io::Result<Cleaned> {
    clean_hugetlbfs_dir(
        &HostDir { source: dir.to_path_buf(), below: PathBuf::new(), identity: None },
        prefix,
        BOUNDS,
    )
}

/// [`clean_hugetlbfs_counted`] for a [`HostDir`], opened as [`open_host_dir`] does, within
/// `bounds`. Entries named like the prefix's files that are not regular files (a FIFO a
/// container made there would block a plain open forever) are skipped and logged.
pub fn clean_hugetlbfs_dir(hd: &HostDir, prefix: &str, bounds: Bounds) -> std::io::Result<Cleaned> {
    let shown = hd.source.join(&hd.below);
    let d = match open_host_dir(hd) {
        Opened::Dir(d) => d,
        Opened::Gone => return Ok(Cleaned::default()),
        Opened::Refused(why) => {
            tracing::warn!(prefix, "not cleaning hugepage files in {}: {why}", shown.display());
            return Ok(Cleaned::default());
        }
    };
    let page = match rustix::fs::fstatfs(&d) {
        Ok(s) if s.f_type == HUGETLBFS_MAGIC => s.f_bsize as u64,
        _ => return Ok(Cleaned::default()),
    };
    let size = crate::request::PageSize::ALL.into_iter().find(|s| s.bytes() == page);
    let mut out = Cleaned { size, ..Default::default() };
    let mut w = Walk::new(bounds, 0);
    let mut names: Vec<CString> = Vec::new();
    for e in rustix::fs::Dir::read_from(&d)? {
        let e = e?;
        if let Err(stop) = w.tick() {
            tracing::warn!(
                prefix,
                "stopped looking for hugepage files in {}: {stop}",
                shown.display()
            );
            break;
        }
        if e.file_name().to_str().is_ok_and(|n| is_prefix_file(n, prefix)) {
            names.push(e.file_name().to_owned());
        }
    }
    for name in names {
        if w.start.elapsed() > bounds.time {
            tracing::warn!(
                prefix,
                "stopped cleaning hugepage files in {}: {}",
                shown.display(),
                WalkError::TooSlow(bounds.time)
            );
            break;
        }
        let Some(f) = open_regular(d.as_fd(), &name) else {
            if rustix::fs::statat(&d, name.as_c_str(), AtFlags::SYMLINK_NOFOLLOW).is_ok() {
                out.skipped += 1;
                tracing::warn!(
                    prefix,
                    "left {}: not a regular file",
                    shown.join(name.to_string_lossy().as_ref()).display()
                );
            }
            continue;
        };
        // A live DPDK process holds a lock on every hugepage file it uses.
        if rustix::fs::flock(f.as_fd(), rustix::fs::FlockOperation::NonBlockingLockExclusive)
            .is_err()
        {
            continue;
        }
        let blocks = rustix::fs::fstat(&f).map(|st| st.st_blocks as u64).unwrap_or(0);
        if rustix::fs::unlinkat(&d, name.as_c_str(), AtFlags::empty()).is_ok() {
            out.files += 1;
            out.pages += (blocks * 512).div_ceil(page.max(1));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(dest: &str, src: &str) -> crate::oci::SpecMount {
        (dest.into(), Some("bind".into()), Some(src.into()), vec!["rbind".into()])
    }

    #[test]
    fn auto_prefixes_are_unique_short_and_stable() {
        let a = prefix_for("0123456789abcdef0123", &FilePrefix::Auto);
        let b = prefix_for("0123456789abcdef0124", &FilePrefix::Auto);
        assert_ne!(a, b);
        assert_eq!(a, prefix_for("0123456789abcdef0123", &FilePrefix::Auto));
        assert!(FilePrefix::parse(&a).is_ok(), "{a} is a valid prefix");
        assert_eq!(prefix_for("x", &FilePrefix::Explicit("app1".into())), "app1");
    }

    #[test]
    fn prefix_files_match_exactly() {
        assert!(is_prefix_file("rtemap_0", "rte"));
        assert!(is_prefix_file("app1map_12", "app1"));
        assert!(!is_prefix_file("rte2map_0", "rte"));
        assert!(!is_prefix_file("rtemap_", "rte"));
        assert!(!is_prefix_file("rtemap_0x", "rte"));
        assert!(!is_prefix_file("fbarray_memseg-2048k-0-0", "rte"));
    }

    #[test]
    fn host_paths_follow_the_longest_bind() {
        let ms = vec![
            m("/dev/hugepages", "/dev/hugepages"),
            m("/var/run", "/run/host"),
            m("/var/run/dpdk", "/srv/dpdk"),
        ];
        assert_eq!(host_path(&ms, Path::new("/var/run/dpdk")), Some(PathBuf::from("/srv/dpdk")));
        assert_eq!(
            host_path(&ms, Path::new("/var/run/other")),
            Some(PathBuf::from("/run/host/other"))
        );
        assert_eq!(
            host_path(&ms, Path::new("/dev/hugepages")),
            Some(PathBuf::from("/dev/hugepages"))
        );
        assert_eq!(host_path(&ms, Path::new("/opt")), None);
    }

    // ---- teardown against hostile trees (no privilege needed: a temp dir stands in for a
    // volume; hugetlbfs-only paths are covered by the integration tests) ----

    use std::os::unix::fs::symlink;

    fn hd(source: &Path, below: &str) -> HostDir {
        HostDir { source: source.into(), below: below.into(), identity: identity(source) }
    }

    fn open(d: &HostDir) -> OwnedFd {
        match open_host_dir(d) {
            Opened::Dir(f) => f,
            other => panic!("{d:?}: {other:?}"),
        }
    }

    fn refused(d: &HostDir) -> String {
        match open_host_dir(d) {
            Opened::Refused(why) => why,
            other => panic!("{d:?} must be refused: {other:?}"),
        }
    }

    fn mkfifo(p: &Path) {
        nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    #[test]
    fn host_dirs_keep_the_trusted_source_apart_from_the_container_part() {
        let ms = vec![m("/vol", "/srv/vol"), m("/dev/hugepages", "/dev/hugepages")];
        let d = host_dir(&ms, Path::new("/vol/rt")).unwrap();
        assert_eq!(
            (d.source.as_path(), d.below.as_path()),
            (Path::new("/srv/vol"), Path::new("rt"))
        );
        let d = host_dir(&ms, Path::new("/dev/hugepages")).unwrap();
        assert_eq!(
            (d.source.as_path(), d.below.as_os_str().is_empty()),
            (Path::new("/dev/hugepages"), true)
        );
        assert_eq!(host_path(&ms, Path::new("/vol/rt")), Some(PathBuf::from("/srv/vol/rt")));
    }

    #[test]
    fn old_records_still_deserialize() {
        let old =
            r#"{"prefix":"app1","hugetlbfs_dirs":["/dev/hugepages"],"runtime_dir":"/srv/vol/rt"}"#;
        let pc: PrefixCleanup = serde_json::from_str(old).unwrap();
        assert_eq!(pc.hugetlbfs_dirs, vec![PathBuf::from("/dev/hugepages")]);
        assert_eq!(pc.runtime_dir.as_deref(), Some(Path::new("/srv/vol/rt")));
        assert!(pc.hugetlbfs.is_empty() && pc.runtime.is_none());
        // And the legacy path is treated as untrusted as a whole.
        assert_eq!(
            legacy(Path::new("/srv/vol/rt")),
            HostDir { source: "/".into(), below: "srv/vol/rt".into(), identity: None }
        );
        // Inside a ledger entry (flattened, tagged) as old records hold it.
        let e: crate::ledger::Entry = serde_json::from_str(&format!(
            r#"{{"kind":"prefix_files",{},"done":true}}"#,
            &old[1..old.len() - 1]
        ))
        .unwrap();
        assert!(matches!(e.effect, crate::ledger::Effect::PrefixFiles(ref o) if *o == pc), "{e:?}");
        let new = PrefixCleanup {
            prefix: "p".into(),
            hugetlbfs_dirs: vec![],
            runtime_dir: None,
            hugetlbfs: vec![hd(Path::new("/x"), "")],
            runtime: Some(hd(Path::new("/y"), "rt")),
        };
        let back: PrefixCleanup =
            serde_json::from_str(&serde_json::to_string(&new).unwrap()).unwrap();
        assert_eq!(back, new);
    }

    #[test]
    fn a_symlink_anywhere_below_the_source_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let (vol, host) = (t.path().join("vol"), t.path().join("host"));
        std::fs::create_dir_all(vol.join("a")).unwrap();
        std::fs::create_dir_all(host.join("victim")).unwrap();
        symlink(&host, vol.join("rt")).unwrap();
        symlink(&host, vol.join("a/rt")).unwrap();
        symlink("../host", vol.join("rel")).unwrap();
        assert!(refused(&hd(&vol, "rt")).contains("symlink"));
        assert!(refused(&hd(&vol, "rt/victim")).contains("symlink"));
        assert!(refused(&hd(&vol, "a/rt")).contains("symlink"));
        assert!(refused(&hd(&vol, "rel")).contains("symlink"));
        assert!(refused(&hd(&vol, "../host")).contains("not plain"));
        assert!(matches!(open_host_dir(&hd(&vol, "missing")), Opened::Gone));
        open(&hd(&vol, "a"));
        // A source replaced since create (another mount of the host tree let a container swap it).
        let mut d = hd(&vol, "a");
        d.identity = identity(&host);
        assert!(refused(&d).contains("replaced"));
    }

    #[test]
    fn the_prefix_dir_is_removed_without_following_symlinks_fifos_or_leaving_the_tree() {
        let t = tempfile::tempdir().unwrap();
        let (rt, host) = (t.path().join("rt"), t.path().join("host"));
        std::fs::create_dir_all(rt.join("p/sub/deeper")).unwrap();
        std::fs::create_dir_all(host.join("keep")).unwrap();
        std::fs::write(host.join("keep/canary"), "x").unwrap();
        std::fs::write(rt.join("p/config"), "cfg").unwrap();
        symlink(&host, rt.join("p/to-host")).unwrap();
        symlink(host.join("keep"), rt.join("p/sub/deeper/to-keep")).unwrap();
        mkfifo(&rt.join("p/sub/fifo"));
        std::fs::create_dir(rt.join("other")).unwrap();
        let d = open(&hd(&rt, ""));
        assert_eq!(remove_beneath(d.as_fd(), "p", &rt.join("p"), BOUNDS), Ok(true));
        assert!(!rt.join("p").exists());
        assert!(host.join("keep/canary").exists() && rt.join("other").exists());
        assert_eq!(
            remove_beneath(d.as_fd(), "p", &rt.join("p"), BOUNDS),
            Ok(false),
            "gone is fine"
        );
        // The prefix itself a symlink to a host dir: the link goes, the dir stays.
        symlink(&host, rt.join("p")).unwrap();
        assert_eq!(remove_beneath(d.as_fd(), "p", &rt.join("p"), BOUNDS), Ok(true));
        assert!(host.join("keep/canary").exists());
    }

    #[test]
    fn the_walk_stops_at_its_bounds() {
        let t = tempfile::tempdir().unwrap();
        let mut deep = t.path().join("p");
        for _ in 0..10 {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        let d = open(&hd(t.path(), ""));
        let shallow = Bounds { depth: 5, ..BOUNDS };
        assert_eq!(
            remove_beneath(d.as_fd(), "p", &t.path().join("p"), shallow),
            Err(WalkError::TooDeep(5))
        );
        assert!(t.path().join("p").exists(), "nothing above the bound was removed");
        std::fs::create_dir(t.path().join("wide")).unwrap();
        for i in 0..50 {
            std::fs::write(t.path().join(format!("wide/{i}")), "").unwrap();
        }
        let few = Bounds { entries: 20, ..BOUNDS };
        assert_eq!(
            remove_beneath(d.as_fd(), "wide", &t.path().join("wide"), few),
            Err(WalkError::TooManyEntries(20))
        );
        assert_eq!(
            std::fs::read_dir(t.path().join("wide")).unwrap().count(),
            50,
            "stopped while listing, before removing"
        );
        let no_time = Bounds { time: Duration::ZERO, ..BOUNDS };
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(
            remove_beneath(d.as_fd(), "wide", &t.path().join("wide"), no_time),
            Err(WalkError::TooSlow(Duration::ZERO))
        );
        assert_eq!(remove_beneath(d.as_fd(), "p", &t.path().join("p"), BOUNDS), Ok(true));
        assert_eq!(remove_beneath(d.as_fd(), "wide", &t.path().join("wide"), BOUNDS), Ok(true));
    }

    #[test]
    fn the_walk_never_enters_another_mount() {
        // /proc is another filesystem than the temp dir: a directory there stands in for a
        // mount inside the tree (the walk compares st_dev).
        let d = rustix::fs::open(
            "/proc/self",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        let t = tempfile::tempdir().unwrap();
        let td = open(&hd(t.path(), ""));
        let mut w = Walk::new(BOUNDS, rustix::fs::fstat(&td).unwrap().st_dev);
        assert!(matches!(
            remove_entry(&mut w, d.as_fd(), c"fd", Path::new("/proc/self/fd"), 0),
            Err(WalkError::OtherMount(_))
        ));
    }

    #[test]
    fn only_a_regular_file_is_opened_and_a_fifo_never_blocks() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("config"), "x").unwrap();
        mkfifo(&t.path().join("fifo"));
        symlink(t.path().join("config"), t.path().join("link")).unwrap();
        let d = open(&hd(t.path(), ""));
        assert!(open_regular(d.as_fd(), c"config").is_some());
        let start = Instant::now();
        assert!(open_regular(d.as_fd(), c"fifo").is_none());
        assert!(open_regular(d.as_fd(), c"link").is_none());
        assert!(open_regular(d.as_fd(), c"missing").is_none());
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn a_locked_config_marks_a_live_primary_and_an_unlocked_one_does_not() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(t.path().join("rte")).unwrap();
        std::fs::create_dir_all(t.path().join("fifo")).unwrap();
        std::fs::create_dir_all(t.path().join("link")).unwrap();
        std::fs::write(t.path().join("rte/config"), vec![0u8; 4096]).unwrap();
        mkfifo(&t.path().join("fifo/config"));
        let d = open(&hd(t.path(), ""));
        assert_eq!(primary_lock(d.as_fd(), "rte"), None, "nobody holds it");
        assert_eq!(
            primary_lock(d.as_fd(), "fifo"),
            None,
            "a FIFO is not opened (and not a primary)"
        );
        assert_eq!(primary_lock(d.as_fd(), "missing"), None);
        // A DPDK primary's lock is fcntl F_SETLK, a write lock on part of the file, held by
        // another process (the integration test runs a real one). An OFD lock on the same range
        // stands in here: it conflicts with every other open file description, ours included.
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(t.path().join("rte/config"))
            .unwrap();
        let fl = libc::flock {
            l_type: libc::F_WRLCK as i16,
            l_whence: libc::SEEK_SET as i16,
            l_start: 136,
            l_len: 1000,
            l_pid: 0,
        };
        nix::fcntl::fcntl(f.as_raw_fd(), nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)).unwrap();
        assert!(primary_lock(d.as_fd(), "rte").is_some());
        drop(f);
        assert_eq!(primary_lock(d.as_fd(), "rte"), None, "released with its holder");
    }

    #[test]
    fn an_old_record_is_still_torn_down_but_never_through_a_symlink() {
        let t = tempfile::tempdir().unwrap();
        let (vol, host) = (t.path().join("vol"), t.path().join("host"));
        std::fs::create_dir_all(vol.join("rt/app1/sub")).unwrap();
        std::fs::create_dir_all(host.join("victim/sub")).unwrap();
        symlink(&host, vol.join("link")).unwrap();
        let old = |rt: PathBuf, prefix: &str| PrefixCleanup {
            prefix: prefix.into(),
            hugetlbfs_dirs: vec![vol.clone()],
            runtime_dir: Some(rt),
            hugetlbfs: vec![],
            runtime: None,
        };
        undo("c", &old(vol.join("rt"), "app1"), false).unwrap();
        assert!(!vol.join("rt/app1").exists(), "an old record's prefix dir is still removed");
        undo("c", &old(vol.join("link"), "victim"), false).unwrap();
        assert!(host.join("victim/sub").exists(), "but not through a symlink");
        // The new shape: the same.
        let new = PrefixCleanup {
            prefix: "victim".into(),
            hugetlbfs_dirs: vec![],
            runtime_dir: None,
            hugetlbfs: vec![],
            runtime: Some(hd(&vol, "link")),
        };
        undo("c", &new, false).unwrap();
        assert!(host.join("victim/sub").exists());
        std::fs::create_dir_all(vol.join("rt/victim")).unwrap();
        undo("c", &PrefixCleanup { runtime: Some(hd(&vol, "rt")), ..new.clone() }, true).unwrap();
        assert!(vol.join("rt/victim").exists(), "shared with a live container of ours: stays");
        undo("c", &PrefixCleanup { runtime: Some(hd(&vol, "rt")), ..new }, false).unwrap();
        assert!(!vol.join("rt/victim").exists());
    }

    /// A hugetlbfs on a temp dir (root only), unmounted on drop.
    struct TempHugetlbfs(tempfile::TempDir);
    impl TempHugetlbfs {
        fn mount() -> Option<TempHugetlbfs> {
            if !crate::test_has_root("mounting a hugetlbfs") {
                return None;
            }
            let t = tempfile::tempdir().unwrap();
            rustix::mount::mount(
                "nodev",
                t.path(),
                "hugetlbfs",
                rustix::mount::MountFlags::empty(),
                c"pagesize=2M",
            )
            .ok()?;
            Some(TempHugetlbfs(t))
        }
    }
    impl Drop for TempHugetlbfs {
        fn drop(&mut self) {
            let _ = rustix::mount::unmount(self.0.path(), rustix::mount::UnmountFlags::DETACH);
        }
    }

    #[test]
    fn hugetlbfs_cleanup_skips_fifos_spares_locked_files_and_is_bounded() {
        let Some(h) = TempHugetlbfs::mount() else { return };
        let p = h.0.path();
        std::fs::write(p.join("appmap_0"), "").unwrap();
        std::fs::write(p.join("appmap_1"), "").unwrap();
        std::fs::write(p.join("othermap_0"), "").unwrap();
        mkfifo(&p.join("appmap_2"));
        // (hugetlbfs refuses symlinks, EINVAL: open_regular's refusal of them is tested above.)
        let locked = std::fs::File::open(p.join("appmap_1")).unwrap();
        rustix::fs::flock(&locked, rustix::fs::FlockOperation::NonBlockingLockShared).unwrap();
        let start = Instant::now();
        let c = clean_hugetlbfs_dir(&hd(p, ""), "app", BOUNDS).unwrap();
        assert!(start.elapsed() < Duration::from_secs(2), "the FIFO was not waited on");
        assert_eq!((c.files, c.skipped), (1, 1), "{c:?}");
        assert!(!p.join("appmap_0").exists());
        assert!(p.join("appmap_1").exists(), "a locked file stays");
        assert!(p.join("appmap_2").exists() && p.join("othermap_0").exists());
        drop(locked);
        // A huge directory: the scan stops at the bound and removes nothing past it.
        for i in 0..30 {
            std::fs::write(p.join(format!("z{i}")), "").unwrap();
        }
        let c = clean_hugetlbfs_dir(&hd(p, ""), "app", Bounds { entries: 10, ..BOUNDS }).unwrap();
        assert!(c.files <= 1, "{c:?}");
    }
}
