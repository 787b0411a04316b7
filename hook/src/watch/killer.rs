//! Owns killing a GPU container: its whole cgroup in the memory hierarchy, and nothing else.
//!
//! - v2: `cgroup.kill` (5.14+) SIGKILLs the subtree atomically, forks included; we then wait for
//!   `cgroup.events` to say `populated 0`.
//! - v1 (and v2 without `cgroup.kill`): SIGKILL every process listed in `cgroup.procs` of the
//!   cgroup and its descendants, repeated until none is left (a process forked between two reads
//!   is caught by the next round; a killed process forks no more). Each pid is opened as a pidfd
//!   and its cgroup re-read before the signal, so a pid that exited and was reused by a process
//!   outside the container in between is never signalled.
//!
//! Never a host process, never a non-GPU container: the target is the memory cgroup the hook
//! recorded for the container at create, and only while the live init is still in it (or below
//! it) — an init that moved its cgroup (into a neighbour's, a host service's, a parent) or a pid
//! that now names another process is refused, not followed. The target must also be strictly
//! below the hierarchy's root, not hold this daemon, and not hold any other container the
//! ledger knows. Records from before the cgroup was recorded fall back to the init's current
//! cgroup under the same checks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

use crate::host::cgroup::{Hierarchy, Version};
use crate::host::proc::{self, ProcessId};
use crate::watch::inventory::GpuContainer;

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("container {id} is already gone")]
    Gone { id: String },
    #[error("refusing to kill container {id}: {why}")]
    Unsafe { id: String, why: String },
    #[error("cannot kill container {id}: {what}: {source}")]
    Io { id: String, what: String, source: std::io::Error },
    #[error("container {id}: {left} processes still in {dir} after {secs}s of SIGKILL")]
    Timeout { id: String, dir: PathBuf, left: usize, secs: u64 },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Killed {
    pub cgroup: PathBuf,
    pub method: &'static str,
    /// Processes signalled (v1; 0 with cgroup.kill, which does not tell).
    pub signalled: usize,
    pub rounds: u32,
    pub elapsed: Duration,
}

/// The cgroup to kill (as `/proc/<pid>/cgroup` names it) for an init now in `current`, given
/// the cgroup `recorded` at create (pure): the recorded one, if the init is still in it or in a
/// cgroup below it; an error saying why not otherwise. Without a record: `current`.
pub fn kill_scope<'a>(recorded: Option<&'a Path>, current: &'a Path) -> Result<&'a Path, String> {
    match recorded {
        None => Ok(current),
        Some(r) if current.starts_with(r) => Ok(r),
        Some(r) => Err(format!(
            "its init is in cgroup {}, not in the cgroup {} recorded at create (it moved, or the pid is another process now); nothing was killed",
            current.display(),
            r.display()
        )),
    }
}

/// Why `dir` must not be killed, if it must not (pure).
pub fn refuse_reason(
    mount: &Path,
    dir: &Path,
    own: Option<&Path>,
    others: &[PathBuf],
) -> Option<String> {
    if !dir.starts_with(mount) || dir == mount {
        return Some(format!("{} is not a cgroup below {}", dir.display(), mount.display()));
    }
    if let Some(own) = own {
        if own.starts_with(dir) {
            return Some(format!("{} holds this watchdog", dir.display()));
        }
    }
    if let Some(o) = others.iter().find(|o| o.starts_with(dir)) {
        return Some(format!(
            "{} also holds another container (cgroup {})",
            dir.display(),
            o.display()
        ));
    }
    None
}

pub struct Killer {
    h: Hierarchy,
    own: Option<PathBuf>,
    pub timeout: Duration,
}

impl Killer {
    pub fn new(h: Hierarchy) -> Killer {
        let own = Self::dir_in(&h, std::process::id() as i32);
        Killer { h, own, timeout: Duration::from_secs(5) }
    }

    pub fn hierarchy(&self) -> &Hierarchy {
        &self.h
    }

    fn dir_in(h: &Hierarchy, pid: i32) -> Option<PathBuf> {
        h.dir_of(&Self::path_in(h, pid)?)
    }

    /// The memory cgroup of `pid` as `/proc/<pid>/cgroup` names it.
    fn path_in(h: &Hierarchy, pid: i32) -> Option<PathBuf> {
        let lines = proc::cgroups(pid).ok()?;
        Some(h.line(&lines, "memory")?.path.clone())
    }

    /// The cgroup of `pid` in the memory hierarchy.
    pub fn dir_of(&self, pid: i32) -> Option<PathBuf> {
        Self::dir_in(&self.h, pid)
    }

    /// Resolves and checks the victim's cgroup (its init must be alive: identity by start time).
    pub fn target(
        &self,
        victim: &GpuContainer,
        others: &[ProcessId],
    ) -> Result<PathBuf, KillError> {
        let id = &victim.id;
        if !victim.init.is_alive() {
            return Err(KillError::Gone { id: id.clone() });
        }
        let current = Self::path_in(&self.h, victim.init.pid)
            .ok_or_else(|| KillError::Gone { id: id.clone() })?;
        // The pid could have been reused between the liveness check and the cgroup read.
        if !victim.init.is_alive() {
            return Err(KillError::Gone { id: id.clone() });
        }
        let scope = kill_scope(victim.cgroup.as_deref(), &current)
            .map_err(|why| KillError::Unsafe { id: id.clone(), why })?;
        let dir = self.h.dir_of(scope).ok_or_else(|| KillError::Unsafe {
            id: id.clone(),
            why: format!(
                "its cgroup {} is not in the memory hierarchy mounted at {}",
                scope.display(),
                self.h.mount.display()
            ),
        })?;
        let other_dirs: Vec<PathBuf> = others
            .iter()
            .filter(|o| o.pid != victim.init.pid && o.is_alive())
            .filter_map(|o| self.dir_of(o.pid))
            .collect();
        match refuse_reason(&self.h.mount, &dir, self.own.as_deref(), &other_dirs) {
            Some(why) => Err(KillError::Unsafe { id: id.clone(), why }),
            None => Ok(dir),
        }
    }

