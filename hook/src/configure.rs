//! Owns `dataplane-hook configure`: writing the integration files for containerd, CRI-O and
//! podman with this binary's real paths, as drop-ins, never clobbering the user's config.
//!
//! The files under `shim-config/` are the templates (embedded below): they are exactly what
//! `configure` writes for an install in /usr/bin with the default config, so what is shipped and
//! what is written cannot drift. `configure` only swaps in the real paths and, for containerd,
//! adds what must be carried over from the user's config.
//!
//! Things learned from `nvidia-ctk runtime configure` and containerd itself:
//! - containerd 1.x *replaces* a whole plugin section with an imported file's (containerd 2.x
//!   merges them), so a 1.x drop-in that only adds a runtime silently resets the user's CRI
//!   settings (sandbox image, CNI dirs, SystemdCgroup...). The v2 drop-in therefore carries a
//!   copy of the CRI section containerd would otherwise use, with our handler added.
//! - The main config is never rewritten: at most one `imports` entry is added (byte-for-byte
//!   splice, backup kept), and only when no existing import already covers the drop-in.
//! - Which containerd and which config: the running process (its `--config`) wins; several
//!   running containerds with different configs need `--containerd-config`; several installed
//!   binaries are reported.

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use serde_json::{json, Value};
use toml::Table;

use crate::config::{Loaded, DEFAULT_CONFIG_PATH};

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
// Templates (shim-config/) and rendering: pure.

pub const CONTAINERD_V2: &str = include_str!("../../shim-config/containerd/dataplane-v2.toml");
pub const CONTAINERD_V3: &str = include_str!("../../shim-config/containerd/dataplane-v3.toml");
pub const CRIO_DROPIN: &str = include_str!("../../shim-config/crio/crio.conf.d/99-dataplane.conf");
pub const HOOK_CREATE: &str =
    include_str!("../../shim-config/podman/hooks.d/dataplane-hook-createruntime.json");
pub const HOOK_POSTSTOP: &str =
    include_str!("../../shim-config/podman/hooks.d/dataplane-hook-poststop.json");

/// hooks.d file names (CRI-O and podman use the same files).
pub const HOOK_FILES: [(&str, &str); 2] = [
    ("dataplane-hook-createruntime.json", HOOK_CREATE),
    ("dataplane-hook-poststop.json", HOOK_POSTSTOP),
];

pub const CONTAINERD_DROPIN_NAME: &str = "dataplane.toml";
pub const CRIO_DROPIN_NAME: &str = "99-dataplane.conf";
pub const HANDLER: &str = "dataplane";

const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_V3: &str = "io.containerd.cri.v1.runtime";
const TEMPLATE_WRAPPER: &str = "/usr/bin/dataplane-runtime";
const TEMPLATE_HOOK: &str = "/usr/bin/dataplane-hook";
const RESTATED_RUNC: &str = "# containerd's built-in `runc` handler";

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

/// The CRI-O runtime handler drop-in.
pub fn render_crio(install: &Install) -> String {
    replace_once(
        CRIO_DROPIN,
        &toml_str(TEMPLATE_WRAPPER),
        &toml_str(&install.wrapper.display().to_string()),
    )
}

fn replace_once(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "template must contain {from} exactly once");
    text.replacen(from, to, 1)
}

/// How the containerd drop-in is shaped.
#[derive(Debug, Clone, PartialEq)]
pub enum ContainerdDropin {
    /// Config version 2 on containerd 1.x: the CRI section containerd would use otherwise is
    /// copied in (1.x replaces whole plugin sections on import).
    V2Copy { cri: Table },
    /// Config version 2 on containerd 2.x (merges plugin sections): just the handler.
    V2,
    /// Config version 3 (containerd 2.x).
    V3,
}

