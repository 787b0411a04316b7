//! G11 end to end: RDMA containers get working memlock/nofile limits (or a clear refusal or
//! warning when the host cannot grant them) and a GID index that is usable on their device.
//!
//! Two kinds of tests:
//! - Limits, on any root host: a container given a `/dev/infiniband/uverbs0` node is an RDMA
//!   container whether or not the node has RDMA hardware. On a host whose root lacks
//!   `CAP_SYS_RESOURCE` (this development machine: memlock hard limit 8 MiB) they prove the
//!   refusal and the warning; on a host with it (the VM) they prove the limits are granted.
//! - GID index, `#[ignore]`d here: they need Soft-RoCE devices, which the VM payload
//!   (integration/vm/payloads/rdma) creates before running them with `--ignored`:
//!   `rxe0` on `dph-vh` (host namespace, 10.77.0.1) and `rxe1` on `dph-vc` inside the network
//!   namespace `DPH_RXE_NETNS` (10.77.0.2), the shape of a pod with its own RoCE netdev.
//!   rxe before Linux 6.15 keeps its UDP sockets in the initial network namespace, so on the
//!   VM's 6.1 kernel RDMA traffic only flows on rxe0: rxe1 gives a real GID table inside a pod
//!   namespace (what the product judges), rxe0 carries the QP traffic (`ibv_rc_pingpong`).

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;
use serde_json::{json, Value};

const ANN_GID: &str = "dataplane-hook.io/rdma-gid-index";
const NOFILE_WANTED: u64 = 1 << 20;
const SHOW_LIMITS: &str = "grep -E '^Max (locked memory|open files)' /proc/self/limits; echo \"GIDENV MC=${MC_GID_INDEX:-unset} NCCL=${NCCL_IB_GID_INDEX:-unset}\"";

// ---------------------------------------------------------------------------------------------
// Limits

/// `(soft, hard)` as /proc/<pid>/limits prints them.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    memlock: (String, String),
    nofile: (String, String),
}

fn seen(out: &str) -> Seen {
    let pick = |prefix: &str| {
        let l = out
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line in: {out}"));
        let f: Vec<&str> = l[prefix.len()..].split_whitespace().collect();
        (f[0].to_string(), f[1].to_string())
    };
    Seen { memlock: pick("Max locked memory"), nofile: pick("Max open files") }
}

fn show(v: u64) -> String {
    if v == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

/// Gives this test process (and so the runtimes it starts) the memlock limit a node's
/// container runtime typically has: systemd's default 8 MiB (containerd's unit does not raise
/// it). Hosts that already have less keep theirs. Process-wide and idempotent.
fn node_like_limits() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit/setrlimit on this process.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut l), 0);
            let cap = 8u64 << 20;
            if l.rlim_max > cap {
                l.rlim_max = cap;
                l.rlim_cur = l.rlim_cur.min(cap);
                assert_eq!(
                    libc::setrlimit(libc::RLIMIT_MEMLOCK, &l),
                    0,
                    "{}",
                    std::io::Error::last_os_error()
                );
            }
        }
    });
}

/// This process's hard limit for `r` (the wrapper and runc inherit it).
fn hard(r: libc::__rlimit_resource_t) -> u64 {
    let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes `l`.
    assert_eq!(unsafe { libc::getrlimit(r, &mut l) }, 0);
    l.rlim_max
}

fn cap_sys_resource() -> bool {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = s.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim().to_string();
    u64::from_str_radix(&hex, 16).unwrap() & (1 << 24) != 0
}

fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap()
}

/// What the host can give: the wanted limits, or the hard limits this process has.
fn grantable(want: u64, r: libc::__rlimit_resource_t) -> u64 {
    let ceiling = if r == libc::RLIMIT_NOFILE { nr_open() } else { u64::MAX };
    let max = if cap_sys_resource() { ceiling } else { hard(r).min(ceiling) };
    want.min(max)
}

fn host_can_grant() -> bool {
    grantable(u64::MAX, libc::RLIMIT_MEMLOCK) == u64::MAX
        && grantable(NOFILE_WANTED, libc::RLIMIT_NOFILE) == NOFILE_WANTED
}

