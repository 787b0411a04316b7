//! Owns `dataplane-runtime`, the runc-compatible wrapper: for `create` and `run` it edits the
//! bundle's config.json (features' spec edits, the hook for `createRuntime` and `poststop`)
//! and then execs the real runtime with the unchanged argv; every other command is exec'd
//! straight through.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::config::Loaded;
use crate::features::{self, SpecContext};
use crate::host::cgroup;
use crate::oci::Bundle;
use crate::request::Request;

/// runc's global flags that take a value (urfave/cli accepts `-x` and `--x`, `=` or a space).
const GLOBAL_VALUE_FLAGS: &[&str] = &["log", "log-format", "root", "criu", "rootless"];
/// `create`/`run` flags that take a value.
const CREATE_VALUE_FLAGS: &[&str] = &["bundle", "b", "console-socket", "pid-file", "preserve-fds"];

fn flag_name(arg: &str) -> Option<(&str, Option<&str>)> {
    let s = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    })
}

/// The command and its bundle, read from a runc command line (argv without argv[0]).
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    pub command: Option<String>,
    pub bundle: PathBuf,
    /// The container id (`create`/`run`: the positional argument).
    pub id: Option<String>,
}

pub fn parse_args(args: &[String], cwd: &Path) -> Invocation {
    let mut i = 0;
    // Global flags.
    while i < args.len() {
        let a = &args[i];
        if a == "--" {
            i += 1;
            break;
        }
        match flag_name(a) {
            Some((n, None)) if GLOBAL_VALUE_FLAGS.contains(&n) => i += 2,
            Some(_) => i += 1,
            None => break,
        }
    }
    let command = args.get(i).cloned();
    let mut bundle = cwd.to_path_buf();
    let mut id = None;
    if matches!(command.as_deref(), Some("create") | Some("run")) {
        let mut j = i + 1;
        while j < args.len() {
            let a = &args[j];
            if a == "--" {
                break;
            }
            match flag_name(a) {
                Some((n, v)) if CREATE_VALUE_FLAGS.contains(&n) => {
                    let value = match v {
                        Some(v) => {
                            j += 1;
                            Some(v.to_string())
                        }
                        None => {
                            j += 2;
                            args.get(j - 1).cloned()
                        }
                    };
                    if n == "bundle" || n == "b" {
                        if let Some(v) = value {
                            bundle = cwd.join(v);
                        }
                    }
                }
                Some(_) => j += 1,
                None => {
                    id.get_or_insert_with(|| a.clone());
                    j += 1;
                }
            }
        }
    }
    Invocation { command, bundle, id }
}

/// The hook binary installed beside this wrapper.
pub fn hook_path() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the dataplane-runtime executable")?;
    let p = exe.with_file_name("dataplane-hook");
    if !p.exists() {
        bail!("cannot find {} (install dataplane-hook beside dataplane-runtime)", p.display());
    }
    Ok(p)
}

fn hook_entry(hook: &Path, config: Option<&Path>, stage: &str) -> Value {
    let mut args = vec![json!("dataplane-hook")];
    if let Some(c) = config {
        args.push(json!("--config"));
        args.push(json!(c.display().to_string()));
    }
    args.push(json!(stage));
    json!({ "path": hook.display().to_string(), "args": args })
}

/// Adds our hook to `stage` unless one for that stage is already there.
pub fn inject_hook(b: &mut Bundle, hook: &Path, config: Option<&Path>, stage: &str) {
    let hooks = b.raw_object_mut(&["hooks"]);
    let list = hooks.entry(stage.to_string()).or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    let arr = list.as_array_mut().expect("array");
    let ours = |h: &Value| {
        h.get("path").and_then(Value::as_str) == Some(&hook.display().to_string())
            && h.get("args").and_then(Value::as_array).is_some_and(|a| a.last().and_then(Value::as_str) == Some(stage))
    };
    if !arr.iter().any(ours) {
        arr.push(hook_entry(hook, config, stage));
    }
}

/// crun's annotation naming the file its hooks' stderr goes to.
pub const CRUN_HOOKS_STDERR: &str = "run.oci.hooks.stderr";

/// Whether the real runtime is crun (by its file name: `crun`, `crun-1.8`, ...).
pub fn is_crun(runtime: &Path) -> bool {
    runtime.file_name().and_then(|n| n.to_str()).is_some_and(|n| n == "crun" || n.starts_with("crun-") || n.starts_with("crun."))
}

/// Whether our stderr (which crun inherits) can be opened again through /dev/stderr: a pipe, a
/// file or a character device can; a socket (journald's stream) or a closed fd cannot.
pub fn stderr_reopenable() -> bool {
    match nix::sys::stat::fstat(libc::STDERR_FILENO) {
        Ok(st) => matches!(st.st_mode & libc::S_IFMT, libc::S_IFIFO | libc::S_IFREG | libc::S_IFCHR),
        Err(_) => false,
    }
}

