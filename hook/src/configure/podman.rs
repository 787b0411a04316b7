//! podman: the hooks.d files, in the `hooks_dir` podman reads.

use std::ffi::OsStr;
use std::path::PathBuf;

use toml::Table;

use super::files::{hook_changes, Outcome};
use super::{fail, get_path, install_problem, ConfigureArgs, ConfigureError, Install};

/// containers.conf `[engine] hooks_dir`, in the files podman reads (later wins).
fn containers_conf_hooks_dir() -> Option<(Vec<PathBuf>, PathBuf)> {
    let mut files: Vec<PathBuf> = vec![
        "/usr/share/containers/containers.conf".into(),
        "/etc/containers/containers.conf".into(),
    ];
    let mut dropins: Vec<PathBuf> = std::fs::read_dir("/etc/containers/containers.conf.d")
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension() == Some(OsStr::new("conf")))
                .collect()
        })
        .unwrap_or_default();
    dropins.sort();
    files.extend(dropins);
    if let Some(c) = std::env::var_os("CONTAINERS_CONF") {
        files = vec![PathBuf::from(c)];
    }
    let mut found = None;
    for f in files {
        let Ok(t) = std::fs::read_to_string(&f).map(|s| s.parse::<Table>()) else { continue };
        let Ok(t) = t else { continue };
        if let Some(a) = get_path(&t, &["engine", "hooks_dir"]).and_then(|v| v.as_array()) {
            found = Some((a.iter().filter_map(|v| v.as_str()).map(PathBuf::from).collect(), f));
        }
    }
    found
}

/// podman 4.x reads only its `hooks_dir`, whose built-in default is this one (the older
/// /etc/containers/oci/hooks.d override dir is read only when hooks_dir is unset, which
/// containers.conf's defaults no longer allow).
pub const PODMAN_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";

pub fn plan_podman(args: &ConfigureArgs, install: &Install) -> Result<Outcome, ConfigureError> {
    let mut out = Outcome::default();
    if let Some(t) = install_problem(install, false) {
        return Err(fail("cannot configure podman", t, "run the installed dataplane-hook"));
    }
    let dir = match &args.hooks_dir {
        Some(d) => {
            out.notes.push(format!("hooks dir: {} (--hooks-dir; pass the same --hooks-dir to podman or set hooks_dir in containers.conf)", d.display()));
            d.clone()
        }
        None => match containers_conf_hooks_dir() {
            Some((dirs, from)) if !dirs.is_empty() => {
                out.notes.push(format!(
                    "hooks dir: {} (hooks_dir in {})",
                    dirs[0].display(),
                    from.display()
                ));
                dirs[0].clone()
            }
            _ => {
                out.notes.push(format!("hooks dir: {PODMAN_HOOKS_DIR} (podman's default hooks_dir; no containers.conf sets one)"));
                PODMAN_HOOKS_DIR.into()
            }
        },
    };
    hook_changes(&dir, install, &mut out);
    out.next.push("run containers with --annotation dataplane-hook.io/enabled=true (and e.g. --annotation dataplane-hook.io/hugepages-2Mi=256Mi)".into());
    Ok(out)
}
