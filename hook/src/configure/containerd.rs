//! containerd: the runtime handler drop-in (`conf.d/dataplane.toml` beside containerd's
//! config), the one `imports` entry that loads it, and what is carried over from the user's
//! config.
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
//!   binaries are reported (the choice itself is [`crate::discovery::containerd`]'s).

use std::path::{Component, Path, PathBuf};

use toml::Table;

use super::files::{backup_path, FileChange, Outcome};
use super::{
    fail, get_path, install_problem, read_toml, replace_once, toml_key, toml_str, ConfigureArgs,
    ConfigureError, Install, HANDLER, TEMPLATE_WRAPPER,
};
use crate::config::DEFAULT_CONFIG_PATH;
use crate::discovery::{normalize, same_file, Version};

pub const CONTAINERD_V2: &str = include_str!("../../../shim-config/containerd/dataplane-v2.toml");
pub const CONTAINERD_V3: &str = include_str!("../../../shim-config/containerd/dataplane-v3.toml");

pub const CONTAINERD_DROPIN_NAME: &str = "dataplane.toml";

const CRI_V2: &str = "io.containerd.grpc.v1.cri";
const CRI_V3: &str = "io.containerd.cri.v1.runtime";
const RESTATED_RUNC: &str = "# containerd's built-in `runc` handler";

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
// containerd config: imports, the effective CRI section. Pure where possible.

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
// Which containerd, and the plan.

/// Which containerd, which config, and what configure said about the choice.
#[derive(Debug, Clone)]
pub struct ContainerdChoice {
    pub config: PathBuf,
    pub version: Option<Version>,
    pub notes: Vec<String>,
}