/// The containerd drop-in: template with the real wrapper path, the carried runc options after
/// `BinaryName`, and (V2Copy) the copied CRI section after `version = 2`.
pub fn render_containerd(kind: &ContainerdDropin, install: &Install, options: &Table) -> String {
    let template = match kind {
        ContainerdDropin::V3 => CONTAINERD_V3,
        _ => CONTAINERD_V2,
    };
    let binary_line = format!("BinaryName = {}", toml_str(TEMPLATE_WRAPPER));
    let mut out = replace_once(
        template,
        &binary_line,
        &format!("BinaryName = {}", toml_str(&install.wrapper.display().to_string())),
    );
    if !options.is_empty() {
        let at = out.find("BinaryName = ").expect("template has BinaryName");
        let line_start = out[..at].rfind('\n').map_or(0, |i| i + 1);
        let indent = out[line_start..at].to_string();
        let line_end = out[at..].find('\n').map_or(out.len(), |i| at + i + 1);
        let mut extra = String::new();
        for (k, v) in options {
            extra.push_str(&format!("{indent}{} = {v}\n", toml_key(k)));
        }
        out.insert_str(line_end, &extra);
    }
    if let ContainerdDropin::V2Copy { cri } = kind {
        let runtimes = get_path(cri, &["containerd", "runtimes"]).and_then(|v| v.as_table());
        let default = get_path(cri, &["containerd", "default_runtime_name"])
            .and_then(|v| v.as_str())
            .unwrap_or("runc");
        if runtimes.is_some_and(|r| r.contains_key("runc") || r.contains_key(default)) {
            // The copy has the user's own runc (or default) handler: drop the restated one.
            let start = out.find(RESTATED_RUNC).expect("template restates runc");
            let end = out
                .find(&format!("[plugins.\"{CRI_V2}\".containerd.runtimes.{HANDLER}]"))
                .expect("template has the handler");
            out.replace_range(start..end, "");
        }
        if !cri.is_empty() {
            let mut root = Table::new();
            let mut plugins = Table::new();
            plugins.insert(CRI_V2.into(), toml::Value::Table(cri.clone()));
            root.insert("plugins".into(), toml::Value::Table(plugins));
            let copy = toml::to_string(&root).expect("a TOML table serializes");
            let marker = "version = 2\n";
            let at = out.find(marker).expect("template has version = 2") + marker.len();
            out.insert_str(
                at,
                &format!(
                    "\n# Copy of the CRI plugin section containerd would use without this file (containerd 1.x\n# replaces the whole section with this one). Edit it in your config, then run configure again.\n{}# End of the copy.\n",
                    copy
                ),
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// containerd config: versions, imports, the effective CRI section. Pure where possible.

/// A containerd version as reported by `containerd --version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub text: String,
}

/// Parses `containerd github.com/containerd/containerd 1.6.20~ds1 <commit>` (also `v2.0.0`).
pub fn parse_containerd_version(out: &str) -> Option<Version> {
    let line = out.lines().next()?;
    let word = line.split_whitespace().nth(2)?;
    let text = word.trim_start_matches('v').to_string();
    let mut it = text.split(|c: char| !c.is_ascii_digit());
    let major = it.next()?.parse().ok()?;
    let minor = it.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some(Version { major, minor, text })
}

/// The `--config`/`-c` value from a containerd command line (argv without argv[0]).
pub fn config_flag(args: &[String], long: &str, short: &str) -> Option<PathBuf> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for f in [long, short] {
            if a == f {
                return args.get(i + 1).map(PathBuf::from);
            }
            if let Some(v) = a.strip_prefix(&format!("{f}=")) {
                return Some(PathBuf::from(v));
            }
        }
        i += 1;
    }
    None
}

fn glob_match(pattern: &str, name: &str) -> bool {
    fn rec(p: &[u8], n: &[u8]) -> bool {
        match p.first() {
            None => n.is_empty(),
            Some(b'*') => (0..=n.len()).any(|i| rec(&p[1..], &n[i..])),
            Some(b'?') => !n.is_empty() && rec(&p[1..], &n[1..]),
            Some(c) => n.first() == Some(c) && rec(&p[1..], &n[1..]),
        }
    }
    rec(pattern.as_bytes(), name.as_bytes())
}

/// containerd's import resolution: relative to the importing file's dir, `*`/`?` globbed
/// (sorted, like Go's filepath.Glob). containerd 1.x globs a relative pattern against its working
/// directory instead (`/` under systemd): `globs_from_cwd`.
/// `also`: a file that does not exist yet but is listed when the pattern matches it (our drop-in).
pub fn resolve_import(
    parent: &Path,
    import: &str,
    globs_from_cwd: bool,
    also: Option<&Path>,
) -> Vec<PathBuf> {
    let p = Path::new(import);
    let glob = import.contains(['*', '?']);
    let base = if glob && globs_from_cwd {
        Path::new("/")
    } else {
        parent.parent().unwrap_or(Path::new("/"))
    };
    let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    let p = normalize(&p);
    if !import.contains(['*', '?']) {
        return vec![p];
    }
    let mut found = vec![PathBuf::from("/")];
    for c in p.components().skip(1) {
        let Component::Normal(name) = c else { continue };
        let name = name.to_string_lossy();
        let mut next = Vec::new();
        for base in &found {
            if name.contains(['*', '?']) {
                let mut hits: Vec<PathBuf> = std::fs::read_dir(base)
                    .map(|rd| {
                        rd.flatten()
                            .filter(|e| glob_match(&name, &e.file_name().to_string_lossy()))
                            .map(|e| e.path())
                            .collect()
                    })
                    .unwrap_or_default();
                hits.sort();
                next.extend(hits);
            } else {
                let q = base.join(name.as_ref());
                if q.symlink_metadata().is_ok() {
                    next.push(q);
                }
            }
        }
        found = next;
    }
    if let Some(a) = also {
        let pc: Vec<_> = p.components().collect();
        let ac: Vec<_> = a.components().collect();
        let matches = pc.len() == ac.len()
            && pc.iter().zip(&ac).all(|(x, y)| {
                glob_match(&x.as_os_str().to_string_lossy(), &y.as_os_str().to_string_lossy())
            });
        if matches && !found.iter().any(|f| f == a) {
            found.push(a.to_path_buf());
            found.sort();
        }
    }
    found
}

/// Lexical normalization (no symlinks followed): `a/./b/../c` → `a/c`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

fn same_file(a: &Path, b: &Path) -> bool {
    let ca = a.canonicalize().unwrap_or_else(|_| normalize(a));
    let cb = b.canonicalize().unwrap_or_else(|_| normalize(b));
    ca == cb
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

/// What configure learned from the containerd config files.
#[derive(Debug, Clone, Default)]
pub struct ContainerdFiles {
    /// Config version of the main file.
    pub version: i64,
    /// Files in containerd's load order (main first), without our drop-in.
    pub order: Vec<PathBuf>,
    /// Does an existing import already load the drop-in?
    pub imports_dropin: bool,
    /// The CRI plugin section of each file that has one, in load order, without our drop-in;
    /// `true` for files loaded after the drop-in.
    pub cri_sections: Vec<(PathBuf, Table, bool)>,
    /// Things about the imports worth telling.
    pub warnings: Vec<String>,
}

/// Deep merge, `from` wins (containerd 2.x merges plugin sections of imports like this).
fn deep_merge(to: &mut Table, from: &Table) {
    for (k, v) in from {
        match (to.get_mut(k), v) {
            (Some(toml::Value::Table(a)), toml::Value::Table(b)) => deep_merge(a, b),
            _ => {
                to.insert(k.clone(), v.clone());
            }
        }
    }
}

impl ContainerdFiles {
    /// The plugin that holds the CRI runtimes for this config version.
    pub fn cri_plugin(&self) -> &'static str {
        if self.version >= 3 {
            CRI_V3
        } else {
            CRI_V2
        }
    }

    /// The CRI section containerd would use without our drop-in: containerd 1.x takes the last
    /// file's section whole (`merge = false`), 2.x merges them.
    pub fn effective_cri(&self, merge: bool) -> Option<Table> {
        if !merge {
            return self.cri_sections.last().map(|(_, t, _)| t.clone());
        }
        let mut out: Option<Table> = None;
        for (_, t, _) in &self.cri_sections {
            deep_merge(out.get_or_insert_with(Table::new), t);
        }
        out
    }

    /// The runc options to carry over: from runtime `runc`, else from the default runtime when
    /// it is runc.v2; with its `BinaryName`, which the caller takes out (ours is the wrapper).
    pub fn runc_options(&self, merge: bool) -> Option<(String, Table)> {
        let cri = self.effective_cri(merge)?;
        let ct = cri.get("containerd")?.as_table()?;
        let runtimes = ct.get("runtimes")?.as_table()?;
        let pick = |name: &str| -> Option<(String, Table)> {
            let r = runtimes.get(name)?.as_table()?;
            let ty =
                r.get("runtime_type").and_then(|v| v.as_str()).unwrap_or("io.containerd.runc.v2");
            if ty != "io.containerd.runc.v2" {
                return None;
            }
            let o = r.get("options").and_then(|v| v.as_table()).cloned().unwrap_or_default();
            Some((name.to_string(), o))
        };
        pick("runc")
            .or_else(|| ct.get("default_runtime_name").and_then(|v| v.as_str()).and_then(pick))
    }

    /// Files loaded after the drop-in that set the CRI section (containerd 1.x would then drop
    /// our handler).
    pub fn after_dropin_with_cri(&self) -> Vec<PathBuf> {
        self.cri_sections.iter().filter(|(_, _, after)| *after).map(|(p, _, _)| p.clone()).collect()
    }

    /// Files that define a runtime called `dataplane` themselves.
    pub fn other_handlers(&self) -> Vec<PathBuf> {
        self.cri_sections
            .iter()
            .filter(|(_, t, _)| get_path(t, &["containerd", "runtimes", HANDLER]).is_some())
            .map(|(p, _, _)| p.clone())
            .collect()
    }
}

/// Walks the main config and its imports like containerd does (breadth first, each file once).
/// `v1x`: containerd 1.x rules (relative glob imports are taken from its working directory).
pub fn read_containerd_files(
    main: &Path,
    dropin: &Path,
    v1x: bool,
) -> Result<ContainerdFiles, ConfigureError> {
    let mut f = ContainerdFiles::default();
    let root = read_toml(main)?;
    f.version = match root.get("version") {
        None => 1,
        Some(v) => v.as_integer().ok_or_else(|| {
            fail(
                format!("cannot configure containerd from {}", main.display()),
                "`version` is not an integer",
                "set version = 2 (containerd 1.x) or 3 (2.x)",
            )
        })?,
    };
    let plugin = f.cri_plugin();
    let mut pending = vec![main.to_path_buf()];
    let mut loaded: Vec<PathBuf> = Vec::new();
    let mut after = false;
    while !pending.is_empty() {
        let path = pending.remove(0);
        if loaded.iter().any(|p| same_file(p, &path)) {
            continue;
        }
        loaded.push(path.clone());
        if same_file(&path, dropin) {
            f.imports_dropin = true;
            after = true;
            continue;
        }
        if path != main && !path.exists() {
            f.warnings.push(format!("warning: {} is imported but does not exist (containerd refuses to start like this)", path.display()));
            continue;
        }
        let t = if path == main { root.clone() } else { read_toml(&path)? };
        if let Some(c) = get_path(&t, &["plugins", plugin]).and_then(|v| v.as_table()) {
            f.cri_sections.push((path.clone(), c.clone(), after));
        }
        f.order.push(path.clone());
        if let Some(imports) = t.get("imports") {
            let arr = imports.as_array().ok_or_else(|| {
                fail(
                    format!("cannot configure containerd from {}", path.display()),
                    "`imports` is not an array",
                    "make imports a list of paths",
                )
            })?;
            for i in arr.iter().filter_map(|v| v.as_str()) {
                if v1x && i.contains(['*', '?']) && !Path::new(i).is_absolute() {
                    f.warnings.push(format!(
                        "warning: {} imports {i:?}: containerd 1.x globs a relative pattern from its working directory (/ under systemd), not from the config's directory",
                        path.display()
                    ));
                }
                pending.extend(resolve_import(&path, i, v1x, Some(dropin)));
            }
        }
    }
    Ok(f)
}

/// The CRI section to copy into a V2Copy drop-in: the effective one without our handler.
pub fn cri_copy(cri: Option<&Table>) -> Table {
    let mut c = cri.cloned().unwrap_or_default();
    if let Some(toml::Value::Table(ct)) = c.get_mut("containerd") {
        if let Some(toml::Value::Table(r)) = ct.get_mut("runtimes") {
            r.remove(HANDLER);
        }
    }
    c
}

/// Adds `entry` to the top-level `imports` of a containerd config, changing nothing else: the
/// new text differs from `text` only inside the imports array (or by one new line after the
/// `version` line when there is no imports key).
pub fn splice_import(text: &str, entry: &str) -> Result<String, String> {
    let doc = toml_edit::ImDocument::parse(text.to_string())
        .map_err(|e| e.message().replace('\n', " "))?;
    let quoted = toml_str(entry);
    match doc.as_table().get("imports") {
        Some(item) => {
            let arr = item.as_array().ok_or("`imports` is not an array")?;
            let span = arr.span().ok_or("cannot locate `imports` in the file")?;
            let at = match arr.iter().last() {
                Some(last) => last.span().ok_or("cannot locate the last import")?.end,
                None => span.start + 1,
            };
            let insert = if arr.is_empty() { quoted } else { format!(", {quoted}") };
            let mut out = text.to_string();
            out.insert_str(at, &insert);
            Ok(out)
        }
        None => {
            let v = doc.as_table().get("version").ok_or("no `version` key")?;
            let span = v.span().ok_or("cannot locate `version` in the file")?;
            let line_end = text[span.end..].find('\n').map_or(text.len(), |i| span.end + i + 1);
            let mut out = text.to_string();
            let mut line = format!("imports = [{quoted}]\n");
            if line_end == text.len() && !text.ends_with('\n') {
                line.insert(0, '\n');
            }
            out.insert_str(line_end, &line);
            Ok(out)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The node: processes, binaries, config files. Effects.

/// A running process of a daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: i32,
    pub exe: PathBuf,
    pub args: Vec<String>,
}

/// Processes whose comm is exactly `name`.
pub fn running(name: &str) -> Vec<Daemon> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if !args.is_empty() {
            args.remove(0);
        }
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_else(|_| PathBuf::from(name));
        out.push(Daemon { pid, exe, args });
    }
    out.sort_by_key(|d| d.pid);
    out
}

/// Distinct installed binaries called `name` (PATH first, then the usual dirs).
pub fn installed(name: &str) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> =
        std::env::var_os("PATH").map(|p| std::env::split_paths(&p).collect()).unwrap_or_default();
    for d in ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin", "/opt/bin", "/bin"] {
        dirs.push(d.into());
    }
    let mut out: Vec<PathBuf> = Vec::new();
    let mut canon: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join(name);
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let c = p.canonicalize().unwrap_or_else(|_| p.clone());
        if !canon.contains(&c) {
            canon.push(c);
            out.push(p);
        }
    }
    out
}

