//! Owns the DPDK group holder: a small process that is PID 1 of the group's PID namespace and
//! lives in a mount namespace of its own whose root is a small read-only tmpfs holding only the
//! group's hugetlbfs (with its kernel reservation) and runtime dir. Members join its PID
//! namespace (through their spec) and get clones of its mounts; when it is killed the kernel
//! releases everything.
//!
//! Members see it as their `/proc/1`, so it is confined (G8): it pivots into its own root and
//! detaches the host's, has its own network, IPC and UTS namespaces, runs as uid/gid 65534 with
//! no capabilities in any set (bounding and ambient included), no_new_privs, not dumpable, no
//! environment, no open files and a command line that names nothing of the host. Its
//! parameters come on stdin. A member with CAP_SYS_PTRACE can still look into it and finds
//! nothing but the group's own mounts.
//!
//! It is detached: own session, no inherited fds (containerd's shim waits on inherited fds),
//! and the hook moves it to the root cgroup of every hierarchy (no container's).

use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::sched::CloneFlags;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult};

use crate::host::mount::{Detached, MountError};
use crate::host::proc::ProcessId;
use crate::request::{Bytes, PageSize};

/// Hidden subcommand name.
pub const SUBCOMMAND: &str = "__group-holder";
/// The holder's uid and gid: the overflow ids, owning nothing on the host.
pub const HOLDER_ID: u32 = 65534;

/// Where the hugetlbfs of `size` is, inside the holder's root.
pub fn hugetlbfs_dir(size: PageSize) -> PathBuf {
    Path::new("/").join(size.sysfs_dir())
}
/// Where the group's runtime dir is, inside the holder's root.
pub fn runtime_dir() -> PathBuf {
    PathBuf::from("/dpdk")
}

#[derive(Debug, thiserror::Error)]
pub enum HolderError {
    #[error("cannot start the group holder: {0}")]
    Spawn(String),
    #[error("the kernel refused to reserve {pages} pages of {size}")]
    NoReservation { size: PageSize, pages: u64 },
    #[error("the group holder failed: {0}")]
    Failed(String),
}

/// Starts a holder for `group_dir` (an empty host directory it uses once, as the mount point
/// of its new root) with these hugetlbfs sizes; returns its identity (host pid).
pub fn spawn(
    hook_bin: &Path,
    group_dir: &Path,
    hugepages: &[(PageSize, Bytes)],
    reserve: bool,
) -> Result<ProcessId, HolderError> {
    // Parameters on stdin, one a line: its command line (members read /proc/1/cmdline) then
    // names no host path.
    let mut params = format!("{}\n", group_dir.display());
    for (size, bytes) in hugepages {
        params.push_str(&format!("{}={}\n", size.name(), bytes.0));
    }
    if reserve {
        params.push_str("--reserve\n");
    }
    let mut cmd = Command::new(hook_bin);
    cmd.arg0("dataplane-hook").arg(SUBCOMMAND);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .env_clear()
        .current_dir("/");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from));
    }
    let mut child =
        cmd.spawn().map_err(|e| HolderError::Spawn(format!("{}: {e}", hook_bin.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(params.as_bytes());
    }
    let mut out = String::new();
    let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
    let _ = child.wait();
    let line = out.lines().next().unwrap_or("");
    if let Some(pid) = line.strip_prefix("ok ") {
        let pid: i32 =
            pid.trim().parse().map_err(|_| HolderError::Failed(format!("bad reply {line:?}")))?;
        let id = ProcessId::of(pid)
            .ok_or_else(|| HolderError::Failed("it exited right after starting".into()))?;
        move_to_root_cgroups(pid);
        return Ok(id);
    }
    if let Some(rest) = line.strip_prefix("nomem ") {
        let mut it = rest.split_whitespace();
        let size = match it.next() {
            Some("1Gi") => PageSize::Size1Gi,
            _ => PageSize::Size2Mi,
        };
        let pages = it.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        return Err(HolderError::NoReservation { size, pages });
    }
    Err(HolderError::Failed(
        line.strip_prefix("err ")
            .unwrap_or(if line.is_empty() { "no reply" } else { line })
            .to_string(),
    ))
}

/// The holder's main: `__group-holder`, parameters on stdin (`DIR`, `2Mi=BYTES`, `1Gi=BYTES`,
/// `--reserve`, one a line). Replies on stdout with `ok <pid>`, `nomem <size> <pages>` or
/// `err <message>`, then detaches.
pub fn main(_args: &[String]) -> ! {
    let mut out = std::io::stdout();
    let reply = |out: &mut std::io::Stdout, msg: String| {
        let _ = out.write_all(format!("{msg}\n").as_bytes());
        let _ = out.flush();
    };
    match setup() {
        Ok(()) => {}
        Err(SetupError::NoMem(size, pages)) => {
            reply(&mut out, format!("nomem {} {pages}", size.name()));
            std::process::exit(1)
        }
        Err(SetupError::Other(m)) => {
            reply(&mut out, format!("err {}", m.replace('\n', " ")));
            std::process::exit(1)
        }
    }
    // SAFETY: single-threaded; the child only makes syscalls.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            reply(&mut out, format!("ok {}", child.as_raw()));
            std::process::exit(0)
        }
        Ok(ForkResult::Child) => {
            // PID 1 of the group's PID namespace: no open files at all (stdio included: they
            // are the host's), reap whatever is reparented here.
            // SAFETY: closing every fd; nothing below uses one.
            unsafe { libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32) };
            let mut set = SigSet::empty();
            set.add(Signal::SIGCHLD);
            let _ = set.thread_block();
            loop {
                let _ = set.wait();
                while let Ok(st) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    if st == WaitStatus::StillAlive {
                        break;
                    }
                }
            }
        }
        Err(e) => {
            reply(&mut out, format!("err fork: {e}"));
            std::process::exit(1)
        }
    }
}

