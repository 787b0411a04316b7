//! Helpers for the core, gc and safety tests: bounded creates, container cleanup on failure,
//! hand-mounted hugetlbfs (the controls), host mount tables, processes and cgroups, and feeding
//! the hook a state JSON by hand.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::{Runner, TestBundle};

/// `create` bounded by `timeout`: None when it hung (the runtime is killed then).
pub fn create_with_timeout(
    r: &Runner,
    b: &TestBundle,
    id: &str,
    timeout: Duration,
) -> Option<Output> {
    let out = std::fs::File::create(b.path().join("stdout.log")).unwrap();
    let err = std::fs::File::create(b.path().join("stderr.log")).unwrap();
    let mut c = r.command();
    c.args(["create", "--bundle"]).arg(b.path()).arg(id);
    let mut child = c.stdin(Stdio::null()).stdout(out).stderr(err).spawn().unwrap();
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let stderr = std::fs::read(b.path().join("stderr.log")).unwrap_or_default();
            return Some(Output { status, stdout: vec![], stderr });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Deletes (`delete --force`) every container it was told about when dropped, so a failing
/// test does not leave containers (and their reservations) behind.
pub struct Reaper<'a> {
    runner: &'a Runner,
    ids: Mutex<Vec<String>>,
}

impl<'a> Reaper<'a> {
    pub fn new(runner: &'a Runner) -> Reaper<'a> {
        Reaper { runner, ids: Mutex::new(vec![]) }
    }
    pub fn add(&self, id: &str) {
        self.ids.lock().unwrap().push(id.to_string());
    }
    /// Deletes `id` now and forgets it; returns the delete's output.
    pub fn delete(&self, id: &str) -> Output {
        self.ids.lock().unwrap().retain(|x| x != id);
        let o = self.runner.delete(id);
        remove_runc_cgroups(id);
        o
    }
}

impl Drop for Reaper<'_> {
    fn drop(&mut self) {
        for id in self.ids.lock().unwrap().drain(..) {
            let _ = self.runner.delete(&id);
            remove_runc_cgroups(&id);
        }
    }
}

/// runc 1.1.5 `delete --force` gives up removing a container's cgroups after ~300ms of EBUSY
/// (a testpmd still unmapping its hugepages), logs "Failed to remove paths" and exits 0; its
/// poststop hooks still run. Remove what it left (runc's default cgroup path is `/<id>`).
pub fn remove_runc_cgroups(id: &str) {
    let dirs: Vec<PathBuf> = host_mounts()
        .into_iter()
        .filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2")
        .map(|m| PathBuf::from(m.mount_point).join(id))
        .filter(|d| d.exists())
        .collect();
    crate::wait_for(Duration::from_secs(10), || {
        dirs.iter().all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
    });
}

/// A hugetlbfs mounted by hand on the host (the controls: what a node without the product has).
/// Unmounted on drop.
pub struct HostHugetlbfs {
    pub dir: tempfile::TempDir,
}

impl HostHugetlbfs {
    /// `options` as for `mount -o` (e.g. `pagesize=2M,min_size=128M`).
    pub fn mount(options: &str) -> HostHugetlbfs {
        let dir = tempfile::Builder::new().prefix("dph-hostfs-").tempdir().unwrap();
        let o = Command::new("mount")
            .args(["-t", "hugetlbfs", "-o", options, "nodev"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "mount hugetlbfs -o {options}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        HostHugetlbfs { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// Names of the files in it.
    pub fn files(&self) -> Vec<String> {
        list_dir(self.path())
    }
}

impl Drop for HostHugetlbfs {
    fn drop(&mut self) {
        // Lazily when a container still has it open, so the temp dir never stays a mount point.
        let ok = Command::new("umount").arg(self.dir.path()).status().is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
        }
    }
}

/// Sorted names in a directory (empty when it does not exist).
pub fn list_dir(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every path below `p` (relative, sorted), with symlinks listed but not followed.
pub fn walk(p: &Path) -> Vec<String> {
    fn go(base: &Path, d: &Path, out: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let path = e.path();
            out.push(path.strip_prefix(base).unwrap().display().to_string());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                go(base, &path, out);
            }
        }
    }
    let mut out = vec![];
    go(p, p, &mut out);
    out.sort();
    out
}

/// One line of a mountinfo file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub id: u64,
    pub mount_point: String,
    pub fstype: String,
    pub source: String,
    pub super_options: String,
}

