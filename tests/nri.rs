//! Issue 15: `dataplane-hook nri`, the product as an NRI plugin, through CRI against the real
//! containerd 1.7.24 (scripts/containerd17.sh) with NRI enabled on a private socket. Pods run on
//! containerd's default `runc` handler: no dataplane-runtime anywhere, the plugin's adjustment
//! adds the hook.
//!
//! - an opted-in pod gets its private hugetlbfs with pages reserved before start (G1, G4) and
//!   the pool is back at its baseline after stop/remove (G5); the same pod without the plugin
//!   (the control) gets nothing, so the plugin is what made the difference;
//! - a request the pool cannot meet fails with the hook's one-line refusal at the CRI caller;
//! - a DPDK group member is refused with the runtime version needed (G2: never a half-group);
//! - a killed plugin never blocks pod creation, and the plugin waits for a runtime that is not
//!   there yet.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::containerd::{Containerd, Version, IMAGE};
use dataplane_tests::dpdk::{testpmd_primary, FORWARDING};
use dataplane_tests::*;
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::Value;
use tonic::transport::Channel;

const NS: &str = "dph-nri";

/// The plugin, started as an admin would (`dataplane-hook --config C nri --socket S`).
struct Plugin {
    child: Child,
    stderr: PathBuf,
}

impl Plugin {
    fn start(env: &ProductEnv, socket: &Path) -> Plugin {
        let stderr = env.root.join(unique("nri-plugin.stderr"));
        let child = Command::new(hook_bin())
            .arg("--config")
            .arg(&env.config)
            .args(["nri", "--socket"])
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        Plugin { child, stderr }
    }
    fn said(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
    fn wait_registered(&self, ctd: &Containerd, n: usize) {
        assert!(
            wait_for(Duration::from_secs(20), || self
                .said()
                .matches("registered as 10-dataplane-hook")
                .count()
                >= n),
            "plugin did not register: {}\ncontainerd: {}",
            self.said(),
            ctd.log()
        );
    }
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        self.kill();
    }
}

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

/// The app: prints its mounts, then runs `cmd` (host /usr at /usr).
fn container_config(cmd: &[String]) -> cri::ContainerConfig {
    let script = format!("cat /proc/self/mountinfo; echo END-OF-MOUNTS; exec {}", cmd.join(" "));
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
            ..Default::default()
        }),
        ..Default::default()
    }
}

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

/// RunPodSandbox, CreateContainer, StartContainer on the default handler; the first error as text.
async fn try_run_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    c: &Containerd,
    name: &str,
    annotations: &[(&str, &str)],
    cmd: &[String],
) -> (String, Result<Pod, String>) {
    let log_dir = c.dir.join("pods").join(name);
    std::fs::create_dir_all(&log_dir).unwrap();
    let config = pod_config(name, annotations, &log_dir, &c.cgroup_parent);
    let id = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\ncontainerd: {}", c.log()))
        .into_inner()
        .pod_sandbox_id;
    let created = rt
        .create_container(cri::CreateContainerRequest {
            pod_sandbox_id: id.clone(),
            config: Some(container_config(cmd)),
            sandbox_config: Some(config),
        })
        .await;
    let container = match created {
        Ok(r) => r.into_inner().container_id,
        Err(e) => return (id, Err(format!("CreateContainer: {}", e.message()))),
    };
    if let Err(e) =
        rt.start_container(cri::StartContainerRequest { container_id: container.clone() }).await
    {
        return (id, Err(format!("StartContainer: {}", e.message())));
    }
    (id.clone(), Ok(Pod { id, container, log: log_dir.join("app.log") }))
}

async fn remove_pod(rt: &mut RuntimeServiceClient<Channel>, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() })
        .await
        .expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() })
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

fn nri_socket(env: &ProductEnv) -> PathBuf {
    env.root.join("nri.sock")
}

fn with_cri<F: std::future::Future<Output = ()>>(f: impl FnOnce() -> F) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(f());
}

const ANN: &[(&str, &str)] = &[
    ("dataplane-hook.io/hugepages-2Mi", "64Mi"),
    ("dataplane-hook.io/dpdk-runtime-dir", "/var/run/dpdk"),
];