fn version_of(bin: &Path) -> Option<Version> {
    let o = std::process::Command::new(bin).arg("--version").output().ok()?;
    parse_containerd_version(&String::from_utf8_lossy(&o.stdout))
}

/// Which containerd, which config, and what configure said about the choice.
#[derive(Debug, Clone)]
pub struct ContainerdChoice {
    pub config: PathBuf,
    pub version: Option<Version>,
    pub notes: Vec<String>,
}

pub const CONTAINERD_DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";

pub fn choose_containerd(explicit: Option<&Path>) -> Result<ContainerdChoice, ConfigureError> {
    let mut notes = Vec::new();
    let procs: Vec<(Daemon, PathBuf)> = running("containerd")
        .into_iter()
        .map(|d| {
            let c = config_flag(&d.args, "--config", "-c")
                .unwrap_or_else(|| CONTAINERD_DEFAULT_CONFIG.into());
            // A relative --config is relative to the daemon's working directory.
            let c = if c.is_relative() {
                std::fs::read_link(format!("/proc/{}/cwd", d.pid)).unwrap_or_default().join(c)
            } else {
                c
            };
            (d, c)
        })
        .collect();
    let bins = installed("containerd");
    let describe = |b: &Path| match version_of(b) {
        Some(v) => format!("{} {}", b.display(), v.text),
        None => format!("{} (version unknown)", b.display()),
    };
    if bins.len() > 1 {
        let list: Vec<String> = bins.iter().map(|b| describe(b)).collect();
        notes.push(format!(
            "warning: several containerd binaries are installed: {}",
            list.join(", ")
        ));
    }
    let (config, bin, how) = if let Some(c) = explicit {
        match procs.iter().find(|(_, pc)| same_file(pc, c)) {
            Some((d, _)) => (
                c.to_path_buf(),
                Some(d.exe.clone()),
                format!("running as pid {} with this config", d.pid),
            ),
            None => (
                c.to_path_buf(),
                bins.first().cloned(),
                "given by --containerd-config; no running containerd uses it".to_string(),
            ),
        }
    } else {
        let mut configs: Vec<&PathBuf> = Vec::new();
        for (_, c) in &procs {
            if !configs.iter().any(|x| same_file(x, c)) {
                configs.push(c);
            }
        }
        match configs.len() {
            0 => (
                CONTAINERD_DEFAULT_CONFIG.into(),
                bins.first().cloned(),
                "containerd is not running; its default config".to_string(),
            ),
            1 => {
                let (d, c) = &procs[0];
                let how = if procs.len() > 1 {
                    format!("{} containerd processes, all with this config", procs.len())
                } else {
                    format!("the config of the running containerd (pid {})", d.pid)
                };
                (c.clone(), Some(d.exe.clone()), how)
            }
            _ => {
                let list: Vec<String> = procs
                    .iter()
                    .map(|(d, c)| {
                        format!("pid {} {} --config {}", d.pid, d.exe.display(), c.display())
                    })
                    .collect();
                return Err(fail(
                    "cannot configure containerd",
                    format!(
                        "several containerd daemons run with different configs: {}",
                        list.join("; ")
                    ),
                    "pick one with --containerd-config FILE",
                ));
            }
        }
    };
    let version = bin.as_deref().and_then(version_of);
    if config.to_string_lossy().contains("/rancher/") {
        notes.push(format!(
            "warning: {} looks like k3s/RKE2's, which they regenerate from config.toml.tmpl on every start: put the imports line into the template",
            config.display()
        ));
    }
    match (&bin, &version) {
        (Some(b), Some(v)) => notes.push(format!("containerd: {} {} ({how})", b.display(), v.text)),
        (Some(b), None) => {
            notes.push(format!("containerd: {} (version unknown; {how})", b.display()))
        }
        (None, _) => notes.push(format!("containerd: no binary found ({how})")),
    }
    Ok(ContainerdChoice { config, version, notes })
}