pub fn mountinfo(pid: &str) -> Vec<MountEntry> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            Some(MountEntry {
                id: pre.first()?.parse().ok()?,
                mount_point: pre.get(4)?.to_string(),
                fstype: post.next()?.to_string(),
                source: post.next()?.to_string(),
                super_options: post.next().unwrap_or("").to_string(),
            })
        })
        .collect()
}

/// The host's mount table (this test process is in the host's mount namespace).
pub fn host_mounts() -> Vec<MountEntry> {
    mountinfo("self")
}

/// Mounts in `after` that were not in `before` (by mount id).
pub fn new_mounts(before: &[MountEntry], after: &[MountEntry]) -> Vec<MountEntry> {
    after.iter().filter(|m| !before.iter().any(|b| b.id == m.id)).cloned().collect()
}

/// Pids of the direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_string()
}

/// The host directory of a process's cgroup on the unified (v2) mount, read from
/// /proc/<pid>/cgroup's `0::` line and /proc/self/mountinfo.
pub fn unified_cgroup_dir(pid: i32) -> PathBuf {
    let mount = host_mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .expect("a cgroup2 mount on the host")
        .mount_point;
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let path =
        text.lines().find_map(|l| l.strip_prefix("0::")).expect("a 0:: line in /proc/<pid>/cgroup");
    PathBuf::from(mount).join(path.trim_start_matches('/'))
}

/// A process's hugetlb cgroup and its 2Mi limit files, wherever hugetlb lives on this host:
/// a v1 hierarchy (`hugetlb.2MB.limit_in_bytes`), else the v2 one (`hugetlb.2MB.max`) — on a
/// hybrid host like the dev machine, the unified mount.
pub struct HugetlbCgroup {
    pub dir: PathBuf,
    pub max: &'static str,
    pub rsvd: &'static str,
}

impl HugetlbCgroup {
    pub fn of(pid: i32) -> HugetlbCgroup {
        let v1 = host_mounts()
            .into_iter()
            .find(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "hugetlb"));
        match v1 {
            Some(m) => {
                let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
                let path = text
                    .lines()
                    .find_map(|l| {
                        let mut p = l.splitn(3, ':');
                        let (_, c, path) = (p.next()?, p.next()?, p.next()?);
                        c.split(',').any(|c| c == "hugetlb").then_some(path)
                    })
                    .expect("a hugetlb line in /proc/<pid>/cgroup");
                HugetlbCgroup {
                    dir: PathBuf::from(m.mount_point).join(path.trim_start_matches('/')),
                    max: "hugetlb.2MB.limit_in_bytes",
                    rsvd: "hugetlb.2MB.rsvd.limit_in_bytes",
                }
            }
            None => HugetlbCgroup {
                dir: unified_cgroup_dir(pid),
                max: "hugetlb.2MB.max",
                rsvd: "hugetlb.2MB.rsvd.max",
            },
        }
    }
    pub fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap_or_default().trim().to_string()
    }
}

/// A hugetlb limit value meaning "no limit" (v2 `max`, v1 the page-rounded i64 max).
pub fn unlimited(v: &str) -> bool {
    v == "max" || v.parse::<u64>().map(|n| n >= 1 << 62).unwrap_or(false)
}

/// Hugetlb lives only on a unified mount that is not /sys/fs/cgroup (hybrid host): runc and
/// crun cannot apply the spec's `hugepageLimits` there.
pub fn hybrid_hugetlb() -> bool {
    let m = host_mounts();
    !m.iter().any(|m| m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "hugetlb"))
        && m.iter().any(|m| m.fstype == "cgroup2" && m.mount_point != "/sys/fs/cgroup")
}

