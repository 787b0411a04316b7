//! G8 and input validation: a hostile root filesystem never makes the hook touch or mount
//! anything on the host outside it; malformed annotations, specs, states and configs are
//! refused with one clear line naming what is wrong, leaving nothing behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;

const ANN_2MI: &str = "dataplane-hook.io/hugepages-2Mi";

// ---------------------------------------------------------------------------------------------
// Hostile rootfs symlinks on every path the hook mounts onto.
// ---------------------------------------------------------------------------------------------

/// A host directory a hostile image points its symlinks at. It holds the directories an
/// escaping hook would find (and mount over, or create below) and a canary file.
struct Victim {
    path: PathBuf,
}

impl Victim {
    fn new() -> Victim {
        let path = PathBuf::from(format!("/tmp/{}", unique("dph-victim")));
        for d in ["dpdk", "hugepages", "kernel/mm/hugepages/hugepages-2048kB"] {
            std::fs::create_dir_all(path.join(d)).unwrap();
        }
        std::fs::write(path.join("canary"), "host data\n").unwrap();
        Victim { path }
    }
    fn name(&self) -> String {
        self.path.file_name().unwrap().to_string_lossy().into_owned()
    }
    fn p(&self) -> String {
        self.path.display().to_string()
    }
}

impl Drop for Victim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn symlink(rootfs: &Path, at: &str, to: &str) {
    let link = rootfs.join(at);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let _ = std::fs::remove_dir(&link);
    std::os::unix::fs::symlink(to, &link).unwrap();
}

/// Takes the spec's mounts at `prefix` (and below) away, so the rootfs's own directory (or
/// symlink) is what the container gets there.
fn unmount_in_spec(b: &mut TestBundle, prefix: &str) {
    b.spec["mounts"].as_array_mut().unwrap().retain(|m| {
        let d = m["destination"].as_str().unwrap();
        d != prefix && !d.starts_with(&format!("{prefix}/"))
    });
    for key in ["maskedPaths", "readonlyPaths"] {
        if let Some(a) = b.spec["linux"][key].as_array_mut() {
            a.retain(|p| !p.as_str().unwrap().starts_with(&format!("{prefix}/")));
        }
    }
    b.save();
}

enum Expect {
    /// Created; the container has a mount of `fstype` at this container path.
    MountedAt(String, &'static str),
    /// Created; no view was attached (the sysfs paths do not exist inside the rootfs).
    NoViews,
    /// Refused at create with an error naming `path` and saying one of `why`.
    Refused { path: String, why: &'static [&'static str] },
}

/// Shapes the bundle for one attack against the victim.
type Setup = Box<dyn Fn(&mut TestBundle, &Victim)>;

struct Case {
    name: &'static str,
    setup: Setup,
    expect: Box<dyn Fn(&Victim) -> Expect>,
}

fn case(
    name: &'static str,
    setup: impl Fn(&mut TestBundle, &Victim) + 'static,
    expect: impl Fn(&Victim) -> Expect + 'static,
) -> Case {
    Case { name, setup: Box::new(setup), expect: Box::new(expect) }
}

/// Gives the rootfs its own (empty) directory at the victim's host path, and no /tmp mount
/// over it: a link to that path then has a valid target both inside the rootfs and, for a
/// hook that escapes, on the host, where the victim already holds the directories.
fn mirror(b: &mut TestBundle, v: &Victim) {
    unmount_in_spec(b, "/tmp");
    std::fs::create_dir_all(b.rootfs().join(v.path.strip_prefix("/").unwrap())).unwrap();
}

const MAGIC: &[&str] = &["magic link"];
/// `/proc/self` inside the container's procfs names the hook's helper by its host pid, which
/// the container's PID namespace does not have: the path does not resolve at all.
const MAGIC_OR_MISSING: &[&str] = &["magic link", "dangling symlink"];