#[test]
fn nri_opted_in_pod_gets_its_private_hugetlbfs_reserved_before_start_and_teardown_restores_the_pool(
) {
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    // The plugin is up before the runtime: it waits for the socket, then registers.
    let plugin = Plugin::start(&env, &sock);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        plugin.said().contains("waiting for"),
        "the plugin waits for the runtime: {}",
        plugin.said()
    );
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    with_cri(|| async {
        let ch = ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        let doctor = String::from_utf8_lossy(&env.hook(&["doctor"]).stdout).into_owned();
        let line = doctor
            .lines()
            .find(|l| l.contains("nri plugin"))
            .unwrap_or_else(|| panic!("doctor checks the plugin: {doctor}"));
        assert!(
            line.starts_with("pass nri plugin: 10-dataplane-hook connected to ")
                && line.contains("containerd"),
            "{line}"
        );
        let mut rt = RuntimeServiceClient::new(ch);

        // Not opted in: the plugin leaves it alone.
        let (id, plain) =
            try_run_pod(&mut rt, &ctd, "dph-plain", &[], &["sleep".into(), "30".into()]).await;
        let plain = plain.unwrap_or_else(|e| panic!("{e}\nplugin: {}", plugin.said()));
        assert!(!hooks_of(&ctd.spec(&plain.container))
            .contains(&hook_bin().canonicalize().unwrap().display().to_string()));
        remove_pod(&mut rt, &id).await;

        let t = Instant::now();
        let (id, pod) = try_run_pod(&mut rt, &ctd, "dph-nri-pod", ANN, &testpmd_primary(&[])).await;
        let pod = pod.unwrap_or_else(|e| {
            panic!("{e}\nplugin: {}\nhook log: {}", plugin.said(), env.log_text())
        });
        assert!(
            wait_log(&pod, FORWARDING, Duration::from_secs(40)).await,
            "testpmd never forwarded: {}\nhook log: {}",
            cri_log(&pod.log),
            env.log_text()
        );
        eprintln!("nri: opted-in pod to forwarding in {:.1}s", t.elapsed().as_secs_f64());
        let out = cri_log(&pod.log);
        let huge = mount_at(&out, "/dev/hugepages")
            .unwrap_or_else(|| panic!("no private hugetlbfs: {out}"));
        assert!(huge.contains(" - hugetlbfs "), "{huge}");
        assert!(
            mount_at(&out, "/var/run/dpdk").is_some_and(|l| l.contains(" - tmpfs ")),
            "private DPDK runtime dir: {out}"
        );
        let c = counters();
        assert_eq!(c.reserved + (c.total - c.free), 32, "64Mi reserved (or in use by DPDK): {c:?}");

        // Through the runtime's default handler: the plugin's adjustment put the hook there.
        let spec = ctd.spec(&pod.container);
        let hook = hook_bin().canonicalize().unwrap().display().to_string();
        assert_eq!(
            spec["annotations"]["dataplane-hook.io/hugepages-2Mi"], "64Mi",
            "copied from the pod"
        );
        assert_eq!(spec["annotations"]["io.dataplane-hook.path"], "nri");
        assert_eq!(
            hooks_of(&spec).iter().filter(|h| **h == hook).count(),
            2,
            "createRuntime + poststop: {:?}",
            spec["hooks"]
        );
        let sandbox = ctd.spec(&pod.id);
        assert!(!hooks_of(&sandbox).contains(&hook), "sandbox untouched: {:?}", sandbox["hooks"]);
        assert_eq!(env.records().len(), 1, "{:?}", env.records());
        let st: Value = serde_json::from_slice(&env.hook(&["status", "--json"]).stdout).unwrap();
        assert_eq!(st["containers"][0]["id"], pod.container.as_str());
        assert_eq!(st["containers"][0]["path"], "nri", "status says which path: {st}");
        // G7: the hook set the container's hugetlb limits to the reservation (also on this
        // hybrid host, where containerd's runc cannot).
        let pid = st["containers"][0]["pid"].as_i64().unwrap() as i32;
        let cg = dataplane_tests::util::HugetlbCgroup::of(pid);
        assert_eq!(cg.read(cg.max), (64u64 << 20).to_string(), "{}", cg.dir.display());
        assert_eq!(cg.read(cg.rsvd), (64u64 << 20).to_string(), "{}", cg.dir.display());

        remove_pod(&mut rt, &id).await;
        pool.assert_baseline("after StopPodSandbox/RemovePodSandbox");
        assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
    });
    drop(ctd);
}