/// Every cgroup directory of a process on the host (v1 hierarchies and the unified one).
pub fn cgroup_dirs(pid: i32) -> Vec<PathBuf> {
    let mounts = host_mounts();
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = vec![];
    for l in text.lines() {
        let mut p = l.splitn(3, ':');
        let (Some(_), Some(ctrls), Some(path)) = (p.next(), p.next(), p.next()) else { continue };
        let m = if ctrls.is_empty() {
            mounts.iter().find(|m| m.fstype == "cgroup2")
        } else {
            mounts.iter().find(|m| {
                m.fstype == "cgroup"
                    && ctrls.split(',').all(|c| m.super_options.split(',').any(|o| o == c))
            })
        };
        if let Some(m) = m {
            out.push(PathBuf::from(&m.mount_point).join(path.trim_start_matches('/')));
        }
    }
    out
}

/// The OCI state JSON a runtime hands a hook on stdin.
pub fn state_json(id: &str, pid: Option<i32>, bundle: &Path, status: &str) -> String {
    let mut v = serde_json::json!({"ociVersion": "1.0.2", "id": id, "status": status, "bundle": bundle.display().to_string()});
    if let Some(p) = pid {
        v["pid"] = serde_json::json!(p);
    }
    v.to_string()
}

/// Runs `dataplane-hook --config C STAGE` with `stdin` as its input.
pub fn hook_with_stdin(env: &crate::ProductEnv, stage: &str, stdin: &str) -> Output {
    let mut c = Command::new(crate::hook_bin());
    c.arg("--config").arg(&env.config).arg(stage);
    let mut child =
        c.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    // The hook may fail (bad config) before it reads its stdin: a broken pipe is not an error.
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// The product's one-line error from a runtime's stderr (runc wraps a hook's stderr in its own
/// message): the text from `dataplane-hook:` to the end of that line, with runc's quoting of the
/// hook output (a trailing `"` or `\n`) trimmed.
pub fn product_error(stderr: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(stderr);
    let start = s.find("dataplane-hook: ")?;
    let rest = &s[start..];
    let end = [rest.find('\n'), rest.find("\\n")].into_iter().flatten().min().unwrap_or(rest.len());
    Some(rest[..end].trim_end_matches(['"', ' ']).to_string())
}

/// Asserts stderr is exactly one line (the product's own binaries, not wrapped by runc).
pub fn assert_one_line(what: &str, stderr: &[u8]) -> String {
    let s = String::from_utf8_lossy(stderr).to_string();
    let t = s.strip_suffix('\n').unwrap_or(&s);
    assert!(
        !t.is_empty() && !t.contains('\n'),
        "{what}: stderr must be exactly one line, got {s:?}"
    );
    assert!(
        t.starts_with("dataplane-hook: "),
        "{what}: stderr must start with `dataplane-hook: `: {s:?}"
    );
    assert_spec_form(what, t);
    t.to_string()
}

/// Sends `sig` to a host pid.
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: plain kill(2).
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig}): {}", std::io::Error::last_os_error());
}

/// Waits until `pid` is gone from the process table (or the timeout passed). A zombie is not
/// gone: it still holds its pid and is what a holder or init looks like in the instant before
/// its parent (the host's init, a shim) reaps it; a test that accepts it has not seen the
/// process go. (A pid that is this test's own child must be waited for by the test.)
pub fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    crate::wait_for(timeout, || !Path::new(&format!("/proc/{pid}")).exists())
}

/// Whether `pid` is a zombie now (dead, not yet reaped).
pub fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, r)| r.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The SPEC's form of an error: `dataplane-hook: <what could not be done>: <why> (<what to do>)`
/// — the advice closes the line.
pub fn assert_spec_form(what: &str, msg: &str) {
    assert!(
        msg.starts_with("dataplane-hook: ") && msg.ends_with(')') && msg.contains(" ("),
        "{what}: error must read `dataplane-hook: <what>: <why> (<what to do>)`: {msg:?}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness's "gone" must not accept a zombie: a holder or init that exited but was not
    /// reaped still holds its pid. A child of this test, not yet waited for, is such a zombie.
    #[test]
    fn wait_pid_gone_counts_a_zombie_as_alive_until_it_is_reaped() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        assert!(
            crate::wait_for(Duration::from_secs(5), || is_zombie(pid)),
            "precondition: the exited child is a zombie"
        );
        assert!(!wait_pid_gone(pid, Duration::from_millis(300)), "a zombie counted as gone");
        child.wait().unwrap();
        assert!(wait_pid_gone(pid, Duration::from_secs(5)), "reaped, yet not gone");
    }
}
