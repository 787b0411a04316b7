//! Owns replacing a file atomically: the one way the product writes a file that someone may
//! read at any moment (ledger records, config.json, runtime configs, metrics). A reader sees
//! the old content or the new, whole; never a mix, never an empty file.
//!
//! How: a temp file with a unique name in the same directory (a rename only is atomic within
//! one filesystem), created `O_CREAT|O_EXCL|O_NOFOLLOW` so that nothing already sitting at
//! that name (a symlink planted there, another writer's temp, a crashed run's leftover) is
//! opened, truncated or written through; the content; the mode set on our own fd (the umask
//! narrowed the one given to open); optionally fsync; rename over the final name; optionally
//! fsync of the directory. rename(2) never follows a symlink at the final name: it replaces
//! the link itself, so a link planted there cannot redirect the write to another file. A
//! failed write removes its temp file and leaves the final name as it was.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The mode the written file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Exactly these bits, whatever the umask and whatever the old file had.
    Exactly(u32),
    /// The old file's permission bits when the final name is a regular file; these otherwise
    /// (no file yet, or a symlink, whose own 0777 says nothing about the file it stood for).
    KeepOr(u32),
}

/// How a file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    pub mode: Mode,
    /// fsync the file before the rename and the directory after it, so that after a power
    /// loss the final name holds the old content or the new, not an empty or torn file. Only
    /// where the file outlives a reboot and matters after it (a runtime's configuration).
    pub durable: bool,
}

impl Options {
    /// Not fsynced, with the given mode.
    pub const fn new(mode: Mode) -> Options {
        Options { mode, durable: false }
    }

    /// The same, fsynced (see [`Options::durable`]).
    pub const fn durable(self) -> Options {
        Options { durable: true, ..self }
    }
}

/// Tries at unique temp names before giving up: a name is only taken by a leftover of a
/// crashed run with the same pid, so a second try nearly always succeeds.
const TRIES: u32 = 16;

