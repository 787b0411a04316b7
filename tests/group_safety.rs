//! Issue 13, DPDK groups (G2) under attack (G8): a member looking at the host through the
//! group's PID 1 (the holder), a pod on CRI-O forging another namespace's scope key, a member
//! in the host's PID namespace, and a mount target on a mount that propagates to the host.
//! Real runc, real dataplane-runtime (or runc with the hook in the spec: the hooks.d path).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;
use serde_json::{json, Value};

const GROUP: &str = "dataplane-hook.io/dpdk-group";
const HUGE: &str = "dataplane-hook.io/hugepages-2Mi";

fn groups(env: &ProductEnv) -> Vec<Value> {
    env.status_json()["groups"].as_array().unwrap().clone()
}

fn sh(script: &str) -> TestBundle {
    TestBundle::new(&["sh", "-c", script])
}

fn add_cap(b: &mut TestBundle, cap: &str) {
    for set in ["bounding", "effective", "permitted"] {
        b.spec["process"]["capabilities"][set].as_array_mut().unwrap().push(json!(cap));
    }
    b.save();
}

/// The lines of `out` between the marker line `==name` and the next marker line.
fn section(out: &str, name: &str) -> String {
    let marker = format!("=={name}");
    let mut lines = out.lines().skip_while(|l| *l != marker);
    if lines.next().is_none() {
        return String::new();
    }
    lines.take_while(|l| !l.starts_with("==")).map(|l| format!("{l}\n")).collect()
}

/// The fields of a `/proc/<pid>/status` text.
fn status_field(status: &str, key: &str) -> Option<String> {
    status.lines().find_map(|l| l.strip_prefix(&format!("{key}:")).map(|v| v.trim().to_string()))
}

// ---------------------------------------------------------------------------------------------
// 1. The group's PID 1 shows its members nothing of the host.
// ---------------------------------------------------------------------------------------------

