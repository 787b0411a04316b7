//! Owns `dataplane-runtime`, the runc-compatible wrapper: for `create` and `run` it edits the
//! bundle's config.json (features' spec edits, the hook for `createRuntime` and `poststop`)
//! and then execs the real runtime with the unchanged argv; `update` of a GPU container goes
//! through [`update`] (its headroom stays carved out of a new memory limit); every other command
//! is exec'd straight through.

pub mod argv;
pub mod update;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use crate::config::Loaded;
use crate::features::{self, SpecContext};
use crate::host::cgroup;
use crate::oci::Bundle;
use crate::request::Request;

/// A flag's name and its `=` value, dashes dropped (`--x=v`, `-x`; None: not a flag).
pub(crate) fn flag_name(arg: &str) -> Option<(&str, Option<&str>)> {
    let s = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-'))?;
    if s.is_empty() {
        return None;
    }
    Some(match s.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (s, None),
    })
}

/// The command and its bundle, read from a runc command line (argv without argv[0]) the way
/// runc reads it ([`argv`]).
#[derive(Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The command runc runs (None: none, or the global `--help`/`--version` print instead).
    pub command: Option<String>,
    /// Index of the command word in the argv.
    pub command_index: usize,
    /// `create`/`run`: `<cwd>/<--bundle>` (the working directory without one); else the cwd.
    pub bundle: PathBuf,
    /// The container id (`create`/`run`).
    pub id: Option<String>,
    /// `create -h`, `run --help`, ...: runc prints the command's help and does nothing else.
    pub help: bool,
}

impl Invocation {
    /// Whether runc would create a container from `<bundle>/config.json`.
    pub fn creates(&self) -> bool {
        matches!(self.command.as_deref(), Some("create" | "run")) && !self.help
    }
}

/// Where the command is in a runc command line: the index after the global flags (the argv's
/// length when there is none or the global flags cannot be read).
pub fn command_index(args: &[String]) -> usize {
    argv::parse_global(args).map(|g| g.command_index).unwrap_or(args.len())
}

/// Reads a runc command line. `create`/`run` lines are read in full: a flag runc does not
/// have, or a line runc would refuse, is an error (the wrapper never guesses which bundle or
/// id it means); other commands are runc's business past the global flags.
pub fn parse_args(args: &[String], cwd: &Path) -> Result<Invocation, argv::ArgError> {
    let g = argv::parse_global(args)?;
    let i = g.command_index;
    let command = if g.prints_only { None } else { args.get(i).cloned() };
    let mut inv =
        Invocation { command, command_index: i, bundle: cwd.to_path_buf(), id: None, help: false };
    if let Some(c @ ("create" | "run")) = inv.command.as_deref() {
        match argv::parse_create(c, &args[i + 1..])? {
            argv::CreateLine::Help => inv.help = true,
            argv::CreateLine::Create { bundle, id } => {
                // runc chdirs to a non-empty --bundle and reads config.json there.
                if let Some(b) = bundle {
                    inv.bundle = cwd.join(b);
                }
                inv.id = Some(id);
            }
        }
    }
    Ok(inv)
}

/// Whether the wrapper does anything for this command line besides exec'ing the real runtime:
/// `create` and `run` (the spec) and `update` (a GPU container's headroom). A line it cannot
/// read is acted on too: the wrapper refuses it.
pub fn acts_on(args: &[String]) -> bool {
    match parse_args(args, Path::new("/")) {
        Ok(inv) => inv.creates() || inv.command.as_deref() == Some("update"),
        Err(_) => true,
    }
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
            && h.get("args")
                .and_then(Value::as_array)
                .is_some_and(|a| a.last().and_then(Value::as_str) == Some(stage))
    };
    if !arr.iter().any(ours) {
        arr.push(hook_entry(hook, config, stage));
    }
}

/// Gives our hook entries the OCI `timeout` (seconds): the runtime kills a hook that overruns
/// it and fails the operation, so no container's hook can hold a create or delete forever.
pub fn set_hook_timeouts(b: &mut Bundle, hook: &Path, secs: u64) {
    let path = hook.display().to_string();
    for stage in ["createRuntime", "poststop"] {
        if let Some(list) =
            b.raw_object_mut(&["hooks"]).get_mut(stage).and_then(Value::as_array_mut)
        {
            for h in list
                .iter_mut()
                .filter(|h| h.get("path").and_then(Value::as_str) == Some(path.as_str()))
            {
                h["timeout"] = json!(secs);
            }
        }
    }
}

