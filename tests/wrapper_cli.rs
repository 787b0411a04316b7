//! `dataplane-runtime` reads runc's command line exactly and never edits the wrong file:
//! runc >= 1.2's `--pidfd-socket PATH` is a value (not the container id), an unknown flag is
//! refused before anything is touched or exec'd, help goes straight to the runtime, and the
//! bundle's config.json is replaced without writing through whatever sits at a temp name.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dataplane_hook::features::prefix::prefix_for;
use dataplane_hook::request::FilePrefix;
use dataplane_tests::util::*;
use dataplane_tests::*;

const PREFIX_ANN: &str = "dataplane-hook.io/dpdk-file-prefix";

/// A stand-in for runc >= 1.2 in front of the installed runc (1.1.5, which does not know
/// `--pidfd-socket`): it appends its argv to `args.log`, touches `ran`, drops `--pidfd-socket`
/// (both forms) and execs the real runtime with the rest.
struct StandIn {
    dir: tempfile::TempDir,
}

impl StandIn {
    fn new() -> StandIn {
        let dir = tempfile::Builder::new().prefix("dph-runc12-").tempdir().unwrap();
        let real = which(&oci_runtime());
        let script = format!(
            r#"#!/bin/sh
# runc >= 1.2 stand-in: accepts and strips --pidfd-socket, then runs the real runtime.
d='{d}'
echo "$*" >> "$d/args.log"
: > "$d/ran"
skip=
first=1
for a do
  if [ "$first" = 1 ]; then set --; first=; fi
  if [ -n "$skip" ]; then skip=; continue; fi
  case "$a" in
    --pidfd-socket|-pidfd-socket) skip=1; continue ;;
    --pidfd-socket=*|-pidfd-socket=*) continue ;;
  esac
  set -- "$@" "$a"
done
exec '{real}' "$@"
"#,
            d = dir.path().display(),
            real = real.display()
        );
        let path = dir.path().join("runc-1.2");
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        StandIn { dir }
    }
    fn path(&self) -> PathBuf {
        self.dir.path().join("runc-1.2")
    }
    fn env(&self) -> ProductEnv {
        ProductEnv::new(&format!("runtime_path = \"{}\"\n", self.path().display()))
    }
    fn ran(&self) -> bool {
        self.dir.path().join("ran").exists()
    }
    fn args_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("args.log")).unwrap_or_default()
    }
}

fn which(prog: &str) -> PathBuf {
    if prog.contains('/') {
        return PathBuf::from(prog);
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(prog))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{prog} not in PATH"))
}

/// The bytes and mtime of a bundle's config.json: what "untouched" compares.
fn snapshot(dir: &Path) -> Option<(Vec<u8>, i64, i64, u64)> {
    let p = dir.join("config.json");
    let m = std::fs::symlink_metadata(&p).ok()?;
    Some((std::fs::read(&p).unwrap(), m.mtime(), m.mtime_nsec(), m.ino()))
}

