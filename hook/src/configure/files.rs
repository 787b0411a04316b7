//! Changing files without clobbering: every change is computed first ([`FileChange`]), then
//! printed (dry run) or made; a file we did not write is backed up before it is replaced, and
//! every write is atomic. Also the hooks.d drop-ins CRI-O and podman share.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use super::{fail, render_hook, ConfigureError, Install, HOOK_FILES};

/// A file configure writes (created or replaced as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileChange {
    pub path: PathBuf,
    pub content: String,
    /// What is there now (None: missing).
    pub current: Option<String>,
    /// Keep a copy of the current file here before replacing it.
    pub backup: Option<PathBuf>,
    pub why: String,
}

impl FileChange {
    pub(super) fn new(path: PathBuf, content: String, why: impl Into<String>) -> FileChange {
        let current = std::fs::read_to_string(&path).ok();
        // A file of the same name that we did not write (ours all name dataplane-hook) is kept.
        let backup = current
            .as_ref()
            .filter(|c| !c.contains("dataplane-hook") && **c != content)
            .map(|_| backup_path(&path));
        FileChange { path, content, current, backup, why: why.into() }
    }
    pub fn is_noop(&self) -> bool {
        self.current.as_deref() == Some(self.content.as_str())
    }
}

/// Everything `configure` would do for one runtime.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub notes: Vec<String>,
    pub changes: Vec<FileChange>,
    pub next: Vec<String>,
}

pub(super) fn backup_path(p: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = p.file_name().unwrap_or(OsStr::new("config")).to_string_lossy();
    p.with_file_name(format!("{name}.bak-dataplane-hook-{secs}"))
}

pub(super) fn hook_changes(dir: &Path, install: &Install, out: &mut Outcome) {
    for (name, template) in HOOK_FILES {
        let stage = if name.contains("poststop") { "poststop" } else { "createRuntime" };
        out.changes.push(FileChange::new(
            dir.join(name),
            render_hook(template, install),
            format!("OCI hook at {stage} for containers annotated dataplane-hook.io/enabled=true"),
        ));
    }
}

/// Writes `content` to `path` atomically: temp file beside it, fsync, rename, fsync the dir.
/// Keeps an existing file's mode (0644 for new files).
pub fn write_atomic(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use crate::host::atomic_file::{write, Mode, Options};
    std::fs::create_dir_all(path.parent().unwrap_or(Path::new("/")))?;
    write(path, content, Options::new(Mode::KeepOr(0o644)).durable())
}

fn show(text: &str) -> String {
    text.lines().map(|l| format!("    | {l}\n")).collect()
}

/// Line-level diff for an edited file (the files are small; show changed lines only).
fn show_diff(old: &str, new: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
    let mut pre = 0;
    while pre < a.len() && pre < b.len() && a[pre] == b[pre] {
        pre += 1;
    }
    let mut suf = 0;
    while suf < a.len() - pre && suf < b.len() - pre && a[a.len() - 1 - suf] == b[b.len() - 1 - suf]
    {
        suf += 1;
    }
    let mut s = String::new();
    for l in &a[pre..a.len() - suf] {
        s.push_str(&format!("    - {l}\n"));
    }
    for l in &b[pre..b.len() - suf] {
        s.push_str(&format!("    + {l}\n"));
    }
    s
}

/// Prints the plan (dry run) or carries it out; returns the text printed.
pub fn execute(outcome: &Outcome, dry_run: bool) -> Result<String, ConfigureError> {
    let mut s = String::new();
    for n in &outcome.notes {
        s.push_str(&format!("{n}\n"));
    }
    let pending: Vec<&FileChange> = outcome.changes.iter().filter(|c| !c.is_noop()).collect();
    for c in outcome.changes.iter().filter(|c| c.is_noop()) {
        s.push_str(&format!("unchanged {} ({})\n", c.path.display(), c.why));
    }
    for c in &pending {
        let verb = match (&c.current, dry_run) {
            (None, true) => "would create",
            (None, false) => "created",
            (Some(_), true) => "would update",
            (Some(_), false) => "updated",
        };
        s.push_str(&format!("{verb} {} ({})", c.path.display(), c.why));
        if let (Some(b), Some(_)) = (&c.backup, &c.current) {
            s.push_str(&format!(", backup {}", b.display()));
        }
        s.push('\n');
        match &c.current {
            Some(old) if c.backup.is_some() => s.push_str(&show_diff(old, &c.content)),
            _ => s.push_str(&show(&c.content)),
        }
        if dry_run {
            continue;
        }
        if let (Some(b), Some(old)) = (&c.backup, &c.current) {
            write_atomic(b, old.as_bytes()).map_err(|e| {
                fail(
                    format!("cannot back up {} to {}", c.path.display(), b.display()),
                    e,
                    "check the directory's permissions; nothing was changed",
                )
            })?;
        }
        write_atomic(&c.path, c.content.as_bytes()).map_err(|e| {
            fail(
                format!("cannot write {}", c.path.display()),
                e,
                "check the directory's permissions (run as root)",
            )
        })?;
    }
    if pending.is_empty() {
        s.push_str("nothing to change: already configured\n");
    } else if dry_run {
        s.push_str("dry run: nothing was written\n");
    } else {
        for n in &outcome.next {
            s.push_str(&format!("next: {n}\n"));
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::super::render_crio;
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn atomic_write_keeps_mode_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/f.conf");
        write_atomic(&p, b"one").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o644);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(d.path().join("sub")).unwrap().count(), 1);
    }

    #[test]
    fn a_foreign_file_in_the_way_is_backed_up_ours_is_not() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("99-dataplane.conf");
        std::fs::write(&p, "[crio.runtime.runtimes.dataplane]\nruntime_path = \"/opt/other\"\n")
            .unwrap();
        let c = FileChange::new(p.clone(), render_crio(&Install::shipped()), "x");
        assert!(c.backup.is_some());
        execute(&Outcome { changes: vec![c.clone()], ..Default::default() }, false).unwrap();
        assert_eq!(
            std::fs::read_to_string(c.backup.as_ref().unwrap()).unwrap(),
            c.current.clone().unwrap()
        );
        let again = FileChange::new(
            p.clone(),
            render_crio(&Install {
                wrapper: "/opt/x/dataplane-runtime".into(),
                ..Install::shipped()
            }),
            "x",
        );
        assert!(again.backup.is_none(), "our own file is replaced without a backup");
    }

    #[test]
    fn diff_shows_only_the_changed_line() {
        let d = show_diff("a\nimports = []\nb\n", "a\nimports = [\"x\"]\nb\n");
        assert_eq!(d, "    - imports = []\n    + imports = [\"x\"]\n");
    }
}
