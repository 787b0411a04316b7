//! Owns mounts: new filesystems as detached mounts (hugetlbfs with a kernel reservation, small
//! tmpfs views), and attaching them inside a container's mount namespace at a path resolved
//! without leaving the container's root filesystem (G8).
//!
//! Nothing here mounts on the host: a detached mount (`fsmount`/`open_tree(OPEN_TREE_CLONE)`)
//! belongs to no namespace until `move_mount` attaches it, and we only attach after joining the
//! container's mount namespace (in a helper thread with its own fs_struct, so the hook's main
//! thread never leaves the host's).
//! A private mount then lives exactly as long as the container's mount namespace: when the
//! container dies, the kernel drops the hugetlbfs and its `min_size` reservation with it, leaked
//! `*map_*` files included.

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use rustix::mount::{
    fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree, FsMountFlags,
    FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use crate::request::{ContainerPath, PageSize};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    /// The kernel could not reserve the pages (hugetlbfs `min_size` failed with ENOMEM).
    #[error("the kernel refused to reserve {pages} pages of {size}")]
    NoReservation { size: PageSize, pages: u64 },
    #[error("{what}: {errno}")]
    Sys { what: String, errno: Errno },
    #[error("container path {path} cannot be used: {why}")]
    Target { path: String, why: String },
    /// The helper thread that joins the container's namespace panicked.
    #[error("{0}")]
    Child(String),
}

/// The error for a failed syscall; `what` becomes a String only on failure (most are literals).
fn sys<W: Into<String>>(what: W) -> impl FnOnce(Errno) -> MountError {
    move |errno| MountError::Sys { what: what.into(), errno }
}

/// A mount that is not attached anywhere yet.
#[derive(Debug)]
pub struct Detached(OwnedFd);

impl Detached {
    /// A hugetlbfs of `bytes` for `size` pages. With `reserve`, `min_size` makes the kernel
    /// reserve every page now (visible in `HugePages_Rsvd`) or fail.
    pub fn hugetlbfs(size: PageSize, bytes: u64, reserve: bool) -> Result<Detached, MountError> {
        let fs =
            fsopen("hugetlbfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(sys("fsopen(hugetlbfs)"))?;
        let pagesize = format!("{}", size.bytes());
        fsconfig_set_string(&fs, "pagesize", pagesize.as_str())
            .map_err(sys("hugetlbfs pagesize"))?;
        fsconfig_set_string(&fs, "size", bytes.to_string().as_str())
            .map_err(sys("hugetlbfs size"))?;
        if reserve {
            fsconfig_set_string(&fs, "min_size", bytes.to_string().as_str())
                .map_err(sys("hugetlbfs min_size"))?;
        }
        fsconfig_set_string(&fs, "mode", "1777").map_err(sys("hugetlbfs mode"))?;
        match fsconfig_create(&fs) {
            Ok(()) => {}
            Err(Errno::NOMEM) => {
                return Err(MountError::NoReservation { size, pages: bytes / size.bytes() })
            }
            Err(e) => return Err(sys("create hugetlbfs")(e)),
        }
        let m = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .map_err(sys("fsmount(hugetlbfs)"))?;
        Ok(Detached(m))
    }

    /// A small tmpfs, to hold a private directory or view files.
    pub fn tmpfs(size_bytes: u64, mode: &str) -> Result<Detached, MountError> {
        let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(sys("fsopen(tmpfs)"))?;
        fsconfig_set_string(&fs, "size", size_bytes.to_string().as_str())
            .map_err(sys("tmpfs size"))?;
        fsconfig_set_string(&fs, "mode", mode).map_err(sys("tmpfs mode"))?;
        fsconfig_create(&fs).map_err(sys("create tmpfs"))?;
        let m = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )
        .map_err(sys("fsmount(tmpfs)"))?;
        Ok(Detached(m))
    }