fn spec_env(b: &TestBundle) -> Vec<String> {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    v["process"]["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str().map(String::from))
        .collect()
}

/// runc >= 1.2 (containerd 2's shim) passes `create --pidfd-socket PATH --bundle B ID`: the
/// wrapper must take PATH as the flag's value and ID as the container, so the container runs
/// with the hook under its own id. Before the fix the wrapper took PATH for the id: the prefix
/// (derived from the id) was the socket path's, not the container's.
#[test]
fn pidfd_socket_is_a_value_and_the_bundle_is_edited_for_the_container_id() {
    require_root();
    let runtime = StandIn::new();
    let env = runtime.env();
    let r = Runner::product(&env);
    let reap = Reaper::new(&r);
    let sock = runtime.dir.path().join("pidfd.sock");
    let sock = sock.display().to_string();
    for (n, form) in [
        vec!["--pidfd-socket".to_string(), sock.clone()],
        vec![format!("--pidfd-socket={sock}")],
        vec!["-pidfd-socket".into(), sock.clone()],
    ]
    .into_iter()
    .enumerate()
    {
        let mut b = TestBundle::new(&["sh", "-c", "echo prefix=$DPDK_FILE_PREFIX"]);
        b.annotate(PREFIX_ANN, "auto");
        let id = unique(&format!("pidfd{n}"));
        reap.add(&id);
        let out = std::fs::File::create(b.path().join("stdout.log")).unwrap();
        let err = std::fs::File::create(b.path().join("stderr.log")).unwrap();
        let mut c = r.command();
        c.arg("create").args(&form).arg("--bundle").arg(b.path()).arg(&id);
        let st = c.stdin(Stdio::null()).stdout(out).stderr(err).status().unwrap();
        let stderr = std::fs::read_to_string(b.path().join("stderr.log")).unwrap_or_default();
        assert!(st.success(), "{form:?}: create failed: {stderr}\nlog: {}", env.log_text());
        // Precondition: the runtime got the flag unchanged (the wrapper passes argv on).
        assert!(
            runtime.args_log().lines().any(|l| l.contains(&form.join(" ")) && l.ends_with(&id)),
            "{}",
            runtime.args_log()
        );
        let want = format!("DPDK_FILE_PREFIX={}", prefix_for(&id, &FilePrefix::Auto));
        let wrong = format!("DPDK_FILE_PREFIX={}", prefix_for(&sock, &FilePrefix::Auto));
        let got = spec_env(&b);
        assert!(got.contains(&want), "{form:?}: config.json edited for {id}: want {want} in {got:?} (the socket path's would be {wrong})");
        assert!(
            env.records().contains(&format!("{id}.json")),
            "the hook ran for {id}: {:?}",
            env.records()
        );
        let o = r.start(&id);
        assert!(o.status.success(), "start: {}", String::from_utf8_lossy(&o.stderr));
        assert!(r.wait_stopped(&id, Duration::from_secs(10)));
        assert_eq!(
            stdout_of(&b).trim(),
            format!("prefix={}", prefix_for(&id, &FilePrefix::Auto)),
            "the container saw its own prefix"
        );
        let o = reap.delete(&id);
        assert!(o.status.success(), "delete: {}", String::from_utf8_lossy(&o.stderr));
        assert!(env.records().is_empty(), "poststop released {id}: {:?}", env.records());
    }
}

/// An unknown flag is one line naming it; config.json stays byte for byte (same inode, same
/// mtime), the bundle gets no temp file, and the runtime never runs.
#[test]
fn an_unknown_flag_is_refused_before_anything_is_touched_or_run() {
    require_root();
    let runtime = StandIn::new();
    let env = runtime.env();
    let r = Runner::product(&env);
    let b = TestBundle::new(&["true"]);
    let bp = b.path().display().to_string();
    let cases: &[(&[&str], &str)] = &[
        (&["create", "--no-such-flag", "--bundle", &bp, "c1"], "--no-such-flag"),
        (&["create", "--bundle", &bp, "--pidfd-sock=/x", "c1"], "--pidfd-sock"),
        (&["run", "--bundle", &bp, "-x", "c1"], "-x"),
        // crun's own: the runtime would read another file than the config.json edited.
        (&["create", "--bundle", &bp, "--config", "other.json", "c1"], "--config"),
        (&["run", "-f", "other.json", "--bundle", &bp, "c1"], "-f"),
        // runc's `run` flags are not `create`'s.
        (&["create", "--detach", "--bundle", &bp, "c1"], "--detach"),
    ];
    let before = snapshot(b.path()).unwrap();
    let files = list_dir(b.path());
    for (args, flag) in cases {
        let o = r.command().args(*args).stdin(Stdio::null()).output().unwrap();
        assert!(!o.status.success(), "{args:?} must fail");
        let line = assert_one_line(&format!("{args:?}"), &o.stderr);
        assert!(
            line.contains(&format!("{flag} ")) || line.contains(&format!("{flag}:")),
            "{args:?}: the message names {flag}: {line}"
        );
        assert_eq!(snapshot(b.path()).as_ref(), Some(&before), "{args:?}: config.json untouched");
        assert_eq!(list_dir(b.path()), files, "{args:?}: nothing left in the bundle");
        assert!(!runtime.ran(), "{args:?}: the runtime was exec'd: {}", runtime.args_log());
    }
    // A global flag runc does not have: the command cannot even be found (does it take a value?).
    let o = Command::new(runtime_bin())
        .env("DATAPLANE_HOOK_CONFIG", &env.config)
        .args(["--no-such-global", "create", "--bundle", &bp, "c1"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let line = assert_one_line("unknown global flag", &o.stderr);
    assert!(line.contains("--no-such-global"), "{line}");
    assert_eq!(snapshot(b.path()).as_ref(), Some(&before));
    assert!(!runtime.ran(), "{}", runtime.args_log());
}

/// `run -h`, `create --help`, ... print the runtime's own help and touch nothing: no
/// config.json needed, an existing one keeps its bytes and mtime (issue 16 item 1).
#[test]
fn help_goes_straight_to_the_runtime_and_touches_nothing() {
    require_root();
    let env = ProductEnv::new("");
    let b = TestBundle::new(&["true"]);
    let empty = tempfile::tempdir().unwrap();
    let bp = b.path().display().to_string();
    let lines: &[&[&str]] = &[
        &["run", "-h"],
        &["create", "-h"],
        &["run", "--help"],
        &["create", "--help"],
        &["create", "--bundle", &bp, "--help", "c1"],
        &["run", "c1", "-h"],
        &["create", "-help=true", "c1"],
    ];
    let runtime = which(&oci_runtime());
    let run = |cmd: &Path, product: bool, cwd: &Path, args: &[&str]| -> Output {
        let mut c = Command::new(cmd);
        if product {
            c.env("DATAPLANE_HOOK_CONFIG", &env.config);
        }
        c.current_dir(cwd).args(args).stdin(Stdio::null()).output().unwrap()
    };
    for cwd in [empty.path(), b.path()] {
        for args in lines {
            let before = snapshot(b.path());
            let want = run(&runtime, false, cwd, args);
            let got = run(&runtime_bin(), true, cwd, args);
            assert_eq!(
                (
                    got.status.code(),
                    String::from_utf8_lossy(&got.stdout),
                    String::from_utf8_lossy(&got.stderr)
                ),
                (
                    want.status.code(),
                    String::from_utf8_lossy(&want.stdout),
                    String::from_utf8_lossy(&want.stderr)
                ),
                "{args:?} in {}: the runtime's own help",
                cwd.display()
            );
            assert!(
                String::from_utf8_lossy(&want.stdout).contains("USAGE") || is_crun(),
                "precondition: runc printed help"
            );
            assert_eq!(
                snapshot(b.path()),
                before,
                "{args:?} in {}: config.json untouched",
                cwd.display()
            );
            assert!(!empty.path().join("config.json").exists(), "no config.json appeared");
        }
    }
}

/// The old fixed temp name, planted as a symlink to a host file: saving the edited spec must
/// not write through it (File::create followed it and truncated the host file).
#[test]
fn a_symlink_at_the_old_temp_name_does_not_get_the_spec_written_through_it() {
    require_root();
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let reap = Reaper::new(&r);
    let b = TestBundle::new(&["true"]);
    let victim = PathBuf::from(format!("/tmp/{}", unique("dph-victim-file")));
    std::fs::write(&victim, "host data\n").unwrap();
    let planted = b.path().join(".config.json.dataplane-hook.tmp");
    std::os::unix::fs::symlink(&victim, &planted).unwrap();
    assert_eq!(
        std::fs::read_link(&planted).unwrap(),
        victim,
        "precondition: the symlink points at the host file"
    );
    let id = unique("tmpname");
    reap.add(&id);
    let o = r.create(&b, &id);
    let host = std::fs::read_to_string(&victim).unwrap();
    let _ = std::fs::remove_file(&victim);
    assert!(o.status.success(), "create: {}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(host, "host data\n", "the host file behind the planted symlink was written");
    let cfg = std::fs::symlink_metadata(b.path().join("config.json")).unwrap();
    assert!(cfg.file_type().is_file(), "config.json is a plain file, not the planted symlink");
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["mounts"].as_array().unwrap().last().unwrap()["destination"],
        "/var/run/dpdk",
        "the edit landed in config.json"
    );
    assert_eq!(std::fs::read_link(&planted).unwrap(), victim, "the planted link is left as it was");
    let left: Vec<String> = list_dir(b.path())
        .into_iter()
        .filter(|n| n.contains(".tmp") && n != ".config.json.dataplane-hook.tmp")
        .collect();
    assert!(left.is_empty(), "no temp file left: {left:?}");
}

// ---------------------------------------------------------------------------------------------
// Issue 16 item 2: the fast path's implicit runtime dir never fails a container that runs under
// plain runc, and never writes into a read-only image.
// ---------------------------------------------------------------------------------------------

const SHOW_DPDK_MOUNT: &str = "grep -c ' /var/run/dpdk ' /proc/self/mountinfo; echo done";

/// A bundle whose container runs as host uid 100000 in its own user namespace (the bundle
/// dir opened up so that uid can reach the rootfs, as a real runtime's bundle is).
fn userns_bundle() -> TestBundle {
    let mut b = TestBundle::new(&["sh", "-c", SHOW_DPDK_MOUNT]);
    b.spec["linux"]["namespaces"].as_array_mut().unwrap().push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    b.spec["linux"]["uidMappings"] = map.clone();
    b.spec["linux"]["gidMappings"] = map;
    b.save();
    std::fs::set_permissions(b.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .unwrap();
    b
}

fn readonly_bundle() -> TestBundle {
    let mut b = TestBundle::new(&["sh", "-c", SHOW_DPDK_MOUNT]);
    b.spec["root"]["readonly"] = serde_json::json!(true);
    b.save();
    b
}

/// `run` to completion: (success, stdout, stderr).
fn run_to_end(r: &Runner, b: &TestBundle, id: &str) -> (bool, String, String) {
    let o = r.run(b, id);
    let _ = r.delete(id);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// A user-namespaced container whose rootfs has no /var/run runs under the product as it
/// does under plain runc (before: runc failed `mkdir .../rootfs/var/run: permission denied`
/// on the implicit tmpfs). Where /var/run/dpdk exists, it still gets its private dir.
#[test]
fn a_user_namespaced_container_runs_through_the_product_as_under_plain_runc() {
    require_root();
    let env = ProductEnv::new("");
    let (runc, product) = (Runner::runc(), Runner::product(&env));
    let control = run_to_end(&runc, &userns_bundle(), &unique("userns-ctl"));
    assert!(
        control.0 && control.1.contains("done"),
        "precondition: plain runc runs it: {control:?}"
    );
    assert_eq!(control.1.lines().next(), Some("0"), "{control:?}");
    let b = userns_bundle();
    assert!(!b.rootfs().join("var/run").exists(), "precondition: no /var/run in the image");
    let got = run_to_end(&product, &b, &unique("userns"));
    assert_eq!(
        (got.0, got.1.as_str()),
        (control.0, control.1.as_str()),
        "the product runs it like plain runc: {got:?}\nlog: {}",
        env.log_text()
    );
    assert!(!b.rootfs().join("var/run").exists(), "nothing was created in the image");
    assert!(
        env.log_text().contains("no private runtime dir at /var/run/dpdk"),
        "the log says why: {}",
        env.log_text()
    );
    // The dir exists in the image: mounting over it creates nothing, so it is added.
    let b = userns_bundle();
    std::fs::create_dir_all(b.rootfs().join("var/run/dpdk")).unwrap();
    let got = run_to_end(&product, &b, &unique("userns-dir"));
    assert!(got.0, "{got:?}");
    assert_eq!(got.1.lines().next(), Some("1"), "the private tmpfs is there: {got:?}");
}

/// A read-only rootfs: the product writes nothing into the image (before: runc created
/// var/run/dpdk in it for the implicit tmpfs), and the container runs as under plain runc.
#[test]
fn a_read_only_rootfs_is_not_written_through_the_product() {
    require_root();
    let env = ProductEnv::new("");
    let (runc, product) = (Runner::runc(), Runner::product(&env));
    let b = readonly_bundle();
    let before = walk(&b.rootfs());
    let control = run_to_end(&runc, &b, &unique("ro-ctl"));
    assert!(
        control.0 && control.1.contains("done"),
        "precondition: plain runc runs it: {control:?}"
    );
    assert_eq!(walk(&b.rootfs()), before, "precondition: plain runc leaves the image as it was");
    let b = readonly_bundle();
    let got = run_to_end(&product, &b, &unique("ro"));
    assert_eq!(
        (got.0, got.1.as_str()),
        (control.0, control.1.as_str()),
        "{got:?}\nlog: {}",
        env.log_text()
    );
    assert_eq!(walk(&b.rootfs()), before, "the product created nothing in the read-only image");
    // The dir exists in the image: the private tmpfs goes over it, the image stays as it was.
    let b = readonly_bundle();
    std::fs::create_dir_all(b.rootfs().join("var/run/dpdk")).unwrap();
    let before = walk(&b.rootfs());
    let got = run_to_end(&product, &b, &unique("ro-dir"));
    assert!(got.0, "{got:?}");
    assert_eq!(got.1.lines().next(), Some("1"), "the private tmpfs is there: {got:?}");
    assert_eq!(walk(&b.rootfs()), before);
}