// ---------------------------------------------------------------------------------------------
// Changes: computed, then printed (dry run) or made.

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
    fn new(path: PathBuf, content: String, why: impl Into<String>) -> FileChange {
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

pub fn plan_containerd(args: &ConfigureArgs, install: &Install) -> Result<Outcome, ConfigureError> {
    let choice = choose_containerd(args.containerd_config.as_deref())?;
    let mut out = Outcome { notes: choice.notes.clone(), ..Default::default() };
    let main = if choice.config.is_absolute() {
        choice.config.clone()
    } else {
        std::env::current_dir().map(|d| d.join(&choice.config)).unwrap_or(choice.config.clone())
    };
    let main = normalize(&main);
    let dir = main.parent().unwrap_or(Path::new("/")).to_path_buf();
    let dropin = dir.join("conf.d").join(CONTAINERD_DROPIN_NAME);
    let major = choice.version.as_ref().map(|v| v.major);
    let what = "cannot configure containerd";
    if let Some(t) = &install_problem(install, true) {
        return Err(fail(what, t, "install dataplane-runtime beside dataplane-hook"));
    }

    let exists = main.exists();
    let (files, kind) = if exists {
        let files = read_containerd_files(&main, &dropin, major.unwrap_or(1) < 2)?;
        out.notes.extend(files.warnings.iter().cloned());
        let kind = match (files.version, major) {
            (2, Some(m)) if m >= 2 => ContainerdDropin::V2,
            (2, _) => {
                ContainerdDropin::V2Copy { cri: cri_copy(files.effective_cri(false).as_ref()) }
            }
            (3, Some(m)) if m < 2 => {
                let v = choice.version.as_ref().map(|v| v.text.clone()).unwrap_or_default();
                return Err(fail(
                    what,
                    format!(
                        "{} is config version 3, which containerd {v} cannot read",
                        main.display()
                    ),
                    "use version = 2 with containerd 1.x",
                ));
            }
            (3, _) => ContainerdDropin::V3,
            (v, _) => {
                return Err(fail(
                    what,
                    format!("{} is config version {v} (no `version = 2` line), whose plugin names the drop-in cannot extend", main.display()),
                    "add `version = 2` at the top (containerd 1.7: `containerd config migrate`) and run configure again",
                ));
            }
        };
        out.notes.push(format!(
            "containerd config: {} (version {})",
            main.display(),
            files.version
        ));
        (files, kind)
    } else {
        let kind = if major.unwrap_or(1) >= 2 {
            ContainerdDropin::V3
        } else {
            ContainerdDropin::V2Copy { cri: Table::new() }
        };
        out.notes.push(format!("containerd config: {} does not exist; a minimal one importing the drop-in will be created", main.display()));
        (ContainerdFiles::default(), kind)
    };
    let merge = !matches!(kind, ContainerdDropin::V2Copy { .. });
    if let ContainerdDropin::V2Copy { cri } = &kind {
        if !cri.is_empty() {
            let from: Vec<String> =
                files.cri_sections.iter().map(|(p, _, _)| p.display().to_string()).collect();
            out.notes.push(format!(
                "containerd 1.x replaces a whole plugin section on import: the drop-in carries a copy of your CRI section (from {}); run configure again after editing it",
                from.last().cloned().unwrap_or_default()
            ));
        }
    }
    let carried = files.runc_options(merge);
    let mut options = carried.as_ref().map(|(_, o)| o.clone()).unwrap_or_default();
    if let (Some((from, _)), Some(binary)) = (&carried, options.remove("BinaryName")) {
        if let Some(w) =
            binary.as_str().and_then(|b| runtime_mismatch(from, b, install.config.as_deref()))
        {
            out.notes.push(w);
        }
    }
    if let Some((from, _)) = &carried {
        if !options.is_empty() {
            out.notes.push(format!(
                "carried over from runtime `{from}`: {}",
                options.iter().map(|(k, v)| format!("{k} = {v}")).collect::<Vec<_>>().join(", ")
            ));
        }
    }
    for p in files.other_handlers() {
        out.notes.push(format!(
            "warning: {} also defines a runtime `{HANDLER}`; the drop-in's replaces it",
            p.display()
        ));
    }
    if !merge {
        for p in files.after_dropin_with_cri() {
            out.notes.push(format!(
                "warning: {} is imported after {} and sets the CRI plugin section: containerd 1.x would drop the `{HANDLER}` handler (move its settings into {})",
                p.display(),
                dropin.display(),
                main.display()
            ));
        }
    }

    let content = render_containerd(&kind, install, &options);
    out.changes.push(FileChange::new(
        dropin.clone(),
        content,
        format!("runtime handler `{HANDLER}`"),
    ));

    let entry = dropin.display().to_string();
    if !exists {
        let version = if matches!(kind, ContainerdDropin::V3) { 3 } else { 2 };
        let text = format!("version = {version}\nimports = [{}]\n", toml_str(&entry));
        out.changes.push(FileChange::new(
            main.clone(),
            text,
            "create containerd's config, importing the drop-in",
        ));
    } else if !files.imports_dropin {
        let text = std::fs::read_to_string(&main).map_err(|e| {
            fail(format!("cannot read {}", main.display()), e, "check its permissions")
        })?;
        let new = splice_import(&text, &entry).map_err(|e| {
            fail(
                format!("cannot add an import to {}", main.display()),
                e,
                format!("add {entry:?} to its imports by hand"),
            )
        })?;
        let mut c = FileChange::new(
            main.clone(),
            new,
            format!("add {entry} to imports (nothing else changes)"),
        );
        c.backup = Some(backup_path(&main));
        out.changes.push(c);
    } else {
        out.notes.push(format!("{} already imports {}", main.display(), dropin.display()));
    }
    out.next.push(format!("restart containerd to load the runtime handler `{HANDLER}` (e.g. systemctl restart containerd), then use a RuntimeClass with handler: {HANDLER}"));
    if let Some(config) = &install.config {
        out.notes.push(format!(
            "warning: containerd starts {} without arguments: it reads ${} from containerd's environment, else {} — not {}",
            install.wrapper.display(),
            crate::config::CONFIG_ENV,
            DEFAULT_CONFIG_PATH,
            config.display()
        ));
    }
    Ok(out)
}

/// A warning when containerd's runtime `from` runs `binary` (its `BinaryName`, e.g. crun) but
/// dataplane-runtime would exec another runtime (`runtime_path` of the config in effect): the
/// `dataplane` handler's pods would silently change runtime.
fn runtime_mismatch(from: &str, binary: &str, config: Option<&Path>) -> Option<String> {
    let loaded = crate::config::Loaded::resolve(config).ok()?;
    let ours = &loaded.config.runtime_path;
    let file_id = |p: &Path| {
        crate::runtime::real_runtime(p).ok().and_then(|found| crate::runtime::file_id(&found))
    };
    let same = match (file_id(Path::new(binary)), file_id(ours)) {
        (Some(a), Some(b)) => a == b,
        _ => Path::new(binary) == ours.as_path(),
    };
    if same {
        return None;
    }
    let cfg = loaded
        .path
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| format!("built-in default; the config is {DEFAULT_CONFIG_PATH}"));
    Some(format!(
        "warning: runtime `{from}` runs {binary} (its BinaryName) but dataplane-runtime runs runtime_path = {} ({cfg}): set runtime_path = {} there, or `{HANDLER}` pods run another runtime than the node's",
        toml_str(&ours.display().to_string()),
        toml_str(binary)
    ))
}