#[test]
fn a_member_with_cap_sys_ptrace_sees_nothing_of_the_host_through_the_groups_pid_1() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    let script = "echo ==self; cat /proc/self/status; \
                  echo ==mountinfo; cat /proc/1/mountinfo; \
                  echo ==root; ls -a /proc/1/root/ 2>&1; \
                  echo ==cwd; ls -a /proc/1/cwd/ 2>&1; \
                  echo ==environ; tr '\\0' '\\n' < /proc/1/environ 2>&1; \
                  echo ==cmdline; tr '\\0' ' ' < /proc/1/cmdline 2>&1; echo; \
                  echo ==status; cat /proc/1/status; \
                  echo ==group; grep -E ' /dev/hugepages | /var/run/dpdk ' /proc/self/mountinfo; touch /var/run/dpdk/x && echo writable; \
                  echo ==end; sleep 600";
    let mut b = sh(script);
    b.annotate(GROUP, "peek").annotate(HUGE, "32Mi");
    add_cap(&mut b, "CAP_SYS_PTRACE");
    let id = unique("peek");
    r.launch(&b, &id);
    assert!(
        wait_for(Duration::from_secs(20), || stdout_of(&b).contains("==end")),
        "member output: {}\nlog: {}",
        stdout_of(&b),
        env.log_text()
    );
    let out = stdout_of(&b);
    let g = groups(&env);
    assert_eq!(g.len(), 1, "{g:?}");
    let holder = g[0]["holder"].as_i64().expect("a holder pid");

    // Preconditions: the member really has CAP_SYS_PTRACE (bit 19), and /proc/1 is the holder
    // (its PID namespace for children is the member's).
    let own_eff =
        u64::from_str_radix(&status_field(&section(&out, "self"), "CapEff").unwrap(), 16).unwrap();
    assert!(own_eff & (1 << 19) != 0, "the member has CAP_SYS_PTRACE: {out}");
    let member_pid = r.pid(&id).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{holder}/ns/pid_for_children")).unwrap(),
        std::fs::read_link(format!("/proc/{member_pid}/ns/pid")).unwrap(),
        "the member is in the holder's PID namespace"
    );
    // The member still gets the group's hugetlbfs and runtime dir.
    let grp = section(&out, "group");
    assert!(
        grp.contains(" /dev/hugepages ")
            && grp.contains("hugetlbfs")
            && grp.contains(" /var/run/dpdk ")
            && grp.contains("writable"),
        "group mounts: {out}"
    );

    let host = host_mounts();
    let host_root = host.iter().rev().find(|m| m.mount_point == "/").expect("host root").clone();
    let mountinfo = section(&out, "mountinfo");
    let seen = mountinfo.lines().count();
    assert!(seen > 0, "mountinfo readable: {out}");
    let bundle = b.path().display().to_string();
    let state = env.state_dir.display().to_string();
    for l in mountinfo.lines() {
        let mp = l.split(' ').nth(4).unwrap_or("");
        assert!(
            mp == "/" || !host.iter().any(|m| m.mount_point == mp),
            "a host mount point shows in the holder's mountinfo: {l}\n{mountinfo}"
        );
        assert!(
            !l.contains(&bundle)
                && !l.contains(&state)
                && !l.contains("/usr")
                && !l.contains("/boot")
                && !l.contains("/proc")
                && !l.contains("/sys"),
            "host paths in the holder's mountinfo: {l}\n{mountinfo}"
        );
        let post = l.split_once(" - ").map(|x| x.1).unwrap_or("");
        assert!(
            post.split(' ').nth(1).is_none_or(|src| src != host_root.source),
            "the host's root device shows: {l}"
        );
    }
    // Its root and cwd hold nothing of the host's root.
    let host_entries: Vec<String> = list_dir(Path::new("/"));
    for which in ["root", "cwd"] {
        let listing = section(&out, which);
        assert!(
            !listing.contains("denied") && !listing.contains("No such"),
            "{which} listable with CAP_SYS_PTRACE (precondition): {listing}"
        );
        let names: Vec<&str> =
            listing.split_whitespace().filter(|n| *n != "." && *n != "..").collect();
        let leaked: Vec<&&str> =
            names.iter().filter(|n| host_entries.iter().any(|h| h == *n)).collect();
        assert!(leaked.is_empty(), "/proc/1/{which} shows host files {leaked:?}: {listing}");
    }
    let environ = section(&out, "environ");
    assert!(environ.trim().is_empty(), "the holder's environment: {environ:?}");
    let cmdline = section(&out, "cmdline");
    assert!(!cmdline.contains(&state), "the holder's command line names host paths: {cmdline}");
    let status = section(&out, "status");
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(
            status_field(&status, cap).as_deref(),
            Some("0000000000000000"),
            "{cap}: {status}"
        );
    }
    assert_eq!(status_field(&status, "NoNewPrivs").as_deref(), Some("1"), "{status}");
    assert!(
        status_field(&status, "Uid").is_some_and(|u| u.split_whitespace().all(|x| x == "65534")),
        "unprivileged uid: {status}"
    );
    // Own network, IPC and UTS namespaces.
    for ns in ["net", "ipc", "uts"] {
        assert_ne!(
            std::fs::read_link(format!("/proc/{holder}/ns/{ns}")).unwrap(),
            std::fs::read_link(format!("/proc/self/ns/{ns}")).unwrap(),
            "{ns} namespace"
        );
    }
    // Not dumpable: its /proc files belong to root, not to its uid.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(format!("/proc/{holder}/environ")).unwrap().uid(),
        0,
        "a non-dumpable process's /proc files are root's"
    );

    // The hook can still tear it down: the holder dies and the reservation is released.
    r.delete(&id);
    assert!(wait_pid_gone(holder as i32, Duration::from_secs(5)), "holder {holder} is gone");
    env.assert_released(&pool, "after the member");
}

// ---------------------------------------------------------------------------------------------
// 2. A group's scope comes only from the keys the runtime writes.
// ---------------------------------------------------------------------------------------------