/// crun's annotation naming the file its hooks' stderr goes to.
pub const CRUN_HOOKS_STDERR: &str = "run.oci.hooks.stderr";

/// Whether the real runtime is crun (by its file name: `crun`, `crun-1.8`, ...).
pub fn is_crun(runtime: &Path) -> bool {
    runtime
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n == "crun" || n.starts_with("crun-") || n.starts_with("crun."))
}

/// Whether our stderr (which crun inherits) can be opened again through /dev/stderr: a pipe, a
/// file or a character device can; a socket (journald's stream) or a closed fd cannot.
pub fn stderr_reopenable() -> bool {
    stderr_type().is_some_and(|t| matches!(t, libc::S_IFIFO | libc::S_IFREG | libc::S_IFCHR))
}

/// The file type bits of our stderr (None: closed).
fn stderr_type() -> Option<libc::mode_t> {
    nix::sys::stat::fstat(libc::STDERR_FILENO).ok().map(|st| st.st_mode & libc::S_IFMT)
}

/// A regular file as stderr: crun's hooks append to it through their own open, while crun
/// writes at its inherited offset and would overwrite the hook's line with its own error. Make
/// the inherited description append-only too (it is the caller's log file: appending is what
/// it does anyway).
pub fn stderr_append_if_file() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if stderr_type() != Some(libc::S_IFREG) {
        return;
    }
    if let Ok(flags) = fcntl(libc::STDERR_FILENO, FcntlArg::F_GETFL) {
        let _ = fcntl(
            libc::STDERR_FILENO,
            FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_APPEND),
        );
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
pub fn edit_bundle(
    dir: &Path,
    id: Option<&str>,
    loaded: &Loaded,
    hook: &Path,
    runtime: &Path,
) -> anyhow::Result<bool> {
    let mut b = Bundle::load(dir)?;
    if b.is_sandbox() {
        return Ok(false);
    }
    let mut req = Request::parse(&b.annotations(), &b.hugepage_limits())?;
    req.gpu = features::gpu::inspect_bundle(&b, &b.annotations())?;
    if req.enabled == Some(false) {
        return Ok(false);
    }
    if let Some(dirs) = only_private_dirs(&req, &b, &loaded.config, id.unwrap_or("(unnamed)")) {
        gc_before_create(&loaded.config);
        let dirs: Vec<_> = dirs
            .into_iter()
            .filter(|t| match implicit_dir_left_out(&req, &b, t) {
                Some(why) => {
                    tracing::info!("no private runtime dir at {t}: {why}");
                    false
                }
                None => true,
            })
            .collect();
        if dirs.is_empty() {
            return Ok(false);
        }
        for target in dirs {
            add_private_dir_mount(&mut b, &target);
        }
        b.save()?;
        return Ok(true);
    }
    let h = cgroup::hugetlb_hierarchy().ok();
    let ctx = SpecContext {
        config: &loaded.config,
        hugetlb: h.as_ref(),
        container_id: id,
        hook_bin: Some(hook),
    };
    // Hooks first: a feature may tell the hook something through its own entry (GPU: the
    // limit it lowered), a channel pod annotations cannot reach.
    inject_hook(&mut b, hook, loaded.path.as_deref(), "createRuntime");
    inject_hook(&mut b, hook, loaded.path.as_deref(), "poststop");
    set_hook_timeouts(&mut b, hook, crate::deadline::oci_timeout(loaded.config.hook_timeout_secs));
    for f in features::FEATURES {
        (f.edit_spec)(&req, &mut b, &ctx).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    if route_hook_stderr(&mut b, runtime, stderr_reopenable()) {
        stderr_append_if_file();
    }
    b.save()?;
    Ok(true)
}

/// The fast path (G1 for a container that asks for nothing more): when the plan, made without
/// any node facts, is only private empty dirs and no feature needs the hook's view of the
/// container, those dirs become plain tmpfs mounts in the spec and no hook is injected. There
/// is nothing to reserve, record or undo: the tmpfs lives and dies with the container's mount
/// namespace, and the runtime resolves its target inside the rootfs as for any spec mount.
/// Returns the dirs' targets, or None when the container needs the hook.
pub fn only_private_dirs(
    req: &Request,
    b: &Bundle,
    cfg: &crate::config::Config,
    id: &str,
) -> Option<Vec<crate::request::ContainerPath>> {
    // Features that act on what only the hook sees (the init, the node) or record for others
    // (a GPU container is the watchdog's to kill: it needs its ledger record).
    if features::rdma::RdmaSpec::read(&b.raw, req).is_some()
        || req.gpu.gpus > 0
        || req.group.is_some()
        || req.file_prefix.is_some()
    {
        return None;
    }
    // A spec asking for shared propagation (Kubernetes' Bidirectional volumes): a tmpfs the
    // runtime mounted on such a volume would also appear on the host. The hook checks where
    // each target's mount propagates and refuses those.
    if spec_has_shared_propagation(&b.raw) {
        return None;
    }
    let facts = crate::plan::NodeFacts::default()
        .with(crate::features::prefix::Facts { spec_mounts: b.mounts() });
    let p = crate::plan::plan(id, req, cfg, &facts).ok()?;
    if !p.warnings.is_empty() {
        return None;
    }
    let mut dirs = vec![];
    for s in p.steps {
        match s {
            crate::plan::Step::Mount(crate::plan::MountPlan::EmptyDir { target }) => {
                dirs.push(target)
            }
            _ => return None,
        }
    }
    Some(dirs)
}

fn spec_has_shared_propagation(spec: &serde_json::Value) -> bool {
    let shared = |v: &serde_json::Value| matches!(v.as_str(), Some("shared" | "rshared"));
    shared(&spec["linux"]["rootfsPropagation"])
        || spec["mounts"].as_array().is_some_and(|ms| {
            ms.iter().any(|m| m["options"].as_array().is_some_and(|o| o.iter().any(shared)))
        })
}

/// Why the fast path leaves the implicit runtime dir (the container did not ask for one with
/// `dpdk-runtime-dir`) out of a container, or None to add it. A container must not fail, or
/// have its image written, for something it did not ask for: runc creates a missing mount
/// target in the rootfs, which in a user-namespaced container fails (`mkdir .../rootfs/var/run:
/// permission denied` where the image's dirs belong to an unmapped uid) and in a read-only
/// rootfs writes into the image. So there the dir is added only when runc creates nothing:
/// the target is a directory in the rootfs already, or the spec mounts something there or a
/// tmpfs above it (runc then creates what is missing in that tmpfs, not in the image).
pub fn implicit_dir_left_out(
    req: &Request,
    b: &Bundle,
    target: &crate::request::ContainerPath,
) -> Option<&'static str> {
    if req.runtime_dir.is_some() {
        return None;
    }
    let userns = b.raw["linux"]["namespaces"]
        .as_array()
        .is_some_and(|ns| ns.iter().any(|n| n["type"] == "user"));
    let readonly = b.raw["root"]["readonly"].as_bool() == Some(true);
    if !userns && !readonly {
        return None;
    }
    if !needs_creating(b, target) {
        return None;
    }
    Some(if userns {
        "the container is user-namespaced and the path does not exist in its rootfs (runc could not create it there; set dataplane-hook.io/dpdk-runtime-dir to ask for it anyway)"
    } else {
        "the rootfs is read-only and the path does not exist in it (runc would create it in the image; set dataplane-hook.io/dpdk-runtime-dir to ask for it anyway)"
    })
}