/// A container with a uverbs node (no hardware needed) that prints its limits and GID env.
fn uverbs_bundle() -> TestBundle {
    let mut b = TestBundle::new(&["sh", "-c", SHOW_LIMITS]);
    b.spec["linux"]["devices"] = json!([{"path": "/dev/infiniband/uverbs0", "type": "c", "major": 231, "minor": 192, "fileMode": 438, "uid": 0, "gid": 0}]);
    allow_device(&mut b.spec, 231, 192);
    b.save();
    b
}

/// The device cgroup rule that goes with a `linux.devices` node (runc creates the node but
/// only allows what `linux.resources.devices` says; CRI runtimes add both).
fn allow_device(spec: &mut Value, major: i64, minor: i64) {
    spec["linux"]["resources"]["devices"]
        .as_array_mut()
        .unwrap()
        .push(json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"}));
}

fn out_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr)
}

fn expected_unmet_parts() -> Vec<String> {
    let mut parts = vec![];
    let m = hard(libc::RLIMIT_MEMLOCK);
    if !cap_sys_resource() && m != libc::RLIM_INFINITY {
        parts.push(format!("RLIMIT_MEMLOCK unlimited (the runtime can grant at most {m}: no CAP_SYS_RESOURCE to raise the hard limit)"));
    }
    let n = grantable(NOFILE_WANTED, libc::RLIMIT_NOFILE);
    if n < NOFILE_WANTED {
        parts.push(format!("RLIMIT_NOFILE {NOFILE_WANTED} (the runtime can grant at most {n}"));
    }
    parts
}