/// Annotations containerd's CRI plugin writes on a pod's container.
fn containerd_shaped(b: &mut TestBundle, namespace: &str) {
    b.annotate("io.kubernetes.cri.container-type", "container")
        .annotate("io.kubernetes.cri.sandbox-id", &unique("sbx"))
        .annotate("io.kubernetes.cri.sandbox-name", "pod")
        .annotate("io.kubernetes.cri.sandbox-namespace", namespace)
        .annotate("io.kubernetes.cri.container-name", "dpdk");
}

/// Annotations CRI-O writes on a pod's container (its own keys; the pod's namespace reaches
/// the spec through the kubelet's container labels, which CRI-O writes last).
fn crio_shaped(b: &mut TestBundle, namespace: &str) {
    let labels = json!({
        "io.kubernetes.container.name": "dpdk",
        "io.kubernetes.pod.name": "pod",
        "io.kubernetes.pod.namespace": namespace,
        "io.kubernetes.pod.uid": "uid",
    });
    b.annotate("io.kubernetes.cri-o.ContainerType", "container")
        .annotate("io.kubernetes.cri-o.SandboxID", &unique("sbx"))
        .annotate("io.kubernetes.cri-o.ContainerID", &unique("ctr"))
        .annotate("io.kubernetes.cri-o.Labels", &labels.to_string())
        .annotate("io.container.manager", "cri-o")
        .annotate("io.kubernetes.pod.namespace", namespace)
        .annotate("io.kubernetes.pod.name", "pod")
        .annotate("io.kubernetes.container.name", "dpdk");
}

#[test]
fn a_pod_on_cri_o_forging_containerds_namespace_key_never_joins_that_namespaces_group() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let r = Runner::product(&env);
    // Namespace B's member, on containerd.
    let mut b = sh("touch /var/run/dpdk/from-b; sleep 600");
    b.annotate(GROUP, "g").annotate(HUGE, "16Mi");
    containerd_shaped(&mut b, "team-b");
    let ib = unique("scope-b");
    r.launch(&b, &ib);
    assert!(wait_for(Duration::from_secs(10), || groups(&env).len() == 1));
    let b_holder = groups(&env)[0]["holder"].clone();

    // A pod in namespace A on CRI-O, with a forged `io.kubernetes.cri.sandbox-namespace: team-b`.
    let mut a = sh("sleep 2; ls /var/run/dpdk; echo listed; sleep 600");
    a.annotate(GROUP, "g").annotate(HUGE, "16Mi");
    crio_shaped(&mut a, "team-a");
    a.annotate("io.kubernetes.cri.sandbox-namespace", "team-b");
    let ia = unique("scope-a");
    let o = r.create(&a, &ia);
    let joined = o.status.success() && {
        let _ = r.start(&ia);
        wait_for(Duration::from_secs(10), || stdout_of(&a).contains("listed"));
        stdout_of(&a).contains("from-b")
    };
    let g = groups(&env);
    let b_group = g.iter().find(|x| x["holder"] == b_holder).cloned().unwrap_or_default();
    r.delete(&ia);
    assert!(!joined, "the forged pod sees namespace B's runtime dir: {}", stdout_of(&a));
    assert!(
        !b_group["members"].as_array().unwrap().iter().any(|m| m == &json!(ia)),
        "the forged pod is in B's group: {b_group}"
    );
    assert!(!o.status.success(), "a spec carrying both runtimes' scope keys is refused");
    let err = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("a product error: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(err.contains("io.kubernetes.cri.sandbox-namespace") && err.contains("CRI-O"), "{err}");
    assert_spec_form("forged scope", &err);
    assert_eq!(r.status(&ia), None, "nothing left of the refused container");

    // Without the forged key, the same CRI-O pod is scoped by CRI-O's own key: its own group.
    let mut a2 = sh("sleep 2; ls /var/run/dpdk; echo listed; sleep 600");
    a2.annotate(GROUP, "g").annotate(HUGE, "16Mi");
    crio_shaped(&mut a2, "team-a");
    // CRI-O does not write io.kubernetes.cri-o.Namespace on containers: a pod's own value
    // of it is no scope either.
    a2.annotate("io.kubernetes.cri-o.Namespace", "team-b");
    let ia2 = unique("scope-a2");
    r.launch(&a2, &ia2);
    assert!(
        wait_for(Duration::from_secs(10), || stdout_of(&a2).contains("listed")),
        "{}",
        stdout_of(&a2)
    );
    assert!(
        !stdout_of(&a2).contains("from-b"),
        "team-a's pod sees team-b's dir: {}",
        stdout_of(&a2)
    );
    let g = groups(&env);
    assert_eq!(g.len(), 2, "{g:?}");
    assert!(
        g.iter().any(|x| x["scope"] == "team-a") && g.iter().any(|x| x["scope"] == "team-b"),
        "{g:?}"
    );
    r.delete(&ia2);
    r.delete(&ib);
    env.assert_released(&pool, "after all");
}