/// Whether runc, mounting at `target` after the spec's own mounts, would create a directory
/// in the image (resolved inside the rootfs like runc and the hook resolve it, never out of
/// it; anything unclear counts as yes).
fn needs_creating(b: &Bundle, target: &crate::request::ContainerPath) -> bool {
    use crate::host::mount::{resolve_target, Missing};
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::AsRawFd;
    let Ok(root) = rustix::fs::open(
        b.rootfs(),
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return true;
    };
    match resolve_target(&root, target, Missing::Skip) {
        Ok(Some(_)) => return false,
        Ok(None) => {}
        Err(_) => return true,
    }
    // Where the container sees the target: its deepest existing ancestor, symlinks resolved
    // (an image's /var/run is usually a link to /run), and the missing rest.
    let fd_path = |fd: &std::os::fd::OwnedFd| {
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()
    };
    let Some(real_root) = fd_path(&root) else { return true };
    let comps: Vec<_> = target.relative().components().collect();
    let mut seen = target.as_path().to_path_buf();
    for k in (1..comps.len()).rev() {
        let prefix: PathBuf = std::iter::once(std::path::Component::RootDir)
            .chain(comps[..k].iter().copied())
            .collect();
        let Ok(p) = crate::request::ContainerPath::parse(&prefix.to_string_lossy()) else {
            return true;
        };
        if let Ok(Some(fd)) = resolve_target(&root, &p, Missing::Skip) {
            let Some(inside) =
                fd_path(&fd).and_then(|h| h.strip_prefix(&real_root).ok().map(Path::to_path_buf))
            else {
                return true;
            };
            seen = Path::new("/").join(inside).join(comps[k..].iter().collect::<PathBuf>());
            break;
        }
    }
    let covered = |dest: &Path, typ: Option<&str>| {
        [target.as_path(), seen.as_path()]
            .iter()
            .any(|t| *t == dest || (typ == Some("tmpfs") && t.starts_with(dest)))
    };
    !b.mounts().iter().any(|(dest, typ, _, _)| covered(dest, typ.as_deref()))
}

