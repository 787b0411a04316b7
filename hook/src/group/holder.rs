//! Owns the DPDK group holder: a small process that is PID 1 of the group's PID namespace and
//! lives in a private mount namespace where the group's hugetlbfs (with its kernel
//! reservation) and runtime dir are mounted. Members join its PID namespace (through their
//! spec) and get clones of its mounts; when it is killed the kernel releases everything.
//!
//! It is detached: own session, stdio on /dev/null, no other inherited fds (containerd's shim
//! waits on inherited fds), and moved to the root cgroup of every hierarchy (no container's).

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

/// Subdirectory of the group dir holding the hugetlbfs of `size`.
pub fn hugetlbfs_dir(group_dir: &Path, size: PageSize) -> PathBuf {
    group_dir.join(size.sysfs_dir())
}
pub fn runtime_dir(group_dir: &Path) -> PathBuf {
    group_dir.join("dpdk")
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

/// Starts a holder for `group_dir` with these hugetlbfs sizes; returns its identity (host pid).
pub fn spawn(hook_bin: &Path, group_dir: &Path, hugepages: &[(PageSize, Bytes)], reserve: bool) -> Result<ProcessId, HolderError> {
    let mut cmd = Command::new(hook_bin);
    cmd.arg(SUBCOMMAND).arg(group_dir);
    for (size, bytes) in hugepages {
        cmd.arg(format!("{}={}", size.name(), bytes.0));
    }
    if reserve {
        cmd.arg("--reserve");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).env_clear().current_dir("/");
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid().map(|_| ()).map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(|e| HolderError::Spawn(format!("{}: {e}", hook_bin.display())))?;
    let mut out = String::new();
    let _ = child.stdout.take().expect("piped").read_to_string(&mut out);
    let _ = child.wait();
    let line = out.lines().next().unwrap_or("");
    if let Some(pid) = line.strip_prefix("ok ") {
        let pid: i32 = pid.trim().parse().map_err(|_| HolderError::Failed(format!("bad reply {line:?}")))?;
        return ProcessId::of(pid).ok_or_else(|| HolderError::Failed("it exited right after starting".into()));
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
    Err(HolderError::Failed(line.strip_prefix("err ").unwrap_or(if line.is_empty() { "no reply" } else { line }).to_string()))
}

/// The holder's main: `__group-holder DIR [2Mi=BYTES] [1Gi=BYTES] [--reserve]`. Replies on
/// stdout with `ok <pid>`, `nomem <size> <pages>` or `err <message>`, then detaches.
pub fn main(args: &[String]) -> ! {
    let mut out = std::io::stdout();
    let reply = |out: &mut std::io::Stdout, msg: String| {
        let _ = out.write_all(format!("{msg}\n").as_bytes());
        let _ = out.flush();
    };
    match setup(args) {
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
            move_to_root_cgroups(child.as_raw());
            reply(&mut out, format!("ok {}", child.as_raw()));
            std::process::exit(0)
        }
        Ok(ForkResult::Child) => {
            // PID 1 of the group's PID namespace: drop stdout, reap whatever is reparented here.
            if let Ok(null) = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null") {
                let _ = nix::unistd::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1);
            }
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

fn setup(args: &[String]) -> Result<(), SetupError> {
    let other = |m: String| SetupError::Other(m);
    // No inherited fds beyond stdio.
    // SAFETY: closing fds we do not use.
    unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) };
    let dir = PathBuf::from(args.first().ok_or_else(|| other("no group dir".into()))?);
    let reserve = args.iter().any(|a| a == "--reserve");
    let mut sizes = Vec::new();
    for a in args.iter().skip(1).filter(|a| *a != "--reserve") {
        let (s, b) = a.split_once('=').ok_or_else(|| other(format!("bad argument {a:?}")))?;
        let size = match s {
            "2Mi" => PageSize::Size2Mi,
            "1Gi" => PageSize::Size1Gi,
            _ => return Err(other(format!("bad page size {s:?}"))),
        };
        let bytes: u64 = b.parse().map_err(|_| other(format!("bad size {b:?}")))?;
        sizes.push((size, bytes));
    }
    nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWPID).map_err(|e| other(format!("unshare: {e}")))?;
    nix::mount::mount(None::<&str>, "/", None::<&str>, nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| other(format!("make / private: {e}")))?;
    // A tmpfs over the group dir, in this namespace only: the host's dir stays empty.
    let top = Detached::tmpfs(1 << 20, "0700").map_err(|e| other(e.to_string()))?;
    top.mkdir_all(Path::new("dpdk")).map_err(|e| other(e.to_string()))?;
    for (size, _) in &sizes {
        top.mkdir_all(Path::new(&size.sysfs_dir())).map_err(|e| other(e.to_string()))?;
    }
    attach_at(&top, &dir).map_err(|e| other(e.to_string()))?;
    // The shared runtime dir must be writable by the members.
    let dpdk = Detached::tmpfs(16 << 20, "0755").map_err(|e| other(e.to_string()))?;
    attach_at(&dpdk, &runtime_dir(&dir)).map_err(|e| other(e.to_string()))?;
    for (size, bytes) in sizes {
        let fs = match Detached::hugetlbfs(size, bytes, reserve) {
            Ok(fs) => fs,
            Err(MountError::NoReservation { size, pages }) => return Err(SetupError::NoMem(size, pages)),
            Err(e) => return Err(other(e.to_string())),
        };
        attach_at(&fs, &hugetlbfs_dir(&dir, size)).map_err(|e| other(e.to_string()))?;
    }
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
    let Ok(mi) = std::fs::read_to_string("/proc/self/mountinfo") else { return };
    for mp in root_cgroup_mount_points(&mi) {
        let _ = std::fs::write(Path::new(mp).join("cgroup.procs"), pid.to_string());
    }
}

/// The mount points (as mountinfo writes them) of the cgroup hierarchies mounted at their root.
pub fn root_cgroup_mount_points(mountinfo: &str) -> Vec<&str> {
    let mut out = Vec::new();
    for l in mountinfo.lines() {
        let Some((pre, post)) = l.split_once(" - ") else { continue };
        let fstype = post.split(' ').next().unwrap_or("");
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let f: Vec<&str> = pre.split(' ').collect();
        if f.get(3) != Some(&"/") {
            continue;
        }
        if let Some(mp) = f.get(4) {
            out.push(*mp);
        }
    }
    out
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
            let ts = rustix::event::Timespec { tv_sec: timeout.as_secs() as i64, tv_nsec: timeout.subsec_nanos() as i64 };
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
