//! Issue 4 (G9) end to end through containerd's CRI, the way kubelet drives it: a private
//! containerd (own root, state, socket; tests/harness/containerd.rs) configured by
//! `dataplane-hook configure`, a CRI v1 client, and a pod whose RuntimeClass handler is
//! `dataplane`. Every test runs twice (issue 14): on the system's containerd 1.6 and on
//! Debian 13's 1.7.24 (scripts/containerd17.sh), each named `..._on_containerd_1_6`/`_1_7`.
//!
//! The pod asks for hugepages and a DPDK runtime dir in its annotations (kubelet also passes the
//! hugepage limit): the container gets its kernel reservation and private hugetlbfs and runs
//! dpdk-testpmd in it; the pod sandbox (pause) container is not touched; stopping and removing
//! the pod leaves the pool at its baseline. The control is the same pod on containerd's default
//! `runc` handler: the annotations do nothing and DPDK finds no hugepages.
//!
//! Both handlers run the harness's runtime and cgroup driver (`DPH_RUNTIME`,
//! `DPH_SYSTEMD_CGROUP`): the control handler `runc` gets `BinaryName` = that runtime (when it is
//! not runc) and `SystemdCgroup = true`; `configure` carries SystemdCgroup over to `dataplane`,
//! whose dataplane-runtime execs the runtime named in the product config. With the systemd driver
//! the pods' cgroup parent is a slice, as kubelet's `cgroupDriver: systemd` sends it.
//!
//! No registry is reachable: the harness builds the image (busybox-static as pause, the host's
//! /usr bind-mounted for the app) as an OCI archive and imports it with `ctr images import`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use dataplane_tests::containerd::{Containerd, Version, IMAGE};
use dataplane_tests::dpdk::{testpmd_mp_primary, testpmd_primary, testpmd_secondary, FORWARDING};
use dataplane_tests::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

const NS: &str = "dph-test";

// ---------------------------------------------------------------------------------------------
// The pod, as kubelet would send it.

fn pod_config(
    name: &str,
    annotations: &[(&str, &str)],
    log_dir: &Path,
    cgroup_parent: &str,
) -> cri::PodSandboxConfig {
    let ns = cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    };
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name: name.into(),
            uid: unique("uid"),
            namespace: NS.into(),
            attempt: 0,
        }),
        // Host network (no CNI here): kubelet sends no hostname then.
        log_directory: log_dir.display().to_string(),
        annotations: annotations
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.into(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(ns),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The app: prints its mounts, then runs `dpdk` (host /usr at /usr), with the hugepage limits
/// kubelet sends for `resources.limits.hugepages-2Mi: 64Mi` on a node with 2Mi and 1Gi pages.
fn container_config(dpdk: &[String]) -> cri::ContainerConfig {
    let script = format!("cat /proc/self/mountinfo; echo END-OF-MOUNTS; exec {}", dpdk.join(" "));
    let caps =
        ["IPC_LOCK", "SYS_ADMIN", "SYS_RAWIO", "SYS_NICE"].iter().map(|s| s.to_string()).collect();
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "app".into(), attempt: 0 }),
        image: Some(cri::ImageSpec { image: IMAGE.into(), ..Default::default() }),
        command: vec!["/bin/sh".into(), "-c".into(), script],
        log_path: "app.log".into(),
        mounts: vec![cri::Mount {
            container_path: "/usr".into(),
            host_path: "/usr".into(),
            readonly: true,
            ..Default::default()
        }],
        linux: Some(cri::LinuxContainerConfig {
            resources: Some(cri::LinuxContainerResources {
                hugepage_limits: vec![
                    cri::HugepageLimit { page_size: "2MB".into(), limit: 64 << 20 },
                    cri::HugepageLimit { page_size: "1GB".into(), limit: 0 },
                ],
                ..Default::default()
            }),
            security_context: Some(cri::LinuxContainerSecurityContext {
                capabilities: Some(cri::Capability {
                    add_capabilities: caps,
                    ..Default::default()
                }),
                namespace_options: Some(cri::NamespaceOption {
                    network: cri::NamespaceMode::Node as i32,
                    pid: cri::NamespaceMode::Container as i32,
                    ipc: cri::NamespaceMode::Pod as i32,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// The container's output from its CRI log file (`<time> <stream> <tag> <line>`).
fn cri_log(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(4, ' ').nth(3))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn mount_at<'a>(mountinfo: &'a str, target: &str) -> Option<&'a str> {
    mountinfo.lines().find(|l| l.split(' ').nth(4) == Some(target))
}

struct Pod {
    id: String,
    container: String,
    log: PathBuf,
}

async fn run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    c: &Containerd,
    name: &str,
    handler: &str,
    annotations: &[(&str, &str)],
    dpdk: &[String],
) -> Pod {
    let pod = create_pod(rt, c, name, handler, annotations, dpdk).await;
    rt.start_container(cri::StartContainerRequest { container_id: pod.container.clone() })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\nhook log: {}", c.env.log_text()));
    pod
}

/// RunPodSandbox and CreateContainer (containerd runs the runtime, and so the wrapper and the
/// hook, only at StartContainer).
async fn create_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    c: &Containerd,
    name: &str,
    handler: &str,
    annotations: &[(&str, &str)],
    dpdk: &[String],
) -> Pod {
    let log_dir = c.dir.join("pods").join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let config = pod_config(name, annotations, &log_dir, &c.cgroup_parent);
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })
        .await
        .unwrap_or_else(|e| {
            panic!(
                "RunPodSandbox({handler:?}): {e}\ncontainerd: {}\nhook log: {}",
                c.log(),
                c.env.log_text()
            )
        })
        .into_inner()
        .pod_sandbox_id;
    let container = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container_config(dpdk)),
            sandbox_config: Some(config),
        })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\nhook log: {}", c.env.log_text()))
        .into_inner()
        .container_id;
    Pod { id, container, log: log_dir.join("app.log") }
}