/// What the hook's empty dir is (the same tmpfs: [`crate::plan::EMPTY_DIR_BYTES`], mode, nosuid,
/// nodev, noexec), as a spec mount appended after the image's own (so it is on top, like the hook's).
fn add_private_dir_mount(b: &mut Bundle, target: &crate::request::ContainerPath) {
    let mounts = b
        .raw
        .as_object_mut()
        .expect("a spec is an object")
        .entry("mounts")
        .or_insert_with(|| json!([]));
    if !mounts.is_array() {
        *mounts = json!([]);
    }
    let ours = json!({
        "destination": target.as_path().display().to_string(),
        "type": "tmpfs",
        "source": "tmpfs",
        "options": [
            "nosuid",
            "nodev",
            "noexec",
            format!("mode={}", crate::plan::EMPTY_DIR_MODE),
            format!("size={}", crate::plan::EMPTY_DIR_BYTES),
        ],
    });
    let list = mounts.as_array_mut().expect("array");
    // A create retried on the same bundle finds its own mount last: do not stack another.
    if list.last() != Some(&ours) {
        list.push(ours);
    }
}

/// G6's gc at the start of a create, for creates that run no hook: only when the ledger holds
/// records (an empty or missing state dir has nothing to release, and is left as it is).
fn gc_before_create(cfg: &crate::config::Config) {
    let has_records = ["containers", "groups"].iter().any(|d| {
        std::fs::read_dir(cfg.state_dir.join(d))
            .map(|mut rd| {
                rd.any(|e| e.is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".json")))
            })
            .unwrap_or(false)
    });
    if !has_records {
        return;
    }
    match crate::ledger::Ledger::open(&cfg.state_dir) {
        Ok(ledger) => {
            for e in crate::gc::run_within(&ledger, false, crate::gc::budget_at_create()).errors {
                tracing::warn!("gc: {e}");
            }
        }
        Err(e) => tracing::warn!("gc before create: {e}"),
    }
}

/// Resolves the real runtime and refuses to exec ourselves.
pub fn real_runtime(path: &Path) -> anyhow::Result<PathBuf> {
    let resolved = crate::discovery::resolve_command(path).with_context(|| {
        format!("cannot find the real runtime {:?} in PATH (set runtime_path in the config)", path)
    })?;
    let me = std::env::current_exe().ok().and_then(|p| file_id(&p));
    if me.is_some() && file_id(&resolved) == me {
        bail!(
            "runtime_path {} is dataplane-runtime itself (point runtime_path at the real runc)",
            resolved.display()
        );
    }
    Ok(resolved)
}

/// What a path names, as (device, inode): the same file through any symlink or hard link.
pub fn file_id(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()))
}

