//! Issue 4 (G9): the integration files in shim-config/ and what `dataplane-hook configure` writes.
//!
//! - what configure writes is the shipped file with the real paths swapped in (no drift);
//! - configure is idempotent, `--dry-run` writes nothing, the user's containerd config keeps
//!   every byte but one imports entry (backup kept), and the real containerd reads the handler
//!   *and* keeps the user's CRI settings (the control shows a plain drop-in losing them);
//! - CRI-O's drop-in and hooks.d files follow their formats' rules (CRI-O is not installable
//!   here); the Kubernetes manifests use the handler and valid annotations;
//! - pod sandboxes pass through on every path (wrapper, hooks.d), with real runc.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dataplane_tests::*;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn shipped(rel: &str) -> String {
    let p = repo().join("shim-config").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn real_hook() -> String {
    hook_bin().canonicalize().unwrap().display().to_string()
}
fn real_wrapper() -> String {
    runtime_bin().canonicalize().unwrap().display().to_string()
}

/// `dataplane-hook [--config C] configure ARGS` with no inherited config.
fn configure(config: Option<&Path>, args: &[&str]) -> Output {
    let mut c = Command::new(hook_bin());
    c.env_remove("DATAPLANE_HOOK_CONFIG").env_remove("CONTAINERS_CONF");
    if let Some(p) = config {
        c.arg("--config").arg(p);
    }
    c.arg("configure").args(args);
    c.output().unwrap()
}

fn ok(o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "configure failed: {}\n{out}", String::from_utf8_lossy(&o.stderr));
    out
}

fn files_under(d: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    fn walk(base: &Path, d: &Path, m: &mut BTreeMap<String, String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, m);
            } else {
                m.insert(
                    p.strip_prefix(base).unwrap().display().to_string(),
                    std::fs::read_to_string(&p).unwrap_or_default(),
                );
            }
        }
    }
    walk(d, d, &mut m);
    m
}

const HOOK_FILES: [&str; 2] = ["dataplane-hook-createruntime.json", "dataplane-hook-poststop.json"];

