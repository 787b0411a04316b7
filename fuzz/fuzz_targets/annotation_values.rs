//! The per-annotation value parsers in `request`: `FilePrefix::parse`, `GroupName::parse`,
//! `ContainerPath::parse`, `SpdkIobuf::parse`, and `PageSize::from_oci` (hugepageLimits'
//! pageSize). The first byte picks the parser, the rest is the value.
#![no_main]

use std::path::{Component, Path};

use dataplane_hook::request::{ContainerPath, FilePrefix, GroupName, PageSize, SpdkIobuf};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    let one_line =
        |e: &str| assert!(!e.contains(['\n', '\r']), "multi-line error for {s:?}: {e:?}");
    match which % 5 {
        0 => match FilePrefix::parse(s) {
            Ok(FilePrefix::Auto) => assert_eq!(s, "auto"),
            Ok(FilePrefix::Explicit(p)) => {
                // It names host files (`/dev/hugepages/<prefix>map_0`): never a path.
                assert_eq!(p, s);
                assert!(!p.is_empty() && !p.contains(['/', '\0', '.']) && p.len() <= 24, "{p:?}");
            }
            Err(e) => one_line(&e),
        },
        1 => match GroupName::parse(s) {
            Ok(g) => {
                // A file name component under the state dir: a DNS label, never a path.
                assert_eq!(g.as_str(), s);
                assert!(!s.contains(['/', '.', '\0']) && (1..=63).contains(&s.len()), "{s:?}");
                assert_eq!(GroupName::parse(g.as_str()), Ok(g));
            }
            Err(e) => one_line(&e),
        },
        2 => match ContainerPath::parse(s) {
            Ok(p) => {
                // Absolute, normal components only (mounted at rootfs.join(relative())).
                assert!(p.as_path().is_absolute() && p.as_path() != Path::new("/"), "{p:?}");
                assert!(!p.relative().is_absolute() && p.relative().as_os_str().len() > 0, "{p:?}");
                assert!(
                    p.relative().components().all(|c| matches!(c, Component::Normal(_))),
                    "{p:?}"
                );
                assert!(!p.to_string().contains('\0'));
                // Normalising is idempotent.
                assert_eq!(ContainerPath::parse(&p.to_string()), Ok(p.clone()), "{s:?}");
            }
            Err(e) => one_line(&e),
        },
        3 => match SpdkIobuf::parse(s) {
            Ok(io) => {
                assert!(io.small_count > 0 && io.large_count > 0);
                assert!(
                    io.small_bufsize.is_none_or(|b| b > 0)
                        && io.large_bufsize.is_none_or(|b| b > 0)
                );
                let mut again = format!("small={},large={}", io.small_count, io.large_count);
                if let Some(b) = io.small_bufsize {
                    again.push_str(&format!(",small-bufsize={b}"));
                }
                if let Some(b) = io.large_bufsize {
                    again.push_str(&format!(",large-bufsize={b}"));
                }
                assert_eq!(SpdkIobuf::parse(&again), Ok(io), "{s:?} -> {again:?}");
            }
            Err(e) => one_line(&e),
        },
        _ => {
            if let Some(size) = PageSize::from_oci(s) {
                assert!(size.bytes() == 2 << 20 || size.bytes() == 1 << 30);
                assert_eq!(PageSize::from_oci(size.cgroup_name()), Some(size));
            }
        }
    }
});