    /// A detached clone of an existing mount (or a subtree of it) at `path` below `dir`.
    pub fn clone_of(dir: BorrowedFd<'_>, path: &Path) -> Result<Detached, MountError> {
        let flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
        let fd = if path.as_os_str().is_empty() {
            open_tree(dir, "", flags | OpenTreeFlags::AT_EMPTY_PATH)
        } else {
            open_tree(dir, path, flags | OpenTreeFlags::AT_SYMLINK_NOFOLLOW)
        }
        .map_err(sys(format!("open_tree({})", path.display())))?;
        Ok(Detached(fd))
    }

    /// A detached clone of the subdirectory `rel` of this mount.
    pub fn subtree(&self, rel: &Path) -> Result<Detached, MountError> {
        Detached::clone_of(self.0.as_fd(), rel)
    }

    /// Creates `rel` (and parents) inside this mount.
    pub fn mkdir_all(&self, rel: &Path) -> Result<(), MountError> {
        let mut cur = PathBuf::new();
        for c in rel.components() {
            let Component::Normal(n) = c else { continue };
            cur.push(n);
            match rustix::fs::mkdirat(&self.0, &cur, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(sys(format!("mkdir {}", cur.display()))(e)),
            }
        }
        Ok(())
    }

    /// Writes a small file at `rel` inside this mount (we just created the fs: no symlinks).
    pub fn write_file(&self, rel: &Path, content: &str) -> Result<(), MountError> {
        let fd = rustix::fs::openat(
            &self.0,
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o444),
        )
        .map_err(|e| sys(format!("create {}", rel.display()))(e))?;
        let mut f = std::fs::File::from(fd);
        f.write_all(content.as_bytes()).map_err(|e| {
            sys(format!("write {}", rel.display()))(Errno::from_io_error(&e).unwrap_or(Errno::IO))
        })
    }

    pub fn set_readonly(&self) -> Result<(), MountError> {
        mount_setattr_rdonly(self.0.as_fd()).map_err(sys("mount_setattr(ro)"))
    }

    /// The device number of the filesystem, for matching it in mountinfo later.
    pub fn dev(&self) -> Result<u64, MountError> {
        rustix::fs::fstat(&self.0).map(|s| s.st_dev).map_err(sys("fstat mount"))
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr_rdonly(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    let attr =
        MountAttr { attr_set: libc::MOUNT_ATTR_RDONLY, attr_clr: 0, propagation: 0, userns_fd: 0 };
    let empty = c"";
    // SAFETY: valid fd, NUL-terminated empty path, attr lives across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO),
        ))
    }
}

/// What to do when the target path does not exist in the container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// mkdir -p inside the rootfs.
    Create,
    /// Leave this attachment out (e.g. a sysfs directory the container does not have).
    Skip,
}

/// Where an attachment's mount comes from.
#[derive(Debug)]
pub enum Source {
    /// A mount we hold already (new filesystem or clone).
    Detached(Detached),
    /// A clone of the mount at `path` inside the root of process `pid` (a DPDK group's holder,
    /// whose root is a tmpfs of its own): cloned after joining that process's mount namespace,
    /// then attached in the container's.
    InNamespace { pid: i32, path: PathBuf },
}

#[derive(Debug)]
pub struct Attachment {
    pub source: Source,
    pub target: ContainerPath,
    pub missing: Missing,
}

