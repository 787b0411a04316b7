//! Owns reading `/proc/<pid>/mountinfo` (proc(5)): the one parser every part of the product
//! uses. A line is
//!
//! ```text
//! 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//! (1)(2)(3)   (4)   (5)      (6)      (7)   (8) (9)   (10)         (11)
//! ```
//!
//! The kernel writes the path fields (root, mount point) and the source with space, tab,
//! newline and backslash as `\ooo` (`\040`, `\011`, `\012`, `\134`), so splitting at spaces is
//! exact and each field must be decoded before it is used as a path. A container's mount table
//! is its own (its mount points are names it chose): nothing here panics on any text.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// (1) The mount's id.
    pub id: u64,
    /// (2) The parent mount's id (the mount's own for the root of the namespace's tree).
    pub parent: u64,
    /// (3) The filesystem's device number (`st_dev` of files on it): major and minor.
    pub dev: (u32, u32),
    /// (4) The directory of the filesystem that forms the mount's root (decoded).
    pub root: PathBuf,
    /// (5) Where it is mounted, relative to the reading process's root (decoded).
    pub mount_point: PathBuf,
    /// (6) Per-mount options (`rw,nosuid,...`).
    pub options: String,
    /// (7) The optional fields as written (`shared:N`, `master:N`, `propagate_from:N`, ...).
    pub optional: Vec<String>,
    /// `shared:N` of (7): the peer group the mount is in.
    pub shared: Option<u64>,
    /// `master:N` of (7): the peer group the mount receives propagation from.
    pub master: Option<u64>,
    /// (9) The filesystem type (`tmpfs`, `cgroup2`, `fuse.sshfs`, ...).
    pub fstype: String,
    /// (10) Filesystem-specific source (decoded; `none` and the like when there is none).
    pub source: String,
    /// (11) Per-superblock options.
    pub super_options: String,
}

impl Mount {
    /// One mountinfo line; None for a line that is not one.
    pub fn parse(line: &str) -> Option<Mount> {
        let mut f = line.split(' ');
        let id = f.next()?.parse().ok()?;
        let parent = f.next()?.parse().ok()?;
        let (major, minor) = f.next()?.split_once(':')?;
        let dev = (major.parse().ok()?, minor.parse().ok()?);
        let root = unescape(f.next()?);
        let mount_point = unescape(f.next()?);
        let options = f.next()?.to_string();
        let mut optional = Vec::new();
        loop {
            match f.next()? {
                "-" => break,
                o => optional.push(o.to_string()),
            }
        }
        let tagged = |tag: &str| {
            optional.iter().find_map(|o| o.strip_prefix(tag)).and_then(|n| n.parse().ok())
        };
        let (shared, master) = (tagged("shared:"), tagged("master:"));
        let fstype = f.next().filter(|t| !t.is_empty())?.to_string();
        let source = String::from_utf8_lossy(&unescape_bytes(f.next().unwrap_or(""))).into_owned();
        let super_options = f.next().unwrap_or("").to_string();
        Some(Mount {
            id,
            parent,
            dev,
            root,
            mount_point,
            options,
            optional,
            shared,
            master,
            fstype,
            source,
            super_options,
        })
    }

    /// True for a cgroup v1 or v2 hierarchy.
    pub fn is_cgroup(&self) -> bool {
        self.fstype == "cgroup" || self.fstype == "cgroup2"
    }

    /// The super options as a list (`rw`, `hugetlb`, `name=systemd`, ...).
    pub fn super_option_list(&self) -> impl Iterator<Item = &str> {
        self.super_options.split(',').filter(|o| !o.is_empty())
    }
}

/// Every line of a mountinfo text that parses, in order (the kernel writes mounts oldest
/// first).
pub fn parse(text: &str) -> impl Iterator<Item = Mount> + '_ {
    text.lines().filter_map(Mount::parse)
}

/// Reads and parses `/proc/<pid>/mountinfo` (`self` and `thread-self` work too).
pub fn read(pid: &str) -> std::io::Result<Vec<Mount>> {
    Ok(parse(&super::read_kernel_file(format!("/proc/{pid}/mountinfo"))?).collect())
}