enum SetupError {
    NoMem(PageSize, u64),
    Other(String),
}

fn setup() -> Result<(), SetupError> {
    let other = |m: String| SetupError::Other(m);
    // No inherited fds beyond stdio.
    // SAFETY: closing fds we do not use.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let mut input = String::new();
    std::io::stdin()
        .take(4096)
        .read_to_string(&mut input)
        .map_err(|e| other(format!("read parameters: {e}")))?;
    let mut lines = input.lines();
    let dir = PathBuf::from(
        lines.next().filter(|d| d.starts_with('/')).ok_or_else(|| other("no group dir".into()))?,
    );
    let mut reserve = false;
    let mut sizes = Vec::new();
    for a in lines {
        if a == "--reserve" {
            reserve = true;
            continue;
        }
        let (s, b) = a.split_once('=').ok_or_else(|| other(format!("bad parameter {a:?}")))?;
        let size = match s {
            "2Mi" => PageSize::Size2Mi,
            "1Gi" => PageSize::Size1Gi,
            _ => return Err(other(format!("bad page size {s:?}"))),
        };
        let bytes: u64 = b.parse().map_err(|_| other(format!("bad size {b:?}")))?;
        sizes.push((size, bytes));
    }
    let flags = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWPID
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWUTS;
    nix::sched::unshare(flags).map_err(|e| other(format!("unshare: {e}")))?;
    nix::mount::mount(
        None::<&str>,
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| other(format!("make / private: {e}")))?;
    // The new root: a read-only tmpfs with one mount point per group mount, attached over the
    // group dir in this namespace only (the host's dir stays empty).
    let top = Detached::tmpfs(64 << 10, "0755").map_err(|e| other(e.to_string()))?;
    top.mkdir_all(&rel(&runtime_dir())).map_err(|e| other(e.to_string()))?;
    for (size, _) in &sizes {
        top.mkdir_all(&rel(&hugetlbfs_dir(*size))).map_err(|e| other(e.to_string()))?;
    }
    top.set_readonly().map_err(|e| other(e.to_string()))?;
    attach_at(&top, &dir).map_err(|e| other(e.to_string()))?;
    // The shared runtime dir must be writable by the members.
    let dpdk = Detached::tmpfs(16 << 20, "0755").map_err(|e| other(e.to_string()))?;
    attach_at(&dpdk, &dir.join(rel(&runtime_dir()))).map_err(|e| other(e.to_string()))?;
    for (size, bytes) in sizes {
        let fs = match Detached::hugetlbfs(size, bytes, reserve) {
            Ok(fs) => fs,
            Err(MountError::NoReservation { size, pages }) => {
                return Err(SetupError::NoMem(size, pages))
            }
            Err(e) => return Err(other(e.to_string())),
        };
        attach_at(&fs, &dir.join(rel(&hugetlbfs_dir(size)))).map_err(|e| other(e.to_string()))?;
    }
    enter_own_root(&dir).map_err(other)?;
    confine().map_err(other)
}

fn rel(p: &Path) -> PathBuf {
    p.strip_prefix("/").unwrap_or(p).to_path_buf()
}