#[test]
fn configure_writes_the_shipped_files_with_the_real_paths() {
    let d = tempfile::tempdir().unwrap();
    let hooks = d.path().join("podman-hooks");
    ok(&configure(None, &["--runtime", "podman", "--hooks-dir", hooks.to_str().unwrap()]));
    for f in HOOK_FILES {
        let want = shipped(&format!("podman/hooks.d/{f}"))
            .replace("/usr/bin/dataplane-hook", &real_hook());
        assert_eq!(std::fs::read_to_string(hooks.join(f)).unwrap(), want, "podman {f}");
    }

    let crio_conf = d.path().join("crio.conf.d");
    let crio_hooks = d.path().join("crio-hooks");
    ok(&configure(
        None,
        &[
            "--runtime",
            "crio",
            "--crio-config-dir",
            crio_conf.to_str().unwrap(),
            "--hooks-dir",
            crio_hooks.to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(crio_conf.join("99-dataplane.conf")).unwrap(),
        shipped("crio/crio.conf.d/99-dataplane.conf")
            .replace("/usr/bin/dataplane-runtime", &real_wrapper())
    );
    for f in HOOK_FILES {
        let want =
            shipped(&format!("crio/hooks.d/{f}")).replace("/usr/bin/dataplane-hook", &real_hook());
        assert_eq!(std::fs::read_to_string(crio_hooks.join(f)).unwrap(), want, "crio {f}");
    }

    // containerd with a config that has no CRI section: the drop-in is the shipped v2 file.
    let ctd = d.path().join("containerd");
    std::fs::create_dir(&ctd).unwrap();
    std::fs::write(ctd.join("config.toml"), "version = 2\nroot = \"/var/lib/containerd\"\n")
        .unwrap();
    ok(&configure(
        None,
        &[
            "--runtime",
            "containerd",
            "--containerd-config",
            ctd.join("config.toml").to_str().unwrap(),
        ],
    ));
    assert_eq!(
        std::fs::read_to_string(ctd.join("conf.d/dataplane.toml")).unwrap(),
        shipped("containerd/dataplane-v2.toml")
            .replace("/usr/bin/dataplane-runtime", &real_wrapper())
    );

    // With a config file in effect, the hooks pass it on.
    let env = ProductEnv::new("");
    let hooks2 = d.path().join("hooks-with-config");
    ok(&configure(
        Some(&env.config),
        &["--runtime", "podman", "--hooks-dir", hooks2.to_str().unwrap()],
    ));
    let v: Value =
        serde_json::from_str(&std::fs::read_to_string(hooks2.join(HOOK_FILES[0])).unwrap())
            .unwrap();
    assert_eq!(
        v["hook"]["args"],
        json!([
            "dataplane-hook",
            "--config",
            env.config.canonicalize().unwrap().display().to_string(),
            "createRuntime"
        ])
    );
}

#[test]
fn configure_is_idempotent_and_dry_run_writes_nothing() {
    for runtime in ["podman", "crio", "containerd"] {
        let d = tempfile::tempdir().unwrap();
        let p = |s: &str| d.path().join(s).display().to_string();
        let args: Vec<String> = match runtime {
            "podman" => vec!["--hooks-dir".into(), p("hooks")],
            "crio" => {
                vec!["--hooks-dir".into(), p("hooks"), "--crio-config-dir".into(), p("crio.conf.d")]
            }
            _ => vec!["--containerd-config".into(), p("containerd/config.toml")],
        };
        let mut all = vec!["--runtime", runtime];
        all.extend(args.iter().map(String::as_str));
        let mut dry = all.clone();
        dry.push("--dry-run");

        let out = ok(&configure(None, &dry));
        assert!(
            files_under(d.path()).is_empty(),
            "{runtime}: --dry-run wrote {:?}",
            files_under(d.path())
        );
        assert!(out.contains("dry run: nothing was written"), "{runtime}: {out}");
        let planned: Vec<&str> =
            out.lines().filter_map(|l| l.strip_prefix("would create ")).collect();

        let out = ok(&configure(None, &all));
        let written = files_under(d.path());
        assert_eq!(
            planned.len(),
            written.len(),
            "{runtime}: dry run announced {planned:?}, wrote {:?}\n{out}",
            written.keys()
        );
        for (f, content) in &written {
            let shown = format!("{}", d.path().join(f).display());
            assert!(
                planned.iter().any(|l| l.starts_with(&shown)),
                "{runtime}: {shown} written but not announced by --dry-run"
            );
            // The dry run printed the content it would write.
            assert!(
                content.lines().all(|l| out.contains(&format!("    | {l}"))),
                "{runtime}: content of {f} not printed"
            );
        }
        let mtimes: Vec<_> = written
            .keys()
            .map(|f| std::fs::metadata(d.path().join(f)).unwrap().modified().unwrap())
            .collect();

        let out = ok(&configure(None, &all));
        assert!(
            out.contains("nothing to change: already configured"),
            "{runtime} second run: {out}"
        );
        assert_eq!(files_under(d.path()), written, "{runtime}: second run changed files");
        let again: Vec<_> = written
            .keys()
            .map(|f| std::fs::metadata(d.path().join(f)).unwrap().modified().unwrap())
            .collect();
        assert_eq!(mtimes, again, "{runtime}: second run rewrote files");
        let out = ok(&configure(None, &dry));
        assert!(out.contains("nothing to change"), "{runtime} dry run after: {out}");
    }
}

const USER_CONTAINERD_CONFIG: &str = r#"# my containerd config — keep my comments
version = 2
root = "/var/lib/containerd"   # trailing comment

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "registry.example.com/pause:3.9"
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/opt/my-cni/bin"
      conf_dir = "/etc/cni/net.d"
    [plugins."io.containerd.grpc.v1.cri".containerd]
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = true
          BinaryName = "/usr/sbin/runc"
"#;

/// `containerd --config C config dump`: the config containerd would run with.
fn containerd_dump(config: &Path) -> toml::Table {
    let o = Command::new("containerd")
        .current_dir("/")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"])
        .output()
        .unwrap();
    assert!(o.status.success(), "containerd config dump: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).parse().unwrap()
}

fn get<'a>(t: &'a toml::Table, path: &[&str]) -> Option<&'a toml::Value> {
    let (first, rest) = path.split_first()?;
    let v = t.get(*first)?;
    if rest.is_empty() {
        Some(v)
    } else {
        get(v.as_table()?, rest)
    }
}

const CRI: &str = "io.containerd.grpc.v1.cri";

#[test]
fn containerd_keeps_the_users_config_and_reads_the_handler() {
    // Control: a drop-in that only adds the runtime (the shipped template copied by hand, as a
    // naive installer would) makes containerd 1.6 forget the user's CRI settings.
    let ctl = tempfile::tempdir().unwrap();
    let main = ctl.path().join("config.toml");
    let glob = format!("version = 2\nimports = [\"{}/conf.d/*.toml\"]\n", ctl.path().display());
    std::fs::write(&main, USER_CONTAINERD_CONFIG.replacen("version = 2\n", &glob, 1)).unwrap();
    std::fs::create_dir(ctl.path().join("conf.d")).unwrap();
    std::fs::write(
        ctl.path().join("conf.d/dataplane.toml"),
        shipped("containerd/dataplane-v2.toml"),
    )
    .unwrap();
    let dump = containerd_dump(&main);
    assert!(
        get(&dump, &["plugins", CRI, "containerd", "runtimes", "dataplane"]).is_some(),
        "control: handler loaded"
    );
    assert_ne!(
        get(&dump, &["plugins", CRI, "sandbox_image"]).unwrap().as_str(),
        Some("registry.example.com/pause:3.9"),
        "control: sandbox_image kept?"
    );
    assert_ne!(
        get(&dump, &["plugins", CRI, "cni", "bin_dir"]).unwrap().as_str(),
        Some("/opt/my-cni/bin")
    );
    assert_ne!(
        get(&dump, &["plugins", CRI, "containerd", "runtimes", "runc", "options", "SystemdCgroup"])
            .and_then(|v| v.as_bool()),
        Some(true),
        "control: runc's SystemdCgroup kept?"
    );

    // The product.
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("config.toml");
    std::fs::write(&main, USER_CONTAINERD_CONFIG).unwrap();
    std::fs::set_permissions(&main, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    assert!(out.contains("containerd: /usr/bin/containerd 1.6"), "says which containerd: {out}");
    assert!(out.contains("carried over from runtime `runc`: SystemdCgroup = true"), "{out}");
    assert!(
        !out.contains("its BinaryName"),
        "runc's BinaryName is the runc dataplane-runtime runs: {out}"
    );
    let dropin = d.path().join("conf.d/dataplane.toml");
    let new = std::fs::read_to_string(&main).unwrap();
    let import_line = format!("imports = [\"{}\"]\n", dropin.display());
    assert_eq!(
        new,
        USER_CONTAINERD_CONFIG.replacen("version = 2\n", &format!("version = 2\n{import_line}"), 1),
        "only the imports line is new"
    );
    assert_eq!(std::fs::metadata(&main).unwrap().permissions().mode() & 0o777, 0o600, "mode kept");
    let backups: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("config.toml.bak-dataplane-hook-"))
        .collect();
    assert_eq!(backups.len(), 1, "one backup");
    assert_eq!(std::fs::read_to_string(backups[0].path()).unwrap(), USER_CONTAINERD_CONFIG);

    let dump = containerd_dump(&main);
    let cri = get(&dump, &["plugins", CRI]).unwrap().as_table().unwrap();
    assert_eq!(cri["sandbox_image"].as_str(), Some("registry.example.com/pause:3.9"));
    assert_eq!(get(cri, &["cni", "bin_dir"]).unwrap().as_str(), Some("/opt/my-cni/bin"));
    assert_eq!(
        get(cri, &["containerd", "runtimes", "runc", "options", "SystemdCgroup"])
            .unwrap()
            .as_bool(),
        Some(true)
    );
    assert_eq!(
        get(cri, &["containerd", "runtimes", "runc", "options", "BinaryName"]).unwrap().as_str(),
        Some("/usr/sbin/runc")
    );
    let dp = get(cri, &["containerd", "runtimes", "dataplane"]).unwrap().as_table().unwrap();
    assert_eq!(dp["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    assert_eq!(dp["pod_annotations"], toml::Value::Array(vec!["dataplane-hook.io/*".into()]));
    assert_eq!(
        get(dp, &["options", "BinaryName"]).unwrap().as_str(),
        Some(real_wrapper().as_str())
    );
    assert_eq!(get(dp, &["options", "SystemdCgroup"]).unwrap().as_bool(), Some(true));

    // Second run: nothing to change, no second backup.
    let out = ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    assert!(out.contains("nothing to change"), "{out}");
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3, "config, backup, conf.d");

    // The user edits their CRI section: configure refreshes the copy, and only the drop-in.
    std::fs::write(&main, new.replace("pause:3.9", "pause:3.10")).unwrap();
    let out = ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    assert!(
        out.contains(&format!("updated {}", dropin.display()))
            && !out.contains(&format!("updated {}", main.display())),
        "{out}"
    );
    assert_eq!(
        get(&containerd_dump(&main), &["plugins", CRI, "sandbox_image"]).unwrap().as_str(),
        Some("registry.example.com/pause:3.10")
    );
}

#[test]
fn containerd_running_another_runtime_than_runtime_path_is_warned_about() {
    // The node's runc handler runs crun (BinaryName); dataplane-runtime would exec runc
    // (runtime_path's default): `dataplane` pods would quietly switch runtime.
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("config.toml");
    std::fs::write(&main, USER_CONTAINERD_CONFIG.replace("/usr/sbin/runc", "/usr/bin/crun"))
        .unwrap();
    let args =
        ["--runtime", "containerd", "--dry-run", "--containerd-config", main.to_str().unwrap()];
    let out = ok(&configure(None, &args));
    let warning = out
        .lines()
        .find(|l| l.contains("its BinaryName"))
        .unwrap_or_else(|| panic!("no warning: {out}"));
    assert!(
        warning.contains("runs /usr/bin/crun")
            && warning.contains("runtime_path = \"runc\"")
            && warning.contains("set runtime_path = \"/usr/bin/crun\""),
        "{warning}"
    );
    let carried =
        out.lines().find(|l| l.starts_with("carried over from runtime `runc`")).unwrap_or_default();
    assert_eq!(
        carried, "carried over from runtime `runc`: SystemdCgroup = true",
        "the handler's BinaryName is the wrapper, not crun's: {out}"
    );
    // With runtime_path pointing at crun, nothing to warn about.
    let cfg = d.path().join("dataplane.toml");
    std::fs::write(&cfg, "runtime_path = \"/usr/bin/crun\"\n").unwrap();
    let out = ok(&configure(Some(&cfg), &args));
    assert!(!out.contains("its BinaryName"), "{out}");
}

#[test]
fn containerd_config_that_already_imports_the_dropin_is_not_touched() {
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("config.toml");
    std::fs::write(d.path().join("other.toml"), "version = 2\n").unwrap();
    let text = format!(
        "version = 2\nimports = [\"other.toml\", \"{}/conf.d/*.toml\"]\n",
        d.path().display()
    );
    std::fs::write(&main, &text).unwrap();
    let out = ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    assert!(out.contains("already imports"), "{out}");
    assert_eq!(std::fs::read_to_string(&main).unwrap(), text);
    assert_eq!(
        std::fs::read_dir(d.path()).unwrap().count(),
        3,
        "config, other.toml and conf.d, no backup"
    );
    assert!(get(&containerd_dump(&main), &["plugins", CRI, "containerd", "runtimes", "dataplane"])
        .is_some());

    // containerd 1.x globs a relative pattern from its working directory: that import does not
    // load the drop-in, so configure says so and adds the drop-in's absolute path.
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("config.toml");
    std::fs::write(&main, "version = 2\nimports = [\"conf.d/*.toml\"]\n").unwrap();
    let out = ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    assert!(out.contains("globs a relative pattern from its working directory"), "{out}");
    let cwd_root = Command::new("containerd")
        .current_dir("/")
        .arg("--config")
        .arg(&main)
        .args(["config", "dump"])
        .output()
        .unwrap();
    let dump: toml::Table = String::from_utf8_lossy(&cwd_root.stdout).parse().unwrap();
    assert!(get(&dump, &["plugins", CRI, "containerd", "runtimes", "dataplane"]).is_some());
}

#[test]
fn containerd_without_a_config_gets_a_minimal_one() {
    let d = tempfile::tempdir().unwrap();
    let main = d.path().join("etc/config.toml");
    ok(&configure(
        None,
        &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
    ));
    let dropin = d.path().join("etc/conf.d/dataplane.toml");
    assert_eq!(
        std::fs::read_to_string(&main).unwrap(),
        format!("version = 2\nimports = [\"{}\"]\n", dropin.display())
    );
    let dump = containerd_dump(&main);
    assert!(get(&dump, &["plugins", CRI, "containerd", "runtimes", "dataplane"]).is_some());
    assert!(
        get(&dump, &["plugins", CRI, "containerd", "runtimes", "runc"]).is_some(),
        "containerd's defaults stay"
    );
}

#[test]
fn bad_containerd_configs_fail_with_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("root = \"/x\"\n", "config version 1"),
        ("version = 2\nimports = \"x\"\n", "imports"),
        ("version = 2\n[plugins\n", "cannot parse"),
        ("version = 3\n", "config version 3"),
    ] {
        let main = d.path().join("config.toml");
        std::fs::write(&main, text).unwrap();
        let o = configure(
            None,
            &["--runtime", "containerd", "--containerd-config", main.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{text:?} accepted");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            err.starts_with("dataplane-hook: ") && err.contains(needle) && err.contains('('),
            "{text:?}: {err}"
        );
        assert_eq!(std::fs::read_to_string(&main).unwrap(), text, "left alone");
        assert!(!d.path().join("conf.d").exists());
    }
}

/// CRI-O's RuntimeHandler keys (crio.conf(5), CRIO.RUNTIME.RUNTIMES TABLE) and the values its
/// `allowed_annotations` accepts (CRI-O refuses to start on any other).
const CRIO_HANDLER_KEYS: &[&str] = &[
    "runtime_path",
    "runtime_type",
    "runtime_root",
    "runtime_config_path",
    "privileged_without_host_devices",
    "allowed_annotations",
    "platform_runtime_paths",
    "monitor_path",
    "monitor_cgroup",
    "monitor_env",
    "monitor_exec_cgroup",
    "container_min_memory",
    "no_sync_log",
    "default_annotations",
    "stream_websockets",
    "seccomp_profile",
    "exec_cpu_affinity",
    "container_create_timeout",
];
const CRIO_ALLOWED_ANNOTATIONS: &[&str] = &[
    "io.kubernetes.cri-o.userns-mode",
    "io.kubernetes.cri-o.cgroup2-mount-hierarchy-rw",
    "io.kubernetes.cri-o.UnifiedCgroup",
    "io.kubernetes.cri-o.ShmSize",
    "io.kubernetes.cri-o.Devices",
    "io.containers.trace-syscall",
    "cpu-load-balancing.crio.io",
    "cpu-quota.crio.io",
    "irq-load-balancing.crio.io",
    "cpu-c-states.crio.io",
    "cpu-freq-governor.crio.io",
    "io.kubernetes.cri-o.seccompNotifierAction",
    "io.kubernetes.cri-o.umask",
    "io.kubernetes.cri.rdt-class",
    "io.kubernetes.cri-o.LinkLogs",
    "io.kubernetes.cri-o.TrySkipVolumeSELinuxLabel",
    "cpu-shared.crio.io",
];

fn check_crio_dropin(text: &str, wrapper_must_exist: bool) {
    let t: toml::Table = text.parse().expect("CRI-O drop-in is TOML");
    assert_eq!(t.keys().collect::<Vec<_>>(), vec!["crio"], "everything under the crio table");
    let runtimes = get(&t, &["crio", "runtime", "runtimes"]).unwrap().as_table().unwrap();
    assert_eq!(runtimes.keys().collect::<Vec<_>>(), vec!["dataplane"]);
    let h = runtimes["dataplane"].as_table().unwrap();
    for k in h.keys() {
        assert!(CRIO_HANDLER_KEYS.contains(&k.as_str()), "unknown CRI-O runtime handler key {k}");
    }
    assert!(["oci", "vm", "pod"].contains(&h["runtime_type"].as_str().unwrap()));
    assert_eq!(h["runtime_type"].as_str(), Some("oci"), "runc-compatible wrapper");
    let path = Path::new(h["runtime_path"].as_str().unwrap());
    assert!(path.is_absolute() && path.ends_with("dataplane-runtime"));
    if wrapper_must_exist {
        assert!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o111 != 0,
            "{} executable",
            path.display()
        );
    }
    for a in h["allowed_annotations"].as_array().unwrap() {
        assert!(
            CRIO_ALLOWED_ANNOTATIONS.contains(&a.as_str().unwrap()),
            "CRI-O would refuse allowed_annotation {a}"
        );
    }
}

#[test]
fn crio_dropin_follows_crio_conf() {
    check_crio_dropin(&shipped("crio/crio.conf.d/99-dataplane.conf"), false);
    let d = tempfile::tempdir().unwrap();
    ok(&configure(
        None,
        &[
            "--runtime",
            "crio",
            "--crio-config-dir",
            d.path().to_str().unwrap(),
            "--hooks-dir",
            d.path().join("h").to_str().unwrap(),
        ],
    ));
    check_crio_dropin(&std::fs::read_to_string(d.path().join("99-dataplane.conf")).unwrap(), true);
}

const OCI_STAGES: &[&str] =
    &["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

/// oci-hooks 1.0.0 (containers/common pkg/hooks/docs/oci-hooks.5.md): the schema's fields,
/// types and rules.
fn check_oci_hook(v: &Value, what: &str, hook_must_exist: bool) {
    let o = v.as_object().unwrap_or_else(|| panic!("{what}: not an object"));
    for k in o.keys() {
        assert!(
            ["version", "hook", "when", "stages"].contains(&k.as_str()),
            "{what}: unknown key {k}"
        );
    }
    assert_eq!(v["version"], "1.0.0", "{what}");
    let h = v["hook"].as_object().unwrap_or_else(|| panic!("{what}: hook"));
    for k in h.keys() {
        assert!(
            ["path", "args", "env", "timeout"].contains(&k.as_str()),
            "{what}: unknown hook key {k}"
        );
    }
    let path = Path::new(h["path"].as_str().unwrap());
    assert!(path.is_absolute(), "{what}: hook.path must be absolute");
    if hook_must_exist {
        assert!(
            std::fs::metadata(path).unwrap().permissions().mode() & 0o111 != 0,
            "{what}: {} executable",
            path.display()
        );
    }
    if let Some(a) = h.get("args") {
        assert!(a.as_array().unwrap().iter().all(Value::is_string), "{what}: args are strings");
    }
    if let Some(e) = h.get("env") {
        assert!(
            e.as_array().unwrap().iter().all(|x| x.as_str().is_some_and(|s| s.contains('='))),
            "{what}: env"
        );
    }
    if let Some(t) = h.get("timeout") {
        assert!(t.as_u64().is_some_and(|t| t > 0), "{what}: timeout > 0");
    }
    let w = v["when"].as_object().unwrap_or_else(|| panic!("{what}: when is required"));
    for k in w.keys() {
        assert!(
            ["always", "annotations", "commands", "hasBindMounts"].contains(&k.as_str()),
            "{what}: unknown when key {k}"
        );
    }
    assert!(!w.is_empty(), "{what}: when needs at least one condition");
    for (k, val) in w["annotations"].as_object().unwrap() {
        regex::Regex::new(k).unwrap_or_else(|e| panic!("{what}: key regex {k}: {e}"));
        regex::Regex::new(val.as_str().unwrap())
            .unwrap_or_else(|e| panic!("{what}: value regex: {e}"));
    }
    let stages = v["stages"].as_array().unwrap();
    assert!(!stages.is_empty(), "{what}: stages");
    for s in stages {
        assert!(OCI_STAGES.contains(&s.as_str().unwrap()), "{what}: stage {s}");
    }
    assert_eq!(
        h["args"].as_array().unwrap().last(),
        stages.first(),
        "{what}: the hook is told its stage"
    );
}

/// Does `when` match these annotations (oci-hooks 1.0.0: any condition; annotations: some key
/// matching the key regex has a value matching the value regex).
fn when_matches(v: &Value, ann: &BTreeMap<&str, &str>) -> bool {
    let w = &v["when"];
    if w["always"] == json!(true) {
        return true;
    }
    w["annotations"].as_object().is_some_and(|m| {
        m.iter().any(|(k, val)| {
            let (kr, vr) =
                (regex::Regex::new(k).unwrap(), regex::Regex::new(val.as_str().unwrap()).unwrap());
            ann.iter().any(|(ak, av)| kr.is_match(ak) && vr.is_match(av))
        })
    })
}

#[test]
fn hooks_json_follow_oci_hooks_1_0_0_and_match_only_opted_in_containers() {
    let d = tempfile::tempdir().unwrap();
    ok(&configure(None, &["--runtime", "podman", "--hooks-dir", d.path().to_str().unwrap()]));
    let mut checked = 0;
    for f in HOOK_FILES {
        for (what, text, exists) in [
            (format!("podman/hooks.d/{f}"), shipped(&format!("podman/hooks.d/{f}")), false),
            (format!("crio/hooks.d/{f}"), shipped(&format!("crio/hooks.d/{f}")), false),
            (format!("configured {f}"), std::fs::read_to_string(d.path().join(f)).unwrap(), true),
        ] {
            let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{what}: {e}"));
            check_oci_hook(&v, &what, exists);
            let m = |pairs: &[(&'static str, &'static str)]| {
                when_matches(&v, &pairs.iter().copied().collect())
            };
            assert!(
                m(&[("dataplane-hook.io/enabled", "true"), ("io.kubernetes.pod.name", "x")]),
                "{what}"
            );
            assert!(!m(&[("dataplane-hook.io/enabled", "false")]), "{what}");
            assert!(!m(&[("dataplane-hook.io/enabled", "untrue")]), "{what}");
            assert!(!m(&[("xdataplane-hook.io/enabled", "true")]), "{what}");
            assert!(
                !m(&[("dataplane-hook.io/hugepages-2Mi", "64Mi")]),
                "{what}: only the opt-in annotation selects"
            );
            assert!(!m(&[]), "{what}");
            checked += 1;
        }
    }
    assert_eq!(checked, 6);
}

#[test]
fn kubernetes_manifests_use_the_handler_and_valid_annotations() {
    use serde::Deserialize;
    let dir = repo().join("shim-config/kubernetes");
    let mut docs: Vec<serde_yaml::Value> = Vec::new();
    for e in std::fs::read_dir(&dir).unwrap().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            docs.push(
                serde_yaml::Value::deserialize(doc)
                    .unwrap_or_else(|err| panic!("{}: {err}", e.path().display())),
            );
        }
    }
    let rc: Vec<&serde_yaml::Value> = docs.iter().filter(|d| d["kind"] == "RuntimeClass").collect();
    assert_eq!(rc.len(), 1);
    assert_eq!(rc[0]["apiVersion"], "node.k8s.io/v1");
    assert_eq!(
        rc[0]["handler"], "dataplane",
        "the handler configure writes for containerd and CRI-O"
    );
    let name = rc[0]["metadata"]["name"].as_str().unwrap();
    let pods: Vec<&serde_yaml::Value> = docs.iter().filter(|d| d["kind"] == "Pod").collect();
    assert!(pods.len() >= 3, "a hugepage consumer and a DPDK primary/secondary group");
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for p in pods {
        let pname = p["metadata"]["name"].as_str().unwrap();
        assert_eq!(p["spec"]["runtimeClassName"].as_str(), Some(name), "{pname}");
        let ann: BTreeMap<String, String> = p["metadata"]["annotations"]
            .as_mapping()
            .unwrap()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().unwrap().to_string(),
                    v.as_str()
                        .unwrap_or_else(|| panic!("{pname}: annotation values are strings"))
                        .to_string(),
                )
            })
            .collect();
        let req = dataplane_hook::request::Request::parse(&ann, &[])
            .unwrap_or_else(|e| panic!("{pname}: {e}"));
        if let Some(g) = &req.group {
            *groups.entry(g.as_str().to_string()).or_default() += 1;
        }
        // The hugepage annotation and the container's limit agree (kubelet gives the limit).
        for c in p["spec"]["containers"].as_sequence().unwrap() {
            let lim = &c["resources"]["limits"];
            if let Some(h) = ann.get("dataplane-hook.io/hugepages-2Mi") {
                assert_eq!(lim["hugepages-2Mi"].as_str(), Some(h.as_str()), "{pname}");
                assert!(
                    lim["memory"].is_string() || lim["cpu"].is_string(),
                    "{pname}: Kubernetes needs cpu or memory with hugepages"
                );
            }
        }
    }
    assert!(groups.values().any(|n| *n >= 2), "a DPDK group has two members: {groups:?}");
}

// ---------------------------------------------------------------------------------------------
// Pod sandboxes pass through on every path.

/// Adds the hooks.d hooks whose `when` matches the spec's annotations, as CRI-O and podman do.
fn apply_hooks_d(b: &mut TestBundle, dir: &Path) {
    let ann: BTreeMap<String, String> = b.spec["annotations"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string())).collect())
        .unwrap_or_default();
    let ann_ref: BTreeMap<&str, &str> = ann.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    for f in HOOK_FILES {
        let v: Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap();
        if !when_matches(&v, &ann_ref) {
            continue;
        }
        for s in v["stages"].as_array().unwrap() {
            let s = s.as_str().unwrap();
            let hooks = &mut b.spec["hooks"];
            if !hooks.is_object() {
                *hooks = json!({});
            }
            let list = hooks[s].as_array().cloned().unwrap_or_default();
            let mut list = list;
            list.push(v["hook"].clone());
            hooks[s] = json!(list);
        }
    }
    b.save();
}

fn hooks_in(b: &mut TestBundle) -> Value {
    b.reload()["hooks"].clone()
}

#[test]
fn pod_sandboxes_pass_through_on_every_path() {
    let pool = PoolGuard::new(16);
    let env = ProductEnv::new("");
    let hooks_dir = tempfile::tempdir().unwrap();
    ok(&configure(
        Some(&env.config),
        &[
            "--runtime",
            "crio",
            "--hooks-dir",
            hooks_dir.path().to_str().unwrap(),
            "--crio-config-dir",
            hooks_dir.path().join("conf").to_str().unwrap(),
        ],
    ));
    let sandbox_kinds = [
        ("io.kubernetes.cri.container-type", "sandbox"),
        ("io.kubernetes.cri-o.ContainerType", "sandbox"),
    ];
    let request = |b: &mut TestBundle| {
        b.annotate("dataplane-hook.io/enabled", "true")
            .annotate("dataplane-hook.io/hugepages-2Mi", "8Mi");
    };

    // Positive control on both paths: the same container without the sandbox marker is set up.
    let p = Runner::product(&env);
    let mut b = TestBundle::new(&["sleep", "60"]);
    request(&mut b);
    let id = unique("pt-ctl-wrapper");
    p.launch(&b, &id);
    assert_eq!(counters().reserved, 4, "wrapper path reserves for a plain container");
    assert!(hooks_in(&mut b)["createRuntime"].is_array());
    p.delete(&id);
    pool.assert_baseline("after the wrapper control");

    let runc = Runner::runc();
    let mut b = TestBundle::new(&["sleep", "60"]);
    request(&mut b);
    apply_hooks_d(&mut b, hooks_dir.path());
    let id = unique("pt-ctl-hooksd");
    runc.launch(&b, &id);
    assert_eq!(
        counters().reserved,
        4,
        "hooks.d path reserves for a plain container: {}",
        env.log_text()
    );
    runc.delete(&id);
    pool.assert_baseline("after the hooks.d control");
    assert!(env.records().is_empty());

    for (k, v) in sandbox_kinds {
        // Wrapper path (containerd and CRI-O runtime handlers).
        let mut b = TestBundle::new(&["sleep", "60"]);
        request(&mut b);
        b.annotate(k, v);
        let before = std::fs::read(b.path().join("config.json")).unwrap();
        let id = unique("pt-sandbox-wrapper");
        p.launch(&b, &id);
        assert_eq!(p.status(&id).as_deref(), Some("running"));
        assert_eq!(
            std::fs::read(b.path().join("config.json")).unwrap(),
            before,
            "{k}: the wrapper left the sandbox's spec byte for byte"
        );
        assert_eq!(counters(), pool.baseline, "{k}: nothing reserved for a sandbox");
        assert!(env.records().is_empty(), "{k}: no ledger record for a sandbox");
        p.delete(&id);

        // hooks.d path (CRI-O, podman): the hook runs (its `when` matches) but passes through.
        let mut b = TestBundle::new(&["sleep", "60"]);
        request(&mut b);
        b.annotate(k, v);
        apply_hooks_d(&mut b, hooks_dir.path());
        assert!(hooks_in(&mut b)["createRuntime"].is_array(), "hooks.d matched the sandbox");
        let log_before = env.log_text().len();
        let id = unique("pt-sandbox-hooksd");
        runc.launch(&b, &id);
        assert_eq!(runc.status(&id).as_deref(), Some("running"));
        assert_eq!(counters(), pool.baseline, "{k}: nothing reserved for a sandbox (hooks.d)");
        assert!(env.records().is_empty(), "{k}: no ledger record (hooks.d)");
        assert!(env.log_text().len() > log_before, "the hook ran and logged");
        runc.delete(&id);
    }
    pool.assert_baseline("end");
}
