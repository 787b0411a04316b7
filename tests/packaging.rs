//! Packaging and operations, for real:
//! - the Debian package: built with cargo-deb from packaging/, installed with `dpkg -i`, checked
//!   (files, conffile, units, tmpfiles, completions, man page; no runtime config touched), used
//!   — DPDK containers through the installed /usr/bin/dataplane-runtime with the installed
//!   config, state dir and log — refused removal while they run, and purged with nothing left;
//! - the Kubernetes installer: its image built offline by build-image.sh is a valid OCI layout
//!   (digests checked here, and by skopeo and umoci), and the image itself, unpacked and run with
//!   real runc the way the DaemonSet runs it (host PID namespace, host / at /host), installs,
//!   configures containerd (checked by containerd's own `config dump`), runs real containers
//!   through what it installed, runs the watchdog, and undoes every change;
//! - the manifests, validated against the Kubernetes schemas by `kubernetes-validate` (and a
//!   broken one rejected: the control), and consistent with each other and the product;
//! - `--help` for every command, shell completions, the shipped default configs, and a README
//!   troubleshooting row for every one-line error in the source.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dataplane_tests::dpdk::{forwarding, testpmd_primary};
use dataplane_tests::util::*;
use dataplane_tests::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const HUGE: &str = "dataplane-hook.io/hugepages-2Mi";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

// ---------------------------------------------------------------------------------------------
// --help, completions, default configs.

#[test]
fn every_command_prints_useful_help() {
    let top = ok(Command::new(hook_bin()).arg("--help"));
    let subs: Vec<String> = top
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .filter(|s| s != "help")
        .collect();
    for want in
        ["createRuntime", "prestart", "poststop", "gc", "status", "doctor", "configure", "watch"]
    {
        assert!(subs.iter().any(|s| s == want), "`{want}` is listed: {subs:?}");
    }
    assert!(
        top.contains("dataplane-hook configure --runtime") && top.contains("dataplane-hook doctor"),
        "the top help says how to start: {top}"
    );
    for s in &subs {
        let short = ok(Command::new(hook_bin()).args([s.as_str(), "-h"]));
        let long = ok(Command::new(hook_bin()).args([s.as_str(), "--help"]));
        assert!(long.contains(&format!("Usage: dataplane-hook {s}")), "{s}: {long}");
        assert!(long.contains("--config <PATH>"), "{s}: the global --config is shown");
        // The long help explains more than the one-line summary.
        let first = short.lines().next().unwrap();
        assert!(long.len() > short.len() + 100, "`{s} --help` says more than `{first}`:\n{long}");
    }
    // configure's options and their values.
    let c = ok(Command::new(hook_bin()).args(["configure", "--help"]));
    for opt in [
        "--runtime <RUNTIME>",
        "containerd, crio, podman",
        "--dry-run",
        "--hooks-dir",
        "--containerd-config",
        "--crio-config-dir",
    ] {
        assert!(c.contains(opt), "configure --help shows {opt}");
    }
    // A wrong command line is a one-line usage error, not a panic.
    let o = run(Command::new(hook_bin()).arg("frobnicate"));
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unrecognized subcommand 'frobnicate'"));
    // The wrapper: what it is, then the real runtime's own help (its command line is runc's).
    let w = ok(Command::new(runtime_bin()).arg("--help"));
    assert!(w.starts_with("dataplane-runtime: a runc-compatible runtime"), "{w}");
    assert!(w.contains("runc - Open Container Initiative runtime"), "runc's help follows: {w}");
    // The man page.
    let man = ok(Command::new(hook_bin()).arg("manpage"));
    assert!(man.contains(".TH dataplane-hook 8") && man.contains("doctor"), "{man}");
}