fn backup_path(p: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = p.file_name().unwrap_or(OsStr::new("config")).to_string_lossy();
    p.with_file_name(format!("{name}.bak-dataplane-hook-{secs}"))
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

fn hook_changes(dir: &Path, install: &Install, out: &mut Outcome) {
    for (name, template) in HOOK_FILES {
        let stage = if name.contains("poststop") { "poststop" } else { "createRuntime" };
        out.changes.push(FileChange::new(
            dir.join(name),
            render_hook(template, install),
            format!("OCI hook at {stage} for containers annotated dataplane-hook.io/enabled=true"),
        ));
    }
}

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
pub const CRIO_HOOKS_DIR: &str = "/usr/share/containers/oci/hooks.d";
pub const CRIO_CONFIG: &str = "/etc/crio/crio.conf";
pub const CRIO_CONFIG_DIR: &str = "/etc/crio/crio.conf.d";

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

    fn parse(s: &str) -> Table {
        s.parse::<Table>().unwrap_or_else(|e| panic!("{e}\n{s}"))
    }

    #[test]
    fn v2_dropin_with_copy_keeps_the_users_cri_settings_and_adds_the_handler() {
        let user = parse(
            r#"
sandbox_image = "my/pause:3.9"
[cni]
bin_dir = "/opt/cni/bin"
[containerd.runtimes.runc]
runtime_type = "io.containerd.runc.v2"
[containerd.runtimes.runc.options]
SystemdCgroup = true
BinaryName = "/usr/sbin/runc"
[containerd.runtimes.dataplane]
runtime_type = "io.containerd.runc.v2"
"#,
        );
        let mut opts = Table::new();
        opts.insert("SystemdCgroup".into(), toml::Value::Boolean(true));
        let i = Install {
            hook: "/x/dataplane-hook".into(),
            wrapper: "/x/dataplane-runtime".into(),
            config: None,
            timeout_secs: 10,
        };
        let text =
            render_containerd(&ContainerdDropin::V2Copy { cri: cri_copy(Some(&user)) }, &i, &opts);
        let t = parse(&text);
        assert_eq!(t["version"].as_integer(), Some(2));
        let cri = get_path(&t, &["plugins", CRI_V2]).unwrap().as_table().unwrap();
        assert_eq!(cri["sandbox_image"].as_str(), Some("my/pause:3.9"));
        assert_eq!(get_path(cri, &["cni", "bin_dir"]).unwrap().as_str(), Some("/opt/cni/bin"));
        assert_eq!(
            get_path(cri, &["containerd", "runtimes", "runc", "options", "SystemdCgroup"])
                .unwrap()
                .as_bool(),
            Some(true)
        );
        let dp =
            get_path(cri, &["containerd", "runtimes", "dataplane"]).unwrap().as_table().unwrap();
        assert_eq!(dp["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(
            dp["pod_annotations"].as_array().unwrap()[0].as_str(),
            Some("dataplane-hook.io/*")
        );
        assert_eq!(
            get_path(dp, &["options", "BinaryName"]).unwrap().as_str(),
            Some("/x/dataplane-runtime")
        );
        assert_eq!(get_path(dp, &["options", "SystemdCgroup"]).unwrap().as_bool(), Some(true));
        assert!(!text.contains(RESTATED_RUNC), "the user's runc replaces the restated one");

        // A CRI section without runtimes: containerd's built-in runc is restated (1.x would
        // otherwise lose it and refuse default_runtime_name = "runc").
        let user = parse("sandbox_image = \"my/pause:3.9\"\n");
        let text = render_containerd(
            &ContainerdDropin::V2Copy { cri: cri_copy(Some(&user)) },
            &i,
            &Table::new(),
        );
        let t = parse(&text);
        let r = get_path(&t, &["plugins", CRI_V2, "containerd", "runtimes"])
            .unwrap()
            .as_table()
            .unwrap();
        assert_eq!(r.keys().collect::<Vec<_>>(), vec!["dataplane", "runc"]);
        assert_eq!(
            get_path(&t, &["plugins", CRI_V2, "sandbox_image"]).unwrap().as_str(),
            Some("my/pause:3.9")
        );
    }

    #[test]
    fn v3_dropin_uses_the_cri_runtime_plugin() {
        let t =
            parse(&render_containerd(&ContainerdDropin::V3, &Install::shipped(), &Table::new()));
        assert_eq!(t["version"].as_integer(), Some(3));
        let dp = get_path(&t, &["plugins", CRI_V3, "containerd", "runtimes", "dataplane"]).unwrap();
        assert_eq!(
            get_path(dp.as_table().unwrap(), &["options", "BinaryName"]).unwrap().as_str(),
            Some(TEMPLATE_WRAPPER)
        );
    }

    #[test]
    fn import_splice_changes_only_the_imports() {
        let cases = [
            ("version = 2\n\n[plugins]\n", "version = 2\nimports = [\"/d/x.toml\"]\n\n[plugins]\n"),
            ("# c\nversion = 2 # v\nroot = \"/r\"\n", "# c\nversion = 2 # v\nimports = [\"/d/x.toml\"]\nroot = \"/r\"\n"),
            ("version = 2", "version = 2\nimports = [\"/d/x.toml\"]\n"),
            ("version = 2\nimports = []\n", "version = 2\nimports = [\"/d/x.toml\"]\n"),
            ("version = 2\nimports = [ \"/a/*.toml\" ]  # keep\n", "version = 2\nimports = [ \"/a/*.toml\", \"/d/x.toml\" ]  # keep\n"),
            (
                "version = 2\nimports = [\n  \"/a.toml\", # first\n  \"/b.toml\",\n]\n[x]\n",
                "version = 2\nimports = [\n  \"/a.toml\", # first\n  \"/b.toml\", \"/d/x.toml\",\n]\n[x]\n",
            ),
        ];
        for (before, after) in cases {
            let got = splice_import(before, "/d/x.toml").unwrap();
            assert_eq!(got, after, "from {before:?}");
            let t = parse(&got);
            assert!(t["imports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v.as_str() == Some("/d/x.toml")));
        }
        assert!(splice_import("version = 2\nimports = \"x\"\n", "/d").is_err());
    }

    #[test]
    fn containerd_versions_and_flags() {
        let v = parse_containerd_version(
            "containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor), (1, 6));
        let v = parse_containerd_version(
            "containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257\n",
        )
        .unwrap();
        assert_eq!((v.major, v.minor, v.text.as_str()), (2, 0, "2.0.2"));
        assert!(parse_containerd_version("").is_none());
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_flag(&a(&["--log-level", "info", "--config", "/c.toml"]), "--config", "-c"),
            Some("/c.toml".into())
        );
        assert_eq!(config_flag(&a(&["-c=/k3s.toml"]), "--config", "-c"), Some("/k3s.toml".into()));
        assert_eq!(config_flag(&a(&["-c", "/x"]), "--config", "-c"), Some("/x".into()));
        assert_eq!(config_flag(&a(&["--address", "/s"]), "--config", "-c"), None);
    }

    #[test]
    fn effective_cri_follows_containerd_1x_import_order() {
        let d = tempfile::tempdir().unwrap();
        let main = d.path().join("config.toml");
        std::fs::create_dir(d.path().join("conf.d")).unwrap();
        let dropin = d.path().join("conf.d/dataplane.toml");
        std::fs::write(
            &main,
            format!("version = 2\nimports = [\"{}/conf.d/*.toml\"]\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"main\"\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\nSystemdCgroup = true\n", d.path().display()),
        )
        .unwrap();
        std::fs::write(
            d.path().join("conf.d/a.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\"]\nsandbox_image = \"a\"\n",
        )
        .unwrap();
        std::fs::write(&dropin, "version = 2\n").unwrap();
        std::fs::write(
            d.path().join("conf.d/z.toml"),
            "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\nconfig_path = \"/z\"\n",
        )
        .unwrap();
        let f = read_containerd_files(&main, &dropin, true).unwrap();
        assert!(f.imports_dropin);
        assert_eq!(f.version, 2);
        // z.toml is loaded last and replaces the whole section (1.x semantics)...
        let cri = f.effective_cri(false).unwrap();
        assert_eq!(get_path(&cri, &["registry", "config_path"]).unwrap().as_str(), Some("/z"));
        assert!(cri.get("sandbox_image").is_none());
        assert_eq!(f.after_dropin_with_cri(), vec![d.path().join("conf.d/z.toml")]);
        assert!(f.runc_options(false).is_none(), "runc's options went with the section");
        // ...while 2.x merges all three.
        let merged = f.effective_cri(true).unwrap();
        assert_eq!(merged["sandbox_image"].as_str(), Some("a"));
        assert_eq!(get_path(&merged, &["registry", "config_path"]).unwrap().as_str(), Some("/z"));
        assert_eq!(f.runc_options(true).unwrap().1["SystemdCgroup"].as_bool(), Some(true));
        std::fs::remove_file(d.path().join("conf.d/z.toml")).unwrap();
        let f = read_containerd_files(&main, &dropin, true).unwrap();
        assert_eq!(f.effective_cri(false).unwrap()["sandbox_image"].as_str(), Some("a"));
        assert!(f.after_dropin_with_cri().is_empty());
        std::fs::remove_file(d.path().join("conf.d/a.toml")).unwrap();
        let f = read_containerd_files(&main, &dropin, true).unwrap();
        let (from, o) = f.runc_options(false).unwrap();
        assert_eq!(from, "runc");
        assert_eq!(o["SystemdCgroup"].as_bool(), Some(true));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*.toml", "a.toml"));
        assert!(!glob_match("*.toml", "a.toml.bak"));
        assert!(glob_match("?x*", "ax"));
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
    }

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