async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, pod: &Pod) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() })
        .await
        .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.id.clone() })
        .await
        .expect("RemovePodSandbox");
}

async fn wait_log(pod: &Pod, what: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cri_log(&pod.log).contains(what) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn container_state(rt: &mut RuntimeServiceClient<Channel>, id: &str) -> i32 {
    let s = rt
        .container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .unwrap()
        .into_inner();
    s.status.map(|s| s.state).unwrap_or(-1)
}

fn hooks_of(spec: &Value) -> Vec<String> {
    spec["hooks"]
        .as_object()
        .map(|h| {
            h.values()
                .flat_map(|l| l.as_array().cloned().unwrap_or_default())
                .filter_map(|x| x["path"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn cri_pod_with_runtime_class_dataplane_gets_its_hugepages_and_the_sandbox_is_untouched_on_containerd_1_6(
) {
    pod_with_runtime_class_dataplane(Version::V16);
}

#[test]
fn cri_pod_with_runtime_class_dataplane_gets_its_hugepages_and_the_sandbox_is_untouched_on_containerd_1_7(
) {
    pod_with_runtime_class_dataplane(Version::V17);
}

fn pod_with_runtime_class_dataplane(version: Version) {
    let t0 = Instant::now();
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let (ctd, said) = Containerd::start(&env, version, None);
    assert!(
        said.contains(&format!("containerd {}", version.prefix()))
            || said.contains(&format!(" {}", version.prefix())),
        "configure saw containerd {version:?}: {said}"
    );
    assert!(
        said.contains("carried over from runtime `runc`: Root = "),
        "configure carries runc's options: {said}"
    );
    let carried =
        said.lines().find(|l| l.contains("carried over from runtime")).unwrap_or_default();
    if systemd_cgroup() {
        assert!(
            carried.contains("SystemdCgroup = true"),
            "configure carries the cgroup driver: {said}"
        );
    }
    assert!(
        !carried.contains("BinaryName"),
        "the control's BinaryName is not carried over: {said}"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = ctd.ready().await;
        let t_up = t0.elapsed();
        assert_configured_handler_is_loaded(&ctd, &ch).await;
        let mut rt = RuntimeServiceClient::new(ch);
        let ann = [("dataplane-hook.io/hugepages-2Mi", "64Mi"), ("dataplane-hook.io/dpdk-runtime-dir", "/var/run/dpdk")];

        // Control: the same pod on containerd's default handler.
        let t_ctl = Instant::now();
        let ctl = run_pod(&mut rt, &ctd, "dph-control", "", &ann, &testpmd_primary(&[])).await;
        assert!(wait_log(&ctl, "END-OF-MOUNTS", Duration::from_secs(20)).await, "control never started: {}", cri_log(&ctl.log));
        let deadline = Instant::now() + Duration::from_secs(30);
        while container_state(&mut rt, &ctl.container).await != cri::ContainerState::ContainerExited as i32 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let out = cri_log(&ctl.log);
        assert!(mount_at(&out, "/dev/hugepages").is_none(), "control: no hugetlbfs: {out}");
        assert!(!out.contains(FORWARDING), "control: DPDK must not find hugepages: {out}");
        assert_eq!(container_state(&mut rt, &ctl.container).await, cri::ContainerState::ContainerExited as i32, "control: testpmd gave up: {out}");
        assert_eq!(counters(), pool.baseline, "control: nothing reserved");
        assert!(env.records().is_empty());
        remove_pod(&mut rt, &ctl).await;
        let t_ctl = t_ctl.elapsed();

        // The product: RuntimeClass handler `dataplane`.
        let t_pod = Instant::now();
        let pod = run_pod(&mut rt, &ctd, "dph-pod", "dataplane", &ann, &testpmd_primary(&[])).await;
        assert!(
            wait_log(&pod, FORWARDING, Duration::from_secs(40)).await,
            "testpmd never forwarded in the pod: {}\nhook log: {}",
            cri_log(&pod.log),
            env.log_text()
        );
        let t_fwd = t_pod.elapsed();
        let out = cri_log(&pod.log);
        let huge = mount_at(&out, "/dev/hugepages").unwrap_or_else(|| panic!("no private hugetlbfs: {out}"));
        assert!(huge.contains(" - hugetlbfs "), "{huge}");
        assert!(mount_at(&out, "/var/run/dpdk").is_some_and(|l| l.contains(" - tmpfs ")), "private DPDK runtime dir: {out}");
        let c = counters();
        assert_eq!(c.reserved + (c.total - c.free), 32, "64Mi reserved (or in use by DPDK): {c:?}");
        assert_eq!(container_state(&mut rt, &pod.container).await, cri::ContainerState::ContainerRunning as i32);

        // The app container went through the hook; the sandbox passed through untouched even
        // though it carries the same pod annotations.
        let records = env.records();
        assert_eq!(records.len(), 1, "{records:?}");
        assert!(records[0].starts_with(&pod.container), "record {records:?} is the app's ({})", pod.container);
        let hook = hook_bin().canonicalize().unwrap().display().to_string();
        let app = ctd.spec(&pod.container);
        assert_eq!(app["annotations"]["dataplane-hook.io/hugepages-2Mi"], "64Mi", "pod_annotations passed the pod's annotation");
        assert!(hooks_of(&app).contains(&hook), "the wrapper injected the hook: {:?}", app["hooks"]);
        let sandbox = ctd.spec(&pod.id);
        assert_eq!(sandbox["annotations"]["io.kubernetes.cri.container-type"], "sandbox");
        assert_eq!(sandbox["annotations"]["dataplane-hook.io/hugepages-2Mi"], "64Mi", "the sandbox saw the request...");
        assert!(!hooks_of(&sandbox).contains(&hook), "...and was not touched: {:?}", sandbox["hooks"]);
        assert!(records.iter().all(|r| !r.starts_with(&pod.id)));

        let t_rm = Instant::now();
        remove_pod(&mut rt, &pod).await;
        pool.assert_baseline("after StopPodSandbox/RemovePodSandbox");
        assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
        eprintln!(
            "cri e2e ({version:?}): containerd up {:.1}s, control pod {:.1}s, dataplane pod to forwarding {:.1}s, stop+remove {:.1}s, total {:.1}s",
            t_up.as_secs_f64(),
            t_ctl.as_secs_f64(),
            t_fwd.as_secs_f64(),
            t_rm.elapsed().as_secs_f64(),
            t0.elapsed().as_secs_f64()
        );
    });
    drop(ctd);
}

/// G2 through Kubernetes: a DPDK primary and two secondaries in three pods of one namespace,
/// one `dataplane-hook.io/dpdk-group`. The secondaries attach to the primary in the other pod
/// and forward (without the group they share neither memory nor a PID namespace; the control
/// for the PID collision itself is tests/groups.rs), the group holds one reservation, and the
/// last pod removed takes the group with it.
/// `configure` on this containerd's config as it really loads it: the main config imports the
/// drop-in written next to it, containerd started with it, and its CRI runs with the handler
/// `dataplane` (the wrapper as BinaryName, pod annotations passed) beside the user's `runc`.
async fn assert_configured_handler_is_loaded(ctd: &Containerd, ch: &Channel) {
    let main = std::fs::read_to_string(ctd.config()).unwrap();
    let dropin = ctd.dir.join("conf.d/dataplane.toml");
    assert!(
        main.contains(&format!("imports = [\"{}\"]", dropin.display())),
        "configure added the drop-in's import: {main}"
    );
    assert!(dropin.is_file(), "configure wrote {}", dropin.display());
    let cfg = ctd.cri_config(ch).await;
    let runtimes = &cfg["containerd"]["runtimes"];
    let dp = &runtimes["dataplane"];
    assert_eq!(
        dp["runtimeType"], "io.containerd.runc.v2",
        "{:?} runs with: {runtimes}",
        ctd.version
    );
    assert_eq!(
        dp["options"]["BinaryName"].as_str().map(|b| PathBuf::from(b).canonicalize().unwrap()),
        Some(runtime_bin().canonicalize().unwrap()),
        "{runtimes}"
    );
    assert_eq!(dp["PodAnnotations"], serde_json::json!(["dataplane-hook.io/*"]), "{runtimes}");
    assert!(runtimes["runc"].is_object(), "the user's runc handler survived: {runtimes}");
    assert_eq!(
        cfg["sandboxImage"],
        dataplane_tests::containerd::IMAGE,
        "the user's CRI settings survived: {cfg}"
    );
}

/// The product's refusals reach the CRI caller (what kubelet turns into the pod's event): a
/// reservation the node cannot meet (the hook's, at createRuntime) and a mistyped annotation
/// (the wrapper's, before runc) each fail StartContainer with the product's one line in the
/// error, take no pages, leave no record, and the pod is removed as usual.
#[test]
fn cri_refusals_reach_the_cri_caller_and_leave_nothing_on_containerd_1_6() {
    refusals_reach_the_cri_caller(Version::V16);
}

#[test]
fn cri_refusals_reach_the_cri_caller_and_leave_nothing_on_containerd_1_7() {
    refusals_reach_the_cri_caller(Version::V17);
}

/// (pod name, its annotations, what the product's line says).
type Refusal<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);

fn refusals_reach_the_cri_caller(version: Version) {
    let pool = PoolGuard::new(16);
    let env = ProductEnv::new("");
    let (ctd, _) = Containerd::start(&env, version, None);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut rt = RuntimeServiceClient::new(ctd.ready().await);
        let cases: [Refusal; 2] = [
            (
                "dph-too-big",
                &[("dataplane-hook.io/hugepages-2Mi", "256Mi")],
                "dataplane-hook: cannot reserve 256Mi of 2Mi hugepages for container",
            ),
            (
                "dph-typo",
                &[("dataplane-hook.io/hugepage-2Mi", "64Mi")],
                "dataplane-hook.io/hugepage-2Mi",
            ),
        ];
        for (name, ann, want) in cases {
            let pod =
                create_pod(&mut rt, &ctd, name, "dataplane", ann, &testpmd_primary(&[])).await;
            let err = rt
                .start_container(cri::StartContainerRequest { container_id: pod.container.clone() })
                .await
                .expect_err("the product refuses the container");
            let line = util::product_error(err.message().as_bytes())
                .unwrap_or_else(|| panic!("{name}: no product line in the CRI error: {err:?}"));
            // containerd appends the gRPC code it mapped the shim's error to.
            let line = line.strip_suffix(": unknown").unwrap_or(&line).to_string();
            assert!(line.contains(want), "{name}: {line:?} (CRI error: {})", err.message());
            util::assert_spec_form(name, &line);
            assert_ne!(
                container_state(&mut rt, &pod.container).await,
                cri::ContainerState::ContainerRunning as i32
            );
            assert_eq!(counters(), pool.baseline, "{name}: nothing reserved");
            assert!(env.records().is_empty(), "{name}: records {:?}", env.records());
            remove_pod(&mut rt, &pod).await;
            pool.assert_baseline(name);
        }
    });
    drop(ctd);
}

#[test]
fn cri_pods_of_one_dpdk_group_share_memory_across_pods_on_containerd_1_6() {
    pods_of_one_dpdk_group(Version::V16);
}

#[test]
fn cri_pods_of_one_dpdk_group_share_memory_across_pods_on_containerd_1_7() {
    pods_of_one_dpdk_group(Version::V17);
}

fn pods_of_one_dpdk_group(version: Version) {
    let t0 = Instant::now();
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let (ctd, _) = Containerd::start(&env, version, None);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let mut rt = RuntimeServiceClient::new(ctd.ready().await);
        let ann = [
            ("dataplane-hook.io/dpdk-group", "pktgen"),
            ("dataplane-hook.io/hugepages-2Mi", "64Mi"),
        ];
        let primary =
            run_pod(&mut rt, &ctd, "dph-primary", "dataplane", &ann, &testpmd_mp_primary(3, &[]))
                .await;
        assert!(
            wait_log(&primary, FORWARDING, Duration::from_secs(40)).await,
            "primary: {}\nhook log: {}",
            cri_log(&primary.log),
            env.log_text()
        );
        let s1 = run_pod(
            &mut rt,
            &ctd,
            "dph-secondary-1",
            "dataplane",
            &ann,
            &testpmd_secondary(3, 1, &[]),
        )
        .await;
        let s2 = run_pod(
            &mut rt,
            &ctd,
            "dph-secondary-2",
            "dataplane",
            &ann,
            &testpmd_secondary(3, 2, &[]),
        )
        .await;
        for s in [&s1, &s2] {
            assert!(
                wait_log(s, FORWARDING, Duration::from_secs(40)).await,
                "secondary in pod {} never attached: {}\nhook log: {}",
                s.id,
                cri_log(&s.log),
                env.log_text()
            );
        }
        for p in [&primary, &s1, &s2] {
            assert_eq!(
                container_state(&mut rt, &p.container).await,
                cri::ContainerState::ContainerRunning as i32
            );
            let out = cri_log(&p.log);
            assert!(
                mount_at(&out, "/dev/hugepages").is_some_and(|l| l.contains(" - hugetlbfs ")),
                "{out}"
            );
        }
        let c = counters();
        assert_eq!(
            c.reserved + (c.total - c.free),
            32,
            "one 64Mi reservation for the group: {c:?}"
        );
        let st = env.hook(&["status", "--json"]);
        let st: Value = serde_json::from_slice(&st.stdout).unwrap();
        assert_eq!(st["groups"].as_array().map(Vec::len), Some(1), "{st}");
        assert_eq!(
            st["containers"].as_array().map(Vec::len),
            Some(3),
            "three members, no sandbox: {st}"
        );

        for p in [&s2, &s1, &primary] {
            remove_pod(&mut rt, p).await;
        }
        pool.assert_baseline("after the last pod of the group");
        let st: Value = serde_json::from_slice(&env.hook(&["status", "--json"]).stdout).unwrap();
        assert_eq!(
            st["groups"].as_array().map(Vec::len),
            Some(0),
            "group gone with its last member: {st}"
        );
        assert!(env.records().is_empty(), "{:?}", env.records());
    });
    drop(ctd);
    eprintln!("cri group e2e ({version:?}): {:.1}s", t0.elapsed().as_secs_f64());
}

/// The launcher's NRI option (for the NRI suites): containerd 1.7 starts with NRI enabled and
/// listens for plugins on the socket it was given.
#[test]
fn containerd_1_7_started_with_nri_listens_on_the_given_socket() {
    let env = ProductEnv::new("");
    let sock = env.root.join("nri.sock");
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let ch = ctd.connect().await;
        assert!(
            wait_for(Duration::from_secs(10), || std::fs::metadata(&sock)
                .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))),
            "no NRI socket at {}: {}",
            sock.display(),
            ctd.log()
        );
        let cfg = ctd.cri_config(&ch).await;
        assert!(cfg["containerd"]["runtimes"]["dataplane"].is_object(), "{cfg}");
    });
}