fn cases() -> Vec<Case> {
    let inside = |sub: &'static str| {
        move |v: &Victim| Expect::MountedAt(format!("{}/{sub}", v.p()), "tmpfs")
    };
    let refused = |path: &'static str, why: &'static [&'static str]| {
        move |_: &Victim| Expect::Refused { path: path.into(), why }
    };
    vec![
        case(
            "var/run -> /../../../../<host dir> (dot-dot chain in an absolute link)",
            |b, v| {
                mirror(b, v);
                symlink(&b.rootfs(), "var/run", &format!("/../../../..{}", v.p()));
            },
            inside("dpdk"),
        ),
        case(
            "var/run -> <host dir> (absolute link)",
            |b, v| {
                mirror(b, v);
                symlink(&b.rootfs(), "var/run", &v.p());
            },
            inside("dpdk"),
        ),
        case(
            "var/run -> ../../../../../../../../<host dir> (relative dot-dot chain)",
            |b, v| {
                mirror(b, v);
                symlink(&b.rootfs(), "var/run", &format!("../../../../../../../..{}", v.p()));
            },
            inside("dpdk"),
        ),
        case(
            "var/run -> <host dir> that the container lacks (dangling inside the rootfs)",
            |b, v| symlink(&b.rootfs(), "var/run", &v.p()),
            refused("/var/run/dpdk", &["dangling symlink"]),
        ),
        case(
            "var/run/dpdk -> /proc/self/root/<host dir> (magic link)",
            |b, v| symlink(&b.rootfs(), "var/run/dpdk", &format!("/proc/self/root{}/dpdk", v.p())),
            refused("/var/run/dpdk", MAGIC_OR_MISSING),
        ),
        case(
            "var/run/dpdk -> /proc/1/root/<host dir> (magic link)",
            |b, v| symlink(&b.rootfs(), "var/run/dpdk", &format!("/proc/1/root{}/dpdk", v.p())),
            refused("/var/run/dpdk", MAGIC),
        ),
        case(
            "var/run/dpdk -> /proc/1/cwd (magic link to the rootfs itself)",
            |b, _| symlink(&b.rootfs(), "var/run/dpdk", "/proc/1/cwd"),
            refused("/var/run/dpdk", MAGIC),
        ),
        case(
            "var/run/dpdk -> itself (symlink loop)",
            |b, _| symlink(&b.rootfs(), "var/run/dpdk", "dpdk"),
            refused("/var/run/dpdk", &["loop"]),
        ),
        case(
            "var/run/dpdk -> dangling absolute link",
            |b, v| symlink(&b.rootfs(), "var/run/dpdk", &format!("/{}-nonexistent/dpdk", v.name())),
            refused("/var/run/dpdk", &["dangling symlink"]),
        ),
        case(
            "var/run/dpdk -> a file",
            |b, _| symlink(&b.rootfs(), "var/run/dpdk", "/etc/passwd"),
            refused("/var/run/dpdk", &["not a directory"]),
        ),
        case(
            "dev/hugepages -> <host dir> with /dev not a tmpfs mount",
            |b, v| {
                unmount_in_spec(b, "/dev");
                mirror(b, v);
                symlink(&b.rootfs(), "dev/hugepages", &v.p());
            },
            |v| Expect::MountedAt(v.p(), "hugetlbfs"),
        ),
        case(
            "dev/hugepages -> /proc/1/root/<host dir> with /dev not a tmpfs mount",
            |b, v| {
                unmount_in_spec(b, "/dev");
                symlink(&b.rootfs(), "dev/hugepages", &format!("/proc/1/root{}/hugepages", v.p()));
            },
            refused("/dev/hugepages", MAGIC),
        ),
        case(
            "dev/hugepages -> /proc/self/root/<host dir> with /dev not a tmpfs mount",
            |b, v| {
                unmount_in_spec(b, "/dev");
                symlink(
                    &b.rootfs(),
                    "dev/hugepages",
                    &format!("/proc/self/root{}/hugepages", v.p()),
                );
            },
            refused("/dev/hugepages", MAGIC_OR_MISSING),
        ),
        case(
            "sys -> <host dir holding kernel/mm/hugepages/...> with /sys not mounted",
            |b, v| {
                unmount_in_spec(b, "/sys");
                mirror(b, v);
                symlink(&b.rootfs(), "sys", &v.p());
            },
            |_| Expect::NoViews,
        ),
        case(
            "annotation dpdk-runtime-dir=/proc/1/root/<host dir> (magic link)",
            |b, v| {
                b.annotate(
                    "dataplane-hook.io/dpdk-runtime-dir",
                    &format!("/proc/1/root{}/dpdk", v.p()),
                );
            },
            // Issue 13: refused at parse now (no runtime dir under /proc); the magic-link
            // refusal at mount time is the rootfs-symlink cases' above.
            |v| Expect::Refused {
                path: format!("/proc/1/root{}/dpdk", v.p()),
                why: &["must not be under /proc"],
            },
        ),
    ]
}

