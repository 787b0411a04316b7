//! The product's /proc/<pid>/mountinfo parser, `host::mountinfo` (a container's mount namespace
//! is its own: its mount points are names it chose), and its users: `host::cgroup::find_hierarchy`
//! (the hook's hugetlb and memory hierarchies), `doctor::cgroup_layout`,
//! `host::mount::parse_mounts_of_type` and `group::holder::root_cgroup_mount_points` (the group
//! holder).
//!
//! First byte even: the rest is a mountinfo text for all of them (no panic). Odd: the rest is
//! `MOUNT_POINT\0ROOT` (absolute paths of arbitrary bytes), written into a cgroup2 line the way the kernel writes
//! it (space, tab, newline and backslash as `\ooo`), and find_hierarchy must decode both back.
#![no_main]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use dataplane_hook::doctor;
use dataplane_hook::group::holder;
use dataplane_hook::host::{cgroup, mount, mountinfo};
use libfuzzer_sys::fuzz_target;

/// The kernel's mangling of a path field (fs/proc_namespace.c: `seq_path_root(.., " \t\n\\")`).
fn kernel_escape(b: &[u8]) -> String {
    let mut out = Vec::new();
    for &c in b {
        if matches!(c, b' ' | b'\t' | b'\n' | b'\\') {
            out.extend_from_slice(format!("\\{c:03o}").as_bytes());
        } else {
            out.push(c);
        }
    }
    // The text is read as UTF-8 (read_kernel_file): only such fields reach the parsers.
    String::from_utf8(out).unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    if mode % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        for ctrl in ["hugetlb", "memory"] {
            let _ = cgroup::find_hierarchy(text, ctrl, |_| true);
            let _ = cgroup::find_hierarchy(text, ctrl, |m| m.as_os_str().len() % 2 == 0);
        }
        let v2: BTreeMap<PathBuf, String> =
            [(PathBuf::from("/sys/fs/cgroup/unified"), "hugetlb memory".to_string())].into();
        let (layout, desc) = doctor::cgroup_layout(text, &v2);
        assert!(["v1", "v2", "hybrid", "none"].contains(&layout));
        let _ = desc;
        // One parser under all of them: each line that parses is one mount.
        let parsed: Vec<mountinfo::Mount> = mountinfo::parse(text).collect();
        assert!(parsed.len() <= text.lines().count());
        for fstype in ["hugetlbfs", "cgroup2", "tmpfs"] {
            let of_type = mount::parse_mounts_of_type(text, fstype);
            assert_eq!(of_type.len(), parsed.iter().filter(|m| m.fstype == fstype).count());
        }
        let roots = holder::root_cgroup_mount_points(text);
        assert!(roots.len() <= parsed.iter().filter(|m| m.is_cgroup()).count());
        return;
    }
    let (mp, root) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b"/"[..]),
    };
    // The kernel writes both as absolute paths (a cgroup namespace's root as `/..`), so
    // neither can be the ` - ` separator's `-`.
    if !mp.starts_with(b"/") || !root.starts_with(b"/") || root.contains(&0) {
        return;
    }
    let (emp, eroot) = (kernel_escape(mp), kernel_escape(root));
    if emp.is_empty() || eroot.is_empty() {
        return;
    }
    let line = format!("36 25 0:31 {eroot} {emp} rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate\n");
    let h = cgroup::find_hierarchy(&line, "hugetlb", |_| true).expect("a cgroup2 line is found");
    assert_eq!(h.mount, Path::new(OsStr::from_bytes(mp)), "mount point of {line:?}");
    assert_eq!(h.root, Path::new(OsStr::from_bytes(root)), "root of {line:?}");
    let m = mountinfo::Mount::parse(line.trim_end()).expect("the kernel's line parses");
    assert_eq!((m.id, m.parent, m.dev, m.shared), (36, 25, (0, 31), Some(9)), "{line:?}");
    assert_eq!(m.mount_point, Path::new(OsStr::from_bytes(mp)), "mount point of {line:?}");
});