// ---------------------------------------------------------------------------------------------
// 3. Hardening: the host's PID namespace is no group's; no mount lands on the host.
// ---------------------------------------------------------------------------------------------

#[test]
fn hooks_d_group_member_in_the_hosts_pid_namespace_is_refused() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let runc = Runner::runc();
    let mut a = TestBundle::new(&["sleep", "600"]);
    a.annotate(GROUP, "hostpid").annotate(HUGE, "16Mi");
    a.spec["linux"]["namespaces"].as_array_mut().unwrap().retain(|n| n["type"] != "pid");
    a.save();
    // Precondition, shown by a control without the hook: this spec's container really runs in
    // the host's (this test's) PID namespace.
    {
        let mut c = TestBundle::new(&["sleep", "600"]);
        c.spec["linux"]["namespaces"] = a.spec["linux"]["namespaces"].clone();
        c.save();
        let ic = unique("hostpid-ctl");
        runc.launch(&c, &ic);
        let ns = |p: &str| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
        let in_host_ns = runc.pid(&ic).map(|p| ns(&p.to_string()) == ns("self"));
        runc.delete(&ic);
        assert_eq!(in_host_ns, Some(true), "precondition: the control shares the host's PID ns");
    }
    a.with_hooks_d(&env);
    let ia = unique("hostpid");
    let o = runc.create(&a, &ia);
    let g = groups(&env);
    runc.delete(&ia);
    assert!(
        !o.status.success(),
        "a group in the host's PID namespace must be refused; groups: {g:?}"
    );
    let reason =
        if is_crun() { env.log_text() } else { String::from_utf8_lossy(&o.stderr).to_string() };
    assert!(reason.contains("host's PID namespace"), "{reason}");
    env.assert_released(&pool, "after the refusal");
}

/// A tmpfs on the host made `shared`: a container's bind of it with `rshared` (Kubernetes'
/// `mountPropagation: Bidirectional`) is a peer, so mounts below it appear on the host.
struct SharedHostDir(PathBuf);

impl SharedHostDir {
    fn new() -> SharedHostDir {
        let p = PathBuf::from(format!("/tmp/{}", unique("dph-shared")));
        std::fs::create_dir_all(&p).unwrap();
        assert!(Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "dph-shared"])
            .arg(&p)
            .status()
            .unwrap()
            .success());
        assert!(Command::new("mount").arg("--make-shared").arg(&p).status().unwrap().success());
        SharedHostDir(p)
    }
}

