//! Owns facts about processes from /proc: identity (pid + start time) for liveness, and
//! cgroup membership.

use std::path::PathBuf;

/// A process's identity that survives pid reuse: pid plus its start time in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
}

impl ProcessId {
    pub fn of(pid: i32) -> Option<ProcessId> {
        start_time(pid).map(|start_time| ProcessId { pid, start_time })
    }

    /// True while this exact process exists (and is not a zombie).
    pub fn is_alive(&self) -> bool {
        match stat_fields(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// `(state, starttime)` from /proc/<pid>/stat.
fn stat_fields(pid: i32) -> Option<(char, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&s)
}

fn parse_stat(s: &str) -> Option<(char, u64)> {
    // comm may contain spaces and parens: fields resume after the last ')'.
    let rest = &s[s.rfind(')')? + 2..];
    let mut it = rest.split(' ');
    let state = it.next()?.chars().next()?;
    // starttime is field 22; after comm we are at field 3.
    let start = it.nth(22 - 4)?.parse().ok()?;
    Some((state, start))
}

pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid).map(|(_, t)| t)
}

/// One line of /proc/<pid>/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    pub hierarchy: u32,
    /// Empty for the unified (v2) hierarchy.
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

pub fn cgroups(pid: i32) -> std::io::Result<Vec<CgroupLine>> {
    Ok(parse_cgroups(&std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?))
}

pub fn parse_cgroups(text: &str) -> Vec<CgroupLine> {
    text.lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let hierarchy = p.next()?.parse().ok()?;
            let ctrls = p.next()?;
            let path = p.next()?;
            Some(CgroupLine {
                hierarchy,
                controllers: ctrls.split(',').filter(|c| !c.is_empty()).map(String::from).collect(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_hostile_comm_parses() {
        let line = "1234 (a) b (c) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
    }

    #[test]
    fn own_process_is_alive_and_a_changed_start_time_is_not() {
        let me = ProcessId::of(std::process::id() as i32).unwrap();
        assert!(me.is_alive());
        assert!(!ProcessId { start_time: me.start_time + 1, ..me }.is_alive());
        assert!(!ProcessId { pid: i32::MAX, start_time: 1 }.is_alive());
    }

    #[test]
    fn cgroup_file_parses_hybrid() {
        let v = parse_cgroups("9:name=systemd:/t1\n4:memory:/a/t1\n0::/t1\n");
        assert_eq!(v.len(), 3);
        assert_eq!(v[1].controllers, vec!["memory"]);
        assert_eq!(v[2].hierarchy, 0);
        assert!(v[2].controllers.is_empty());
        assert_eq!(v[2].path, PathBuf::from("/t1"));
    }
}