/// Attaches each mount at its target inside the container whose init is `pid`, resolving every
/// target inside `rootfs` (the host path of the container's root) without leaving it.
/// Returns the targets actually attached.
///
/// The namespace switching happens in a short-lived helper thread, never in the calling one: the
/// thread first unshares its fs_struct (root and cwd; the kernel refuses `setns(CLONE_NEWNS)` to a
/// thread that shares it), so joining other mount namespaces moves only that thread, and its
/// namespace, root and cwd go with it when it ends. A thread instead of a forked child: no page
/// tables to copy and no copy-on-write faults in the hook afterwards.
pub fn attach_in_container(
    pid: i32,
    rootfs: &Path,
    attachments: Vec<Attachment>,
) -> Result<Vec<ContainerPath>, MountError> {
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let ns = rustix::fs::open(ns_path.as_str(), OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())
        .map_err(sys(format!("open {ns_path}")))?;
    // The calling thread's namespace (/proc/self would be the thread-group leader's).
    let ours = rustix::fs::stat("/proc/thread-self/ns/mnt")
        .map_err(sys("stat /proc/thread-self/ns/mnt"))?;
    let theirs = rustix::fs::fstat(&ns).map_err(sys(format!("stat {ns_path}")))?;
    if (ours.st_dev, ours.st_ino) == (theirs.st_dev, theirs.st_ino) {
        return Err(MountError::Target {
            path: "/".into(),
            why: "the container shares the host's mount namespace, so a mount there would land on the host".into(),
        });
    }
    let rootfs_stat =
        rustix::fs::stat(rootfs).map_err(sys(format!("stat {}", rootfs.display())))?;
    // The host's peer groups, read here: the helper thread leaves the host's namespace.
    let host_groups =
        HostPeers::of(&super::read_kernel_file("/proc/thread-self/mountinfo").map_err(|e| {
            sys("read /proc/thread-self/mountinfo")(Errno::from_io_error(&e).unwrap_or(Errno::IO))
        })?);
    // What the helper needs of the host's /proc, opened now: the holder's root has no /proc.
    let proc = rustix::fs::open(
        "/proc",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys("open /proc"))?;
    let mut sources = Vec::with_capacity(attachments.len());
    for a in attachments {
        let source = match a.source {
            Source::Detached(d) => Prepared::Ready(d),
            Source::InNamespace { pid: other, path } => {
                let open = |what: &str, flags: OFlags| {
                    rustix::fs::openat(
                        &proc,
                        format!("{other}/{what}").as_str(),
                        flags | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(sys(format!("open /proc/{other}/{what}")))
                };
                Prepared::Clone {
                    ns: open("ns/mnt", OFlags::RDONLY)?,
                    root: open("root", OFlags::PATH | OFlags::DIRECTORY)?,
                    path,
                }
            }
        };
        sources.push((source, a.target, a.missing));
    }
    let rootfs = rootfs.to_path_buf();
    let helper = std::thread::Builder::new()
        .name("mount-helper".into())
        .spawn(move || {
            // SAFETY: only CLONE_FS (root, cwd, umask), never the fd table: this thread's fds stay
            // the process's.
            unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
                .map_err(sys("unshare(CLONE_FS)"))?;
            helper_attach(
                &ns,
                &proc,
                pid,
                &rootfs,
                (rootfs_stat.st_dev, rootfs_stat.st_ino),
                &host_groups,
                sources,
            )
        })
        .map_err(|e| {
            sys("start the mount helper")(Errno::from_io_error(&e).unwrap_or(Errno::AGAIN))
        })?;
    // A panic in the helper (already reported on stderr by the panic hook) is a failed attach.
    helper
        .join()
        .unwrap_or_else(|_| Err(MountError::Child("the mount helper thread panicked".into())))
}

/// An attachment's mount, or what the helper needs to clone it.
enum Prepared {
    Ready(Detached),
    /// The process's mount namespace and root (opened from the host), and the path inside it.
    Clone {
        ns: OwnedFd,
        root: OwnedFd,
        path: PathBuf,
    },
}

fn helper_attach(
    ns: &OwnedFd,
    proc: &OwnedFd,
    pid: i32,
    rootfs: &Path,
    rootfs_id: (u64, u64),
    host: &HostPeers,
    sources: Vec<(Prepared, ContainerPath, Missing)>,
) -> Result<Vec<ContainerPath>, MountError> {
    // Clone what comes from other namespaces first (one namespace at a time), then join the
    // container's.
    let mut mounts = Vec::with_capacity(sources.len());
    for (source, target, missing) in sources {
        let m = match source {
            Prepared::Ready(d) => d,
            Prepared::Clone { ns: other_ns, root, path } => {
                rustix::thread::move_into_link_name_space(
                    other_ns.as_fd(),
                    Some(rustix::thread::LinkNameSpaceType::Mount),
                )
                .map_err(sys("setns(mount namespace of the group holder)"))?;
                // Inside that process's root (the fd pins it; once in its namespace the clone
                // is allowed), never following a symlink.
                let rel = path.strip_prefix("/").unwrap_or(&path);
                let at = crate::host::openat2(
                    &root,
                    rel,
                    OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_SYMLINKS,
                )
                .map_err(sys(format!("open {} in the group holder", path.display())))?;
                Detached::clone_of(at.as_fd(), Path::new(""))?
            }
        };
        mounts.push((m, target, missing));
    }
    rustix::thread::move_into_link_name_space(
        ns.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    )
    .map_err(sys("setns(mount namespace)"))?;
    // Before pivot_root (runc, crun: createRuntime) the rootfs is at its host path in the
    // container's namespace; after it, it is the init's root.
    let proc_root = format!("{pid}/root");
    let init_root = rustix::fs::openat(
        proc,
        proc_root.as_str(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(sys(format!("open /proc/{proc_root}")))?;
    let st = rustix::fs::fstat(&init_root).map_err(sys("stat container root"))?;
    let root = if (st.st_dev, st.st_ino) == rootfs_id {
        init_root
    } else {
        let rel = rootfs.strip_prefix("/").unwrap_or(rootfs);
        crate::host::openat2(
            &init_root,
            rel,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(sys(format!("open rootfs {}", rootfs.display())))?
    };
    let mut theirs = ContainerMounts { proc, pid, table: None };
    let mut done = Vec::new();
    for (mount, target_path, missing) in mounts {
        // Checked before creating anything (the missing directories would be on the mount
        // the deepest existing one is on) and again on the resolved target.
        if let Some(existing) = deepest_existing(&root, &target_path) {
            theirs.refuse_if_shared_with_host(&existing, &target_path, host)?;
        }
        let Some(target) = resolve_target(&root, &target_path, missing)? else { continue };
        theirs.refuse_if_shared_with_host(&target, &target_path, host)?;
        move_mount(
            mount.fd(),
            "",
            &target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| sys(format!("mount on {target_path}"))(e))?;
        done.push(target_path);
    }
    Ok(done)
}

/// The peer groups the host's mounts are in (`shared:N`) or receive from (`master:N`): a mount
/// made on a mount in one of them propagates into the host's mount table.
#[derive(Debug, Default)]
struct HostPeers(std::collections::BTreeSet<u64>);

impl HostPeers {
    fn of(mountinfo: &str) -> HostPeers {
        HostPeers(
            mountinfo
                .lines()
                .flat_map(|l| {
                    let p = propagation(l);
                    p.shared.into_iter().chain(p.master)
                })
                .collect(),
        )
    }
}

/// A mountinfo line's mount id and the propagation in its optional fields.
#[derive(Debug, Default, PartialEq, Eq)]
struct Propagation {
    id: u64,
    shared: Option<u64>,
    master: Option<u64>,
}

fn propagation(line: &str) -> Propagation {
    super::mountinfo::Mount::parse(line)
        .map(|m| Propagation { id: m.id, shared: m.shared, master: m.master })
        .unwrap_or_default()
}

/// Peer groups that receive what is mounted in peer group `group`: itself, and (transitively)
/// the groups of the mounts in `table` that are slaves of one of them.
fn receivers(group: u64, table: &[Propagation]) -> std::collections::BTreeSet<u64> {
    let mut set = std::collections::BTreeSet::from([group]);
    loop {
        let more: Vec<u64> = table
            .iter()
            .filter(|m| m.master.is_some_and(|g| set.contains(&g)))
            .filter_map(|m| m.shared)
            .filter(|g| !set.contains(g))
            .collect();
        if more.is_empty() {
            return set;
        }
        set.extend(more);
    }
}

/// The container's mount table, read through the host's /proc when first needed (and again
/// when a mount is not in it yet).
struct ContainerMounts<'a> {
    proc: &'a OwnedFd,
    pid: i32,
    table: Option<Vec<Propagation>>,
}

impl ContainerMounts<'_> {
    fn read(&self) -> Result<Vec<Propagation>, MountError> {
        let fd = rustix::fs::openat(
            self.proc,
            format!("{}/mountinfo", self.pid).as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(sys(format!("open /proc/{}/mountinfo", self.pid)))?;
        let text = super::read_kernel_fd(fd).map_err(|e| {
            sys(format!("read /proc/{}/mountinfo", self.pid))(
                Errno::from_io_error(&e).unwrap_or(Errno::IO),
            )
        })?;
        Ok(text.lines().map(propagation).collect())
    }

    /// Refuses `target_path` when the mount `fd` lies on is in a peer group whose mounts
    /// propagate to the host: a mount made there would appear on the host.
    fn refuse_if_shared_with_host(
        &mut self,
        fd: &OwnedFd,
        target_path: &ContainerPath,
        host: &HostPeers,
    ) -> Result<(), MountError> {
        if host.0.is_empty() {
            // Nothing on the host receives propagation: no mount anywhere can reach it.
            return Ok(());
        }
        let bad = |why: String| MountError::Target { path: target_path.to_string(), why };
        let mnt_id = mount_id(fd, self.proc)
            .map_err(|e| bad(format!("cannot find the mount it is on: {e}")))?;
        let find = |t: &Vec<Propagation>| t.iter().position(|m| m.id == mnt_id);
        let table = match self.table.take() {
            Some(t) if find(&t).is_some() => t,
            _ => self.read()?,
        };
        let Some(i) = find(&table) else {
            self.table = Some(table);
            return Err(bad(format!("its mount {mnt_id} is not in the container's mount table")));
        };
        tracing::debug!(target = %target_path, mnt_id, mount = ?table[i], host_groups = ?host.0, "propagation of the target's mount");
        let result = match table[i].shared {
            Some(group) => match receivers(group, &table).into_iter().find(|g| host.0.contains(g)) {
                Some(g) => Err(bad(format!(
                    "it is on a mount shared with the host (peer group {g}), so a mount there propagates to the host; choose a path outside mounts with shared or bidirectional propagation"
                ))),
                None => Ok(()),
            },
            None => Ok(()),
        };
        self.table = Some(table);
        result
    }
}

/// The id of the mount `fd` is on (statx STATX_MNT_ID, else the fd's fdinfo).
fn mount_id(fd: &OwnedFd, proc: &OwnedFd) -> Result<u64, Errno> {
    use rustix::fs::{AtFlags, StatxFlags};
    if let Ok(st) = rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
        if st.stx_mask & StatxFlags::MNT_ID.bits() != 0 {
            return Ok(st.stx_mnt_id);
        }
    }
    let info = rustix::fs::openat(
        proc,
        format!("thread-self/fdinfo/{}", fd.as_raw_fd()).as_str(),
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let text =
        super::read_kernel_fd(info).map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    text.lines()
        .find_map(|l| l.strip_prefix("mnt_id:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or(Errno::NOENT)
}

/// The deepest directory of `target` (or `target` itself) that exists inside `root`.
fn deepest_existing(root: &OwnedFd, target: &ContainerPath) -> Option<OwnedFd> {
    let mut best = open_in_root(root, Path::new(".")).ok()?;
    let mut prefix = PathBuf::new();
    for c in target.relative().components() {
        let Component::Normal(n) = c else { continue };
        prefix.push(n);
        match open_in_root(root, &prefix) {
            Ok(fd) => best = fd,
            Err(_) => break,
        }
    }
    Some(best)
}

fn resolve_flags() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn open_in_root(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, Errno> {
    crate::host::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve_flags(),
    )
}

/// Opens `target` inside `root` (as an `O_PATH` directory fd), creating missing directories
/// when asked. Symlinks are followed as the container would see them, but never out of
/// `root`; `/proc` magic links are refused.
pub fn resolve_target(
    root: &OwnedFd,
    target: &ContainerPath,
    missing: Missing,
) -> Result<Option<OwnedFd>, MountError> {
    let rel = target.relative();
    let bad = |why: String| MountError::Target { path: target.to_string(), why };
    match open_in_root(root, rel) {
        Ok(fd) => return Ok(Some(fd)),
        Err(Errno::NOENT) if missing == Missing::Skip => return Ok(None),
        Err(Errno::NOENT) => {}
        Err(Errno::NOTDIR) => return Err(bad("it is not a directory".into())),
        Err(Errno::LOOP) | Err(Errno::XDEV) => {
            return Err(bad("it resolves through a /proc magic link or a symlink loop".into()))
        }
        Err(e) => return Err(bad(format!("cannot open it: {e}"))),
    }
    // mkdir -p, one component at a time, each parent re-resolved inside the root.
    let mut prefix = PathBuf::new();
    for c in rel.components() {
        let Component::Normal(name) = c else { continue };
        let parent = if prefix.as_os_str().is_empty() {
            open_in_root(root, Path::new("."))
        } else {
            open_in_root(root, &prefix)
        }
        .map_err(|e| bad(format!("cannot open {}: {e}", prefix.display())))?;
        prefix.push(name);
        match open_in_root(root, &prefix) {
            Ok(_) => continue,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(bad(format!("cannot open {}: {e}", prefix.display()))),
        }
        match rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            // A dangling symlink: we do not create its target for the image.
            Err(Errno::EXIST) => {
                return Err(bad(format!(
                    "/{} is a dangling symlink or not a directory",
                    prefix.display()
                )))
            }
            Err(e) => return Err(bad(format!("cannot create /{}: {e}", prefix.display()))),
        }
    }
    open_in_root(root, rel)
        .map(Some)
        .map_err(|e| bad(format!("cannot open it after creating it: {e}")))
}

/// `st_dev` of the mounts of a process's mount namespace with the given fs type.
pub fn mounts_of_type(pid: i32, fstype: &str) -> Vec<(PathBuf, String)> {
    let Ok(text) = super::read_kernel_file(format!("/proc/{pid}/mountinfo")) else { return vec![] };
    parse_mounts_of_type(&text, fstype)
}

/// [`mounts_of_type`] on a mountinfo text: (mount point, decoded; super options).
pub fn parse_mounts_of_type(text: &str, fstype: &str) -> Vec<(PathBuf, String)> {
    super::mountinfo::parse(text)
        .filter(|m| m.fstype == fstype)
        .map(|m| (m.mount_point, m.super_options))
        .collect()
}

#[cfg(test)]
mod tests {
    //! [`resolve_target`] against hostile trees in a temp dir (openat2 needs no privilege).
    use super::*;

    struct Tree {
        _t: tempfile::TempDir,
        root: PathBuf,
        /// A directory outside the root, mirrored at the same absolute path inside it.
        outside: PathBuf,
    }

    fn tree() -> Tree {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("rootfs");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(outside.join("dpdk")).unwrap();
        std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::fs::write(root.join("file"), "x").unwrap();
        Tree { _t: t, root, outside }
    }

    fn root_fd(t: &Tree) -> OwnedFd {
        rustix::fs::open(&t.root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
            .unwrap()
    }

    fn link(t: &Tree, at: &str, to: impl AsRef<Path>) {
        std::os::unix::fs::symlink(to, t.root.join(at)).unwrap();
    }

    fn target(p: &str) -> ContainerPath {
        ContainerPath::parse(p).unwrap()
    }

    fn err(t: &Tree, p: &str) -> String {
        resolve_target(&root_fd(t), &target(p), Missing::Create).unwrap_err().to_string()
    }

    #[test]
    fn missing_dirs_are_created_inside_the_root_or_skipped() {
        let t = tree();
        assert!(resolve_target(&root_fd(&t), &target("/var/run/dpdk"), Missing::Skip)
            .unwrap()
            .is_none());
        assert!(!t.root.join("var/run").exists(), "Skip creates nothing");
        assert!(resolve_target(&root_fd(&t), &target("/var/run/dpdk"), Missing::Create)
            .unwrap()
            .is_some());
        assert!(t.root.join("var/run/dpdk").is_dir());
    }

    #[test]
    fn absolute_and_dot_dot_links_stay_inside_the_root() {
        for to in [
            t_abs as fn(&Tree) -> PathBuf,
            |t| PathBuf::from(format!("/../../../..{}", t.outside.display())),
            |t| PathBuf::from(format!("../../../../../../../../..{}", t.outside.display())),
        ] {
            let t = tree();
            link(&t, "var/run", to(&t));
            let fd = resolve_target(&root_fd(&t), &target("/var/run/dpdk/sub"), Missing::Create)
                .unwrap();
            assert!(fd.is_some());
            let inside = t.root.join(t.outside.strip_prefix("/").unwrap());
            assert!(inside.join("dpdk/sub").is_dir(), "created inside the root");
            assert!(!t.outside.join("dpdk/sub").exists(), "nothing created outside the root");
        }
    }

    fn t_abs(t: &Tree) -> PathBuf {
        t.outside.clone()
    }

    #[test]
    fn dangling_links_files_and_loops_are_refused() {
        let t = tree();
        link(&t, "var/run", "/nowhere/run");
        let e = err(&t, "/var/run/dpdk");
        assert!(e.contains("/var/run/dpdk") && e.contains("dangling symlink"), "{e}");
        assert!(
            !Path::new("/nowhere").exists() && !t.root.join("nowhere").exists(),
            "a dangling link's target is not created"
        );

        let t = tree();
        link(&t, "var/run", "/file");
        assert!(err(&t, "/var/run").contains("not a directory"));
        assert!(err(&t, "/var/run/dpdk").contains("not a directory"));

        let t = tree();
        link(&t, "var/run", "run");
        assert!(err(&t, "/var/run/dpdk").contains("loop"), "{}", err(&t, "/var/run/dpdk"));
    }

    #[test]
    fn proc_magic_links_are_refused() {
        // A root that has a procfs: the host's own root (nothing is created: the paths exist).
        let root = rustix::fs::open(
            "/",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap();
        for p in ["/proc/self/root/tmp", "/proc/self/cwd", "/proc/thread-self/root"] {
            let e = resolve_target(&root, &target(p), Missing::Skip).unwrap_err().to_string();
            assert!(e.contains("magic link"), "{p}: {e}");
        }
    }

    /// A process in a mount namespace of its own (`unshare --mount`), standing in for a
    /// container's init; killed on drop.
    struct OtherNamespace(std::process::Child);

    impl OtherNamespace {
        fn start() -> OtherNamespace {
            let child = std::process::Command::new("unshare")
                .args(["--mount", "--propagation", "private", "sleep", "60"])
                .spawn()
                .expect("unshare(1) from util-linux");
            let o = OtherNamespace(child);
            let ours = id_of("/proc/thread-self/ns/mnt");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while id_of(&format!("/proc/{}/ns/mnt", o.pid())) == ours {
                assert!(
                    std::time::Instant::now() < deadline,
                    "unshare --mount did not take effect"
                );
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            o
        }

        fn pid(&self) -> i32 {
            self.0.id() as i32
        }
    }

    impl Drop for OtherNamespace {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// (st_dev, st_ino) of what `path` names: a namespace, a root, a cwd.
    fn id_of(path: &str) -> (u64, u64) {
        let st = rustix::fs::stat(path).unwrap();
        (st.st_dev, st.st_ino)
    }

    /// The helper thread joins the other namespace (it must unshare its fs_struct first: the
    /// kernel refuses setns(CLONE_NEWNS) to a thread that shares it, as every thread of this
    /// test binary does) and mounts there; the calling thread keeps its namespace, root and cwd,
    /// and sees no new mount.
    #[test]
    fn attach_joins_the_namespace_in_a_helper_thread_and_the_caller_stays_put() {
        if !crate::test_has_root("joining a mount namespace") {
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let rootfs = t.path().join("rootfs");
        std::fs::create_dir(&rootfs).unwrap();
        let other = OtherNamespace::start();
        let before = (
            id_of("/proc/thread-self/ns/mnt"),
            id_of("/proc/thread-self/root"),
            id_of("/proc/thread-self/cwd"),
        );

        let mount = Detached::tmpfs(1 << 20, "0755").unwrap();
        let att = Attachment {
            source: Source::Detached(mount),
            target: target("/mnt/x"),
            missing: Missing::Create,
        };
        let done = attach_in_container(other.pid(), &rootfs, vec![att]).unwrap();
        assert_eq!(done, vec![target("/mnt/x")]);

        let after = (
            id_of("/proc/thread-self/ns/mnt"),
            id_of("/proc/thread-self/root"),
            id_of("/proc/thread-self/cwd"),
        );
        assert_eq!(
            before, after,
            "the calling thread's mount namespace, root and cwd are unchanged"
        );
        let mounted_at = rootfs.join("mnt/x");
        let theirs = mounts_of_type(other.pid(), "tmpfs");
        assert!(
            theirs.iter().any(|(mp, _)| *mp == mounted_at),
            "mounted in the other namespace: {theirs:?}"
        );
        let ours = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
        assert!(!ours.contains(&*mounted_at.to_string_lossy()), "nothing mounted in ours:\n{ours}");
        assert!(rootfs.join("mnt/x").is_dir(), "the target was created inside the rootfs");
    }

    #[test]
    fn peer_groups_that_reach_the_host_are_found_through_slaves() {
        let host = HostPeers::of(
            "27 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw\n\
             80 27 0:50 / /tmp/x rw shared:7 - tmpfs t rw\n\
             81 27 0:51 / /tmp/y rw master:9 - tmpfs t rw\n\
             82 27 0:52 / /tmp/z rw - tmpfs t rw\n",
        );
        assert_eq!(host.0, [1, 7, 9].into_iter().collect());
        let line = "300 200 0:50 / /rootfs/mnt/host rw,relatime shared:12 master:7 - tmpfs t rw";
        assert_eq!(propagation(line), Propagation { id: 300, shared: Some(12), master: Some(7) });
        // Group 4 (the target's) is received by 5 (its slaves' peers), whose slaves in 9 are on the host.
        let table = vec![
            Propagation { id: 1, shared: Some(4), master: None },
            Propagation { id: 2, shared: Some(5), master: Some(4) },
            Propagation { id: 3, shared: Some(9), master: Some(5) },
            Propagation { id: 4, shared: Some(6), master: None },
        ];
        assert_eq!(receivers(4, &table), [4, 5, 9].into_iter().collect());
        assert_eq!(receivers(6, &table), [6].into_iter().collect());
    }

    #[test]
    fn a_container_in_the_callers_namespace_is_refused() {
        let e = attach_in_container(std::process::id() as i32, Path::new("/"), vec![])
            .unwrap_err()
            .to_string();
        assert!(e.contains("shares the host's mount namespace"), "{e}");
    }
}
