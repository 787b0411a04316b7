//! Owns facts about processes from /proc: identity (pid + start time) for liveness, and
//! cgroup membership.

use std::path::PathBuf;

/// A process's identity that survives pid reuse: pid plus its start time in clock ticks, and
/// the boot it ran in (start times restart at every boot: a record written before a reboot
/// must never match a process of this boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_time: u64,
    /// The kernel's boot id (`/proc/sys/kernel/random/boot_id`); None in records that predate it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootId>,
}

/// `/proc/sys/kernel/random/boot_id`, a UUID, kept as its 128 bits and written as the UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootId(pub u128);

impl BootId {
    pub fn parse(s: &str) -> Option<BootId> {
        let hex: String = s.trim().chars().filter(|c| *c != '-').collect();
        (hex.len() == 32).then(|| u128::from_str_radix(&hex, 16).ok().map(BootId)).flatten()
    }

    /// This boot's id (read once per process).
    pub fn current() -> Option<BootId> {
        static ID: std::sync::OnceLock<Option<BootId>> = std::sync::OnceLock::new();
        *ID.get_or_init(|| {
            super::read_kernel_file("/proc/sys/kernel/random/boot_id")
                .ok()
                .and_then(|s| BootId::parse(&s))
        })
    }
}

/// The time this boot began (unix seconds), from /proc/stat's `btime` (read once per process:
/// it does not change within a boot).
pub fn boot_time() -> Option<u64> {
    static BTIME: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    *BTIME.get_or_init(|| parse_btime(&super::read_kernel_file("/proc/stat").ok()?))
}

fn parse_btime(stat: &str) -> Option<u64> {
    stat.lines().find_map(|l| l.strip_prefix("btime ")).and_then(|v| v.trim().parse().ok())
}

impl std::fmt::Display for BootId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = format!("{:032x}", self.0);
        write!(f, "{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}

impl serde::Serialize for BootId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for BootId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        BootId::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("not a boot id: {s:?}")))
    }
}

impl ProcessId {
    pub fn of(pid: i32) -> Option<ProcessId> {
        start_time(pid).map(|start_time| ProcessId { pid, start_time, boot: BootId::current() })
    }

    /// True while this exact process exists (and is not a zombie) in this boot.
    pub fn is_alive(&self) -> bool {
        if self.boot.is_some() && self.boot != BootId::current() {
            return false;
        }
        match stat_fields(self.pid) {
            Some((state, start)) => start == self.start_time && state != 'Z' && state != 'X',
            None => false,
        }
    }
}

/// `(state, starttime)` from /proc/<pid>/stat.
fn stat_fields(pid: i32) -> Option<(char, u64)> {
    use std::io::Read;
    // One read: procfs hands a stat line over whole in the first read of a buffer that holds
    // it, and its fields up to starttime always fit in 1 KiB (comm is at most 64 bytes). A
    // liveness scan over thousands of records saves the read that would only see its end.
    let mut f = std::fs::File::open(format!("/proc/{pid}/stat")).ok()?;
    let mut buf = [0u8; 1024];
    let n = loop {
        match f.read(&mut buf) {
            Ok(n) => break n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    };
    parse_stat(std::str::from_utf8(&buf[..n]).ok()?)
}

/// `(state, starttime)` from a /proc/<pid>/stat text (comm is the process's own choice).
pub fn parse_stat(s: &str) -> Option<(char, u64)> {
    // comm may contain spaces and parens: fields resume after the last ')'.
    let rest = s.get(s.rfind(')')? + 2..)?;
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
    Ok(parse_cgroups(&super::read_kernel_file(format!("/proc/{pid}/cgroup"))?))
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
        assert!(me.boot.is_some(), "records carry the boot id");
        assert!(
            !ProcessId { boot: Some(BootId(me.boot.unwrap().0 ^ 1)), ..me }.is_alive(),
            "a process of another boot is dead"
        );
        assert!(
            ProcessId { boot: None, ..me }.is_alive(),
            "records from before boot ids still work"
        );
        assert!(!ProcessId { pid: i32::MAX, start_time: 1, boot: None }.is_alive());
    }

    #[test]
    fn boot_ids_round_trip_as_the_kernel_writes_them() {
        let s = "0f4d5b9e-8c1a-4b7e-9d2f-3a6b1c0e5f77";
        let b = BootId::parse(&format!("{s}\n")).unwrap();
        assert_eq!(b.to_string(), s);
        let id = ProcessId { pid: 7, start_time: 9, boot: Some(b) };
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!(r#"{{"pid":7,"start_time":9,"boot":"{s}"}}"#));
        assert_eq!(serde_json::from_str::<ProcessId>(&json).unwrap(), id);
        assert_eq!(
            serde_json::from_str::<ProcessId>(r#"{"pid":7,"start_time":9}"#).unwrap().boot,
            None
        );
        assert!(BootId::parse("not-a-uuid").is_none());
    }

    #[test]
    fn this_boot_has_an_id_as_the_kernel_writes_it_and_a_start_time() {
        let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap();
        assert_eq!(BootId::current().unwrap().to_string(), text.trim());
        let btime = boot_time().unwrap();
        assert!(btime > 1_000_000_000 && btime <= crate::ledger::now_unix(), "{btime}");
        assert_eq!(parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), Some(1700000000));
        assert_eq!(parse_btime("cpu  1 2 3\n"), None);
        assert_eq!(parse_btime("btime x\n"), None);
    }

    #[test]
    fn a_stat_text_that_ends_at_its_last_paren_is_none() {
        // Fuzz find (proc_files): slicing two bytes past the last ')' panicked when the text
        // ended there or the next character was multi-byte.
        for s in ["\\120))", "1 (x)", "1 (x) ", "1 (x)\u{e9}", "1 (x))\u{e9} S", ")", ""] {
            assert_eq!(parse_stat(s), None, "{s:?}");
        }
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