/// Mounts made on the host since `before` that the hook could have made: any hugetlbfs, and
/// anything at or below the victim or the bundle.
fn suspicious_host_mounts(before: &[MountEntry], v: &Victim, b: &TestBundle) -> Vec<MountEntry> {
    let bundle = b.path().display().to_string();
    new_mounts(before, &host_mounts())
        .into_iter()
        .filter(|m| {
            m.fstype == "hugetlbfs"
                || m.mount_point.starts_with(&v.p())
                || m.mount_point.starts_with(&bundle)
        })
        .collect()
}

#[test]
fn hostile_rootfs_symlinks_never_reach_the_host() {
    let pool = PoolGuard::new(16);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let reap = Reaper::new(&p);
    let mut failures = vec![];
    for c in cases() {
        let v = Victim::new();
        let tree = walk(&v.path);
        let mut b = TestBundle::new(&["sleep", "60"]);
        b.annotate(ANN_2MI, "8Mi");
        (c.setup)(&mut b, &v);
        let expect = (c.expect)(&v);
        let before = host_mounts();
        let id = unique("hostile");
        reap.add(&id);
        let o = create_with_timeout(&p, &b, &id, Duration::from_secs(60)).expect("create hung");
        let stderr = String::from_utf8_lossy(&o.stderr).to_string();
        let mut problems: Vec<String> = vec![];
        let sus = suspicious_host_mounts(&before, &v, &b);
        if !sus.is_empty() {
            problems.push(format!("host mounts appeared: {sus:?}"));
        }
        match (&expect, o.status.success()) {
            (Expect::MountedAt(at, fstype), true) => {
                let pid = p.pid(&id).unwrap().to_string();
                let mi = mountinfo(&pid);
                if !mi.iter().any(|m| &m.mount_point == at && m.fstype == *fstype) {
                    problems.push(format!(
                        "no {fstype} at {at} inside the container: {:?}",
                        mi.iter().map(|m| &m.mount_point).collect::<Vec<_>>()
                    ));
                }
            }
            (Expect::NoViews, true) => {
                let pid = p.pid(&id).unwrap().to_string();
                let views: Vec<_> = mountinfo(&pid)
                    .into_iter()
                    .filter(|m| m.mount_point.contains("hugepages-"))
                    .collect();
                if !views.is_empty() {
                    problems.push(format!("views attached somewhere: {views:?}"));
                }
            }
            (Expect::Refused { path, why }, false) => match product_error(&o.stderr) {
                Some(msg)
                    if msg.contains(path.as_str())
                        && why.iter().any(|w| msg.contains(w))
                        && msg.ends_with(')') => {}
                other => problems
                    .push(format!("refusal must name {path} and say one of {why:?}: {other:?}")),
            },
            (_, ok) => {
                problems.push(format!("create success={ok}, not what was expected: {stderr}"))
            }
        }
        if o.status.success() {
            let d = reap.delete(&id);
            if !d.status.success() {
                problems.push(format!("delete failed: {}", String::from_utf8_lossy(&d.stderr)));
            }
        } else if p.status(&id).is_some() {
            problems.push("refused container left in runc".into());
        }
        if walk(&v.path) != tree
            || std::fs::read_to_string(v.path.join("canary")).unwrap() != "host data\n"
        {
            problems.push(format!("host dir changed: {:?} -> {:?}", tree, walk(&v.path)));
        }
        if Path::new(&format!("/{}-nonexistent", v.name())).exists() {
            let _ = std::fs::remove_dir_all(format!("/{}-nonexistent", v.name()));
            problems.push("created a directory at the host's / for a dangling link".into());
        }
        let sus = suspicious_host_mounts(&before, &v, &b);
        if !sus.is_empty() {
            problems.push(format!("host mounts left after delete: {sus:?}"));
        }
        pool.assert_baseline(c.name);
        if !env.records().is_empty() {
            problems.push(format!("records left: {:?}", env.records()));
        }
        if !problems.is_empty() {
            failures.push(format!("{}: {}", c.name, problems.join("; ")));
        }
    }
    assert!(
        failures.is_empty(),
        "hostile rootfs cases failed:\n{}\nlog: {}",
        failures.join("\n"),
        env.log_text()
    );
}

// ---------------------------------------------------------------------------------------------
// Malformed input: annotations, specs, states, configs.
// ---------------------------------------------------------------------------------------------