/// Runs the wrapper: returns only on error (success execs the runtime).
pub fn main(args: Vec<String>, loaded: &Loaded) -> anyhow::Error {
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    // Before anything is resolved, read or written: a line the wrapper cannot read the way
    // runc would is refused as it is, and nothing runs.
    let inv = match parse_args(&args, &cwd) {
        Ok(inv) => inv,
        // A global flag without its value ends the line: there is no command, runc creates
        // nothing and prints its own usage error, which the caller must see as under runc.
        Err(argv::ArgError::MissingValue { .. }) if argv::parse_global(&args).is_err() => {
            Invocation {
                command: None,
                command_index: args.len(),
                bundle: cwd,
                id: None,
                help: false,
            }
        }
        Err(e) => return e.into(),
    };
    let runtime = match real_runtime(&loaded.config.runtime_path) {
        Ok(r) => r,
        Err(e) => return e,
    };
    if inv.creates() {
        // Bounded like a hook stage (the guard goes with the exec of the runtime).
        crate::deadline::arm(
            std::time::Duration::from_secs(loaded.config.hook_timeout_secs),
            format!("{} (spec edit)", inv.command.as_deref().unwrap_or("create")),
        );
        let span = tracing::info_span!("runtime", command = inv.command.as_deref().unwrap_or(""), bundle = %inv.bundle.display());
        let _g = span.enter();
        let edited = hook_path()
            .and_then(|hook| edit_bundle(&inv.bundle, inv.id.as_deref(), loaded, &hook, &runtime));
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
    if inv.command.as_deref() == Some("update") {
        match update::run(&args, inv.command_index, loaded, &runtime) {
            Ok(None) => {}
            Ok(Some(code)) => std::process::exit(code),
            Err(e) => return e,
        }
    }
    // argv[0] as configured (`runc`, or the path given), as a shell or containerd would run it:
    // runc names itself by it in its usage errors (`runc: "state" requires exactly 1 argument(s)`).
    let err =
        std::process::Command::new(&runtime).arg0(&loaded.config.runtime_path).args(&args).exec();
    anyhow::anyhow!(
        "cannot execute the real runtime {}: {err} (set runtime_path in the config)",
        runtime.display()
    )
}

/// Puts the wrapper's one-line refusal (`line`) where the caller reads the runtime's errors:
/// containerd's runc shim takes the OCI runtime error from the last `"level":"error"` entry of
/// runc's `--log` file (`--log-format json`), not from stderr, so a refusal made before runc runs
/// would otherwise reach the CRI caller as "unable to retrieve OCI runtime error". The path comes
/// from the runtime's command line (trusted); opened non-blocking, appended, best effort.
pub fn report_to_runtime_log(args: &[String], line: &str) {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let Some((path, json)) = argv::global_log(args) else { return };
    let entry = if json {
        json!({"level": "error", "msg": line}).to_string()
    } else {
        // logrus's text format, as runc writes it without --log-format json.
        format!("level=error msg={}", Value::from(line))
    };
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&path);
    if let Ok(mut f) = file {
        let _ = f.write_all(format!("{entry}\n").as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_args as v;

    #[test]
    fn a_refusal_is_appended_to_runcs_log_as_the_runc_shim_reads_it() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(&log, "{\"level\":\"info\",\"msg\":\"before\"}\n").unwrap();
        let line = "dataplane-hook: cannot do it: because \"quoted\" (fix it)";
        let l = log.display().to_string();
        report_to_runtime_log(&v(&["--log", &l, "--log-format", "json", "create", "id"]), line);
        let text = std::fs::read_to_string(&log).unwrap();
        let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
        assert_eq!(text.lines().count(), 2, "appended: {text}");
        assert_eq!(last, json!({"level": "error", "msg": line}));
        let txt = dir.path().join("log.txt");
        let t = txt.display().to_string();
        report_to_runtime_log(&v(&["--log", &t, "create", "id"]), line);
        assert_eq!(
            std::fs::read_to_string(&txt).unwrap(),
            format!("level=error msg={}\n", serde_json::to_string(line).unwrap())
        );
    }

    #[test]
    fn runc_command_lines_give_command_bundle_and_id() {
        let cwd = Path::new("/cwd");
        // (argv, command, bundle, id)
        type Case<'a> = (&'a [&'a str], Option<&'a str>, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (&["create", "id"], Some("create"), "/cwd", Some("id")),
            (
                &["--root", "/r", "--log=/l", "--systemd-cgroup", "create", "--bundle", "/b", "id"],
                Some("create"),
                "/b",
                Some("id"),
            ),
            (&["-root", "/r", "run", "-b", "rel", "-d", "id"], Some("run"), "/cwd/rel", Some("id")),
            (
                &["create", "--bundle=/x", "--pid-file", "/p", "id"],
                Some("create"),
                "/x",
                Some("id"),
            ),
            (
                &["--log-format", "json", "create", "--console-socket", "/s", "-b=/y", "id"],
                Some("create"),
                "/y",
                Some("id"),
            ),
            (
                &["create", "--pidfd-socket", "/run/p.sock", "--bundle", "/b", "id"],
                Some("create"),
                "/b",
                Some("id"),
            ),
            (&["create", "id", "--bundle", "/b"], Some("create"), "/b", Some("id")),
            (&["create", "--bundle=", "id"], Some("create"), "/cwd", Some("id")),
            (&["delete", "--force", "id"], Some("delete"), "/cwd", None),
            (&["--version"], None, "/cwd", None),
            (&["--help", "create", "--bundle", "/b", "id"], None, "/cwd", None),
            (&[], None, "/cwd", None),
        ];
        for (args, cmd, bundle, id) in cases {
            let inv = parse_args(&v(args), cwd).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(
                (inv.command.as_deref(), inv.bundle.as_path(), inv.id.as_deref()),
                (*cmd, Path::new(bundle), *id),
                "{args:?}"
            );
            assert!(!inv.help);
        }
        for args in
            [&["create", "-h"][..], &["--root", "/r", "run", "--help"], &["create", "id", "-h"]]
        {
            let inv = parse_args(&v(args), cwd).unwrap();
            assert!(inv.help && !inv.creates() && inv.id.is_none(), "{args:?}: {inv:?}");
        }
        for args in
            [&["create", "--no-such", "id"][..], &["--no-such", "create", "id"], &["run", "a", "b"]]
        {
            let e = parse_args(&v(args), cwd).unwrap_err().to_string();
            assert!(e.starts_with("cannot read the runtime command line: "), "{args:?}: {e}");
        }
    }

    #[test]
    fn only_create_run_and_update_are_acted_on() {
        for args in [
            &["create", "id"][..],
            &["--root", "/r", "run", "-d", "id"],
            &["--log=/l", "update", "--memory", "1", "id"],
        ] {
            assert!(acts_on(&v(args)), "{args:?}");
        }
        for args in [
            &["start", "id"][..],
            &["--root", "/r", "delete", "--force", "id"],
            &["state", "create"],
            &["--version"],
            &[],
            &["create", "-h"],
            &["--help", "create", "id"],
        ] {
            assert!(!acts_on(&v(args)), "{args:?}");
        }
        // Refused lines are the wrapper's: it logs why.
        assert!(acts_on(&v(&["create", "--no-such", "id"])));
    }

    fn bundle_with(spec: Value) -> (tempfile::TempDir, Bundle) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
        let b = Bundle::load(dir.path()).unwrap();
        (dir, b)
    }

    fn fast_path(mut spec: Value) -> Option<Vec<String>> {
        let process = spec["process"].as_object().cloned().unwrap_or_default();
        spec["process"] = json!({"user": {"uid": 0, "gid": 0}, "cwd": "/", "args": ["true"]});
        for (k, v) in process {
            spec["process"][k] = v;
        }
        let (_d, b) = bundle_with(spec);
        let mut req = Request::parse(&b.annotations(), &b.hugepage_limits()).unwrap();
        req.gpu = features::gpu::inspect_bundle(&b, &b.annotations()).unwrap();
        only_private_dirs(&req, &b, &crate::config::Config::default(), "c")
            .map(|v| v.iter().map(|t| t.as_path().display().to_string()).collect())
    }

    #[test]
    fn the_fast_path_mount_is_added_once_on_top() {
        let (_d, mut b) = bundle_with(
            json!({"ociVersion": "1.0.2", "process": {"user": {"uid": 0, "gid": 0}, "cwd": "/"},
            "mounts": [{"destination": "/var/run/dpdk", "type": "bind", "source": "/host/dpdk"}]}),
        );
        let t = crate::request::ContainerPath::parse("/var/run/dpdk").unwrap();
        add_private_dir_mount(&mut b, &t);
        add_private_dir_mount(&mut b, &t);
        let m = b.raw["mounts"].as_array().unwrap();
        assert_eq!(m.len(), 2, "{m:?}");
        assert_eq!(
            (m[1]["type"].as_str(), m[1]["destination"].as_str()),
            (Some("tmpfs"), Some("/var/run/dpdk"))
        );
    }

    #[test]
    fn only_a_container_asking_for_nothing_takes_the_fast_path() {
        let ann = |k: &str, v: &str| json!({"ociVersion": "1.0.2", "annotations": {k: v}});
        assert_eq!(
            fast_path(json!({"ociVersion": "1.0.2"})),
            Some(vec!["/var/run/dpdk".to_string()])
        );
        assert_eq!(
            fast_path(ann("dataplane-hook.io/dpdk-runtime-dir", "/run/x")),
            Some(vec!["/run/x".to_string()])
        );
        assert_eq!(fast_path(ann("dataplane-hook.io/dpdk-runtime-dir", "none")), Some(vec![]));
        for (k, v) in [
            ("dataplane-hook.io/hugepages-2Mi", "16Mi"),
            ("dataplane-hook.io/dpdk-group", "g"),
            ("dataplane-hook.io/dpdk-file-prefix", "auto"),
            ("dataplane-hook.io/gpu-headroom", "1Gi"),
            ("dataplane-hook.io/spdk-iobuf", "small=8192,large=1024"),
            ("dataplane-hook.io/rdma-gid-index", "auto"),
        ] {
            assert_eq!(fast_path(ann(k, v)), None, "{k}={v} needs the hook");
        }
        let limits = json!({"ociVersion": "1.0.2", "linux": {"resources": {"hugepageLimits": [{"pageSize": "2MB", "limit": 16777216}]}}});
        assert_eq!(fast_path(limits), None, "hugepageLimits need the hook");
        let gpu =
            json!({"ociVersion": "1.0.2", "process": {"env": ["NVIDIA_VISIBLE_DEVICES=0,1"]}});
        assert_eq!(fast_path(gpu), None, "a GPU container needs the hook");
        let rdma = json!({"ociVersion": "1.0.2", "linux": {"devices": [{"path": "/dev/infiniband/uverbs0", "type": "c", "major": 231, "minor": 192}]}});
        assert_eq!(fast_path(rdma), None, "an RDMA container needs the hook");
    }

    /// The fast path's rule for user-namespaced and read-only-rootfs containers, against
    /// rootfs trees in a temp dir.
    #[test]
    fn the_implicit_runtime_dir_is_left_out_only_where_runc_would_create_it_in_the_image() {
        let userns = json!({"namespaces": [{"type": "mount"}, {"type": "user"}],
            "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}], "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}]});
        let check = |linux: Value,
                     readonly: bool,
                     mounts: Value,
                     ann: Value,
                     tree: &dyn Fn(&Path)| {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("rootfs/var")).unwrap();
            tree(&dir.path().join("rootfs"));
            let spec = json!({"ociVersion": "1.0.2", "root": {"path": "rootfs", "readonly": readonly}, "linux": linux, "mounts": mounts, "annotations": ann});
            std::fs::write(dir.path().join("config.json"), spec.to_string()).unwrap();
            let b = Bundle::load(dir.path()).unwrap();
            let req = Request::parse(&b.annotations(), &b.hugepage_limits()).unwrap();
            let t = crate::request::ContainerPath::parse("/var/run/dpdk").unwrap();
            implicit_dir_left_out(&req, &b, &t)
        };
        let none = |_: &Path| {};
        let dpdk_dir = |r: &Path| std::fs::create_dir_all(r.join("var/run/dpdk")).unwrap();
        let run_link = |to: &'static str| {
            move |r: &Path| {
                std::fs::create_dir_all(r.join("run")).unwrap();
                std::os::unix::fs::symlink(to, r.join("var/run")).unwrap();
            }
        };
        let (no_ann, no_mounts) = (json!({}), json!([]));
        // Neither user-namespaced nor read-only: added as before (runc creates it, as it may).
        assert_eq!(check(json!({}), false, no_mounts.clone(), no_ann.clone(), &none), None);
        // User-namespaced or read-only, path missing: left out.
        assert!(check(userns.clone(), false, no_mounts.clone(), no_ann.clone(), &none)
            .is_some_and(|w| w.contains("user-namespaced")));
        assert!(check(json!({}), true, no_mounts.clone(), no_ann.clone(), &none)
            .is_some_and(|w| w.contains("read-only")));
        assert!(
            check(json!({}), true, no_mounts.clone(), no_ann.clone(), &run_link("/run")).is_some(),
            "/run has no dpdk dir"
        );
        // The path is there: mounting over it creates nothing.
        assert_eq!(
            check(userns.clone(), false, no_mounts.clone(), no_ann.clone(), &dpdk_dir),
            None
        );
        assert_eq!(check(json!({}), true, no_mounts.clone(), no_ann.clone(), &dpdk_dir), None);
        // A tmpfs the spec mounts above it, seen through the image's /var/run -> /run link (or not).
        let run_tmpfs = json!([{"destination": "/run", "type": "tmpfs", "source": "tmpfs"}]);
        assert_eq!(
            check(json!({}), true, run_tmpfs.clone(), no_ann.clone(), &run_link("../run")),
            None
        );
        assert_eq!(
            check(userns.clone(), false, run_tmpfs.clone(), no_ann.clone(), &run_link("/run")),
            None
        );
        let var_run_tmpfs =
            json!([{"destination": "/var/run", "type": "tmpfs", "source": "tmpfs"}]);
        assert_eq!(check(userns.clone(), false, var_run_tmpfs, no_ann.clone(), &none), None);
        // A bind above it would have runc write into the bind's source: still left out.
        let run_bind = json!([{"destination": "/run", "type": "bind", "source": "/tmp", "options": ["rbind"]}]);
        assert!(check(json!({}), true, run_bind, no_ann.clone(), &run_link("/run")).is_some());
        // The spec mounts something at the path itself: runc makes that target anyway.
        let at = json!([{"destination": "/var/run/dpdk", "type": "bind", "source": "/tmp", "options": ["rbind"]}]);
        assert_eq!(check(json!({}), true, at, no_ann.clone(), &none), None);
        // A link out of the rootfs resolves inside it (no /etc/dpdk there): left out.
        assert!(check(json!({}), true, no_mounts.clone(), no_ann.clone(), &|r: &Path| {
            std::fs::create_dir_all(r.join("etc")).unwrap();
            std::os::unix::fs::symlink("../../../../etc", r.join("var/run")).unwrap();
        })
        .is_some());
        // Not a directory: left out (runc would fail mounting on it).
        assert!(check(userns.clone(), false, no_mounts.clone(), no_ann.clone(), &|r: &Path| {
            std::fs::create_dir_all(r.join("var/run")).unwrap();
            std::fs::write(r.join("var/run/dpdk"), "").unwrap();
        })
        .is_some());
        // Asked for: added as asked, whatever runc then makes of it.
        let asked = json!({"dataplane-hook.io/dpdk-runtime-dir": "/var/run/dpdk"});
        assert_eq!(check(userns, true, no_mounts, asked, &none), None);
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
        assert_eq!(
            h["createRuntime"][0]["args"],
            json!(["dataplane-hook", "--config", "/etc/c.toml", "createRuntime"])
        );
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
        let mut b =
            load(r#"{"ociVersion":"1.0.2","annotations":{"run.oci.hooks.stderr":"/var/log/h"}}"#);
        assert!(!route_hook_stderr(&mut b, Path::new("crun"), true));
        assert_eq!(b.raw["annotations"][CRUN_HOOKS_STDERR], "/var/log/h");
        let mut b = load(r#"{"ociVersion":"1.0.2"}"#);
        assert!(route_hook_stderr(&mut b, Path::new("/opt/crun-1.8"), true));
        assert_eq!(b.raw["annotations"][CRUN_HOOKS_STDERR], "/dev/stderr");
        assert!(
            !is_crun(Path::new("/usr/bin/crunch"))
                && !is_crun(Path::new("/usr/bin/dataplane-runtime"))
        );
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