/// Makes `new_root` this namespace's root and drops the old one (the host's mount tree, copied
/// at unshare) from it, so neither this process nor a member looking through `/proc/1/root`
/// or `/proc/1/mountinfo` can reach a host file or mount.
fn enter_own_root(new_root: &Path) -> Result<(), String> {
    nix::unistd::chdir(new_root).map_err(|e| format!("chdir {}: {e}", new_root.display()))?;
    // pivot_root(".", "."): the old root ends up stacked on the new one, and unmounting "."
    // (lazily: nothing of ours is in use there) takes it away (pivot_root(2), NOTES).
    nix::unistd::pivot_root(".", ".").map_err(|e| format!("pivot_root: {e}"))?;
    nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH)
        .map_err(|e| format!("detach the old root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    Ok(())
}

/// Drops everything a root process has: supplementary groups, uid/gid 0, every capability
/// (bounding and ambient sets too), the ability to regain any (no_new_privs) and to be
/// inspected by an unprivileged process of the same uid (not dumpable).
fn confine() -> Result<(), String> {
    let prctl = |op: libc::c_int, a: libc::c_ulong, what: &str| -> Result<(), String> {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(op, a, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }
            == 0
        {
            Ok(())
        } else {
            Err(format!("{what}: {}", std::io::Error::last_os_error()))
        }
    };
    prctl(libc::PR_SET_NO_NEW_PRIVS, 1, "no_new_privs")?;
    // The bounding set, cap by cap until the kernel says the number is past its last one.
    for cap in 0..64 {
        // SAFETY: as above.
        if unsafe {
            libc::prctl(
                libc::PR_CAPBSET_DROP,
                cap as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            )
        } != 0
        {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && cap > 0 {
                break;
            }
            return Err(format!("drop capability {cap} from the bounding set: {e}"));
        }
    }
    // SAFETY: as above.
    if unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    } != 0
    {
        return Err(format!("clear the ambient capabilities: {}", std::io::Error::last_os_error()));
    }
    nix::unistd::setgroups(&[]).map_err(|e| format!("setgroups: {e}"))?;
    let gid = nix::unistd::Gid::from_raw(HOLDER_ID);
    let uid = nix::unistd::Uid::from_raw(HOLDER_ID);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setresgid: {e}"))?;
    // Leaving uid 0 clears the permitted and effective sets (no SECBIT_KEEP_CAPS).
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setresuid: {e}"))?;
    // The inheritable set survives setuid: clear it (and anything left) with capset.
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header { version: 0x2008_0522, pid: 0 };
    let data = [Data { effective: 0, permitted: 0, inheritable: 0 }; 2];
    // SAFETY: capset(2) with a v3 header and two data words, both live across the call.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } != 0 {
        return Err(format!("capset: {}", std::io::Error::last_os_error()));
    }
    // After the uid change (which resets it to the fs.suid_dumpable default).
    prctl(libc::PR_SET_DUMPABLE, 0, "not dumpable")?;
    Ok(())
}

fn attach_at(m: &Detached, path: &Path) -> Result<(), MountError> {
    rustix::mount::move_mount(
        m.fd(),
        "",
        rustix::fs::CWD,
        path,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|errno| MountError::Sys { what: format!("mount on {}", path.display()), errno })
}

/// Puts `pid` in the root cgroup of every mounted hierarchy, so it is in no container's.
fn move_to_root_cgroups(pid: i32) {
    let Ok(mi) = crate::host::read_kernel_file("/proc/self/mountinfo") else { return };
    for mp in root_cgroup_mount_points(&mi) {
        let _ = std::fs::write(mp.join("cgroup.procs"), pid.to_string());
    }
}

/// The mount points (decoded) of the cgroup hierarchies mounted at their root.
pub fn root_cgroup_mount_points(mountinfo: &str) -> Vec<PathBuf> {
    crate::host::mountinfo::parse(mountinfo)
        .filter(|m| m.is_cgroup() && m.root == Path::new("/"))
        .map(|m| m.mount_point)
        .collect()
}

/// Inode of the calling process's own PID namespace (the host's, for the hook).
pub fn own_pid_ns_inode() -> Option<u64> {
    rustix::fs::stat("/proc/self/ns/pid").ok().map(|s| s.st_ino)
}

/// Inode of a process's PID namespace (`/proc/<pid>/ns/pid`); for a holder, its children's.
pub fn pid_ns_inode(pid: i32, for_children: bool) -> Option<u64> {
    let f = if for_children { "pid_for_children" } else { "pid" };
    rustix::fs::stat(format!("/proc/{pid}/ns/{f}").as_str()).ok().map(|s| s.st_ino)
}

/// Kills a holder and waits (up to `timeout`) until it is gone, so its namespaces and the
/// reservation are released when this returns.
pub fn kill_and_wait(holder: &ProcessId, timeout: std::time::Duration) -> bool {
    if !holder.is_alive() {
        return true;
    }
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(holder.pid).expect("pid > 0"),
        rustix::process::PidfdFlags::empty(),
    )
    .ok();
    // Check identity after taking the pidfd: the pidfd then pins this exact process.
    if !holder.is_alive() {
        return true;
    }
    match &pidfd {
        Some(fd) => {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
            let mut fds = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
            let ts = rustix::event::Timespec {
                tv_sec: timeout.as_secs() as i64,
                tv_nsec: timeout.subsec_nanos() as i64,
            };
            let _ = rustix::event::poll(&mut fds, Some(&ts));
        }
        None => {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(holder.pid), Signal::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + timeout;
    while holder.is_alive() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    !holder.is_alive()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_cgroup_mounts_are_found_at_their_real_paths() {
        let mi = "30 1 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                  31 1 0:27 / /sys/fs/cgroup/my\\040memory rw - cgroup cgroup rw,memory\n\
                  32 1 0:27 /kubepods /mnt/nested rw - cgroup cgroup rw,memory\n\
                  33 1 0:28 / /tmp rw - tmpfs tmpfs rw\n";
        assert_eq!(
            root_cgroup_mount_points(mi),
            [PathBuf::from("/sys/fs/cgroup/unified"), PathBuf::from("/sys/fs/cgroup/my memory")]
        );
    }
}