/// A regular file as stderr: crun's hooks append to it through their own open, while crun
/// writes at its inherited offset and would overwrite the hook's line with its own error. Make
/// the inherited description append-only too (it is the caller's log file: appending is what
/// it does anyway).
pub fn stderr_append_if_file() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let is_file = nix::sys::stat::fstat(libc::STDERR_FILENO).is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG);
    if !is_file {
        return;
    }
    if let Ok(flags) = fcntl(libc::STDERR_FILENO, FcntlArg::F_GETFL) {
        let _ = fcntl(libc::STDERR_FILENO, FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_APPEND));
    }
}

/// crun runs hooks with stderr on /dev/null (runc puts a failed hook's stderr into its own
/// error): the hook's one-line reason for refusing a container would reach no caller. Unless
/// the spec already names a file, point crun's hooks at crun's own stderr — the one the wrapper
/// hands on — when that can be reopened (crun fails the hook if the open fails). Returns
/// whether it did.
pub fn route_hook_stderr(b: &mut Bundle, runtime: &Path, reopenable: bool) -> bool {
    if !is_crun(runtime) || !reopenable {
        return false;
    }
    let ann = b.raw_object_mut(&["annotations"]);
    if ann.contains_key(CRUN_HOOKS_STDERR) {
        return false;
    }
    ann.insert(CRUN_HOOKS_STDERR.to_string(), json!("/dev/stderr"));
    true
}