/// Replaces `path` with a file holding `bytes` (see the module doc). The directory must exist.
pub fn write(path: &Path, bytes: &[u8], opts: Options) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        Some(_) => Path::new("."),
        None => return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput)),
    };
    let Some(name) = path.file_name() else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    let mode = match opts.mode {
        Mode::Exactly(m) => m,
        // lstat: a symlink at the final name is replaced, not followed (module doc).
        Mode::KeepOr(default) => match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_file() => m.permissions().mode() & 0o7777,
            _ => default,
        },
    } & 0o7777;
    let (tmp, mut f) = create_temp(dir, name.as_bytes())?;
    let res = (|| {
        f.write_all(bytes)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if opts.durable {
            f.sync_all()?;
        }
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if opts.durable {
        // The rename is only durable once the directory entry is.
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A new dot-file beside the final name: `.<name>.<pid>.<seq>.tmp` (a dot-file so that
/// readers that pick files by suffix, such as node-exporter's `*.prom`, never read it).
fn create_temp(dir: &Path, name: &[u8]) -> std::io::Result<(PathBuf, std::fs::File)> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    // Keep the temp name within NAME_MAX (255) whatever the final name's length.
    let stem = &name[..name.len().min(160)];
    let mut last = std::io::Error::from(std::io::ErrorKind::AlreadyExists);
    for _ in 0..TRIES {
        let mut n = b".".to_vec();
        n.extend_from_slice(stem);
        n.extend_from_slice(
            format!(".{}.{}.tmp", std::process::id(), SEQ.fetch_add(1, Ordering::Relaxed))
                .as_bytes(),
        );
        let tmp = dir.join(OsString::from_vec(n));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            // Root-only until the final mode is set on the fd.
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = e,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn writes_new_and_replaces_old_content_leaving_no_temp() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("f.json");
        write(&p, b"one", Options::new(Mode::Exactly(0o600))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"one");
        write(&p, b"two", Options::new(Mode::Exactly(0o600))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        write(&p, b"three", Options::new(Mode::Exactly(0o600)).durable()).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        assert_eq!(entries(t.path()), ["f.json"]);
    }

    #[test]
    fn an_exact_mode_is_set_whatever_the_umask_and_the_old_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("metrics.prom");
        std::fs::write(&p, "old").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        // 0644 is wider than a 0077 umask lets open(2) create: set on the fd, it still holds.
        let old = unsafe { libc::umask(0o077) };
        let r = write(&p, b"new", Options::new(Mode::Exactly(0o644)));
        unsafe { libc::umask(old) };
        r.unwrap();
        assert_eq!(mode_of(&p), 0o644);
    }

    #[test]
    fn a_kept_mode_is_the_old_files_or_the_default_for_a_new_file() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("config.toml");
        write(&p, b"a", Options::new(Mode::KeepOr(0o644))).unwrap();
        assert_eq!(mode_of(&p), 0o644, "new file: the default");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        write(&p, b"b", Options::new(Mode::KeepOr(0o644))).unwrap();
        assert_eq!(mode_of(&p), 0o640, "existing file: its mode");
    }

    #[test]
    fn a_symlink_at_the_final_name_is_replaced_never_written_through() {
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("host-file");
        std::fs::write(&victim, "precious").unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o4755)).unwrap();
        let p = t.path().join("record.json");
        std::os::unix::fs::symlink(&victim, &p).unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "precious", "the link really points");
        write(&p, b"ours", Options::new(Mode::KeepOr(0o600))).unwrap();
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        assert_eq!(mode_of(&victim), 0o4755);
        let m = std::fs::symlink_metadata(&p).unwrap();
        assert!(m.file_type().is_file(), "the link itself was replaced by a file");
        assert_eq!(m.mode() & 0o7777, 0o600, "a link's mode is not kept");
        assert_eq!(std::fs::read(&p).unwrap(), b"ours");
    }

    #[test]
    fn a_symlink_at_a_temp_name_is_never_opened() {
        // Whoever can plant a file in the directory and guess the next temp name (pid and
        // sequence number are predictable) gets it skipped, never followed.
        let t = tempfile::tempdir().unwrap();
        let victim = t.path().join("host-file");
        std::fs::write(&victim, "precious").unwrap();
        let base = std::process::id();
        // Plant links at a window of upcoming names (other tests share the counter).
        let start = peek_seq();
        for s in start..start + TRIES as u64 * 4 {
            let link = t.path().join(format!(".f.{base}.{s}.tmp"));
            std::os::unix::fs::symlink(&victim, link).unwrap();
        }
        let p = t.path().join("f");
        let r = write(&p, b"ours", Options::new(Mode::Exactly(0o600)));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        // Either a name past the planted ones was free, or all tries hit a planted link.
        match r {
            Ok(()) => assert_eq!(std::fs::read(&p).unwrap(), b"ours"),
            Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::AlreadyExists),
        }
    }

    fn peek_seq() -> u64 {
        // Burn one temp name to learn where the counter stands.
        let t = tempfile::tempdir().unwrap();
        let (tmp, _f) = create_temp(t.path(), b"peek").unwrap();
        let s = tmp.file_name().unwrap().to_string_lossy().into_owned();
        s.trim_end_matches(".tmp").rsplit('.').next().unwrap().parse::<u64>().unwrap() + 1
    }

    #[test]
    fn concurrent_writers_never_share_a_temp_and_the_file_is_always_whole() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("shared.json");
        write(&p, &[b'0'; 4096], Options::new(Mode::Exactly(0o600))).unwrap();
        std::thread::scope(|s| {
            for i in 0..4u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write(p, &[b'a' + i; 4096], Options::new(Mode::Exactly(0o600))).unwrap();
                    }
                });
            }
            s.spawn(|| {
                for _ in 0..200 {
                    let b = std::fs::read(&p).unwrap();
                    assert_eq!(b.len(), 4096);
                    assert!(b.iter().all(|c| *c == b[0]), "a mix of two writes");
                }
            });
        });
        assert_eq!(entries(t.path()), ["shared.json"]);
    }

    #[test]
    fn a_failed_write_leaves_the_old_file_and_no_temp() {
        let t = tempfile::tempdir().unwrap();
        // The final name is a non-empty directory: rename fails after the temp was written.
        let p = t.path().join("busy");
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("inside"), "x").unwrap();
        assert!(write(&p, b"x", Options::new(Mode::Exactly(0o600))).is_err());
        assert_eq!(entries(t.path()), ["busy"]);
        assert!(write(&t.path().join("missing-dir/f"), b"x", Options::new(Mode::Exactly(0o600)))
            .is_err());
    }

    #[test]
    fn a_long_final_name_still_gets_a_temp_within_name_max() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("x".repeat(250));
        write(&p, b"ok", Options::new(Mode::Exactly(0o600))).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"ok");
    }
}