#[test]
fn completions_complete_subcommands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let s = ok(Command::new(hook_bin()).args(["completions", shell]));
        assert!(
            s.contains("doctor") && s.contains("configure") && s.contains("containerd"),
            "{shell}: {s}"
        );
        std::fs::write(dir.path().join(shell), s).unwrap();
    }
    // bash really completes with it: the subcommand, then configure's --runtime values.
    let complete = |words: &str| -> String {
        let script = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); COMP_LINE=\"{words}\"; COMP_POINT=${{#COMP_LINE}}; \
             _dataplane__hook dataplane-hook \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; echo \"${{COMPREPLY[@]}}\"",
            dir.path().join("bash").display()
        );
        ok(Command::new("bash").args(["-c", &script])).trim().to_string()
    };
    assert_eq!(complete("dataplane-hook doc"), "doctor");
    let r = complete("dataplane-hook configure --runtime ''");
    assert!(r.contains("containerd") && r.contains("crio") && r.contains("podman"), "{r}");
    // fish really completes with it too (`complete -C`), zsh accepts the script (make deps
    // installs both).
    for sh in ["zsh", "fish"] {
        assert!(
            Command::new(sh).arg("--version").output().is_ok(),
            "{sh} is not installed (make deps)"
        );
    }
    ok(Command::new("zsh").args(["-n"]).arg(dir.path().join("zsh")));
    ok(Command::new("fish").args(["--no-execute"]).arg(dir.path().join("fish")));
    let fish = |line: &str| -> Vec<String> {
        let script = format!("source {}; complete -C {line:?}", dir.path().join("fish").display());
        ok(Command::new("fish").args(["--no-config", "-c", &script]))
            .lines()
            .map(|l| l.split('\t').next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(fish("dataplane-hook doc"), ["doctor"]);
    let r = fish("dataplane-hook configure --runtime ");
    assert!(["containerd", "crio", "podman"].iter().all(|w| r.iter().any(|x| x == w)), "{r:?}");
}

#[test]
fn shipped_default_configs_load_and_put_both_metrics_files_in_one_dir() {
    use dataplane_hook::config::Config;
    for rel in ["packaging/config.toml", "packaging/kubernetes/config.toml"] {
        let p = repo().join(rel);
        let c = Config::parse(&std::fs::read_to_string(&p).unwrap(), &p)
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(
            c.watch.metrics_file.parent(),
            Some(c.metrics.textfile_dir.as_path()),
            "{rel}: the hooks' and the watchdog's files side by side"
        );
        assert_eq!(c.state_dir, Config::default().state_dir, "{rel}");
        // Only the metrics locations differ from the built-in defaults.
        let mut d = c.clone();
        d.metrics = Config::default().metrics;
        d.watch.metrics_file = Config::default().watch.metrics_file;
        assert_eq!(d, Config::default(), "{rel}: every other key is the default");
    }
    let deb = Config::parse(
        &std::fs::read_to_string(repo().join("packaging/config.toml")).unwrap(),
        Path::new("x"),
    )
    .unwrap();
    assert_eq!(
        deb.metrics.textfile_dir,
        Path::new("/var/lib/prometheus/node-exporter"),
        "Debian's node_exporter reads this dir by default"
    );
    let tmpfiles =
        std::fs::read_to_string(repo().join("packaging/tmpfiles.d/dataplane-hook.conf")).unwrap();
    assert!(
        tmpfiles.lines().any(|l| l == format!("d {} 0700 root root -", deb.state_dir.display())),
        "{tmpfiles}"
    );
}

/// The README's troubleshooting table has a row for every one-line error the product prints:
/// each error's leading words (up to its first placeholder or `: `), taken from the source —
/// `#[error(...)]`, `bail!`/`anyhow!`, plan and configure errors — appear in that section.
/// Causes that only ever follow another error's `: ` (the row of the outer error covers them)
/// are listed here by name.
#[test]
fn every_one_line_error_has_a_troubleshooting_row() {
    const INNER_CAUSES: &[&str] = &[
        "the kernel refused to reserve", // cannot reserve ... / cannot start DPDK group ...
        "the kernel refused trigger",    // memory pressure is not watched: ... (log)
        "cannot start the group holder", // cannot start DPDK group G: ...
        "the group holder failed",       // cannot start DPDK group G: ...
        "mount on",                      // cannot start DPDK group / cannot set up mounts ...
        "no cgroup hierarchy has the memory controller", // cannot lower the memory limit of GPU container ...
        "cannot find the cgroup of process", // cannot set hugetlb cgroup limits ... / GPU
        "cannot enter network namespace",    // cannot check the RDMA GID index ...
        "cannot list the network interfaces of", // cannot check the RDMA GID index ...
        "cannot do it",                      // a unit test's error in log.rs
    ];
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let start = readme.find("## Troubleshooting").expect("a Troubleshooting section");
    let section =
        &readme[start..readme[start + 2..].find("\n## ").map_or(readme.len(), |e| start + 2 + e)];
    let lit = r#""((?:[^"\\]|\\.)*)""#;
    let patterns: Vec<regex::Regex> = [
        format!(r"#\[error\({lit}"),
        format!(r"(?:bail!|anyhow!)\(\s*{lit}"),
        format!(r"what: (?:format!\()?{lit}"),
        format!(r"let what = (?:format!\()?{lit}"),
        format!(r"\bfail\(\s*(?:format!\()?{lit}"),
    ]
    .iter()
    .map(|p| regex::Regex::new(p).unwrap())
    .collect();
    let split = regex::Regex::new(r"\{[^}]*\}|: ").unwrap();
    fn walk(d: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out)
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p)
            }
        }
    }
    let mut files = Vec::new();
    walk(&repo().join("hook/src"), &mut files);
    let (mut seen, mut missing) = (0, Vec::new());
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        for re in &patterns {
            for c in re.captures_iter(&src) {
                let msg = c[1].replace("\\\"", "\"");
                let Some(lead) = split.split(&msg).map(str::trim).find(|s| !s.is_empty()) else {
                    continue;
                };
                seen += 1;
                if !section.contains(lead) && !INNER_CAUSES.contains(&lead) {
                    missing.push(format!(
                        "{}: {msg:?} (leading words {lead:?})",
                        f.strip_prefix(repo()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(seen > 60, "the scan finds the product's errors: {seen}");
    assert!(
        missing.is_empty(),
        "errors without a README troubleshooting row:\n{}",
        missing.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// Kubernetes manifests.

fn yaml_files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for d in ["packaging/kubernetes", "shim-config/kubernetes"] {
        for e in std::fs::read_dir(repo().join(d)).unwrap().flatten() {
            let p = e.path();
            if matches!(p.extension().and_then(|x| x.to_str()), Some("yaml") | Some("yml")) {
                v.push(p);
            }
        }
    }
    v.sort();
    v
}

fn kubernetes_validate() -> Command {
    let direct = Command::new("kubernetes-validate").arg("--version").output();
    if direct.is_ok_and(|o| o.status.success()) {
        return Command::new("kubernetes-validate");
    }
    let mut c = Command::new("python3");
    c.args(["-m", "kubernetes_validate"]);
    assert!(
        Command::new("python3").args(["-m", "kubernetes_validate", "--version"]).output().is_ok_and(|o| o.status.success()),
        "kubernetes-validate is not installed (make deps, or: python3 -m pip install kubernetes-validate)"
    );
    c
}

fn docs(p: &Path) -> Vec<serde_yaml::Value> {
    let t = std::fs::read_to_string(p).unwrap();
    serde_yaml::Deserializer::from_str(&t)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect()
}

#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let files = yaml_files();
    assert!(files.len() >= 5, "{files:?}");
    assert!(files.iter().any(|f| f.ends_with("packaging/kubernetes/installer.yaml")));
    for f in &files {
        let o = run(kubernetes_validate().args(["--strict"]).arg(f));
        assert!(o.status.success(), "{} does not validate:\n{}", f.display(), text(&o));
        // One "passed" per document.
        let passed = String::from_utf8_lossy(&o.stdout).matches(" passed for resource ").count()
            + String::from_utf8_lossy(&o.stderr).matches(" passed for resource ").count();
        assert_eq!(passed, docs(f).len(), "{}: {}", f.display(), text(&o));
    }
    // Control: the validator catches a misspelt field and a wrong type in our DaemonSet.
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read_to_string(repo().join("packaging/kubernetes/installer.yaml")).unwrap();
    for (what, bad) in [
        ("misspelt field", good.replace("hostPID: true", "hostPid: true")),
        (
            "wrong type",
            good.replace(
                "terminationGracePeriodSeconds: 120",
                "terminationGracePeriodSeconds: soon",
            ),
        ),
    ] {
        assert_ne!(bad, good, "{what}: the edit applies");
        let p = dir.path().join("broken.yaml");
        std::fs::write(&p, bad).unwrap();
        let o = run(kubernetes_validate().args(["--strict"]).arg(&p));
        assert!(
            !o.status.success(),
            "control ({what}): the validator must reject it:\n{}",
            text(&o)
        );
    }
}

#[test]
fn manifests_agree_with_each_other_and_with_the_product() {
    let installer = docs(&repo().join("packaging/kubernetes/installer.yaml"));
    let kind = |d: &serde_yaml::Value| d["kind"].as_str().unwrap_or("").to_string();
    let rc = installer
        .iter()
        .find(|d| kind(d) == "RuntimeClass")
        .expect("installer.yaml has the RuntimeClass");
    let ds = installer
        .iter()
        .find(|d| kind(d) == "DaemonSet")
        .expect("installer.yaml has the DaemonSet");
    // The handler is the one configure writes; the shim-config example says the same.
    assert_eq!(rc["handler"].as_str(), Some(dataplane_hook::configure::HANDLER));
    let example = docs(&repo().join("shim-config/kubernetes/runtimeclass.yaml"));
    assert_eq!(example[0]["handler"], rc["handler"]);
    assert_eq!(
        example[0]["scheduling"], rc["scheduling"],
        "the example and the installer schedule onto the same nodes"
    );
    // The installer runs where the RuntimeClass schedules.
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["nodeSelector"], rc["scheduling"]["nodeSelector"]);
    assert_eq!(spec["hostPID"].as_bool(), Some(true));
    let c = &spec["containers"][0];
    assert_eq!(c["securityContext"]["privileged"].as_bool(), Some(true));
    assert_eq!(
        c["lifecycle"]["preStop"]["exec"]["command"],
        serde_yaml::to_value(["/install.sh", "prestop"]).unwrap()
    );
    let vols = spec["volumes"].as_sequence().unwrap();
    let host = vols
        .iter()
        .find(|v| v["hostPath"]["path"].as_str() == Some("/"))
        .expect("the host's / is mounted");
    let mount = c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"] == host["name"])
        .unwrap();
    assert_eq!(mount["mountPath"].as_str(), Some("/host"), "install.sh's DPH_HOST_ROOT default");
    // Every DPH_* setting the manifest sets is one install.sh reads.
    let script = std::fs::read_to_string(repo().join("packaging/kubernetes/install.sh")).unwrap();
    for e in c["env"].as_sequence().unwrap() {
        let name = e["name"].as_str().unwrap();
        assert!(
            script.contains(&format!("{name}:-")) || script.contains(&format!("{name}-")),
            "install.sh reads {name}"
        );
    }
    assert!(c["image"].as_str().unwrap().starts_with("dataplane-hook-installer:"));
    let build =
        std::fs::read_to_string(repo().join("packaging/kubernetes/build-image.sh")).unwrap();
    assert!(
        build.contains("\"org.opencontainers.image.title\":\"dataplane-hook-installer\""),
        "the image build names the image the DaemonSet runs"
    );
}

// ---------------------------------------------------------------------------------------------
// The installer image.

fn sha256_file(p: &Path) -> String {
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

/// Checks an OCI image layout by hand: index → manifest → config and layers, every blob's
/// digest and size. Returns (config, layer blob paths).
fn check_oci_layout(layout: &Path, tag: &str) -> (Value, Vec<PathBuf>) {
    let layout_file: Value =
        serde_json::from_slice(&std::fs::read(layout.join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout_file["imageLayoutVersion"], "1.0.0");
    let index: Value =
        serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    let m = index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .expect("the tag");
    let blob = |d: &Value| -> PathBuf {
        let digest = d["digest"].as_str().unwrap();
        let hex = digest.strip_prefix("sha256:").unwrap();
        let p = layout.join("blobs/sha256").join(hex);
        assert_eq!(sha256_file(&p), hex, "blob {digest} has its digest");
        assert_eq!(
            std::fs::metadata(&p).unwrap().len(),
            d["size"].as_u64().unwrap(),
            "blob {digest} has its size"
        );
        p
    };
    assert_eq!(m["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    let manifest: Value = serde_json::from_slice(&std::fs::read(blob(m)).unwrap()).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    let config: Value =
        serde_json::from_slice(&std::fs::read(blob(&manifest["config"])).unwrap()).unwrap();
    let layers: Vec<PathBuf> = manifest["layers"].as_array().unwrap().iter().map(blob).collect();
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), layers.len());
    (config, layers)
}

/// Image builds here pin their timestamps (else the last commit's time, which moves while
/// others commit).
const EPOCH: &str = "1700000000";

struct Built {
    _dir: tempfile::TempDir,
    layout: PathBuf,
    bin: PathBuf,
}

/// Builds the image with build-image.sh from the test's binaries (`make build` links them
/// statically; a plain `cargo build` does not, and then the image is told to take them).
fn build_image() -> Built {
    let dir = tempfile::Builder::new().prefix("dph-image-").tempdir().unwrap();
    let layout = dir.path().join("layout");
    let bin = bin_dir();
    let mut c = Command::new(repo().join("packaging/kubernetes/build-image.sh"));
    c.arg(&bin).arg(&layout).arg("test").env("SOURCE_DATE_EPOCH", EPOCH);
    allow_dynamic_if_needed(&mut c, &bin);
    let out = ok(&mut c);
    assert!(out.contains(&format!("build-image: {}:test", layout.display())), "{out}");
    Built { _dir: dir, layout, bin }
}

/// Whether `bin` loads shared libraries (ldd lists some).
fn is_dynamic(bin: &Path) -> bool {
    std::process::Command::new("ldd")
        .arg(bin)
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("=>"))
}

fn allow_dynamic_if_needed(c: &mut Command, bin_dir: &Path) {
    if is_dynamic(&bin_dir.join("dataplane-hook")) || is_dynamic(&bin_dir.join("dataplane-runtime"))
    {
        c.env("DPH_ALLOW_DYNAMIC", "1");
    }
}

#[test]
fn the_image_refuses_dynamic_binaries_unless_told() {
    // A bin dir with dynamic executables in place of ours (a plain `cargo build`'s would be).
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let dynamic = Path::new("/usr/bin/true");
    assert!(is_dynamic(dynamic), "/usr/bin/true is expected to be dynamically linked here");
    for b in ["dataplane-hook", "dataplane-runtime"] {
        std::fs::copy(dynamic, bin.join(b)).unwrap();
    }
    let o = run(Command::new(repo().join("packaging/kubernetes/build-image.sh"))
        .arg(&bin)
        .arg(dir.path().join("l")));
    assert!(!o.status.success());
    assert!(
        text(&o).contains("dynamically linked: it would not run on nodes with an older C library"),
        "{}",
        text(&o)
    );
    assert!(!dir.path().join("l").exists(), "nothing written for a refused build");
    // Told, it takes them.
    let o = run(Command::new(repo().join("packaging/kubernetes/build-image.sh"))
        .arg(&bin)
        .arg(dir.path().join("l"))
        .env("DPH_ALLOW_DYNAMIC", "1")
        .env("SOURCE_DATE_EPOCH", EPOCH));
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn make_build_links_the_product_statically() {
    // The lifecycle cost (`make bench`) and the installer image depend on it; `make build` is
    // what made this test's binaries unless DPH_BIN_DIR points elsewhere (an installed package
    // is built the same way: make deb takes make build's binaries).
    for b in [hook_bin(), bin_dir().join("dataplane-runtime")] {
        assert!(
            !is_dynamic(&b),
            "{} is dynamically linked: build with `make build` (crt-static, see the Makefile)",
            b.display()
        );
    }
}

/// A runc bundle from the image, shaped like the DaemonSet's pod: the host's PID and network
/// namespaces, the host's / at /host (rslave), privileged.
fn installer_bundle(
    layout: &Path,
    work: &Path,
    name: &str,
    args: &[&str],
    env: &[(String, String)],
) -> PathBuf {
    let bundle = work.join(name);
    ok(Command::new("umoci")
        .args(["unpack", "--image"])
        .arg(format!("{}:test", layout.display()))
        .arg(&bundle));
    let p = bundle.join("config.json");
    let mut spec: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
    assert_eq!(
        spec["process"]["args"],
        json!(["/install.sh", "run"]),
        "the image's entrypoint and command"
    );
    spec["process"]["args"] = json!(args);
    spec["process"]["terminal"] = json!(false);
    let envs = spec["process"]["env"].as_array_mut().unwrap();
    for (k, v) in env {
        envs.push(json!(format!("{k}={v}")));
    }
    // "privileged": every capability this (root) process may hand on.
    let bnd = std::fs::read_to_string("/proc/self/status").unwrap();
    let bnd = u64::from_str_radix(
        bnd.lines().find_map(|l| l.strip_prefix("CapBnd:")).unwrap().trim(),
        16,
    )
    .unwrap();
    let caps: Vec<String> = (0..=40)
        .filter(|n| bnd & (1u64 << n) != 0)
        .filter_map(cap_name)
        .map(String::from)
        .collect();
    for set in ["bounding", "effective", "permitted"] {
        spec["process"]["capabilities"][set] = json!(caps);
    }
    spec["linux"]["namespaces"] = json!([{"type": "mount"}, {"type": "ipc"}, {"type": "uts"}]);
    for k in ["seccomp", "maskedPaths", "readonlyPaths", "uidMappings", "gidMappings"] {
        spec["linux"].as_object_mut().unwrap().remove(k);
    }
    spec["linux"]["resources"] = json!({"devices": [{"allow": true, "access": "rwm"}]});
    spec["mounts"].as_array_mut().unwrap().push(json!({"destination": "/host", "type": "bind", "source": "/", "options": ["rbind", "rslave"]}));
    spec["root"]["readonly"] = json!(false);
    std::fs::write(&p, serde_json::to_vec_pretty(&spec).unwrap()).unwrap();
    bundle
}

fn cap_name(n: u32) -> Option<&'static str> {
    const CAPS: [&str; 41] = [
        "CAP_CHOWN",
        "CAP_DAC_OVERRIDE",
        "CAP_DAC_READ_SEARCH",
        "CAP_FOWNER",
        "CAP_FSETID",
        "CAP_KILL",
        "CAP_SETGID",
        "CAP_SETUID",
        "CAP_SETPCAP",
        "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE",
        "CAP_NET_BROADCAST",
        "CAP_NET_ADMIN",
        "CAP_NET_RAW",
        "CAP_IPC_LOCK",
        "CAP_IPC_OWNER",
        "CAP_SYS_MODULE",
        "CAP_SYS_RAWIO",
        "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE",
        "CAP_SYS_PACCT",
        "CAP_SYS_ADMIN",
        "CAP_SYS_BOOT",
        "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE",
        "CAP_SYS_TIME",
        "CAP_SYS_TTY_CONFIG",
        "CAP_MKNOD",
        "CAP_LEASE",
        "CAP_AUDIT_WRITE",
        "CAP_AUDIT_CONTROL",
        "CAP_SETFCAP",
        "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN",
        "CAP_SYSLOG",
        "CAP_WAKE_ALARM",
        "CAP_BLOCK_SUSPEND",
        "CAP_AUDIT_READ",
        "CAP_PERFMON",
        "CAP_BPF",
        "CAP_CHECKPOINT_RESTORE",
    ];
    CAPS.get(n as usize).copied()
}

/// `runc run` of an installer bundle to completion; its output.
fn run_installer(runc_root: &Path, bundle: &Path, id: &str) -> String {
    let o = run(Command::new("runc")
        .arg("--root")
        .arg(runc_root)
        .args(["run", "--bundle"])
        .arg(bundle)
        .arg(id)
        .stdin(Stdio::null()));
    let t = text(&o);
    assert!(o.status.success(), "installer container {id} failed: {t}");
    t
}

/// Force-deletes a container with plain runc when a test ends, passed or not.
struct DeleteOnDrop {
    root: PathBuf,
    id: String,
}
impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(&self.root)
            .args(["delete", "--force", &self.id])
            .output();
    }
}

fn host_procs_with(needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            cmd.contains(needle).then_some(pid)
        })
        .collect()
}

/// The consumer that matters: a (private) containerd imports the layout — Go's archive/tar
/// unpacks the layer strictly — and runs the image's binaries.
fn containerd_imports_and_runs(layout: &Path) {
    let dir = tempfile::Builder::new().prefix("dph-ctrd-").tempdir().unwrap();
    let d = dir.path();
    let sock = d.join("c.sock");
    std::fs::write(
        d.join("config.toml"),
        format!(
            "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n[grpc]\n  address = \"{1}\"\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  disable_tcp_service = true\n",
            d.display(),
            sock.display()
        ),
    )
    .unwrap();
    struct Daemon(std::process::Child);
    impl Drop for Daemon {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let log = std::fs::File::create(d.join("containerd.log")).unwrap();
    let _daemon = Daemon(
        Command::new("containerd")
            .arg("--config")
            .arg(d.join("config.toml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ctr = || {
        let mut c = Command::new("ctr");
        c.arg("-a").arg(&sock).args(["-n", "dph-image-test"]);
        c
    };
    assert!(
        wait_for(Duration::from_secs(20), || ctr()
            .args(["version"])
            .output()
            .is_ok_and(|o| o.status.success())),
        "containerd: {}",
        std::fs::read_to_string(d.join("containerd.log")).unwrap_or_default()
    );
    let tar = d.join("image.tar");
    ok(Command::new("tar").arg("-C").arg(layout).arg("-cf").arg(&tar).arg("."));
    let imp = ok(ctr()
        .args(["images", "import", "--index-name", "dataplane-hook-installer:test"])
        .arg(&tar));
    assert!(
        imp.contains("unpacking dataplane-hook-installer:test") && imp.contains("done"),
        "{imp}"
    );
    let v = ok(ctr().args([
        "run",
        "--rm",
        "dataplane-hook-installer:test",
        &unique("img"),
        "/usr/bin/dataplane-hook",
        "--version",
    ]));
    assert!(v.starts_with("dataplane-hook "), "{v}");
    let n = ok(ctr().args([
        "run",
        "--rm",
        "dataplane-hook-installer:test",
        &unique("img"),
        "/usr/bin/nsenter",
        "--version",
    ]));
    assert!(
        n.contains("util-linux"),
        "util-linux's nsenter runs with the libraries packed beside it: {n}"
    );
    // The entrypoint runs under the image's busybox shell.
    let sh = run(ctr().args([
        "run",
        "--rm",
        "dataplane-hook-installer:test",
        &unique("img"),
        "/install.sh",
        "bogus",
    ]));
    assert!(
        !sh.status.success() && text(&sh).contains("usage: install.sh [run|install|uninstall]"),
        "{}",
        text(&sh)
    );
    let _ = ctr().args(["images", "rm", "dataplane-hook-installer:test"]).output();
}

#[test]
fn installer_image_is_a_valid_oci_layout_and_installs_configures_and_undoes_for_real() {
    let pool = PoolGuard::new(16);
    let t0 = std::time::Instant::now();
    let built = build_image();

    // The layout: by hand, then by two independent tools.
    let (config, layers) = check_oci_layout(&built.layout, "test");
    assert_eq!(config["config"]["Entrypoint"], json!(["/install.sh"]));
    assert_eq!(config["config"]["Cmd"], json!(["run"]));
    assert_eq!(
        config["config"]["Labels"]["org.opencontainers.image.title"],
        "dataplane-hook-installer"
    );
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("linux"), Some("amd64"))
    );
    let listing = ok(Command::new("tar").arg("-tzf").arg(&layers[0]));
    for f in [
        "usr/bin/dataplane-hook",
        "usr/bin/dataplane-runtime",
        "install.sh",
        "etc/dataplane-hook/config.toml",
        "bin/busybox",
        "bin/sh",
        "usr/bin/nsenter",
    ] {
        assert!(
            listing.lines().any(|l| l.trim_start_matches("./") == f),
            "the layer has {f}:\n{listing}"
        );
    }
    // Reproducible: the same inputs give the same image.
    let again = tempfile::tempdir().unwrap();
    let mut c = Command::new(repo().join("packaging/kubernetes/build-image.sh"));
    c.arg(&built.bin).arg(again.path().join("layout")).arg("test").env("SOURCE_DATE_EPOCH", EPOCH);
    allow_dynamic_if_needed(&mut c, &built.bin);
    ok(&mut c);
    assert_eq!(
        std::fs::read(again.path().join("layout/index.json")).unwrap(),
        std::fs::read(built.layout.join("index.json")).unwrap(),
        "same digests on a rebuild"
    );
    let inspect: Value = serde_json::from_str(&ok(Command::new("skopeo")
        .args(["inspect", "--config"])
        .arg(format!("oci:{}:test", built.layout.display()))))
    .unwrap();
    assert_eq!(inspect["config"]["Entrypoint"], json!(["/install.sh"]));
    ok(Command::new("umoci")
        .args(["stat", "--image"])
        .arg(format!("{}:test", built.layout.display())));
    containerd_imports_and_runs(&built.layout);

    // The node: a containerd config of the admin's, a temp install dir, config and record.
    let host = tempfile::Builder::new().prefix("dph-node-").tempdir().unwrap();
    let h = host.path();
    std::fs::create_dir_all(h.join("containerd")).unwrap();
    let ctrd_config = h.join("containerd/config.toml");
    let original = "version = 2\n\n[plugins.\"io.containerd.grpc.v1.cri\"]\n  sandbox_image = \"registry.k8s.io/pause:3.9\"\n";
    std::fs::write(&ctrd_config, original).unwrap();
    let dest = h.join("opt/dataplane-hook/bin");
    let cfg = h.join("etc/dataplane-hook/config.toml");
    let reloads = h.join("reloads");
    let env: Vec<(String, String)> = [
        // PID 1 of this machine is out of reach (it holds capabilities root here lacks, so
        // its namespaces cannot be opened); this test process is in the host's namespaces.
        ("DPH_HOST_PID", std::process::id().to_string()),
        ("DPH_RUNTIME", "containerd".to_string()),
        ("DPH_INSTALL_DIR", dest.display().to_string()),
        ("DPH_CONFIG", cfg.display().to_string()),
        ("DPH_STATE", h.join("record").display().to_string()),
        ("DPH_CONFIGURE_ARGS", format!("--containerd-config {}", ctrd_config.display())),
        ("DPH_RELOAD", format!("echo reload >> {}", reloads.display())),
        // The config written when the node has none: a private one, so that nothing here
        // touches the host's /run/dataplane-hook, log or metrics dirs.
        ("DPH_DEFAULT_CONFIG", "/etc/dataplane-hook/test-default.toml".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let private = format!(
        "state_dir = \"{}\"\nlog_file = \"{}\"\n[metrics]\ntextfile_dir = \"\"\n[watch]\nmetrics_file = \"\"\ndry_run = true\n",
        h.join("state").display(),
        h.join("hook.log").display()
    );
    let work = tempfile::Builder::new().prefix("dph-bundles-").tempdir().unwrap();
    let runc_root = tempfile::Builder::new().prefix("dph-runc-").tempdir().unwrap();
    let bundle = |name: &str, args: &[&str]| {
        let b = installer_bundle(&built.layout, work.path(), name, args, &env);
        std::fs::write(b.join("rootfs/etc/dataplane-hook/test-default.toml"), &private).unwrap();
        b
    };
    let reload_count = || std::fs::read_to_string(&reloads).map(|s| s.lines().count()).unwrap_or(0);

    eprintln!("installer test: step 1 at {:?}", t0.elapsed());
    // 1. install: binaries copied, config written, containerd configured, reloaded once.
    let out = run_installer(
        runc_root.path(),
        &bundle("install", &["/install.sh", "install"]),
        &unique("inst"),
    );
    for b in ["dataplane-hook", "dataplane-runtime"] {
        assert_eq!(
            sha256_file(&dest.join(b)),
            sha256_file(&built.bin.join(b)),
            "{b} installed as built: {out}"
        );
    }
    assert_eq!(std::fs::read_to_string(&cfg).unwrap(), private, "config written from the image");
    let dropin = h.join("containerd/conf.d/dataplane.toml");
    assert!(dropin.exists(), "{out}");
    let main_now = std::fs::read_to_string(&ctrd_config).unwrap();
    assert!(
        main_now.contains("imports") && main_now.contains(&dropin.display().to_string()),
        "{main_now}"
    );
    assert_eq!(reload_count(), 1, "reloaded once: {out}");
    // containerd itself reads the result: the handler runs the installed wrapper.
    let dump =
        ok(Command::new("containerd").arg("--config").arg(&ctrd_config).args(["config", "dump"]));
    let handler = dataplane_hook::doctor::containerd_handler(&dump)
        .expect("containerd sees the dataplane handler");
    assert_eq!(
        handler.1.as_deref(),
        Some(dest.join("dataplane-runtime").to_str().unwrap()),
        "{dump}"
    );
    assert!(
        dump.contains("registry.k8s.io/pause:3.9"),
        "the admin's CRI settings are still in effect"
    );

    eprintln!("installer test: step 2 at {:?}", t0.elapsed());
    // 2. A pod restart runs install again: nothing changes, no second restart.
    let dropin_before = std::fs::read(&dropin).unwrap();
    let out = run_installer(
        runc_root.path(),
        &bundle("again", &["/install.sh", "install"]),
        &unique("inst"),
    );
    assert_eq!(reload_count(), 1, "already configured: no restart: {out}");
    assert!(out.contains("already configured"), "{out}");
    assert_eq!(std::fs::read(&dropin).unwrap(), dropin_before);

    eprintln!("installer test: step 3 at {:?}", t0.elapsed());
    // 3. run mode: the watchdog runs on the host with the node's config, as the pod's main process.
    let watch_id = unique("watch");
    let _reap_watch = DeleteOnDrop { root: runc_root.path().to_path_buf(), id: watch_id.clone() };
    let watch_bundle = bundle("run", &["/install.sh", "run"]);
    let mut watch = Command::new("runc")
        .arg("--root")
        .arg(runc_root.path())
        .args(["run", "--bundle"])
        .arg(&watch_bundle)
        .arg(&watch_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let needle =
        format!("{} --config {} watch", dest.join("dataplane-hook").display(), cfg.display());
    let running = wait_for(Duration::from_secs(20), || !host_procs_with(&needle).is_empty());
    let _ = Command::new("runc")
        .arg("--root")
        .arg(runc_root.path())
        .args(["kill", &watch_id, "TERM"])
        .status();
    let stopped = wait_for(Duration::from_secs(10), || watch.try_wait().ok().flatten().is_some());
    if !stopped {
        let _ = Command::new("runc")
            .arg("--root")
            .arg(runc_root.path())
            .args(["kill", &watch_id, "KILL"])
            .status();
    }
    let wo = watch.wait_with_output().unwrap();
    let _ = Command::new("runc")
        .arg("--root")
        .arg(runc_root.path())
        .args(["delete", "--force", &watch_id])
        .status();
    assert!(running, "run mode starts `{needle}`: {}", text(&wo));
    assert!(stopped, "the watchdog stops with the pod");
    assert_eq!(reload_count(), 1);

    eprintln!("installer test: step 4 at {:?}", t0.elapsed());
    // 4. A real container through what the installer put on the node; it stays alive.
    let env_p = ProductEnv::from_parts(h, &cfg);
    let mut sleeper = TestBundle::new(&["sleep", "3600"]);
    sleeper.annotate(HUGE, "8Mi");
    let rr = tempfile::Builder::new().prefix("dph-runc-").tempdir().unwrap();
    let installed = |args: &[&str]| -> Output {
        run(Command::new(dest.join("dataplane-runtime"))
            .env("DATAPLANE_HOOK_CONFIG", &cfg)
            .arg("--root")
            .arg(rr.path())
            .args(args))
    };
    let cid = unique("inst-c");
    let _reap = DeleteOnDrop { root: rr.path().to_path_buf(), id: cid.clone() };
    // create + start with the container's stdio on files (runc hands its stdio to the container).
    let out = std::fs::File::create(sleeper.path().join("stdout.log")).unwrap();
    let o = Command::new(dest.join("dataplane-runtime"))
        .env("DATAPLANE_HOOK_CONFIG", &cfg)
        .arg("--root")
        .arg(rr.path())
        .args(["create", "--bundle"])
        .arg(sleeper.path())
        .arg(&cid)
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .status()
        .unwrap();
    assert!(o.success(), "{}\n{}", stdout_of(&sleeper), env_p.log_text());
    let o = installed(&["start", &cid]);
    assert!(o.status.success(), "{}\n{}", text(&o), env_p.log_text());
    assert_eq!(counters().reserved, 4, "the installed hook reserved the pages");
    sleeper.reload();
    assert_eq!(
        sleeper.spec["hooks"]["poststop"][0]["path"].as_str(),
        Some(dest.join("dataplane-hook").to_str().unwrap())
    );

    eprintln!("installer test: step 5 at {:?}", t0.elapsed());
    // 5. uninstall while it runs: the runtime config is restored byte for byte and the runtime
    //    restarted, but the binaries stay (its poststop needs the hook).
    let out = run_installer(
        runc_root.path(),
        &bundle("un1", &["/install.sh", "uninstall"]),
        &unique("uninst"),
    );
    assert_eq!(
        std::fs::read_to_string(&ctrd_config).unwrap(),
        original,
        "containerd's config is back: {out}"
    );
    assert!(!dropin.exists(), "the drop-in is gone");
    let leftovers: Vec<String> =
        list_dir(&h.join("containerd")).into_iter().filter(|n| n.contains("bak")).collect();
    assert!(leftovers.is_empty(), "configure's backup is gone too: {leftovers:?}");
    assert_eq!(reload_count(), 2, "{out}");
    assert!(
        dest.join("dataplane-hook").exists() && dest.join("dataplane-runtime").exists(),
        "binaries kept while a container runs: {out}"
    );
    assert!(out.contains("still run"), "{out}");

    eprintln!("installer test: step 6 at {:?}", t0.elapsed());
    // 6. The container goes (poststop through the installed hook); uninstall finishes.
    let o = installed(&["delete", "--force", &cid]);
    assert!(o.status.success(), "{}", text(&o));
    pool.assert_baseline("the installed hook released the container");
    // The admin edited the config meanwhile: it is kept and said so.
    std::fs::write(&cfg, format!("{private}# edited by the admin\n")).unwrap();
    let out = run_installer(
        runc_root.path(),
        &bundle("un2", &["/install.sh", "uninstall"]),
        &unique("uninst"),
    );
    assert!(
        !dest.exists() && !h.join("opt/dataplane-hook").exists(),
        "binaries and the dir the installer made are gone: {out}"
    );
    assert!(!h.join("record").exists(), "the installer's record is gone: {out}");
    assert!(cfg.exists(), "an edited config stays");
    assert!(
        out.contains(&format!("left {}: changed since the installer wrote it", cfg.display())),
        "{out}"
    );
    assert_eq!(reload_count(), 2, "nothing left to restore: no restart");
    assert!(out.contains("uninstalled"), "{out}");

    eprintln!("installer test: step 7 at {:?}", t0.elapsed());
    // 7. Nothing recorded: uninstall is a no-op.
    let out = run_installer(
        runc_root.path(),
        &bundle("un3", &["/install.sh", "uninstall"]),
        &unique("uninst"),
    );
    assert!(out.contains("nothing to undo"), "{out}");

    // 8. An admin edits containerd's config after the install: uninstall leaves the edit alone,
    //    says so, and keeps the original for restoring by hand.
    run_installer(runc_root.path(), &bundle("inst2", &["/install.sh", "install"]), &unique("inst"));
    let edited =
        format!("{}\n# the admin's own line\n", std::fs::read_to_string(&ctrd_config).unwrap());
    std::fs::write(&ctrd_config, &edited).unwrap();
    let out = run_installer(
        runc_root.path(),
        &bundle("un4", &["/install.sh", "uninstall"]),
        &unique("uninst"),
    );
    assert_eq!(
        std::fs::read_to_string(&ctrd_config).unwrap(),
        edited,
        "the admin's edit is not undone: {out}"
    );
    assert!(
        out.contains(&format!(
            "warning: {} was changed after configure wrote it: left as it is",
            ctrd_config.display()
        )),
        "{out}"
    );
    assert!(!dropin.exists(), "the untouched drop-in still goes");
    let kept = h.join("record/orig").join(ctrd_config.display().to_string().replace('/', "%"));
    assert_eq!(std::fs::read_to_string(&kept).unwrap(), original, "the original is kept: {out}");
    assert!(!dest.exists(), "{out}");
}

// ---------------------------------------------------------------------------------------------
// The Debian package.

const PKG: &str = "dataplane-hook";

/// Not installed (never was, or removed and purged).
fn not_installed() -> bool {
    dpkg_status().is_none_or(|s| s.is_empty() || s.starts_with("un") || s.starts_with("pn"))
}

fn dpkg_status() -> Option<String> {
    let o = Command::new("dpkg-query").args(["-W", "-f=${db:Status-Abbrev}", PKG]).output().ok()?;
    o.status.success().then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// One package install at a time on this machine: `make test-deb` (packaging/test-deb.sh)
/// holds the same lock while the package is installed.
fn deb_lock() -> std::fs::File {
    use std::os::fd::AsRawFd;
    let _ = std::fs::create_dir_all("/run/lock");
    let f = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/dataplane-tests.deb")
        .expect("lock file");
    #[allow(deprecated)]
    nix::fcntl::flock(f.as_raw_fd(), nix::fcntl::FlockArg::LockExclusive).expect("flock");
    f
}

/// Purges the package if a test fails half-way (and forces removal past the prerm check).
struct PurgeOnDrop;
impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if !not_installed() {
            let _ = Command::new("dpkg")
                .args(["--purge", PKG])
                .env("DATAPLANE_HOOK_FORCE_REMOVE", "1")
                .status();
        }
    }
}

/// Every file under the runtimes' config dirs with its content: installing must not change it.
fn runtime_configs() -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(d: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(&p, out),
                Ok(t) if t.is_file() => {
                    out.insert(p.clone(), std::fs::read(&p).unwrap_or_default());
                }
                _ => {}
            }
        }
    }
    let mut m = BTreeMap::new();
    for d in
        ["/etc/containerd", "/etc/crio", "/etc/containers", "/usr/share/containers/oci/hooks.d"]
    {
        walk(Path::new(d), &mut m);
    }
    m
}

/// Paths of the package's kind that exist: what must be gone after purge.
fn package_traces() -> Vec<String> {
    let mut found = Vec::new();
    fn walk(d: &Path, depth: usize, found: &mut Vec<String>) {
        let Ok(rd) = std::fs::read_dir(d) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains("dataplane-hook")
                || name.contains("dataplane_hook")
                || name.contains("dataplane-runtime")
            {
                found.push(p.display().to_string());
            }
            if depth > 0 && e.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&p, depth - 1, found);
            }
        }
    }
    for (d, depth) in [
        ("/etc", 4),
        ("/usr/bin", 0),
        ("/usr/share", 3),
        ("/usr/lib/tmpfiles.d", 0),
        ("/lib/systemd", 3),
        ("/var/lib/systemd", 3),
        ("/var/lib/prometheus", 2),
        ("/var/lib/dpkg/info", 0),
        ("/var/log", 0),
    ] {
        walk(Path::new(d), depth, &mut found);
    }
    if Path::new("/run/dataplane-hook").exists() {
        found.push("/run/dataplane-hook".into());
    }
    found.sort();
    found
}