/// Decodes a path field: `\ooo` (three octal digits up to `\377`) is that byte; any other
/// backslash stays as written (the kernel writes a backslash as `\134`, so such text is not
/// its output, but it must not be misread either).
pub fn unescape(s: &str) -> PathBuf {
    PathBuf::from(OsString::from_vec(unescape_bytes(s)))
}

fn unescape_bytes(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let digits = &b[i + 1..i + 4];
            if digits.iter().all(|c| (b'0'..=b'7').contains(c)) {
                // Three octal digits reach 511: only up to \377 is a byte.
                let v = digits.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    #[test]
    fn every_field_of_a_line_is_read() {
        let m = Mount::parse(
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 shared:7 - ext3 /dev/root rw,errors=continue",
        )
        .unwrap();
        assert_eq!(
            m,
            Mount {
                id: 36,
                parent: 35,
                dev: (98, 0),
                root: "/mnt1".into(),
                mount_point: "/mnt2".into(),
                options: "rw,noatime".into(),
                optional: vec!["master:1".into(), "shared:7".into()],
                shared: Some(7),
                master: Some(1),
                fstype: "ext3".into(),
                source: "/dev/root".into(),
                super_options: "rw,errors=continue".into(),
            }
        );
        let plain = Mount::parse("25 1 0:23 / /sys rw,nosuid - sysfs sysfs rw").unwrap();
        assert!(plain.optional.is_empty());
        assert_eq!((plain.shared, plain.master), (None, None));
        assert_eq!(plain.super_option_list().collect::<Vec<_>>(), ["rw"]);
    }

    #[test]
    fn octal_escapes_in_paths_and_source_are_decoded() {
        let m = Mount::parse(
            "80 27 0:50 /a\\134b /tmp/with\\040space\\011tab\\012nl rw shared:3 - tmpfs my\\040src rw,size=4k",
        )
        .unwrap();
        assert_eq!(m.root, Path::new("/a\\b"));
        assert_eq!(m.mount_point, Path::new("/tmp/with space\ttab\nnl"));
        assert_eq!(m.source, "my src");
        assert_eq!(m.shared, Some(3));
        assert_eq!(m.fstype, "tmpfs");
    }

    #[test]
    fn backslashes_that_are_no_byte_escape_stay_as_written() {
        // Fuzz find (mountinfo): `\777` is 511, past a byte: it must neither panic nor wrap.
        assert_eq!(unescape("/a\\777b"), Path::new("/a\\777b"));
        assert_eq!(unescape("/a\\400"), Path::new("/a\\400"));
        assert_eq!(unescape("/a\\377").as_os_str().as_bytes(), b"/a\xff");
        assert_eq!(unescape("/a\\04"), Path::new("/a\\04"));
        assert_eq!(unescape("/a\\"), Path::new("/a\\"));
        assert_eq!(unescape("/a\\134\\040"), Path::new("/a\\ "));
    }

    #[test]
    fn lines_that_are_not_mountinfo_are_skipped_not_misread() {
        for bad in [
            "",
            "x 1 0:1 / / rw - tmpfs t rw",
            "1 1 01 / / rw - tmpfs t rw",
            "1 1 0:1 / / rw shared:1",
            "1 1 0:1 / / rw -",
            "1 1 0:1 / /",
        ] {
            assert_eq!(Mount::parse(bad), None, "{bad:?}");
        }
        // Old kernels may end a line after the fs type.
        let short = Mount::parse("1 1 0:1 / / rw - tmpfs").unwrap();
        assert_eq!((short.source.as_str(), short.super_options.as_str()), ("", ""));
        let text = "garbage\n25 1 0:23 / /sys rw - sysfs sysfs rw\n";
        assert_eq!(parse(text).map(|m| m.id).collect::<Vec<_>>(), [25]);
    }

    #[test]
    fn this_process_table_parses_whole() {
        let text = super::super::read_kernel_file("/proc/self/mountinfo").unwrap();
        let mounts = read("self").unwrap();
        assert_eq!(mounts.len(), text.lines().count(), "every kernel line parses");
        assert!(mounts.iter().any(|m| m.mount_point == Path::new("/")));
        assert!(mounts.iter().any(|m| m.fstype == "proc"));
    }
}
