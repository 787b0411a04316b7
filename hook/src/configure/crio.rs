//! CRI-O: the runtime handler drop-in in crio.conf.d and the hooks.d files, in the dirs the
//! running crio (or its config) actually reads.

use std::path::PathBuf;

use toml::Table;

use super::files::{hook_changes, FileChange, Outcome};
use super::{
    fail, get_path, install_problem, replace_once, toml_str, ConfigureArgs, ConfigureError,
    Install, HANDLER, TEMPLATE_WRAPPER,
};
use crate::discovery::{config_flag, running, same_file};

pub const CRIO_DROPIN: &str =
    include_str!("../../../shim-config/crio/crio.conf.d/99-dataplane.conf");
pub const CRIO_DROPIN_NAME: &str = "99-dataplane.conf";
pub const CRIO_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";
pub const CRIO_CONFIG: &str = "/etc/crio/crio.conf";
pub const CRIO_CONFIG_DIR: &str = "/etc/crio/crio.conf.d";

/// The CRI-O runtime handler drop-in.
pub fn render_crio(install: &Install) -> String {
    replace_once(
        CRIO_DROPIN,
        &toml_str(TEMPLATE_WRAPPER),
        &toml_str(&install.wrapper.display().to_string()),
    )
}

pub fn plan_crio(args: &ConfigureArgs, install: &Install) -> Result<Outcome, ConfigureError> {
    let mut out = Outcome::default();
    if let Some(t) = install_problem(install, true) {
        return Err(fail(
            "cannot configure CRI-O",
            t,
            "install dataplane-runtime beside dataplane-hook",
        ));
    }
    let procs = running("crio");
    if procs.len() > 1 {
        out.notes.push(format!(
            "warning: {} crio processes run; using the first (pid {})",
            procs.len(),
            procs[0].pid
        ));
    }
    let proc_ = procs.first();
    let main = proc_
        .and_then(|d| config_flag(&d.args, "--config", "-c"))
        .unwrap_or_else(|| CRIO_CONFIG.into());
    let (conf_dir, how) = match (
        &args.crio_config_dir,
        proc_.and_then(|d| config_flag(&d.args, "--config-dir", "-d")),
    ) {
        (Some(d), _) => (d.clone(), "--crio-config-dir".to_string()),
        (None, Some(d)) => {
            (d, format!("--config-dir of the running crio (pid {})", proc_.unwrap().pid))
        }
        (None, None) => (
            CRIO_CONFIG_DIR.into(),
            match proc_ {
                Some(d) => format!("default; crio runs as pid {}", d.pid),
                None => "default; crio is not running".into(),
            },
        ),
    };
    out.notes.push(format!("CRI-O drop-in dir: {} ({how})", conf_dir.display()));
    let dropin = conf_dir.join(CRIO_DROPIN_NAME);
    // hooks_dir: crio.conf then its drop-ins in order (later wins), excluding ours.
    let mut files = vec![main.clone()];
    let mut d: Vec<PathBuf> = std::fs::read_dir(&conf_dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    d.sort();
    files.extend(d.into_iter().filter(|p| !same_file(p, &dropin)));
    let mut hooks_dir: Option<(PathBuf, PathBuf)> = None;
    for f in files {
        let Ok(text) = std::fs::read_to_string(&f) else { continue };
        let t = text.parse::<Table>().map_err(|e| {
            fail(
                format!("cannot parse {}", f.display()),
                e.message().replace('\n', " "),
                "fix the TOML syntax first",
            )
        })?;
        if let Some(a) = get_path(&t, &["crio", "runtime", "hooks_dir"]).and_then(|v| v.as_array())
        {
            if let Some(first) = a.iter().filter_map(|v| v.as_str()).next() {
                hooks_dir = Some((first.into(), f.clone()));
            }
        }
        if get_path(&t, &["crio", "runtime", "runtimes", HANDLER]).is_some() {
            out.notes.push(format!(
                "warning: {} also defines runtime `{HANDLER}`; {} is read later and wins",
                f.display(),
                dropin.display()
            ));
        }
    }
    let hooks = match (&args.hooks_dir, hooks_dir) {
        (Some(h), _) => {
            out.notes.push(format!("hooks dir: {} (--hooks-dir)", h.display()));
            h.clone()
        }
        (None, Some((h, from))) => {
            out.notes.push(format!("hooks dir: {} (hooks_dir in {})", h.display(), from.display()));
            h
        }
        (None, None) => {
            out.notes.push(format!("hooks dir: {CRIO_HOOKS_DIR} (CRI-O's default hooks_dir)"));
            CRIO_HOOKS_DIR.into()
        }
    };
    out.changes.push(FileChange::new(
        dropin,
        render_crio(install),
        format!("runtime handler `{HANDLER}`"),
    ));
    hook_changes(&hooks, install, &mut out);
    out.next.push(format!("restart CRI-O (or send it SIGHUP) to load the runtime handler `{HANDLER}`; hooks.d files apply to pods annotated dataplane-hook.io/enabled=true"));
    Ok(out)
}