/// Builds the .deb from this build's binaries (or takes $DPH_DEB).
fn build_deb(out: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("DPH_DEB") {
        return PathBuf::from(p);
    }
    let bin = bin_dir();
    assert!(
        Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success()),
        "cargo-deb is not installed (make deps, or: cargo install cargo-deb --locked)"
    );
    ok(Command::new(repo().join("packaging/gen-assets.sh")).arg(&bin));
    // make build's binaries are in <target dir>/<host triple>/release, a plain cargo build's in
    // <target dir>/release: cargo-deb finds them with --target in the first case.
    let above = bin.parent().unwrap();
    let host = ok(Command::new("rustc").arg("-vV"))
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(String::from))
        .expect("rustc's host triple");
    let mut deb = Command::new("cargo");
    deb.current_dir(repo())
        .env_remove("CARGO_BUILD_TARGET")
        .args(["deb", "-p", PKG, "--no-build", "--output"])
        .arg(out);
    if above.file_name().is_some_and(|n| n == host.as_str()) {
        deb.env("CARGO_TARGET_DIR", above.parent().unwrap()).args(["--target", &host]);
    } else {
        deb.env("CARGO_TARGET_DIR", above);
    }
    ok(&mut deb);
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb")
}

struct Installed {
    root: tempfile::TempDir,
}

