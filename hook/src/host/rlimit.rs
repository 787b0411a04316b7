//! Owns process resource limits on the node: reading and raising another process's limits
//! (`prlimit`), and what this process may grant (`CAP_SYS_RESOURCE`, `fs.nr_open`).

use std::io;

/// A resource limit the product manages.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub enum Resource {
    Memlock,
    Nofile,
}

impl Resource {
    pub const ALL: [Resource; 2] = [Resource::Memlock, Resource::Nofile];

    /// The OCI spelling (`process.rlimits[].type`).
    pub fn oci_name(self) -> &'static str {
        match self {
            Resource::Memlock => "RLIMIT_MEMLOCK",
            Resource::Nofile => "RLIMIT_NOFILE",
        }
    }

    fn raw(self) -> libc::__rlimit_resource_t {
        match self {
            Resource::Memlock => libc::RLIMIT_MEMLOCK,
            Resource::Nofile => libc::RLIMIT_NOFILE,
        }
    }
}

/// `RLIM_INFINITY`, as the OCI spec and the kernel spell "unlimited".
pub const UNLIMITED: u64 = u64::MAX;

/// A soft/hard pair. `UNLIMITED` is infinity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limit {
    pub soft: u64,
    pub hard: u64,
}

/// Renders a limit value the way `ulimit` does.
pub fn show(v: u64) -> String {
    if v == UNLIMITED {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// The limit of `pid` (0: this process).
pub fn get(pid: i32, r: Resource) -> io::Result<Limit> {
    let mut old = libc::rlimit64 { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit64 with a null new limit only writes `old`.
    let rc = unsafe { libc::prlimit64(pid, r.raw(), std::ptr::null(), &mut old) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Limit { soft: old.rlim_cur, hard: old.rlim_max })
}

/// Sets the limit of `pid`. Raising a hard limit needs `CAP_SYS_RESOURCE` (EPERM otherwise).
pub fn set(pid: i32, r: Resource, l: Limit) -> io::Result<()> {
    let new = libc::rlimit64 { rlim_cur: l.soft, rlim_max: l.hard };
    // SAFETY: prlimit64 reads `new` and writes nothing when old is null.
    let rc = unsafe { libc::prlimit64(pid, r.raw(), &new, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What this process (and so the runtime it execs, and the container init that inherits from
/// it) can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Grantable {
    /// `CAP_SYS_RESOURCE` in the effective set: hard limits may be raised.
    pub cap_sys_resource: bool,
    /// `fs.nr_open`: no RLIMIT_NOFILE may exceed it, whatever the capabilities.
    pub nr_open: u64,
}

impl Grantable {
    /// The highest hard limit a process whose hard limit is `current_hard` can be given.
    pub fn max_hard(&self, r: Resource, current_hard: u64) -> u64 {
        let ceiling = match r {
            Resource::Nofile => self.nr_open,
            Resource::Memlock => UNLIMITED,
        };
        if self.cap_sys_resource {
            ceiling
        } else {
            current_hard.min(ceiling)
        }
    }
}

pub fn grantable() -> Grantable {
    Grantable { cap_sys_resource: has_cap_sys_resource(), nr_open: nr_open() }
}

fn nr_open() -> u64 {
    super::read_kernel_file("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

const CAP_SYS_RESOURCE: u32 = 24;

fn has_cap_sys_resource() -> bool {
    super::read_kernel_file("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .is_some_and(|caps| caps & (1u64 << CAP_SYS_RESOURCE) != 0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_limits_read_and_lowering_the_soft_limit_works() {
        let l = get(0, Resource::Nofile).unwrap();
        assert!(l.soft <= l.hard);
        // Lowering needs no privilege; put it back after.
        let pid = std::process::id() as i32;
        set(pid, Resource::Nofile, Limit { soft: l.soft.min(64), hard: l.hard }).unwrap();
        assert_eq!(get(pid, Resource::Nofile).unwrap().soft, l.soft.min(64));
        set(pid, Resource::Nofile, l).unwrap();
    }

    #[test]
    fn cap_eff_parses_and_grantable_caps_by_nr_open() {
        assert_eq!(parse_cap_eff("Name:\tx\nCapEff:\t000001ffffffffff\n"), Some(0x1ff_ffff_ffff));
        let g = Grantable { cap_sys_resource: false, nr_open: 1 << 20 };
        assert_eq!(g.max_hard(Resource::Memlock, 8 << 20), 8 << 20);
        let g = Grantable { cap_sys_resource: true, nr_open: 1 << 20 };
        assert_eq!(g.max_hard(Resource::Memlock, 8 << 20), UNLIMITED);
        assert_eq!(g.max_hard(Resource::Nofile, UNLIMITED), 1 << 20);
    }
}