/// Which containerd and which config ([`crate::discovery::containerd`]), with what to tell
/// about the choice.
pub fn choose_containerd(explicit: Option<&Path>) -> Result<ContainerdChoice, ConfigureError> {
    let found = crate::discovery::containerd(explicit).map_err(|e| {
        fail("cannot configure containerd", e, "pick one with --containerd-config FILE")
    })?;
    let mut notes = Vec::new();
    if found.installed.len() > 1 {
        let list: Vec<String> = found
            .installed
            .iter()
            .map(|b| match crate::discovery::version_of(b) {
                Some(v) => format!("{} {}", b.display(), v.text),
                None => format!("{} (version unknown)", b.display()),
            })
            .collect();
        notes.push(format!(
            "warning: several containerd binaries are installed: {}",
            list.join(", ")
        ));
    }
    let how = &found.how;
    if found.config.to_string_lossy().contains("/rancher/") {
        notes.push(format!(
            "warning: {} looks like k3s/RKE2's, which they regenerate from config.toml.tmpl on every start: put the imports line into the template",
            found.config.display()
        ));
    }
    match (&found.binary, &found.version) {
        (Some(b), Some(v)) => notes.push(format!("containerd: {} {} ({how})", b.display(), v.text)),
        (Some(b), None) => {
            notes.push(format!("containerd: {} (version unknown; {how})", b.display()))
        }
        (None, _) => notes.push(format!("containerd: no binary found ({how})")),
    }
    Ok(ContainerdChoice { config: found.config, version: found.version, notes })
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// The CRI runtime part of `containerd config default` of containerd 2.0.0 (config version
    /// 3, docs/cri/config.md at v2.0.0), with `SystemdCgroup = true` as a systemd node sets it.
    const CONTAINERD_20_DEFAULT: &str = r#"version = 3
root = '/var/lib/containerd'
state = '/run/containerd'

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = 'overlayfs'
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = 'registry.k8s.io/pause:3.10'

  [plugins.'io.containerd.cri.v1.runtime']
    enable_cdi = true
    cdi_spec_dirs = ['/etc/cdi', '/var/run/cdi']

    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = 'runc'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes]
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
          runtime_type = 'io.containerd.runc.v2'
          runtime_path = ''
          pod_annotations = []
          container_annotations = []
          privileged_without_host_devices = false
          base_runtime_spec = ''
          sandboxer = 'podsandbox'
          io_type = ''

          [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
            BinaryName = ''
            NoNewKeyring = false
            Root = ''
            ShimCgroup = ''
            SystemdCgroup = true

    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dir = '/opt/cni/bin'
      conf_dir = '/etc/cni/net.d'

  [plugins.'io.containerd.grpc.v1.cri']
    disable_tcp_service = true
    stream_server_address = '127.0.0.1'
"#;

    /// Issue 14, containerd 2.x by format: on 2.0's own default config (version 3), configure
    /// finds the runc handler under `io.containerd.cri.v1.runtime`, carries its SystemdCgroup,
    /// writes a version-3 drop-in whose handler uses only keys containerd 2.0's `Runtime` knows,
    /// and once merged as 2.x merges imports the config has `dataplane` beside the user's
    /// untouched runc, images and CNI settings; the import splice keeps the file version 3.
    #[test]
    fn v3_dropin_on_containerd_2_0s_default_config_merges_to_the_handler_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("config.toml");
        std::fs::write(&main, CONTAINERD_20_DEFAULT).unwrap();
        let dropin = dir.path().join("conf.d").join(CONTAINERD_DROPIN_NAME);
        let files = read_containerd_files(&main, &dropin, false).unwrap();
        assert_eq!(files.version, 3);
        assert_eq!(files.cri_plugin(), CRI_V3);
        let (from, mut options) = files.runc_options(true).expect("runc handler found");
        assert_eq!(from, "runc");
        assert_eq!(
            options.remove("BinaryName").and_then(|b| b.as_str().map(String::from)).as_deref(),
            Some("")
        );
        assert_eq!(options.get("SystemdCgroup").and_then(|v| v.as_bool()), Some(true));

        let i = Install { wrapper: "/opt/dp/dataplane-runtime".into(), ..Install::shipped() };
        let d = parse(&render_containerd(&ContainerdDropin::V3, &i, &options));
        assert_eq!(d["version"].as_integer(), Some(3));
        assert_eq!(d["plugins"].as_table().unwrap().keys().collect::<Vec<_>>(), [CRI_V3]);
        let handler =
            get_path(&d, &["plugins", CRI_V3, "containerd", "runtimes", HANDLER]).unwrap();
        // containerd 2.0's Runtime struct (internal/cri/config/config.go) toml keys.
        let known = [
            "runtime_type",
            "runtime_path",
            "pod_annotations",
            "container_annotations",
            "options",
            "privileged_without_host_devices",
            "privileged_without_host_devices_all_devices_allowed",
            "base_runtime_spec",
            "cni_conf_dir",
            "cni_max_conf_num",
            "snapshotter",
            "sandboxer",
            "io_type",
        ];
        for k in handler.as_table().unwrap().keys() {
            assert!(known.contains(&k.as_str()), "containerd 2.0 has no runtime key {k}");
        }

        let mut merged = parse(CONTAINERD_20_DEFAULT);
        deep_merge(&mut merged, &d);
        let rts = get_path(&merged, &["plugins", CRI_V3, "containerd", "runtimes"]).unwrap();
        let dp = rts.get(HANDLER).and_then(|v| v.as_table()).unwrap();
        assert_eq!(dp["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(dp["pod_annotations"], toml::Value::Array(vec!["dataplane-hook.io/*".into()]));
        assert_eq!(dp["options"]["BinaryName"].as_str(), Some("/opt/dp/dataplane-runtime"));
        assert_eq!(dp["options"]["SystemdCgroup"].as_bool(), Some(true));
        let runc = rts.get("runc").and_then(|v| v.as_table()).unwrap();
        assert_eq!(
            runc["sandboxer"].as_str(),
            Some("podsandbox"),
            "the user's runc kept: {runc:?}"
        );
        assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(
            get_path(&merged, &["plugins", CRI_V3, "containerd", "default_runtime_name"])
                .and_then(|v| v.as_str()),
            Some("runc")
        );
        assert_eq!(
            get_path(
                &merged,
                &["plugins", "io.containerd.cri.v1.images", "pinned_images", "sandbox"]
            )
            .and_then(|v| v.as_str()),
            Some("registry.k8s.io/pause:3.10")
        );
        assert_eq!(
            get_path(&merged, &["plugins", CRI_V3, "cni", "conf_dir"]).and_then(|v| v.as_str()),
            Some("/etc/cni/net.d")
        );

        let spliced =
            parse(&splice_import(CONTAINERD_20_DEFAULT, &dropin.display().to_string()).unwrap());
        assert_eq!(spliced["version"].as_integer(), Some(3));
        assert_eq!(
            spliced["imports"],
            toml::Value::Array(vec![dropin.display().to_string().into()])
        );
    }
}