impl Installed {
    fn cmd(&self) -> Command {
        let mut c = Command::new("/usr/bin/dataplane-runtime");
        c.env_remove("DATAPLANE_HOOK_CONFIG").arg("--root").arg(self.root.path());
        c
    }
    fn create(&self, b: &TestBundle, id: &str) {
        let out = std::fs::File::create(b.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(b.path().join("stderr.log")).unwrap();
        let o = self
            .cmd()
            .args(["create", "--bundle"])
            .arg(b.path())
            .arg(id)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap();
        assert!(
            o.success(),
            "create {id}: {}",
            std::fs::read_to_string(b.path().join("stderr.log")).unwrap_or_default()
        );
    }
    fn start(&self, id: &str) {
        let o = run(self.cmd().args(["start", id]));
        assert!(o.status.success(), "start {id}: {}", text(&o));
    }
    fn delete(&self, id: &str) {
        let o = run(self.cmd().args(["delete", "--force", id]));
        assert!(o.status.success(), "delete {id}: {}", text(&o));
    }
}

#[test]
fn deb_installs_runs_real_dpdk_containers_from_usr_bin_and_purges_clean() {
    require_root();
    let _one_install = deb_lock();
    let pool = PoolGuard::new(128);
    assert!(not_installed(), "{PKG} is already installed here: refusing to touch it");
    assert!(
        !Path::new("/usr/bin/dataplane-hook").exists(),
        "/usr/bin/dataplane-hook exists and is not ours"
    );
    let out = tempfile::Builder::new().prefix("dph-deb-").tempdir().unwrap();
    let deb = build_deb(out.path());
    let before_configs = runtime_configs();
    let traces_before = package_traces();

    // What the package is.
    let info = ok(Command::new("dpkg-deb").arg("--info").arg(&deb));
    for want in ["Package: dataplane-hook", "Depends:", "runc", "Section: admin"] {
        assert!(info.contains(want), "{want}: {info}");
    }
    let contents = ok(Command::new("dpkg-deb").arg("--contents").arg(&deb));

    let _purge = PurgeOnDrop;
    let o = run(Command::new("dpkg").arg("-i").arg(&deb));
    assert!(o.status.success(), "dpkg -i: {}", text(&o));
    assert!(
        text(&o).contains("no container runtime was configured"),
        "postinst says what it did not do: {}",
        text(&o)
    );
    assert!(dpkg_status().unwrap().starts_with("ii"), "installed");

    // Files, conffile, units, tmpfiles, completions, man page.
    let listed = ok(Command::new("dpkg").args(["-L", PKG]));
    for f in [
        "/usr/bin/dataplane-hook",
        "/usr/bin/dataplane-runtime",
        "/etc/dataplane-hook/config.toml",
        "/usr/lib/tmpfiles.d/dataplane-hook.conf",
        "/usr/share/bash-completion/completions/dataplane-hook",
        "/usr/share/zsh/vendor-completions/_dataplane-hook",
        "/usr/share/fish/vendor_completions.d/dataplane-hook.fish",
        "/usr/share/man/man8/dataplane-hook.8.gz",
        "/usr/share/doc/dataplane-hook/copyright",
        "/usr/share/dataplane-hook/shim-config/kubernetes/runtimeclass.yaml",
    ] {
        assert!(listed.lines().any(|l| l == f), "{f} in the package:\n{listed}\n{contents}");
        assert!(Path::new(f).exists(), "{f} installed");
    }
    let units: Vec<&str> = listed.lines().filter(|l| l.contains("/systemd/system/")).collect();
    for u in
        ["dataplane-hook-watch.service", "dataplane-hook-gc.service", "dataplane-hook-gc.timer"]
    {
        assert!(units.iter().any(|l| l.ends_with(u)), "{u}: {units:?}");
    }
    let conf = ok(Command::new("dpkg-query").args(["-W", "-f=${Conffiles}", PKG]));
    assert!(conf.contains("/etc/dataplane-hook/config.toml"), "the config is a conffile: {conf}");
    assert_eq!(
        std::fs::read(repo().join("packaging/config.toml")).unwrap(),
        std::fs::read("/etc/dataplane-hook/config.toml").unwrap()
    );
    let st = std::fs::metadata("/run/dataplane-hook").expect("the state dir exists after install");
    assert_eq!(
        (
            std::os::unix::fs::MetadataExt::uid(&st),
            std::os::unix::fs::PermissionsExt::mode(&st.permissions()) & 0o777
        ),
        (0, 0o700)
    );
    // Enabled (for boots under systemd) — deb-systemd-helper's links.
    assert!(Path::new("/etc/systemd/system/multi-user.target.wants/dataplane-hook-watch.service")
        .exists());
    assert!(Path::new("/etc/systemd/system/timers.target.wants/dataplane-hook-gc.timer").exists());
    let unit_paths: Vec<&str> = units.iter().copied().filter(|u| !u.ends_with('/')).collect();
    let v = run(Command::new("systemd-analyze").arg("verify").args(&unit_paths));
    assert!(
        v.status.success() && !text(&v).contains("dataplane"),
        "systemd-analyze verify: {}",
        text(&v)
    );
    let man = ok(Command::new("sh").args(["-c", "zcat /usr/share/man/man8/dataplane-hook.8.gz"]));
    assert!(man.contains(".TH dataplane-hook 8"));
    ok(Command::new("bash").args(["-c", "source /usr/share/bash-completion/completions/dataplane-hook && complete -p dataplane-hook"]));
    // Installing configured no runtime.
    assert_eq!(runtime_configs(), before_configs, "dpkg -i changed a runtime's config");
    // The installed tools work with the installed config.
    let d = run(Command::new("/usr/bin/dataplane-hook").arg("doctor"));
    let dt = String::from_utf8_lossy(&d.stdout);
    assert!(
        dt.contains("pass config: /etc/dataplane-hook/config.toml")
            && dt.contains("pass binaries: /usr/bin/dataplane-hook"),
        "{dt}"
    );

    // Real DPDK through the installed runtime (G1 with the installed paths): two primaries with
    // the default file prefix, each its own reserved hugetlbfs, both forward.
    let r = Installed { root: tempfile::Builder::new().prefix("dph-runc-").tempdir().unwrap() };
    let ids = [unique("deb-a"), unique("deb-b")];
    let _reaps: Vec<DeleteOnDrop> = ids
        .iter()
        .map(|id| DeleteOnDrop { root: r.root.path().to_path_buf(), id: id.clone() })
        .collect();
    let bundles: Vec<TestBundle> = ids
        .iter()
        .map(|_| {
            let args = testpmd_primary(&[]);
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut b = TestBundle::new(&a);
            b.annotate(HUGE, "64Mi");
            b
        })
        .collect();
    for (id, b) in ids.iter().zip(&bundles) {
        r.create(b, id);
    }
    assert_eq!(counters().reserved, 64, "both reservations made in the kernel at create");
    for id in &ids {
        r.start(id);
    }
    for b in &bundles {
        assert!(
            wait_for(Duration::from_secs(60), || forwarding(b)),
            "testpmd through /usr/bin/dataplane-runtime: {}\n{}",
            stdout_of(b),
            std::fs::read_to_string("/var/log/dataplane-hook.log").unwrap_or_default()
        );
    }
    let status: Value = serde_json::from_str(&ok(
        Command::new("/usr/bin/dataplane-hook").args(["status", "--json"])
    ))
    .unwrap();
    assert_eq!(
        status["containers"].as_array().unwrap().len(),
        2,
        "the installed state dir holds them: {status}"
    );

    // Removal is refused while they run; the package stays whole.
    let o = run(Command::new("dpkg").args(["-r", PKG]));
    assert!(!o.status.success(), "dpkg -r must refuse while containers run: {}", text(&o));
    assert!(
        text(&o).contains(&ids[0]) && text(&o).contains("DATAPLANE_HOOK_FORCE_REMOVE"),
        "{}",
        text(&o)
    );
    assert!(Path::new("/usr/bin/dataplane-hook").exists());

    for id in &ids {
        r.delete(id);
    }
    pool.assert_baseline("after the installed hook's poststops");
    let prom = std::fs::read_to_string("/var/lib/prometheus/node-exporter/dataplane_hook.prom")
        .expect("the installed config's metrics textfile");
    let granted = prom
        .lines()
        .find_map(|l| {
            l.strip_prefix("dataplane_hook_reservations_total{size=\"2Mi\",result=\"granted\"} ")
        })
        .unwrap();
    assert!(granted.parse::<u64>().unwrap() >= 2, "{prom}");
    assert!(
        std::fs::read_to_string("/var/log/dataplane-hook.log").unwrap().contains("released"),
        "the installed log"
    );

    // The package is visible on the node before purge (the scan below can see it)...
    let traces = package_traces();
    assert!(traces.len() > traces_before.len() + 10, "{traces:?}");
    // ...and purge leaves nothing.
    let o = run(Command::new("dpkg").args(["--purge", PKG]));
    assert!(o.status.success(), "dpkg --purge: {}", text(&o));
    assert!(not_installed(), "{:?}", dpkg_status());
    // (A log file someone left before the install is the package's log: purge may take it.)
    let left: Vec<String> =
        package_traces().into_iter().filter(|t| !traces_before.contains(t)).collect();
    assert!(left.is_empty(), "purge left files behind: {left:?}");
    assert_eq!(runtime_configs(), before_configs, "the runtimes' config is as it was");
}

#[test]
fn maintainer_scripts_are_posix_sh_and_never_configure_a_runtime() {
    for s in ["postinst", "prerm", "postrm"] {
        let p = repo().join("packaging/debian").join(s);
        ok(Command::new("sh").arg("-n").arg(&p));
        let t = std::fs::read_to_string(&p).unwrap();
        assert!(t.contains("#DEBHELPER#"), "{s}: cargo-deb inserts the units' snippets there");
        let runs_configure = t.lines().map(str::trim_start).any(|l| {
            !l.starts_with('#') && !l.starts_with("echo") && l.contains(" configure --runtime")
        });
        assert!(!runs_configure, "{s} never runs configure");
        assert!(
            !t.contains("systemctl restart containerd") && !t.contains("systemctl restart crio"),
            "{s} restarts no runtime"
        );
    }
    ok(Command::new("sh").arg("-n").arg(repo().join("packaging/kubernetes/install.sh")));
}