impl Drop for SharedHostDir {
    fn drop(&mut self) {
        // Whatever leaked below it first, then itself.
        for _ in 0..4 {
            let _ = Command::new("umount")
                .arg("-R")
                .arg("-l")
                .arg(&self.0)
                .stderr(std::process::Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn shared_bind(b: &mut TestBundle, host: &Path) {
    b.spec["linux"]["rootfsPropagation"] = json!("rshared");
    b.spec["mounts"].as_array_mut().unwrap().push(json!({
        "destination": "/mnt/host", "type": "bind", "source": host.display().to_string(),
        "options": ["rbind", "rw", "rshared"]
    }));
    b.save();
}

fn peer_group(line_opts: &str) -> Option<String> {
    line_opts.split(' ').find_map(|f| f.strip_prefix("shared:").map(String::from))
}

/// The optional fields of the mountinfo line for `mount_point` in `text`.
fn optional_fields(text: &str, mount_point: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        let (pre, _) = l.split_once(" - ")?;
        let f: Vec<&str> = pre.split(' ').collect();
        (f.get(4) == Some(&mount_point)).then(|| f[6..].join(" "))
    })
}

#[test]
fn a_mount_target_on_a_mount_shared_with_the_host_is_refused() {
    let shared = SharedHostDir::new();
    let host_text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let host_group = optional_fields(&host_text, &shared.0.display().to_string())
        .and_then(|o| peer_group(&o))
        .expect("the host dir is shared");

    // Control (plain runc): the container's bind is a peer of the host's mount.
    {
        let runc = Runner::runc();
        let mut c = sh("cat /proc/self/mountinfo; echo ==end");
        shared_bind(&mut c, &shared.0);
        let o = runc.run(&c, &unique("prop-ctl"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8_lossy(&o.stdout).to_string();
        let theirs = optional_fields(&text, "/mnt/host").and_then(|o| peer_group(&o));
        assert_eq!(
            theirs.as_deref(),
            Some(host_group.as_str()),
            "the container's /mnt/host is in the host's peer group: {text}"
        );
    }

    let pool = PoolGuard::new(16);
    // The runtime dir alone (the wrapper's fast path), with hugepages (the hook's mounts), on
    // the shared mount's root itself, and the hugetlbfs mount path inside it.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
    let cases: [Case; 4] = [
        ("", &[("dataplane-hook.io/dpdk-runtime-dir", "/mnt/host/dpdk")], "/mnt/host/dpdk"),
        (
            "",
            &[("dataplane-hook.io/dpdk-runtime-dir", "/mnt/host/dpdk"), (HUGE, "4Mi")],
            "/mnt/host/dpdk",
        ),
        ("", &[("dataplane-hook.io/dpdk-runtime-dir", "/mnt/host")], "/mnt/host"),
        ("[hugepages]\nmount_path_2mi = \"/mnt/host/hp\"\n", &[(HUGE, "4Mi")], "/mnt/host/hp"),
    ];
    for (extra, annotations, target) in cases {
        let env = ProductEnv::new(extra);
        let r = Runner::product(&env);
        let mut b = TestBundle::new(&["sleep", "600"]);
        for (k, v) in annotations {
            b.annotate(k, v);
        }
        shared_bind(&mut b, &shared.0);
        let before = host_mounts();
        let id = unique("prop");
        let o = r.create(&b, &id);
        let leaked: Vec<MountEntry> = new_mounts(&before, &host_mounts())
            .into_iter()
            .filter(|m| m.mount_point.starts_with(&shared.0.display().to_string()))
            .collect();
        r.delete(&id);
        assert!(leaked.is_empty(), "{target}: a mount made for the container appeared on the host: {leaked:?}\ncreate: {}\nlog: {}", String::from_utf8_lossy(&o.stderr), env.log_text());
        assert!(!o.status.success(), "{target}: a target that propagates to the host is refused");
        let err = product_error(&o.stderr)
            .unwrap_or_else(|| panic!("a product error: {}", String::from_utf8_lossy(&o.stderr)));
        assert!(err.contains(target) && err.contains("propagates to the host"), "{err}");
        assert_spec_form("shared target", &err);
        assert!(env.records().is_empty(), "{target}: nothing recorded: {:?}", env.records());
        pool.assert_baseline(target);
    }
}
