//! Issue 4 (G9) end to end through containerd's CRI, the way kubelet drives it: a private
//! containerd 1.6 (own root, state, socket) configured by `dataplane-hook configure`, a CRI v1
//! client, and a pod whose RuntimeClass handler is `dataplane`.
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
//! No registry is reachable: the image (busybox-static as pause, the host's /usr bind-mounted
//! for the app) is built here as an OCI archive and imported with `ctr images import`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dataplane_tests::dpdk::{testpmd_mp_primary, testpmd_primary, testpmd_secondary, FORWARDING};
use dataplane_tests::*;
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

const IMAGE: &str = "dph.local/dph-test:1";
const NS: &str = "dph-test";

fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The image: an OCI archive built from a rootfs.

fn blob(dir: &Path, bytes: &[u8]) -> (String, usize) {
    let digest = format!("sha256:{:x}", Sha256::digest(bytes));
    std::fs::write(dir.join("blobs/sha256").join(&digest[7..]), bytes).unwrap();
    (digest, bytes.len())
}

/// `dph.local/dph-test:1`: a static busybox at /busybox (the pause process: `busybox sleep`),
/// merged-/usr symlinks so that the host's /usr mounted at /usr gives a shell and DPDK.
fn build_image(work: &Path) -> PathBuf {
    let rootfs = work.join("image-rootfs");
    for d in ["usr", "proc", "sys", "dev", "tmp", "etc", "var/run", "run"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    for (l, t) in
        [("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")]
    {
        std::os::unix::fs::symlink(t, rootfs.join(l)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("busybox")).expect("busybox-static is installed");
    std::fs::set_permissions(rootfs.join("busybox"), std::fs::Permissions::from_mode(0o755))
        .unwrap();
    std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n").unwrap();
    std::fs::write(rootfs.join("etc/group"), "root:x:0:\n").unwrap();

    let layout = work.join("image-layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer_tar = work.join("layer.tar");
    sh(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "--owner=0", "--group=0", "-cf"])
        .arg(&layer_tar)
        .arg("."));
    let layer = std::fs::read(&layer_tar).unwrap();
    let (layer_digest, layer_size) = blob(&layout, &layer);
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/busybox", "sleep", "2147483"], "Env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]}
    });
    let (config_digest, config_size) = blob(&layout, &serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}]
    });
    let (m_digest, m_size) = blob(&layout, &serde_json::to_vec(&manifest).unwrap());
    let index = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": m_digest, "size": m_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "1"}
        }]
    });
    std::fs::write(layout.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(layout.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let archive = work.join("image.tar");
    sh(Command::new("tar").arg("-C").arg(&layout).args(["-cf"]).arg(&archive).args([
        "oci-layout",
        "index.json",
        "blobs",
    ]));
    archive
}

// ---------------------------------------------------------------------------------------------
// A private containerd.

struct Containerd {
    dir: PathBuf,
    child: Option<Child>,
    cgroup_parent: String,
    env: ProductEnv,
}

impl Containerd {
    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    /// Writes containerd's own config (private dirs, runc handler with a private runc root),
    /// runs `dataplane-hook configure --runtime containerd` on it, starts containerd.
    fn start(env: &ProductEnv) -> (Containerd, String) {
        let dir = PathBuf::from(format!("/tmp/{}", unique("dph-containerd")));
        std::fs::create_dir_all(&dir).unwrap();
        let d = dir.display();
        let runc_options = runc_handler_options();
        let config = format!(
            r#"version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = "{d}/containerd.sock.ttrpc"

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{IMAGE}"
    stream_server_address = "127.0.0.1"
    # Root lacks CAP_SYS_RESOURCE here: the pause container's oom_score_adj -998 cannot be set.
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "native"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          Root = "{d}/runc"
{runc_options}    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{d}/cni/bin"
      conf_dir = "{d}/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "{d}/opt"
"#
        );
        std::fs::write(dir.join("config.toml"), &config).unwrap();
        let o = Command::new(hook_bin())
            .env_remove("DATAPLANE_HOOK_CONFIG")
            .arg("--config")
            .arg(&env.config)
            .args(["configure", "--runtime", "containerd", "--containerd-config"])
            .arg(dir.join("config.toml"))
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(o.status.success(), "configure: {}\n{said}", String::from_utf8_lossy(&o.stderr));
        let mut c =
            Containerd { dir, child: None, cgroup_parent: cgroup_parent(), env: env.clone() };
        let log = std::fs::File::create(c.dir.join("containerd.log")).unwrap();
        // The runc shim starts dataplane-runtime without arguments: it finds its config in the
        // environment it inherits from containerd.
        let child = Command::new("containerd")
            .arg("--config")
            .arg(c.config())
            .env("DATAPLANE_HOOK_CONFIG", &env.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        c.child = Some(child);
        (c, said)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    fn ctr(&self, args: &[&str]) -> String {
        sh(Command::new("ctr")
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io"])
            .args(args))
    }

    async fn connect(&self) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.socket().exists() {
                let path = self.socket();
                let ep = Endpoint::try_from("http://[::]:50051").unwrap();
                let ch = ep
                    .connect_with_connector(tower::service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(
                                tokio::net::UnixStream::connect(path).await?,
                            ))
                        }
                    }))
                    .await;
                if let Ok(ch) = ch {
                    let mut rt = RuntimeServiceClient::new(ch.clone());
                    if rt.version(cri::VersionRequest { version: "v1".into() }).await.is_ok() {
                        return ch;
                    }
                }
            }
            assert!(Instant::now() < deadline, "containerd did not come up:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Connected, with the test image imported.
    async fn ready(&self) -> Channel {
        let ch = self.connect().await;
        let archive = build_image(&self.dir);
        self.ctr(&[
            "images",
            "import",
            "--snapshotter",
            "native",
            "--base-name",
            "dph.local/dph-test",
            archive.to_str().unwrap(),
        ]);
        let mut images = ImageServiceClient::new(ch.clone());
        let image = Some(cri::ImageSpec { image: IMAGE.into(), ..Default::default() });
        let st = images
            .image_status(cri::ImageStatusRequest { image, verbose: false })
            .await
            .unwrap()
            .into_inner();
        assert!(st.image.is_some(), "image imported: {}", self.ctr(&["images", "ls"]));
        ch
    }

    /// The bundle config.json containerd's runc shim used for a task.
    fn spec(&self, id: &str) -> Value {
        let p = self
            .dir
            .join("state/io.containerd.runtime.v2.task/k8s.io")
            .join(id)
            .join("config.json");
        serde_json::from_slice(
            &std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
        )
        .unwrap()
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Whatever the test left: containers (runc runs their poststop hooks), shims, containerd,
        // mounts, cgroups, dirs, ledger records of dead containers.
        // The runc shim keeps its containers under <Root>/<namespace>.
        let roots: Vec<PathBuf> = std::fs::read_dir(self.runc_root())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        for root in roots {
            let list = runtime_cmd(&root).args(["list", "-q"]).output();
            if let Ok(o) = list {
                for id in String::from_utf8_lossy(&o.stdout).lines() {
                    let _ = runtime_cmd(&root).args(["delete", "--force", id]).output();
                }
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && c.try_wait().ok().flatten().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
        let sock = self.socket().display().to_string();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
                let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
                if cmdline.contains("containerd-shim") && cmdline.contains(&sock) {
                    if let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() {
                        let _ = nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(pid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                }
            }
        }
        let prefix = self.dir.display().to_string();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut ours: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter(|m| m.starts_with(&prefix))
            .collect();
        ours.reverse();
        for m in ours {
            let _ = Command::new("umount").args(["-l", m]).status();
        }
        let _ = self.env.hook(&["gc"]);
        if systemd_cgroup() {
            // The transient slice systemd made for the pods (their scopes are gone with them).
            let _ = Command::new("systemctl").args(["stop", &self.cgroup_parent]).output();
        }
        for line in std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() > 4 && f.iter().any(|x| x.starts_with("cgroup")) {
                let base = Path::new(f[4]).join(self.cgroup_parent.trim_start_matches('/'));
                remove_cgroup_tree(&base);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The runtime the shims run (`DPH_RUNTIME`) on a shim's root dir, for the cleanup.
fn runtime_cmd(root: &Path) -> Command {
    let mut c = Command::new(oci_runtime());
    c.arg("--root").arg(root);
    if systemd_cgroup() {
        c.arg("--systemd-cgroup");
    }
    c
}

/// Extra runc-shim options of the control handler `runc` for the harness's runtime and cgroup
/// driver (TOML lines; empty for runc with cgroupfs).
fn runc_handler_options() -> String {
    let mut o = String::new();
    if oci_runtime() != "runc" {
        let bin = which(&oci_runtime());
        o.push_str(&format!("          BinaryName = \"{}\"\n", bin.display()));
    }
    if systemd_cgroup() {
        o.push_str("          SystemdCgroup = true\n");
    }
    o
}

/// `name` resolved through PATH (absolute paths as they are).
fn which(name: &str) -> PathBuf {
    if name.contains('/') {
        return PathBuf::from(name);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found in PATH"))
}

/// The pods' cgroup parent as kubelet sends it: a cgroupfs path, or a systemd slice (its name
/// without `-`, which systemd would read as nesting).
fn cgroup_parent() -> String {
    if systemd_cgroup() {
        format!("{}.slice", unique("dphcri").replace('-', "_"))
    } else {
        format!("/{}", unique("dph-cri"))
    }
}

/// rmdir a cgroup directory tree, deepest first (cgroupfs only removes empty groups).
fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

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
    rt.start_container(cri::StartContainerRequest { container_id: container.clone() })
        .await
        .unwrap_or_else(|e| panic!("StartContainer: {e}\nhook log: {}", c.env.log_text()));
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
fn cri_pod_with_runtime_class_dataplane_gets_its_hugepages_and_the_sandbox_is_untouched() {
    let t0 = Instant::now();
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let (ctd, said) = Containerd::start(&env);
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
            "cri e2e: containerd up {:.1}s, control pod {:.1}s, dataplane pod to forwarding {:.1}s, stop+remove {:.1}s, total {:.1}s",
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
#[test]
fn cri_pods_of_one_dpdk_group_share_memory_across_pods() {
    let t0 = Instant::now();
    let pool = PoolGuard::new(128);
    let env = ProductEnv::new("");
    let (ctd, _) = Containerd::start(&env);
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
    eprintln!("cri group e2e: {:.1}s", t0.elapsed().as_secs_f64());
}