#[test]
fn nri_without_the_plugin_the_same_pod_gets_no_hugetlbfs() {
    // The control for the test above: NRI on, no plugin connected.
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    with_cri(|| async {
        let ch = ctd.ready().await;
        let mut rt = RuntimeServiceClient::new(ch);
        let (id, pod) =
            try_run_pod(&mut rt, &ctd, "dph-ctl", ANN, &["sleep".into(), "30".into()]).await;
        let pod = pod.unwrap();
        assert!(wait_log(&pod, "END-OF-MOUNTS", Duration::from_secs(20)).await);
        assert!(mount_at(&cri_log(&pod.log), "/dev/hugepages").is_none());
        assert_eq!(counters(), pool.baseline);
        assert!(env.records().is_empty());
        remove_pod(&mut rt, &id).await;
    });
    drop(ctd);
}

#[test]
fn nri_a_request_the_pool_cannot_meet_fails_with_the_hooks_one_line_refusal_at_the_cri_caller() {
    let pool = PoolGuard::new(16);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let plugin = Plugin::start(&env, &sock);
    with_cri(|| async {
        let ch = ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        let mut rt = RuntimeServiceClient::new(ch);
        let (id, pod) =
            try_run_pod(&mut rt, &ctd, "dph-big", ANN, &["sleep".into(), "30".into()]).await;
        let err = match pod {
            Ok(_) => panic!("a 64Mi request on a 32Mi pool started\nhook log: {}", env.log_text()),
            Err(e) => e,
        };
        assert!(
            err.contains("dataplane-hook: cannot reserve 64Mi of 2Mi hugepages"),
            "the CRI caller sees the refusal: {err}"
        );
        assert!(err.contains("(free hugepages or lower dataplane-hook.io/hugepages-2Mi)"), "{err}");
        remove_pod(&mut rt, &id).await;
        pool.assert_baseline("after the refused create");
        assert!(env.records().is_empty(), "nothing left: {:?}", env.records());
    });
    drop(ctd);
}

#[test]
fn nri_a_dpdk_group_member_is_refused_with_the_runtime_version_needed() {
    let _pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let plugin = Plugin::start(&env, &sock);
    with_cri(|| async {
        let ch = ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        let mut rt = RuntimeServiceClient::new(ch);
        let ann =
            [("dataplane-hook.io/dpdk-group", "g1"), ("dataplane-hook.io/hugepages-2Mi", "16Mi")];
        let (id, pod) =
            try_run_pod(&mut rt, &ctd, "dph-member", &ann, &["sleep".into(), "30".into()]).await;
        let err = match pod {
            Ok(_) => panic!("a group member started without the group's PID namespace"),
            Err(e) => e,
        };
        assert!(
            err.starts_with("CreateContainer:"),
            "refused at create, before anything is made: {err}"
        );
        assert!(err.contains("dataplane-hook: cannot put container"), "{err}");
        assert!(
            err.contains("in DPDK group g1: containerd 1.7.24"),
            "names the runtime it runs on: {err}"
        );
        assert!(
            err.contains("containerd >= 2.2 or CRI-O >= 1.34"),
            "names the version needed: {err}"
        );
        assert!(!err.contains('\n'), "{err}");
        remove_pod(&mut rt, &id).await;
        assert!(env.records().is_empty());
        assert!(
            !env.state_dir.join("groups").exists()
                || dataplane_tests::util::list_dir(&env.state_dir.join("groups")).is_empty()
        );
    });
    drop(ctd);
}

#[test]
fn nri_a_killed_plugin_never_blocks_pod_creation() {
    let _pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let mut plugin = Plugin::start(&env, &sock);
    with_cri(|| async {
        let ch = ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        plugin.kill();
        let doctor = String::from_utf8_lossy(&env.hook(&["doctor"]).stdout).into_owned();
        assert!(
            doctor
                .lines()
                .any(|l| l.starts_with("warn nri plugin: 10-dataplane-hook is not running")),
            "doctor sees the dead plugin: {doctor}"
        );
        let mut rt = RuntimeServiceClient::new(ch);
        let t = Instant::now();
        let (id, pod) =
            try_run_pod(&mut rt, &ctd, "dph-after-crash", ANN, &["sleep".into(), "30".into()])
                .await;
        let pod = pod.unwrap_or_else(|e| {
            panic!("a dead plugin blocked the pod: {e}\ncontainerd: {}", ctd.log())
        });
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        assert!(wait_log(&pod, "END-OF-MOUNTS", Duration::from_secs(20)).await);
        remove_pod(&mut rt, &id).await;

        // A new plugin process registers again and adjusts again.
        let again = Plugin::start(&env, &sock);
        again.wait_registered(&ctd, 1);
        let (id, pod) = try_run_pod(
            &mut rt,
            &ctd,
            "dph-after-restart",
            &[("dataplane-hook.io/dpdk-runtime-dir", "/run/x")],
            &["sleep".into(), "30".into()],
        )
        .await;
        let pod = pod.unwrap_or_else(|e| panic!("{e}\nplugin: {}", again.said()));
        assert!(wait_log(&pod, "END-OF-MOUNTS", Duration::from_secs(20)).await);
        assert!(
            mount_at(&cri_log(&pod.log), "/run/x").is_some(),
            "adjusted again: {}",
            cri_log(&pod.log)
        );
        remove_pod(&mut rt, &id).await;
    });
    drop(ctd);
}