fn assert_gone(r: &Runner, env: &ProductEnv, id: &str) {
    assert_eq!(r.status(id), None, "runc must not know {id} after the failed create");
    assert!(!r.runc_root.path().join(id).exists(), "runc state dir of {id} left");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

#[test]
fn rdma_containers_get_memlock_unlimited_and_high_nofile_or_a_clear_refusal() {
    require_root();
    node_like_limits();
    // Control: plain runc. The container keeps the spec's nofile 1024 and whatever memlock the
    // runtime had: the limits QP setup and memory registration run into (seed 003).
    let runc = Runner::runc();
    let c = uverbs_bundle();
    let o = runc.run(&c, &unique("rdma-ctl"));
    assert!(o.status.success(), "control: {}", out_of(&o));
    let ctl = seen(&out_of(&o));
    assert_eq!(ctl.nofile, ("1024".into(), "1024".into()));
    assert_ne!(ctl.memlock.0, "unlimited", "control memlock: {ctl:?}");

    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let b = uverbs_bundle();
    let id = unique("rdma-limits");
    if host_can_grant() {
        // A host that can grant them (the VM): the container gets them.
        let o = p.run(&b, &id);
        assert!(o.status.success(), "{}", out_of(&o));
        let s = seen(&out_of(&o));
        assert_eq!(s.memlock, ("unlimited".into(), "unlimited".into()));
        assert_eq!(s.nofile, (NOFILE_WANTED.to_string(), NOFILE_WANTED.to_string()));
        p.delete(&id);
    } else {
        // This machine: root without CAP_SYS_RESOURCE. Default policy: refuse, naming what and why.
        let o = create_with_timeout(&p, &b, &id, Duration::from_secs(30)).expect("create hung");
        assert!(!o.status.success(), "the create must be refused: {}", out_of(&o));
        let line = assert_one_line("limits refusal", &o.stderr);
        assert!(
            line.starts_with(&format!(
                "dataplane-hook: cannot give RDMA container {id} its resource limits: "
            )),
            "{line}"
        );
        for part in expected_unmet_parts() {
            assert!(line.contains(&part), "missing {part:?} in {line}");
        }
        assert!(line.ends_with("or set [rdma] on_unmet_limits = \"warn\")"), "{line}");
        assert!(env
            .log_text()
            .contains(&format!("cannot give RDMA container {id} its resource limits")));
        assert_gone(&p, &env, &id);
    }
}

#[test]
fn warn_policy_gives_rdma_containers_what_the_host_can_and_says_so() {
    require_root();
    node_like_limits();
    let env = ProductEnv::new("[rdma]\non_unmet_limits = \"warn\"\n");
    let p = Runner::product(&env);
    let b = uverbs_bundle();
    let id = unique("rdma-warn");
    let o = p.run(&b, &id);
    assert!(o.status.success(), "warn policy must not refuse: {}", out_of(&o));
    let s = seen(&out_of(&o));
    let m = show(grantable(u64::MAX, libc::RLIMIT_MEMLOCK));
    let n = grantable(NOFILE_WANTED, libc::RLIMIT_NOFILE).to_string();
    assert_eq!(s.memlock, (m.clone(), m), "memlock: the most the host can give");
    assert_eq!(
        s.nofile,
        (n.clone(), n),
        "nofile raised from the spec's 1024 to the most the host can give"
    );
    let warned = String::from_utf8_lossy(&o.stderr).contains(&format!(
        "dataplane-hook: warning: container {id}: RDMA limits not fully granted: "
    ));
    assert_eq!(
        warned,
        !host_can_grant(),
        "a warning exactly when the host cannot grant: {}",
        out_of(&o)
    );
    p.delete(&id);
}

/// `runc run` with this process's soft limits lowered (memlock 64 KiB, nofile 512) for runc and
/// so for the container's init, hard limits unchanged.
fn run_with_low_soft_limits(r: &Runner, b: &TestBundle, id: &str) -> Output {
    let mut c = r.command();
    c.args(["run", "--bundle"]).arg(b.path()).arg(id).stdin(Stdio::null());
    // SAFETY: setrlimit is async-signal-safe; lowering soft limits needs no privilege.
    unsafe {
        c.pre_exec(|| {
            for (res, soft) in [(libc::RLIMIT_MEMLOCK, 64u64 << 10), (libc::RLIMIT_NOFILE, 512)] {
                let mut l = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
                libc::getrlimit(res, &mut l);
                l.rlim_cur = soft.min(l.rlim_max);
                if libc::setrlimit(res, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c.output().unwrap()
}

#[test]
fn hooks_d_path_raises_the_init_limits_and_reports_what_the_spec_pins() {
    require_root();
    node_like_limits();
    // A spec that pins RLIMIT_NOFILE (runc applies it after createRuntime hooks): the hook
    // cannot fix it and, by default, refuses with the reason.
    let env = ProductEnv::new("");
    let runc = Runner::runc();
    let mut b = uverbs_bundle();
    b.with_hooks_d(&env);
    let id = unique("rdma-hooksd-pinned");
    let o = create_with_timeout(&runc, &b, &id, Duration::from_secs(30)).expect("create hung");
    assert!(!o.status.success(), "{}", out_of(&o));
    let msg =
        product_error(&o.stderr).unwrap_or_else(|| panic!("no product error: {}", out_of(&o)));
    assert!(
        msg.starts_with(&format!(
            "dataplane-hook: cannot give RDMA container {id} its resource limits: "
        )),
        "{msg}"
    );
    assert!(
        msg.contains("RLIMIT_NOFILE 1048576: the spec's process.rlimits sets 1024:1024, which the runtime applies after hooks"),
        "{msg}"
    );
    assert_gone(&runc, &env, &id);

    // No rlimits in the spec, warn policy: the hook raises the init's soft limits (and hard
    // ones where it may). Control: the same container without the hook keeps the low limits.
    let mut ctl = uverbs_bundle();
    ctl.spec["process"].as_object_mut().unwrap().remove("rlimits");
    ctl.save();
    let o = run_with_low_soft_limits(&runc, &ctl, &unique("rdma-hooksd-ctl"));
    assert!(o.status.success(), "{}", out_of(&o));
    let c = seen(&out_of(&o));
    // (runc, a Go program, lifts its own nofile soft limit to the hard one, so only memlock
    // shows the difference here.)
    assert_eq!(c.memlock.0, "65536", "control keeps the low memlock soft limit: {c:?}");

    let env = ProductEnv::new("[rdma]\non_unmet_limits = \"warn\"\n");
    let mut b = uverbs_bundle();
    b.spec["process"].as_object_mut().unwrap().remove("rlimits");
    b.with_hooks_d(&env);
    let id = unique("rdma-hooksd");
    let o = run_with_low_soft_limits(&runc, &b, &id);
    assert!(o.status.success(), "{}", out_of(&o));
    let s = seen(&out_of(&o));
    let m = show(grantable(u64::MAX, libc::RLIMIT_MEMLOCK));
    let n = grantable(NOFILE_WANTED, libc::RLIMIT_NOFILE).to_string();
    assert_eq!(s.memlock.0, m, "memlock soft raised by prlimit on the init: {s:?}");
    assert_eq!(s.nofile.0, n, "nofile soft raised by prlimit on the init: {s:?}");
    if !host_can_grant() {
        assert!(
            env.log_text().contains("RDMA limits not fully granted"),
            "warning logged: {}",
            env.log_text()
        );
    }
    assert!(env.records().is_empty(), "poststop released the record: {:?}", env.records());
}

// ---------------------------------------------------------------------------------------------
// GID index on Soft-RoCE (VM)

struct Rxe {
    netns: String,
    /// rxe1: its netdev lives in `netns`.
    pod_dev: String,
    /// rxe0: its netdev lives in the host's namespace.
    host_dev: String,
}

fn rxe() -> Rxe {
    node_like_limits();
    let var = |k: &str| {
        std::env::var(k)
            .unwrap_or_else(|_| panic!("{k} unset: run through integration/vm/payloads/rdma"))
    };
    Rxe {
        netns: var("DPH_RXE_NETNS"),
        pod_dev: var("DPH_RXE_POD_DEV"),
        host_dev: var("DPH_RXE_HOST_DEV"),
    }
}

/// (uverbs name, major, minor) of verbs device `dev`.
fn uverbs_of(dev: &str) -> (String, i64, i64) {
    for e in std::fs::read_dir("/sys/class/infiniband_verbs").unwrap().flatten() {
        let p = e.path();
        if std::fs::read_to_string(p.join("ibdev")).map(|s| s.trim() == dev).unwrap_or(false) {
            let d = std::fs::read_to_string(p.join("dev")).unwrap();
            let (a, b) = d.trim().split_once(':').unwrap();
            return (e.file_name().into_string().unwrap(), a.parse().unwrap(), b.parse().unwrap());
        }
    }
    panic!("no uverbs node for {dev}");
}

fn gid_slots(dev: &str) -> Vec<(u32, String, Option<String>, Option<String>)> {
    let p = Path::new("/sys/class/infiniband").join(dev).join("ports/1");
    let read =
        |q: std::path::PathBuf| std::fs::read_to_string(q).ok().map(|s| s.trim().to_string());
    let mut v: Vec<(u32, String, Option<String>, Option<String>)> =
        std::fs::read_dir(p.join("gids"))
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .map(|i| {
                (
                    i,
                    read(p.join("gids").join(i.to_string())).unwrap_or_default(),
                    read(p.join("gid_attrs/types").join(i.to_string())),
                    read(p.join("gid_attrs/ndevs").join(i.to_string())),
                )
            })
            .collect();
    v.sort();
    v
}

/// Index of the RoCE v2 GID `::ffff:a.b.c.d` on `dev`.
fn ipv4_gid_index(dev: &str, ip: [u8; 4]) -> u32 {
    let want = format!(
        "0000:0000:0000:0000:0000:ffff:{:02x}{:02x}:{:02x}{:02x}",
        ip[0], ip[1], ip[2], ip[3]
    );
    gid_slots(dev)
        .into_iter()
        .find(|(_, g, t, _)| *g == want && t.as_deref() == Some("RoCE v2"))
        .unwrap_or_else(|| panic!("no RoCE v2 GID {want} on {dev}: {:?}", gid_slots(dev)))
        .0
}

/// The usable indexes of `dev` whose netdev is `ndev` (RoCE v2, non-zero).
fn valid_on(dev: &str, ndev: &str) -> Vec<u32> {
    gid_slots(dev)
        .into_iter()
        .filter(|(_, g, t, n)| {
            !g.chars().all(|c| c == '0' || c == ':')
                && t.as_deref() == Some("RoCE v2")
                && n.as_deref() == Some(ndev)
        })
        .map(|x| x.0)
        .collect()
}

fn first_empty(dev: &str) -> u32 {
    gid_slots(dev)
        .into_iter()
        .find(|(_, g, _, _)| g.chars().all(|c| c == '0' || c == ':'))
        .unwrap()
        .0
}

fn drop_cap(v: &mut Value, cap: &str) {
    for set in ["bounding", "effective", "permitted"] {
        if let Some(a) = v["process"]["capabilities"][set].as_array_mut() {
            a.retain(|c| c != cap);
        }
    }
}

/// A container in network namespace `netns` (None: the host's) with `dev`'s uverbs node, libibverbs' config, no
/// CAP_IPC_LOCK (pods do not get it by default: memlock then applies to verbs memory).
fn rdma_bundle(netns: Option<&str>, dev: &str, script: &str) -> TestBundle {
    let mut b = TestBundle::new(&["sh", "-c", script]);
    let (name, major, minor) = uverbs_of(dev);
    b.spec["linux"]["devices"] = json!([{"path": format!("/dev/infiniband/{name}"), "type": "c", "major": major, "minor": minor, "fileMode": 438, "uid": 0, "gid": 0}]);
    allow_device(&mut b.spec, major, minor);
    let nss = b.spec["linux"]["namespaces"].as_array_mut().unwrap();
    match netns {
        Some(path) => {
            nss.iter_mut().filter(|n| n["type"] == "network").for_each(|n| n["path"] = json!(path))
        }
        None => nss.retain(|n| n["type"] != "network"),
    }
    b.spec["process"].as_object_mut().unwrap().remove("rlimits");
    drop_cap(&mut b.spec, "CAP_IPC_LOCK");
    b.save();
    b.bind(Path::new("/etc/libibverbs.d"), "/etc/libibverbs.d");
    b
}

/// ibv_rc_pingpong server and client on `dev` inside one container, GID index from $IDX
/// (or MC_GID_INDEX), `extra` options for both.
fn pingpong(dev: &str, extra: &str) -> String {
    format!(
        "{SHOW_LIMITS}; IDX=${{IDX:-$MC_GID_INDEX}}; timeout 120 ibv_rc_pingpong -d {dev} -g $IDX -n 3 {extra} & sleep 2; timeout 100 ibv_rc_pingpong -d {dev} -g $IDX -n 3 {extra} 127.0.0.1; c=$?; wait $!; s=$?; echo \"PINGPONG client=$c server=$s\"; [ $c = 0 ] && [ $s = 0 ]"
    )
}

fn pingpong_ok(out: &str) -> bool {
    out.contains("PINGPONG client=0 server=0") && out.matches("bytes in").count() >= 2
}

const SHOW_ENV: &str = "echo \"GIDENV MC=${MC_GID_INDEX:-unset} NCCL=${NCCL_IB_GID_INDEX:-unset}\"";

#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_auto_sets_the_ipv4_roce_v2_index_and_qps_connect_on_it() {
    let r = rxe();
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    // In the pod's namespace: the IPv4 RoCE v2 GID of the pod's own netdev (rxe1 on dph-vc).
    let want = ipv4_gid_index(&r.pod_dev, [10, 77, 0, 2]);
    let mut b = rdma_bundle(Some(&r.netns), &r.pod_dev, SHOW_ENV);
    b.annotate(ANN_GID, "auto");
    let o = p.run(&b, &unique("rxe-auto-pod"));
    let out = out_of(&o);
    assert!(
        o.status.success() && out.contains(&format!("GIDENV MC={want} NCCL={want}")),
        "MC_GID_INDEX and NCCL_IB_GID_INDEX set to {want}: {out}"
    );
    // In the host's namespace on rxe0, where rxe carries traffic: RC QPs connect on the choice.
    let want = ipv4_gid_index(&r.host_dev, [10, 77, 0, 1]);
    let mut b = rdma_bundle(None, &r.host_dev, &pingpong(&r.host_dev, ""));
    b.annotate(ANN_GID, "auto");
    let o = p.run(&b, &unique("rxe-auto"));
    let out = out_of(&o);
    assert!(
        out.contains(&format!("GIDENV MC={want} NCCL={want}")),
        "MC_GID_INDEX and NCCL_IB_GID_INDEX set to {want}: {out}"
    );
    assert!(
        o.status.success() && pingpong_ok(&out),
        "RC QPs must connect on the chosen index: {out}"
    );
}

#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_an_empty_gid_index_fails_qp_setup_without_the_product_and_the_create_with_it() {
    // Seed 003: MC_GID_INDEX pointing at a slot that holds no GID.
    let r = rxe();
    let bad = first_empty(&r.host_dev);
    let runc = Runner::runc();
    let mut c = rdma_bundle(None, &r.host_dev, &pingpong(&r.host_dev, ""));
    c.env(&format!("MC_GID_INDEX={bad}"));
    let o = runc.run(&c, &unique("rxe-bad-ctl"));
    let out = out_of(&o);
    assert!(!o.status.success() && !pingpong_ok(&out), "control must fail: {out}");
    assert!(out.contains("Failed to modify QP to RTR"), "control fails deep in QP setup: {out}");

    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    for (netns, dev, ndev) in
        [(None, &r.host_dev, "dph-vh"), (Some(r.netns.as_str()), &r.pod_dev, "dph-vc")]
    {
        let bad = first_empty(dev);
        let mut b = rdma_bundle(netns, dev, &pingpong(dev, ""));
        b.env(&format!("MC_GID_INDEX={bad}"));
        let id = unique("rxe-bad");
        let o = create_with_timeout(&p, &b, &id, Duration::from_secs(120)).expect("create hung");
        assert!(!o.status.success());
        let line = assert_one_line("bad index", &o.stderr);
        let valid: Vec<String> = valid_on(dev, ndev).iter().map(u32::to_string).collect();
        assert!(
            line.starts_with(&format!(
                "dataplane-hook: cannot use RDMA GID index {bad} (MC_GID_INDEX={bad} in its environment) for container {id}: on {dev} port 1 index {bad} is empty; valid indexes: {}",
                valid.join(", ")
            )),
            "{line}"
        );
        assert_gone(&p, &env, &id);
    }
}

#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_a_gid_of_a_netdev_outside_the_containers_namespace_is_refused() {
    let r = rxe();
    let host_v4 = ipv4_gid_index(&r.host_dev, [10, 77, 0, 1]);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    // A pod given the host's device (its netdev dph-vh is not in the pod) and its IPv4 index.
    let mut b = rdma_bundle(Some(&r.netns), &r.host_dev, "true");
    b.env(&format!("NCCL_IB_GID_INDEX={host_v4}"));
    let id = unique("rxe-outside");
    let o = create_with_timeout(&p, &b, &id, Duration::from_secs(120)).expect("create hung");
    let line = assert_one_line("outside netns", &o.stderr);
    assert_eq!(
        line,
        format!(
            "dataplane-hook: cannot use RDMA GID index {host_v4} (NCCL_IB_GID_INDEX={host_v4} in its environment) for container {id}: on {} port 1 index {host_v4} belongs to dph-vh, which is not in the container's network namespace; valid indexes: none (the container's network namespace has: dph-vc, lo) (set NCCL_IB_GID_INDEX to a valid index or -1, or remove it and use dataplane-hook.io/rdma-gid-index: auto)",
            r.host_dev
        )
    );
    assert_gone(&p, &env, &id);
    // auto on that device: nothing usable in the pod.
    let mut b = rdma_bundle(Some(&r.netns), &r.host_dev, "true");
    b.annotate(ANN_GID, "auto");
    let id = unique("rxe-outside-auto");
    let o = create_with_timeout(&p, &b, &id, Duration::from_secs(120)).expect("create hung");
    let line = assert_one_line("outside netns auto", &o.stderr);
    assert!(line.starts_with(&format!("dataplane-hook: cannot choose an RDMA GID index for container {id}: {} has no usable GID", r.host_dev)), "{line}");
    assert_gone(&p, &env, &id);
}

#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_memlock_unlimited_lets_a_16mib_memory_region_register() {
    // Without CAP_IPC_LOCK, pinned verbs memory counts against RLIMIT_MEMLOCK (8 MiB here, as
    // under a systemd-started container runtime).
    let r = rxe();
    let idx = ipv4_gid_index(&r.host_dev, [10, 77, 0, 1]);
    let script = format!("IDX={idx}; {}", pingpong(&r.host_dev, "-s 16777216"));
    let runc = Runner::runc();
    let c = rdma_bundle(None, &r.host_dev, &script);
    let o = runc.run(&c, &unique("rxe-mr-ctl"));
    let out = out_of(&o);
    assert_eq!(seen(&out).memlock, ("8388608".into(), "8388608".into()), "{out}");
    assert!(
        !o.status.success() && out.contains("Couldn't register MR"),
        "control: a 16 MiB MR must not register under 8 MiB memlock: {out}"
    );

    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let b = rdma_bundle(None, &r.host_dev, &script);
    let o = p.run(&b, &unique("rxe-mr"));
    let out = out_of(&o);
    assert_eq!(seen(&out).memlock, ("unlimited".into(), "unlimited".into()), "{out}");
    assert!(
        o.status.success() && pingpong_ok(&out),
        "16 MiB MRs register and RC QPs connect: {out}"
    );
}

#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_hooks_d_path_checks_the_index_in_the_inits_namespace() {
    let r = rxe();
    let bad = first_empty(&r.pod_dev);
    let env = ProductEnv::new("");
    let runc = Runner::runc();
    let mut b = rdma_bundle(Some(&r.netns), &r.pod_dev, SHOW_ENV);
    b.env(&format!("MC_GID_INDEX={bad}"));
    b.with_hooks_d(&env);
    let id = unique("rxe-hooksd-bad");
    let o = create_with_timeout(&runc, &b, &id, Duration::from_secs(120)).expect("create hung");
    assert!(!o.status.success());
    let msg = product_error(&o.stderr).unwrap_or_else(|| panic!("{}", out_of(&o)));
    assert!(
        msg.contains(&format!("on {} port 1 index {bad} is empty; valid indexes:", r.pod_dev)),
        "{msg}"
    );
    assert_gone(&runc, &env, &id);

    // The host's IPv4 index in the pod: its netdev is not in the init's namespace.
    let host_v4 = ipv4_gid_index(&r.host_dev, [10, 77, 0, 1]);
    let mut b = rdma_bundle(Some(&r.netns), &r.host_dev, SHOW_ENV);
    b.env(&format!("MC_GID_INDEX={host_v4}"));
    b.with_hooks_d(&env);
    let id = unique("rxe-hooksd-outside");
    let o = create_with_timeout(&runc, &b, &id, Duration::from_secs(120)).expect("create hung");
    assert!(!o.status.success());
    let msg = product_error(&o.stderr).unwrap_or_else(|| panic!("{}", out_of(&o)));
    assert!(
        msg.contains("belongs to dph-vh, which is not in the container's network namespace"),
        "{msg}"
    );
    assert_gone(&runc, &env, &id);

    // A valid index passes, and auto logs what a hook cannot put in the environment.
    let good = ipv4_gid_index(&r.pod_dev, [10, 77, 0, 2]);
    let mut b = rdma_bundle(Some(&r.netns), &r.pod_dev, SHOW_ENV);
    b.env(&format!("MC_GID_INDEX={good}"));
    b.annotate(ANN_GID, "auto");
    b.with_hooks_d(&env);
    let o = runc.run(&b, &unique("rxe-hooksd"));
    let out = out_of(&o);
    assert!(o.status.success() && out.contains(&format!("GIDENV MC={good} NCCL=unset")), "{out}");
    assert!(
        env.log_text().contains(&format!("a hook cannot set NCCL_IB_GID_INDEX={good}")),
        "{}",
        env.log_text()
    );
}

/// Prints the rxe GID tables (the VM payload keeps them as the recorded fixture).
#[test]
#[ignore = "needs Soft-RoCE: run integration/vm/payloads/rdma"]
fn rxe_dump_gid_tables() {
    let r = rxe();
    for dev in [&r.host_dev, &r.pod_dev] {
        for (i, g, t, n) in
            gid_slots(dev).into_iter().filter(|x| !x.1.chars().all(|c| c == '0' || c == ':'))
        {
            println!("gid {dev} 1 {i} {g} {} {}", t.unwrap_or("-".into()), n.unwrap_or("-".into()));
        }
        println!("table {dev} {}", gid_slots(dev).len());
    }
    let _ = Command::new("rdma").args(["link", "show"]).status();
}
