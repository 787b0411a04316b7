//! Owns `dataplane-hook configure`: writing the integration files for containerd, CRI-O and
//! podman with this binary's real paths, as drop-ins, never clobbering the user's config.
//!
//! The files under `shim-config/` are the templates (embedded in each runtime's module): they
//! are exactly what `configure` writes for an install in /usr/bin with the default config, so
//! what is shipped and what is written cannot drift. `configure` only swaps in the real paths
//! and, for containerd, adds what must be carried over from the user's config.
//!
//! One module per runtime ([`containerd`], [`crio`], [`podman`]) plans its files; [`files`]
//! prints or writes the plan (never clobbering: backups, atomic writes). Which runtime runs
//! where, and which containerd, is [`crate::discovery`]'s.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use toml::Table;

use crate::config::{Loaded, DEFAULT_CONFIG_PATH};

pub mod containerd;
pub mod crio;
pub mod files;
pub mod podman;

pub use containerd::{
    choose_containerd, cri_copy, plan_containerd, read_containerd_files, render_containerd,
    resolve_import, splice_import, ContainerdChoice, ContainerdDropin, ContainerdFiles,
    CONTAINERD_DROPIN_NAME, CONTAINERD_V2, CONTAINERD_V3,
};
pub use crio::{
    plan_crio, render_crio, CRIO_CONFIG, CRIO_CONFIG_DIR, CRIO_DROPIN, CRIO_DROPIN_NAME,
    CRIO_HOOKS_DIR,
};
pub use files::{execute, write_atomic, FileChange, Outcome};
pub use podman::{plan_podman, PODMAN_HOOKS_DIR};

#[derive(Debug, Clone, clap::Args)]
pub struct ConfigureArgs {
    /// Which runtime to configure
    #[arg(long, value_parser = ["containerd", "crio", "podman"])]
    pub runtime: String,
    /// Print what would be written, write nothing
    #[arg(long)]
    pub dry_run: bool,
    /// hooks.d directory (crio, podman)
    #[arg(long, value_name = "DIR")]
    pub hooks_dir: Option<PathBuf>,
    /// containerd's main config file
    #[arg(long, value_name = "FILE")]
    pub containerd_config: Option<PathBuf>,
    /// CRI-O drop-in directory
    #[arg(long, value_name = "DIR")]
    pub crio_config_dir: Option<PathBuf>,
}

/// One-line errors: what could not be done, why, and what to do.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {why} ({fix})")]
pub struct ConfigureError {
    pub what: String,
    pub why: String,
    pub fix: String,
}

fn fail(
    what: impl Into<String>,
    why: impl std::fmt::Display,
    fix: impl Into<String>,
) -> ConfigureError {
    ConfigureError { what: what.into(), why: why.to_string(), fix: fix.into() }
}

// ---------------------------------------------------------------------------------------------
// What every runtime's files share: the hooks.d templates, the install's paths, TOML helpers.

pub const HOOK_CREATE: &str =
    include_str!("../../../shim-config/podman/hooks.d/dataplane-hook-createruntime.json");
pub const HOOK_POSTSTOP: &str =
    include_str!("../../../shim-config/podman/hooks.d/dataplane-hook-poststop.json");

/// hooks.d file names (CRI-O and podman use the same files).
pub const HOOK_FILES: [(&str, &str); 2] = [
    ("dataplane-hook-createruntime.json", HOOK_CREATE),
    ("dataplane-hook-poststop.json", HOOK_POSTSTOP),
];

pub const HANDLER: &str = "dataplane";

const TEMPLATE_WRAPPER: &str = "/usr/bin/dataplane-runtime";
const TEMPLATE_HOOK: &str = "/usr/bin/dataplane-hook";

/// Where the product is installed: the paths that go into the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Install {
    pub hook: PathBuf,
    pub wrapper: PathBuf,
    /// `--config` for the hook, when not the default path.
    pub config: Option<PathBuf>,
    /// The configuration's `hook_timeout_secs`: the hooks.d files' OCI `timeout` is this plus
    /// a margin (the hook's own guard answers first; the runtime's kill is the backstop).
    pub timeout_secs: u64,
}

impl Install {
    /// The install the shipped files describe: /usr/bin, default config.
    pub fn shipped() -> Install {
        Install {
            hook: TEMPLATE_HOOK.into(),
            wrapper: TEMPLATE_WRAPPER.into(),
            config: None,
            timeout_secs: crate::deadline::DEFAULT_SECS,
        }
    }

    /// This binary and the wrapper beside it.
    pub fn current(loaded: &Loaded) -> Result<Install, ConfigureError> {
        let exe = std::env::current_exe().and_then(|p| p.canonicalize()).map_err(|e| {
            fail(
                "cannot configure",
                format!("cannot find this executable: {e}"),
                "run dataplane-hook from its install path",
            )
        })?;
        let wrapper = exe.with_file_name("dataplane-runtime");
        let config = loaded.path.clone().filter(|p| p != Path::new(DEFAULT_CONFIG_PATH));
        Ok(Install { hook: exe, wrapper, config, timeout_secs: loaded.config.hook_timeout_secs })
    }