#[test]
fn nri_prefix_mode_gets_dpdk_file_prefix_in_the_environment_by_adjustment() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let plugin = Plugin::start(&env, &sock);
    with_cri(|| async {
        let ch = ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        let mut rt = RuntimeServiceClient::new(ch);
        let ann = [("dataplane-hook.io/dpdk-file-prefix", "app1")];
        let cmd = ["sh -c 'echo PREFIX=$DPDK_FILE_PREFIX; sleep 30'".to_string()];
        let (id, pod) = try_run_pod(&mut rt, &ctd, "dph-prefix", &ann, &cmd).await;
        let pod = pod.unwrap_or_else(|e| panic!("{e}\nplugin: {}", plugin.said()));
        assert!(
            wait_log(&pod, "PREFIX=app1", Duration::from_secs(20)).await,
            "G3: the container sees its prefix: {}",
            cri_log(&pod.log)
        );
        let spec = ctd.spec(&pod.container);
        assert!(
            spec["process"]["env"].as_array().unwrap().iter().any(|e| e == "DPDK_FILE_PREFIX=app1"),
            "{}",
            spec["process"]["env"]
        );
        remove_pod(&mut rt, &id).await;
        pool.assert_baseline("after remove");
        assert!(env.records().is_empty(), "{:?}", env.records());
    });
    drop(ctd);
}

/// containerd's pid for this private instance (its command line names its config).
fn containerd_pid(ctd: &Containerd) -> Option<i32> {
    let want = ctd.config().display().to_string();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        (cmd.starts_with(&Version::V17.bin_dir()?.join("containerd").display().to_string())
            && cmd.contains(&want))
        .then_some(pid)
    })
}

#[test]
fn nri_the_plugin_registers_again_when_containerd_restarts_and_adjusts_again() {
    let _pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let sock = nri_socket(&env);
    let (ctd, _) = Containerd::start(&env, Version::V17, Some(&sock));
    let plugin = Plugin::start(&env, &sock);
    let mut second: Option<Child> = None;
    with_cri(|| async {
        ctd.ready().await;
        plugin.wait_registered(&ctd, 1);
        // The runtime dies hard and comes back on the same config (as systemd restarts it).
        let pid = containerd_pid(&ctd).expect("containerd runs");
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        assert!(wait_for(Duration::from_secs(10), || containerd_pid(&ctd).is_none()));
        let log = std::fs::File::create(ctd.dir.join("containerd-2.log")).unwrap();
        second = Some(
            Command::new(Version::V17.bin_dir().unwrap().join("containerd"))
                .arg("--config")
                .arg(ctd.config())
                .env("DATAPLANE_HOOK_CONFIG", &env.config)
                .env("PATH", Version::V17.path_env())
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        let ch = ctd.connect().await;
        plugin.wait_registered(&ctd, 2);
        let mut rt = RuntimeServiceClient::new(ch);
        let ann = [("dataplane-hook.io/dpdk-runtime-dir", "/run/x")];
        let (id, pod) =
            try_run_pod(&mut rt, &ctd, "dph-after-restart", &ann, &["sleep".into(), "30".into()])
                .await;
        let pod = pod.unwrap_or_else(|e| panic!("{e}\nplugin: {}", plugin.said()));
        assert!(wait_log(&pod, "END-OF-MOUNTS", Duration::from_secs(20)).await);
        assert!(
            mount_at(&cri_log(&pod.log), "/run/x").is_some(),
            "adjusted after the restart: {}",
            cri_log(&pod.log)
        );
        assert_eq!(ctd.spec(&pod.container)["annotations"]["io.dataplane-hook.path"], "nri");
        remove_pod(&mut rt, &id).await;
    });
    if let Some(mut c) = second {
        let _ = c.kill();
        let _ = c.wait();
    }
    drop(ctd);
}