    /// Kills the victim's whole cgroup and waits until it is empty.
    pub fn kill(&self, victim: &GpuContainer, others: &[ProcessId]) -> Result<Killed, KillError> {
        let dir = self.target(victim, others)?;
        let id = &victim.id;
        let start = Instant::now();
        let io = |what: String| move |source| KillError::Io { id: id.clone(), what, source };
        if self.h.version == Version::V2 && dir.join("cgroup.kill").exists() {
            std::fs::write(dir.join("cgroup.kill"), "1")
                .map_err(io(format!("write {}/cgroup.kill", dir.display())))?;
            let mut rounds = 0;
            while populated(&dir) {
                rounds += 1;
                if start.elapsed() > self.timeout {
                    let left = procs_below(&dir).len();
                    return Err(KillError::Timeout {
                        id: id.clone(),
                        dir,
                        left,
                        secs: self.timeout.as_secs(),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            return Ok(Killed {
                cgroup: dir,
                method: "cgroup.kill",
                signalled: 0,
                rounds,
                elapsed: start.elapsed(),
            });
        }
        let mut signalled = std::collections::BTreeSet::new();
        let mut rounds = 0;
        loop {
            let pids = procs_below(&dir);
            if pids.is_empty() {
                break;
            }
            if rounds > 0 && start.elapsed() > self.timeout {
                return Err(KillError::Timeout {
                    id: id.clone(),
                    dir,
                    left: pids.len(),
                    secs: self.timeout.as_secs(),
                });
            }
            for pid in pids {
                if self.sigkill_if_member(pid, &dir) {
                    signalled.insert(pid);
                }
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(Killed {
            cgroup: dir,
            method: "SIGKILL to every process",
            signalled: signalled.len(),
            rounds,
            elapsed: start.elapsed(),
        })
    }

    /// SIGKILLs `pid` through a pidfd if, once pinned, it is still inside `dir`.
    fn sigkill_if_member(&self, pid: i32, dir: &Path) -> bool {
        let Some(p) = Pid::from_raw(pid) else { return false };
        let Ok(fd) = pidfd_open(p, PidfdFlags::empty()) else { return false };
        match self.dir_of(pid) {
            Some(d) if d.starts_with(dir) => pidfd_send_signal(&fd, Signal::KILL).is_ok(),
            _ => false,
        }
    }
}

/// v2: whether the subtree still has processes (`cgroup.events`); v1 has no such file.
fn populated(dir: &Path) -> bool {
    match crate::host::read_kernel_file(dir.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l == "populated 1"),
        Err(_) => !procs_below(dir).is_empty(),
    }
}

/// Processes in `dir` and every cgroup below it (a gone cgroup has none).
pub fn procs_below(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(s) = crate::host::read_kernel_file(d.join("cgroup.procs")) {
            out.extend(s.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(&d) {
            stack.extend(
                rd.flatten()
                    .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
                    .map(|e| e.path()),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_the_root_the_watchdog_or_another_container() {
        let m = Path::new("/sys/fs/cgroup/memory");
        let c = Path::new("/sys/fs/cgroup/memory/kubepods/pod1/c1");
        assert_eq!(refuse_reason(m, c, Some(Path::new("/sys/fs/cgroup/memory/system")), &[]), None);
        assert!(refuse_reason(m, m, None, &[]).unwrap().contains("not a cgroup below"));
        assert!(refuse_reason(m, Path::new("/sys/fs/cgroup/cpu/x"), None, &[]).is_some());
        let pod = Path::new("/sys/fs/cgroup/memory/kubepods/pod1");
        assert!(refuse_reason(m, pod, Some(&pod.join("watch")), &[]).unwrap().contains("watchdog"));
        let other = vec![pod.join("c2")];
        assert!(refuse_reason(m, pod, None, &other).unwrap().contains("another container"));
        assert_eq!(refuse_reason(m, c, None, &other), None, "a sibling is not inside the victim");
    }

    #[test]
    fn only_the_cgroup_recorded_at_create_is_killed() {
        let rec = Path::new("/kubepods/pod1/c1");
        assert_eq!(kill_scope(Some(rec), rec), Ok(rec));
        assert_eq!(
            kill_scope(Some(rec), Path::new("/kubepods/pod1/c1/nested")),
            Ok(rec),
            "a cgroup below its own: still the container's"
        );
        for moved in [
            "/kubepods/pod2/c9",
            "/kubepods/pod1",
            "/",
            "/system.slice/sshd.service",
            "/kubepods/pod1/c10",
        ] {
            let e = kill_scope(Some(rec), Path::new(moved)).unwrap_err();
            assert!(
                e.contains(moved)
                    && e.contains("recorded at create")
                    && e.contains("nothing was killed"),
                "{moved}: {e}"
            );
        }
        assert_eq!(
            kill_scope(None, Path::new("/x")),
            Ok(Path::new("/x")),
            "old records: the current cgroup, under refuse_reason"
        );
    }

    #[test]
    fn processes_are_found_in_nested_cgroups() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.procs"), "10\n11\n").unwrap();
        std::fs::create_dir(t.path().join("sub")).unwrap();
        std::fs::write(t.path().join("sub/cgroup.procs"), "12\n").unwrap();
        let mut p = procs_below(t.path());
        p.sort();
        assert_eq!(p, vec![10, 11, 12]);
        assert!(procs_below(&t.path().join("gone")).is_empty());
    }
}