    fn hook_args(&self, stage: &str) -> Vec<String> {
        let mut a = vec!["dataplane-hook".to_string()];
        if let Some(c) = &self.config {
            a.push("--config".into());
            a.push(c.display().to_string());
        }
        a.push(stage.into());
        a
    }
}

fn toml_str(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

fn toml_key(k: &str) -> String {
    if !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        k.to_string()
    } else {
        toml_str(k)
    }
}

/// A hooks.d JSON file (oci-hooks 1.0.0) for `template` with the real hook path and args.
pub fn render_hook(template: &str, install: &Install) -> String {
    let mut v: Value = serde_json::from_str(template).expect("shipped hooks.d template is JSON");
    let stage = v["stages"][0].as_str().expect("template has a stage").to_string();
    v["hook"]["path"] = json!(install.hook.display().to_string());
    v["hook"]["args"] = json!(install.hook_args(&stage));
    v["hook"]["timeout"] = json!(crate::deadline::oci_timeout(install.timeout_secs));
    serde_json::to_string_pretty(&v).expect("JSON serializes") + "\n"
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "template must contain {from} exactly once");
    text.replacen(from, to, 1)
}

fn read_toml(path: &Path) -> Result<Table, ConfigureError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        fail(format!("cannot read {}", path.display()), e, "check the path and its permissions")
    })?;
    text.parse::<Table>().map_err(|e| {
        fail(
            format!("cannot parse {}", path.display()),
            e.message().replace('\n', " "),
            "fix the TOML syntax first",
        )
    })
}

fn get_path<'a>(t: &'a Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(*first)?;
    if rest.is_empty() {
        return Some(v);
    }
    get_path(v.as_table()?, rest)
}

fn install_problem(install: &Install, need_wrapper: bool) -> Option<String> {
    let exec = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if need_wrapper && !exec(&install.wrapper) {
        return Some(format!("{} is missing or not executable", install.wrapper.display()));
    }
    if !exec(&install.hook) {
        return Some(format!("{} is missing or not executable", install.hook.display()));
    }
    None
}

pub fn plan(args: &ConfigureArgs, install: &Install) -> Result<Outcome, ConfigureError> {
    match args.runtime.as_str() {
        "containerd" => plan_containerd(args, install),
        "crio" => plan_crio(args, install),
        "podman" => plan_podman(args, install),
        other => Err(fail(
            "cannot configure",
            format!("unknown runtime {other:?}"),
            "use containerd, crio or podman",
        )),
    }
}

pub fn run(loaded: &Loaded, args: &ConfigureArgs) -> anyhow::Result<()> {
    let install = Install::current(loaded)?;
    let outcome = plan(args, &install)?;
    let text = execute(&outcome, args.dry_run)?;
    print!("{text}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped(rel: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shim-config").join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn shipped_files_are_what_configure_renders_for_a_usr_bin_install() {
        let i = Install::shipped();
        for dir in ["podman/hooks.d", "crio/hooks.d"] {
            for (name, t) in HOOK_FILES {
                assert_eq!(render_hook(t, &i), shipped(&format!("{dir}/{name}")), "{dir}/{name}");
            }
        }
        assert_eq!(render_crio(&i), shipped("crio/crio.conf.d/99-dataplane.conf"));
        let none = Table::new();
        assert_eq!(
            render_containerd(&ContainerdDropin::V2Copy { cri: Table::new() }, &i, &none),
            shipped("containerd/dataplane-v2.toml")
        );
        assert_eq!(
            render_containerd(&ContainerdDropin::V2, &i, &none),
            shipped("containerd/dataplane-v2.toml")
        );
        assert_eq!(
            render_containerd(&ContainerdDropin::V3, &i, &none),
            shipped("containerd/dataplane-v3.toml")
        );
    }

    #[test]
    fn hooks_carry_the_real_path_and_config() {
        let i = Install {
            hook: "/opt/dp/bin/dataplane-hook".into(),
            wrapper: "/opt/dp/bin/dataplane-runtime".into(),
            config: Some("/etc/dp.toml".into()),
            timeout_secs: 10,
        };
        let v: Value = serde_json::from_str(&render_hook(HOOK_POSTSTOP, &i)).unwrap();
        assert_eq!(v["hook"]["path"], "/opt/dp/bin/dataplane-hook");
        assert_eq!(
            v["hook"]["args"],
            json!(["dataplane-hook", "--config", "/etc/dp.toml", "poststop"])
        );
        assert_eq!(v["stages"], json!(["poststop"]));
        assert_eq!(v["when"]["annotations"]["^dataplane-hook\\.io/enabled$"], "^true$");
    }
}