/// Edits the bundle for `create`/`run`. Returns false when the container passes through.
pub fn edit_bundle(dir: &Path, id: Option<&str>, loaded: &Loaded, hook: &Path, runtime: &Path) -> anyhow::Result<bool> {
    let mut b = Bundle::load(dir)?;
    if b.is_sandbox() {
        return Ok(false);
    }
    let mut req = Request::parse(&b.annotations(), &b.hugepage_limits())?;
    req.gpu = features::gpu::inspect_bundle(&b, &b.annotations())?;
    if req.enabled == Some(false) {
        return Ok(false);
    }
    let h = cgroup::hugetlb_hierarchy().ok();
    let ctx = SpecContext { config: &loaded.config, hugetlb: h.as_ref(), container_id: id, hook_bin: Some(hook) };
    for f in features::FEATURES {
        (f.edit_spec)(&req, &mut b, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    inject_hook(&mut b, hook, loaded.path.as_deref(), "createRuntime");
    inject_hook(&mut b, hook, loaded.path.as_deref(), "poststop");
    if route_hook_stderr(&mut b, runtime, stderr_reopenable()) {
        stderr_append_if_file();
    }
    b.save()?;
    Ok(true)
}

/// Resolves the real runtime and refuses to exec ourselves.
pub fn real_runtime(path: &Path) -> anyhow::Result<PathBuf> {
    let resolved = if path.components().count() > 1 || path.is_absolute() {
        path.to_path_buf()
    } else {
        let paths = std::env::var_os("PATH").unwrap_or_else(|| OsString::from("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
        std::env::split_paths(&paths)
            .map(|d| d.join(path))
            .find(|p| p.is_file())
            .with_context(|| format!("cannot find the real runtime {:?} in PATH (set runtime_path in the config)", path))?
    };
    let me = std::env::current_exe().ok().and_then(|p| p.canonicalize().ok());
    if resolved.canonicalize().ok() == me && me.is_some() {
        bail!("runtime_path {} is dataplane-runtime itself (point runtime_path at the real runc)", resolved.display());
    }
    Ok(resolved)
}

/// Runs the wrapper: returns only on error (success execs the runtime).
pub fn main(args: Vec<String>, loaded: &Loaded) -> anyhow::Error {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let inv = parse_args(&args, &cwd);
    let runtime = match real_runtime(&loaded.config.runtime_path) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if matches!(inv.command.as_deref(), Some("create") | Some("run")) {
        let span = tracing::info_span!("runtime", command = inv.command.as_deref().unwrap_or(""), bundle = %inv.bundle.display());
        let _g = span.enter();
        let edited = hook_path().and_then(|hook| edit_bundle(&inv.bundle, inv.id.as_deref(), loaded, &hook, &runtime));
        match edited {
            Ok(true) => tracing::info!("spec edited"),
            Ok(false) => tracing::info!("passing through"),
            Err(e) => {
                crate::metrics::wrapper_done(&loaded.config, Some(&e));
                return e;
            }
        }
        crate::metrics::wrapper_done(&loaded.config, None);
    }
    let err = std::process::Command::new(&runtime).args(&args).exec();
    anyhow::anyhow!("cannot execute the real runtime {}: {err} (set runtime_path in the config)", runtime.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn runc_command_lines_give_command_and_bundle() {
        let cwd = Path::new("/cwd");
        let cases: &[(&[&str], Option<&str>, &str)] = &[
            (&["create", "id"], Some("create"), "/cwd"),
            (&["--root", "/r", "--log=/l", "--systemd-cgroup", "create", "--bundle", "/b", "id"], Some("create"), "/b"),
            (&["-root", "/r", "run", "-b", "rel", "-d", "id"], Some("run"), "/cwd/rel"),
            (&["create", "--bundle=/x", "--pid-file", "/p", "id"], Some("create"), "/x"),
            (&["--log-format", "json", "create", "--console-socket", "/s", "-b=/y", "id"], Some("create"), "/y"),
            (&["delete", "--force", "id"], Some("delete"), "/cwd"),
            (&["--version"], None, "/cwd"),
        ];
        for (args, cmd, bundle) in cases {
            let inv = parse_args(&v(args), cwd);
            assert_eq!(inv.command.as_deref(), *cmd, "{args:?}");
            assert_eq!(inv.bundle, PathBuf::from(bundle), "{args:?}");
            if cmd == &Some("create") || cmd == &Some("run") {
                assert_eq!(inv.id.as_deref(), Some("id"), "{args:?}");
            }
        }
    }

    #[test]
    fn hook_injection_is_idempotent_and_keeps_existing_hooks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","x-unknown":{"a":1},"hooks":{"poststop":[{"path":"/other"}]}}"#,
        )
        .unwrap();
        let mut b = Bundle::load(dir.path()).unwrap();
        let hook = Path::new("/usr/bin/dataplane-hook");
        for _ in 0..2 {
            inject_hook(&mut b, hook, Some(Path::new("/etc/c.toml")), "createRuntime");
            inject_hook(&mut b, hook, Some(Path::new("/etc/c.toml")), "poststop");
        }
        let h = &b.raw["hooks"];
        assert_eq!(h["createRuntime"].as_array().unwrap().len(), 1);
        assert_eq!(h["poststop"].as_array().unwrap().len(), 2);
        assert_eq!(h["poststop"][0]["path"], "/other");
        assert_eq!(h["createRuntime"][0]["args"], json!(["dataplane-hook", "--config", "/etc/c.toml", "createRuntime"]));
        assert_eq!(b.raw["x-unknown"], json!({"a":1}));
    }

    #[test]
    fn crun_hooks_get_crun_stderr_unless_the_spec_names_a_file_or_it_cannot_be_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let load = |doc: &str| {
            std::fs::write(dir.path().join("config.json"), doc).unwrap();
            Bundle::load(dir.path()).unwrap()
        };
        let plain = r#"{"ociVersion":"1.0.2","annotations":{"a":"b"}}"#;
        let mut b = load(plain);
        assert!(route_hook_stderr(&mut b, Path::new("/usr/bin/crun"), true));
        assert_eq!(b.raw["annotations"][CRUN_HOOKS_STDERR], "/dev/stderr");
        assert_eq!(b.raw["annotations"]["a"], "b");
        // runc shows a failed hook's stderr itself: its spec stays as it was.
        let mut b = load(plain);
        assert!(!route_hook_stderr(&mut b, Path::new("/usr/sbin/runc"), true));
        assert!(b.raw["annotations"].get(CRUN_HOOKS_STDERR).is_none());
        // A socket (or closed) stderr: crun would fail the hook opening it.
        let mut b = load(plain);
        assert!(!route_hook_stderr(&mut b, Path::new("crun"), false));
        assert!(b.raw["annotations"].get(CRUN_HOOKS_STDERR).is_none());
        // The user's own file wins; no annotations object yet is fine.
        let mut b = load(r#"{"ociVersion":"1.0.2","annotations":{"run.oci.hooks.stderr":"/var/log/h"}}"#);
        assert!(!route_hook_stderr(&mut b, Path::new("crun"), true));
        assert_eq!(b.raw["annotations"][CRUN_HOOKS_STDERR], "/var/log/h");
        let mut b = load(r#"{"ociVersion":"1.0.2"}"#);
        assert!(route_hook_stderr(&mut b, Path::new("/opt/crun-1.8"), true));
        assert_eq!(b.raw["annotations"][CRUN_HOOKS_STDERR], "/dev/stderr");
        assert!(!is_crun(Path::new("/usr/bin/crunch")) && !is_crun(Path::new("/usr/bin/dataplane-runtime")));
    }

    #[test]
    fn stderr_of_this_test_process_is_reopenable_or_not_by_its_type() {
        // cargo test gives a pipe or a file or a tty: all reopenable. (Sockets: the unit test
        // above covers the `false` branch.)
        let st = nix::sys::stat::fstat(libc::STDERR_FILENO).unwrap();
        let kind = st.st_mode & libc::S_IFMT;
        assert_eq!(stderr_reopenable(), kind != libc::S_IFSOCK, "mode {kind:o}");
    }
}
