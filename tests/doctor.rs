//! `dataplane-hook doctor` on this host: its answers must be the host's real ones (read here
//! independently from mountinfo, sysfs and the runtimes themselves), every line must have the
//! `pass|warn|fail|skip <check>: <finding> (fix: ...)` form, and the exit status must follow the
//! fail lines. Broken setups (a state dir another user owns, a config that does not load, a
//! missing real runtime) must fail, and a healthy state dir must pass: the controls.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use dataplane_tests::util::host_mounts;
use dataplane_tests::*;

fn doctor(env: &ProductEnv) -> (Output, Vec<String>) {
    let o = env.hook(&["doctor"]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    (o, text.lines().map(String::from).collect())
}

fn line<'a>(lines: &'a [String], check: &str) -> &'a str {
    lines
        .iter()
        .find(|l| {
            l.split_once(' ').is_some_and(|(_, rest)| rest.starts_with(&format!("{check}: ")))
        })
        .unwrap_or_else(|| panic!("no `{check}` line in:\n{}", lines.join("\n")))
}

fn status(l: &str) -> &str {
    l.split(' ').next().unwrap()
}

/// Every line but the summary is one check in the documented form; the exit status is non-zero
/// exactly when a check failed.
fn assert_form(o: &Output, lines: &[String]) {
    let (summary, checks) = lines.split_last().expect("output");
    assert!(summary.starts_with("doctor: "), "summary last: {summary}");
    let mut fails = 0;
    for l in checks {
        let (st, rest) = l.split_once(' ').unwrap_or_else(|| panic!("{l}"));
        assert!(["pass", "warn", "fail", "skip"].contains(&st), "status word: {l}");
        assert!(rest.contains(": "), "check name then finding: {l}");
        if st == "warn" || st == "fail" {
            assert!(l.ends_with(')') && l.contains(" (fix: "), "a {st} says what to do: {l}");
        }
        fails += (st == "fail") as usize;
    }
    assert!(summary.contains(&format!(", {fails} fail,")), "{summary}");
    assert_eq!(
        o.status.success(),
        fails == 0,
        "exit status follows the fail lines: {:?}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    if fails > 0 {
        assert!(
            String::from_utf8_lossy(&o.stderr)
                .starts_with("dataplane-hook: this node is not ready: "),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
}

#[test]
fn doctor_tells_the_truth_about_this_host() {
    require_root();
    let pool = PoolGuard::new(24); // stable pool figures while doctor reads them
    let env = ProductEnv::new("");
    let (o, lines) = doctor(&env);
    assert_form(&o, &lines);

    // Pools, straight from sysfs.
    let c = counters();
    let l = line(&lines, "hugepages 2Mi");
    assert_eq!(
        l,
        format!(
            "pass hugepages 2Mi: {} pages ({}Mi), {} free, {} reserved",
            c.total,
            c.total * 2,
            c.free,
            c.reserved
        )
    );
    assert_eq!(c.total, pool.baseline.total);
    for node in std::fs::read_dir("/sys/devices/system/node").unwrap().flatten() {
        let name = node.file_name().into_string().unwrap();
        let Some(n) = name.strip_prefix("node").filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let total = read_u64(&format!(
            "/sys/devices/system/node/node{n}/hugepages/hugepages-2048kB/nr_hugepages"
        ));
        let l = line(&lines, &format!("hugepages 2Mi node{n}"));
        assert!(l.contains(&format!(": {total} pages")), "{l}");
    }

    // The hugetlb controller: where mountinfo says a hierarchy carries it.
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut v1 = None;
    let mut v2 = None;
    for m in mountinfo.lines() {
        let (pre, post) = m.split_once(" - ").unwrap();
        let mp = pre.split(' ').nth(4).unwrap();
        let mut p = post.split(' ');
        match (p.next(), p.nth(1)) {
            (Some("cgroup"), Some(opts)) if opts.split(',').any(|o| o == "hugetlb") => {
                v1 = Some(mp.to_string())
            }
            (Some("cgroup2"), _)
                if std::fs::read_to_string(format!("{mp}/cgroup.controllers"))
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|c| c == "hugetlb") =>
            {
                v2 = Some(mp.to_string())
            }
            _ => {}
        }
    }
    let l = line(&lines, "hugetlb controller");
    match (v1, v2) {
        (Some(m), _) => assert_eq!(l, format!("pass hugetlb controller: cgroup v1 at {m}")),
        (None, Some(m)) => {
            assert!(l.starts_with(&format!("pass hugetlb controller: cgroup v2 at {m}")), "{l}")
        }
        (None, None) => assert!(l.starts_with("fail hugetlb controller"), "{l}"),
    }
    let hybrid = mountinfo.lines().any(|m| m.contains(" - cgroup cgroup "))
        && mountinfo.lines().any(|m| m.contains(" - cgroup2 "));
    assert_eq!(line(&lines, "cgroup layout").starts_with("pass cgroup layout: hybrid"), hybrid);

    // Runtimes and their versions, as they report them.
    for (rt, first_line_word) in [("runc", 2), ("crun", 2), ("containerd", 2), ("podman", 2)] {
        let Ok(out) = Command::new(rt).arg("--version").output() else {
            assert!(line(&lines, &format!("runtime {rt}")).contains("not installed"));
            continue;
        };
        let first = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_string();
        let word = first.split_whitespace().nth(first_line_word).unwrap_or("");
        let version: String = word
            .trim_start_matches('v')
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        let l = line(&lines, &format!("runtime {rt}"));
        assert!(l.contains(&version), "{rt} {version}: {l}");
        if rt == "runc" {
            let parts: Vec<u32> = version.split('.').map(|p| p.parse().unwrap()).collect();
            let old = (parts[0], parts[1], parts[2]) < (1, 1, 10);
            assert_eq!(
                status(l),
                if old { "warn" } else { "pass" },
                "runc {version} and rsvd: {l}"
            );
            assert_eq!(l.contains("rsvd"), old);
        }
        if rt == "crun" && hybrid {
            assert_eq!(status(l), "warn", "crun refuses hybrid hosts: {l}");
        }
    }

    // Kernel features: this kernel has them all (the product's own tests use them).
    for k in [
        "openat2",
        "fsopen/fsmount",
        "open_tree",
        "move_mount",
        "mount_setattr",
        "hugetlbfs",
        "pidfd_open",
    ] {
        assert_eq!(status(line(&lines, &format!("kernel {k}"))), "pass", "{k}");
    }
    let psi = std::path::Path::new("/proc/pressure/memory").exists();
    assert_eq!(status(line(&lines, "kernel PSI")), if psi { "pass" } else { "warn" });

    // The state dir does not exist yet: fine, it is made root-only at the first create.
    assert!(line(&lines, "state dir").starts_with("pass state dir:"));
    assert!(line(&lines, "log file").starts_with("pass log file:"));
    assert!(line(&lines, "binaries")
        .starts_with(&format!("pass binaries: {}", hook_bin().canonicalize().unwrap().display())));
}

#[test]
fn a_healthy_state_dir_passes_and_one_another_user_owns_fails() {
    require_root();
    let env = ProductEnv::new("");
    // Healthy: what the hook makes.
    assert!(env.hook(&["gc"]).status.success());
    let (_, lines) = doctor(&env);
    let l = line(&lines, "state dir");
    assert!(l.starts_with("pass state dir:") && l.contains("root-only (0700)"), "{l}");
    // Owned by another user: forged records would be acted on.
    nix::unistd::chown(&env.state_dir, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
    let (o, lines) = doctor(&env);
    assert_form(&o, &lines);
    let l = line(&lines, "state dir");
    assert!(
        l.starts_with("fail state dir:")
            && l.contains("owned by uid 65534")
            && l.contains("(fix: chown root:root"),
        "{l}"
    );
    assert!(!o.status.success());
    // Group/world-accessible: a warning (the next hook run tightens it).
    nix::unistd::chown(&env.state_dir, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    std::fs::set_permissions(&env.state_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, lines) = doctor(&env);
    assert!(line(&lines, "state dir").starts_with("warn state dir:"));
}

#[test]
fn a_config_that_does_not_load_and_a_missing_runtime_fail() {
    require_root();
    let env = ProductEnv::new("runtime_path = \"/nonexistent/runc\"\n");
    let (o, lines) = doctor(&env);
    assert_form(&o, &lines);
    assert!(
        line(&lines, "runtime_path").starts_with("fail runtime_path: /nonexistent/runc not found")
    );
    assert!(!o.status.success());

    // A config with a typo: doctor still runs every check (on the defaults) and fails on it.
    let bad = ProductEnv::new("[hugepages]\nreserv = true\n");
    let (o, lines) = doctor(&bad);
    assert_form(&o, &lines);
    let l = line(&lines, "config");
    assert!(l.starts_with("fail config:") && l.contains("reserv"), "{l}");
    assert!(lines.len() > 20, "the other checks still ran: {lines:?}");
}

/// mountinfo writes a space in a mount point as `\040`: doctor must read the path the mount is
/// really at (and its controllers there), not the escaped text. The cgroup2 mount is made in a
/// mount namespace of its own (`unshare -m`), so the host's table is never touched.
#[test]
fn a_cgroup_mount_point_with_a_space_is_read_as_the_path_it_is() {
    require_root();
    let env = ProductEnv::new("");
    let host_v2 = host_mounts()
        .into_iter()
        .find(|m| m.fstype == "cgroup2")
        .expect("this host has a cgroup2 mount");
    let controllers =
        std::fs::read_to_string(format!("{}/cgroup.controllers", host_v2.mount_point))
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
    assert!(!controllers.is_empty(), "precondition: the hierarchy has controllers to show");
    let dir = env.root.join("cg v2");
    std::fs::create_dir_all(&dir).unwrap();
    // Mount, show the kernel's line (the precondition: it escapes the space), run doctor there.
    let script = r#"mount -t cgroup2 none "$1" && grep -F ' - cgroup2 ' /proc/self/mountinfo >&2 && shift && exec "$@""#;
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", script, "sh"])
        .arg(&dir)
        .arg(hook_bin())
        .arg("--config")
        .arg(&env.config)
        .arg("doctor")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    let escaped = format!("{}", dir.display()).replace(' ', "\\040");
    assert!(
        stderr.contains(&format!(" {escaped} ")),
        "precondition: mountinfo escapes it: {stderr}"
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let lines: Vec<String> = text.lines().map(String::from).collect();
    let l = line(&lines, "cgroup layout");
    assert!(!l.contains("\\040"), "the escaped text is shown: {l}");
    assert!(
        l.contains(&format!("{} ({controllers})", dir.display())),
        "the mount at {} with its controllers `{controllers}`: {l}",
        dir.display()
    );
    assert!(host_mounts().iter().all(|m| !m.mount_point.contains("cg\\040v2")), "host untouched");
}