/// (key without prefix, bad value)
const BAD_ANNOTATIONS: &[(&str, &str)] = &[
    ("enabled", "yes"),
    ("enabled", ""),
    ("hugepages-2Mi", "3Mi"),
    ("hugepages-2Mi", "0"),
    ("hugepages-2Mi", "lots"),
    ("hugepages-2Mi", "-2Mi"),
    ("hugepages-2Mi", "99999999999999999999Gi"),
    ("hugepages-1Gi", "512Mi"),
    ("dpdk-runtime-dir", "relative/path"),
    ("dpdk-runtime-dir", "/var/../../etc"),
    ("dpdk-runtime-dir", "/"),
    ("dpdk-group", "Upper"),
    ("dpdk-group", "-x"),
    ("dpdk-group", "a/b"),
    ("dpdk-group", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
    ("dpdk-file-prefix", "has space"),
    ("dpdk-file-prefix", "../x"),
    ("dpdk-file-prefix", ""),
    ("gpu-headroom", "0"),
    ("gpu-headroom", "much"),
    ("rdma-gid-index", "-1"),
    ("rdma-gid-index", "one"),
    ("spdk-iobuf", "small=1"),
    ("spdk-iobuf", "small=1,large=x"),
    ("spdk-iobuf", "small=1,large=2,medium=3"),
    // Unknown keys under the prefix: a typo must not be silently ignored.
    ("hugepages-2mi", "16Mi"),
    ("hugepages", "16Mi"),
    ("dpdk_group", "g"),
];

/// A process in the host's namespaces to stand in for a container init: if validation ever
/// let a request through, the hook would refuse to mount into the host's mount namespace.
struct Stand(std::process::Child);
impl Stand {
    fn new() -> Stand {
        Stand(std::process::Command::new("sleep").arg("60").spawn().unwrap())
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
}
impl Drop for Stand {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn config_bytes(b: &TestBundle) -> Vec<u8> {
    std::fs::read(b.path().join("config.json")).unwrap_or_default()
}

/// Runs a create through the wrapper that must be refused before runc sees it: one line,
/// containing every `needles`; no container, no record, config.json untouched.
fn refused_by_wrapper(env: &ProductEnv, p: &Runner, b: &TestBundle, needles: &[&str], what: &str) {
    let before = config_bytes(b);
    let id = unique("bad");
    let o = create_with_timeout(p, b, &id, Duration::from_secs(30)).expect("create hung");
    assert!(!o.status.success(), "{what}: create must fail");
    let msg = assert_one_line(what, &o.stderr);
    for n in needles {
        assert!(msg.contains(n), "{what}: error must contain {n:?}: {msg}");
    }
    assert_eq!(p.status(&id), None, "{what}: a container was created");
    assert!(!p.runc_root.path().join(&id).exists(), "{what}: runc state left");
    assert_eq!(config_bytes(b), before, "{what}: config.json was changed");
    assert!(env.records().is_empty(), "{what}: records left");
}

/// Feeds `dataplane-hook createRuntime` a state for `b`; it must fail with one line containing
/// every `needles` and leave no record.
fn refused_by_hook(env: &ProductEnv, stage: &str, state: &str, needles: &[&str], what: &str) {
    let o = hook_with_stdin(env, stage, state);
    assert!(!o.status.success(), "{what}: {stage} must fail");
    assert!(o.stdout.is_empty(), "{what}: hooks never write to stdout");
    let msg = assert_one_line(what, &o.stderr);
    for n in needles {
        assert!(msg.contains(n), "{what}: error must contain {n:?}: {msg}");
    }
    assert!(env.records().is_empty(), "{what}: records left");
}

#[test]
fn malformed_annotations_are_refused_naming_the_key() {
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let stand = Stand::new();
    for (key, value) in BAD_ANNOTATIONS {
        let full = format!("dataplane-hook.io/{key}");
        let what = format!("{full}={value:?}");
        let mut b = TestBundle::new(&["true"]);
        b.annotate(&full, value);
        refused_by_wrapper(&env, &p, &b, &[&format!("invalid annotation {full}=")], &what);
        let state = state_json(&unique("bad"), Some(stand.pid()), b.path(), "creating");
        refused_by_hook(
            &env,
            "createRuntime",
            &state,
            &[&format!("invalid annotation {full}=")],
            &what,
        );
        refused_by_hook(&env, "prestart", &state, &[&format!("invalid annotation {full}=")], &what);
    }
    // Annotations that only the runtime's state carries (CRI-O hooks.d) are checked too.
    let b = TestBundle::new(&["true"]);
    let mut state: serde_json::Value =
        serde_json::from_str(&state_json("via-state", Some(stand.pid()), b.path(), "creating"))
            .unwrap();
    state["annotations"] = serde_json::json!({"dataplane-hook.io/hugepages-2Mi": "3Mi"});
    refused_by_hook(
        &env,
        "createRuntime",
        &state.to_string(),
        &["dataplane-hook.io/hugepages-2Mi"],
        "annotation in the state",
    );
    // The spec's hugepageLimits are validated as the annotation they stand for.
    let mut b = TestBundle::new(&["true"]);
    b.hugepage_limit("2MB", 3 << 20);
    refused_by_wrapper(
        &env,
        &p,
        &b,
        &["dataplane-hook.io/hugepages-2Mi", "hugepageLimits"],
        "hugepageLimits not a page multiple",
    );
}

#[test]
fn broken_specs_states_and_configs_give_one_clear_line() {
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let stand = Stand::new();

    // Broken config.json, through the wrapper and through the hook.
    for (what, text) in [
        ("not JSON", "{not json"),
        ("not an object", "[]"),
        ("wrong types", r#"{"ociVersion":"1.0.2","process":5}"#),
        ("empty", ""),
    ] {
        let b = TestBundle::new(&["true"]);
        std::fs::write(b.path().join("config.json"), text).unwrap();
        refused_by_wrapper(&env, &p, &b, &["config.json"], &format!("config.json {what}"));
        let state = state_json(&unique("spec"), Some(stand.pid()), b.path(), "creating");
        refused_by_hook(
            &env,
            "createRuntime",
            &state,
            &["config.json"],
            &format!("config.json {what} (hook)"),
        );
    }
    let gone = tempfile::tempdir().unwrap();
    let state = state_json("nobundle", Some(stand.pid()), &gone.path().join("missing"), "creating");
    refused_by_hook(
        &env,
        "createRuntime",
        &state,
        &["config.json", "cannot read"],
        "missing bundle",
    );

    // Garbage state JSON on stdin, for every stage.
    for (what, state) in [
        ("empty", String::new()),
        ("garbage", "garbage\n\u{1}\u{2}".to_string()),
        ("not an object", "[1,2]".to_string()),
        ("no bundle", r#"{"ociVersion":"1.0.2","id":"x"}"#.to_string()),
        ("no id", r#"{"ociVersion":"1.0.2","bundle":"/tmp"}"#.to_string()),
        (
            "id with a slash",
            r#"{"ociVersion":"1.0.2","id":"../../etc","bundle":"/tmp"}"#.to_string(),
        ),
        ("relative bundle", r#"{"ociVersion":"1.0.2","id":"x","bundle":"rel"}"#.to_string()),
        (
            "pid not a number",
            r#"{"ociVersion":"1.0.2","id":"x","pid":"1","bundle":"/tmp"}"#.to_string(),
        ),
    ] {
        for stage in ["createRuntime", "prestart", "poststop"] {
            refused_by_hook(
                &env,
                stage,
                &state,
                &["container state"],
                &format!("state {what} ({stage})"),
            );
        }
    }

    // A state without a pid at createRuntime.
    let b = TestBundle::new(&["true"]);
    let state = state_json("nopid", None, b.path(), "creating");
    refused_by_hook(&env, "createRuntime", &state, &["nopid", "pid"], "state without pid");

    // A bad config file names the key, for both binaries.
    let bad = ProductEnv::new("bogus_key = 1");
    let pb = Runner::product(&bad);
    let b = TestBundle::new(&["true"]);
    refused_by_wrapper(&bad, &pb, &b, &["bogus_key"], "unknown config key (wrapper)");
    let state = state_json("cfg", Some(stand.pid()), b.path(), "creating");
    refused_by_hook(&bad, "createRuntime", &state, &["bogus_key"], "unknown config key (hook)");
    let bad = ProductEnv::new("[hugepages]\nmax_reserved_fraction = 2.0");
    let o = bad.hook(&["status"]);
    let msg = assert_one_line("bad config value", &o.stderr);
    assert!(msg.contains("max_reserved_fraction"), "{msg}");
}
