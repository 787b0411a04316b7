//! A private containerd for the CRI suites (tests/cri.rs, and NRI's): the system's 1.6 or
//! Debian 13's 1.7.24 (unpacked by scripts/containerd17.sh into a private dir, never over the
//! system's), each with its own root, state, socket and runc root under /tmp, a config written
//! here, and `dataplane-hook configure --runtime containerd` run on it before it starts.
//!
//! No registry is reachable: the image (busybox-static as pause, the host's /usr bind-mounted
//! for the app) is built here as an OCI archive and imported with `ctr images import`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{hook_bin, oci_runtime, systemd_cgroup, unique, ProductEnv};

/// The test image every pod runs (also the sandbox image).
pub const IMAGE: &str = "dph.local/dph-test:1";

/// Which containerd runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// The system's (Debian 12: 1.6.20), from PATH.
    V16,
    /// Debian 13's 1.7.24 from scripts/containerd17.sh's private dir.
    V17,
}

impl Version {
    /// The version string `containerd --version` prints for it (its first two parts).
    pub fn prefix(self) -> &'static str {
        match self {
            Version::V16 => "1.6.",
            Version::V17 => "1.7.",
        }
    }

    /// The directory holding its containerd, containerd-shim-runc-v2 and ctr; `None`: PATH's.
    pub fn bin_dir(self) -> Option<PathBuf> {
        match self {
            Version::V16 => None,
            Version::V17 => Some(containerd17_dir().join("usr/bin")),
        }
    }

    /// PATH for everything that must find this version's binaries first (containerd looks its
    /// shim up in PATH; configure reads the version of the first containerd in PATH).
    pub fn path_env(self) -> std::ffi::OsString {
        let path =
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into());
        match self.bin_dir() {
            None => path,
            Some(d) => {
                let mut dirs = vec![d];
                dirs.extend(std::env::split_paths(&path));
                std::env::join_paths(dirs).expect("PATH entries without ':'")
            }
        }
    }

    fn bin(self, name: &str) -> PathBuf {
        self.bin_dir().map(|d| d.join(name)).unwrap_or_else(|| name.into())
    }
}

/// containerd 1.7's directory: `DPH_CONTAINERD17_DIR` when it holds usr/bin/containerd (the VM
/// payload stages one there), else what scripts/containerd17.sh prints. The script is run once
/// per test process: a no-op when the pinned package is already unpacked, otherwise it
/// downloads and checks it (install-deps.sh runs it first in `make test`).
pub fn containerd17_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        if let Some(d) = std::env::var_os("DPH_CONTAINERD17_DIR").map(PathBuf::from) {
            if d.join("usr/bin/containerd").is_file() {
                return d;
            }
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/containerd17.sh");
        assert!(
            script.is_file(),
            "containerd 1.7 is needed: set DPH_CONTAINERD17_DIR to a dir with usr/bin/containerd, or run from the repository ({} is missing)",
            script.display()
        );
        let mut cmd = Command::new("bash");
        cmd.arg(&script);
        if let Some(d) = std::env::var_os("DPH_CONTAINERD17_DIR") {
            cmd.arg(d);
        }
        let o = cmd.output().unwrap_or_else(|e| panic!("{}: {e}", script.display()));
        assert!(
            o.status.success(),
            "containerd 1.7 is needed (scripts/containerd17.sh): {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let dir = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        assert!(
            dir.join("usr/bin/containerd").is_file(),
            "{} has no usr/bin/containerd",
            dir.display()
        );
        dir
    })
    .clone()
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
pub fn build_image(work: &Path) -> PathBuf {
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

/// A running private containerd; dropping it removes whatever its pods left.
pub struct Containerd {
    pub version: Version,
    /// Root of everything it owns (root, state, socket, runc root, pods' logs).
    pub dir: PathBuf,
    child: Option<Child>,
    /// The pods' cgroup parent, as kubelet would send it for the harness's cgroup driver.
    pub cgroup_parent: String,
    pub env: ProductEnv,
}

/// How to start it.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Enable NRI (containerd 1.7) with its socket here; its plugin dirs are private.
    pub nri_socket: Option<PathBuf>,
    /// TOML appended to containerd's config before `configure` runs on it.
    pub extra_config: String,
    /// Do not run `dataplane-hook configure` (the test runs it itself, e.g. with other flags).
    pub skip_configure: bool,
}

impl Containerd {
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }
    pub fn config(&self) -> PathBuf {
        self.dir.join("config.toml")
    }
    pub fn runc_root(&self) -> PathBuf {
        self.dir.join("runc")
    }

    /// Writes containerd's own config (private dirs, runc handler with a private runc root),
    /// runs `dataplane-hook configure --runtime containerd` on it, starts containerd `version`.
    /// Returns it and configure's stdout. `nri`: enable NRI with its socket at this path.
    pub fn start(env: &ProductEnv, version: Version, nri: Option<&Path>) -> (Containerd, String) {
        let opts = Options { nri_socket: nri.map(Path::to_path_buf), ..Default::default() };
        Containerd::start_with(env, version, &opts)
    }

    pub fn start_with(env: &ProductEnv, version: Version, opts: &Options) -> (Containerd, String) {
        let dir = PathBuf::from(format!("/tmp/{}", unique("dph-containerd")));
        std::fs::create_dir_all(&dir).unwrap();
        let mut config = base_config(&dir);
        if let Some(sock) = &opts.nri_socket {
            assert_eq!(version, Version::V17, "NRI needs containerd 1.7");
            config.push_str(&nri_config(&dir, sock));
        }
        config.push_str(&opts.extra_config);
        std::fs::write(dir.join("config.toml"), &config).unwrap();
        let said = if opts.skip_configure {
            String::new()
        } else {
            let o = configure_cmd(env, version, &dir.join("config.toml")).output().unwrap();
            let said = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                o.status.success(),
                "configure: {}\n{said}",
                String::from_utf8_lossy(&o.stderr)
            );
            said
        };
        let c = Containerd {
            version,
            dir,
            child: None,
            cgroup_parent: cgroup_parent(),
            env: env.clone(),
        };
        (c.spawn(), said)
    }

    /// Starts the daemon on the config as it is now.
    fn spawn(mut self) -> Containerd {
        let log = std::fs::File::create(self.dir.join("containerd.log")).unwrap();
        // The runc shim starts dataplane-runtime without arguments: it finds its config in the
        // environment it inherits from containerd.
        let child = Command::new(self.version.bin("containerd"))
            .arg("--config")
            .arg(self.config())
            .env("DATAPLANE_HOOK_CONFIG", &self.env.config)
            .env("PATH", self.version.path_env())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        self
    }

    /// Whether the daemon process is still there (a config it cannot load makes it exit).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` of this version on this containerd, namespace k8s.io.
    pub fn ctr(&self, args: &[&str]) -> String {
        sh(Command::new(self.version.bin("ctr"))
            .arg("--address")
            .arg(self.socket())
            .args(["-n", "k8s.io"])
            .args(args))
    }

    /// A CRI connection once the CRI service answers (30 s, else the test fails with the log).
    pub async fn connect(&self) -> Channel {
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
                    if let Ok(v) = rt.version(cri::VersionRequest { version: "v1".into() }).await {
                        let v = v.into_inner();
                        assert!(
                            v.runtime_version
                                .trim_start_matches('v')
                                .starts_with(self.version.prefix()),
                            "{:?} answers as {} {}",
                            self.version,
                            v.runtime_name,
                            v.runtime_version
                        );
                        return ch;
                    }
                }
            }
            assert!(Instant::now() < deadline, "containerd did not come up:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Connected, with the test image imported.
    pub async fn ready(&self) -> Channel {
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

    /// The CRI config containerd actually runs with (CRI `Status` verbose info `config`).
    pub async fn cri_config(&self, ch: &Channel) -> Value {
        let mut rt = RuntimeServiceClient::new(ch.clone());
        let st = rt.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
        let config = st.info.get("config").unwrap_or_else(|| panic!("no config in {:?}", st.info));
        serde_json::from_str(config).unwrap()
    }

    /// The bundle config.json containerd's runc shim used for a task.
    pub fn spec(&self, id: &str) -> Value {
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

/// `dataplane-hook configure --runtime containerd --containerd-config <config>` with this
/// version's containerd first in PATH (configure reads its version from there).
pub fn configure_cmd(env: &ProductEnv, version: Version, config: &Path) -> Command {
    let mut c = Command::new(hook_bin());
    c.env_remove("DATAPLANE_HOOK_CONFIG")
        .env("PATH", version.path_env())
        .arg("--config")
        .arg(&env.config)
        .args(["configure", "--runtime", "containerd", "--containerd-config"])
        .arg(config);
    c
}

/// containerd's own config (version 2, read by 1.6 and 1.7 alike): private dirs, CRI with the
/// test image as sandbox image, and the control handler `runc` with a private runc root.
fn base_config(dir: &Path) -> String {
    let d = dir.display();
    let runc_options = runc_handler_options();
    format!(
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
    )
}

/// containerd 1.7's NRI plugin, enabled, listening on `socket`, with private plugin dirs (so no
/// plugin of the host's is auto-started).
fn nri_config(dir: &Path, socket: &Path) -> String {
    let d = dir.display();
    for sub in ["nri/plugins", "nri/conf.d"] {
        std::fs::create_dir_all(dir.join(sub)).unwrap();
    }
    format!(
        r#"  [plugins."io.containerd.nri.v1.nri"]
    disable = false
    disable_connections = false
    socket_path = "{}"
    plugin_path = "{d}/nri/plugins"
    plugin_config_path = "{d}/nri/conf.d"
    plugin_registration_timeout = "5s"
    plugin_request_timeout = "2s"
"#,
        socket.display()
    )
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
pub fn runtime_cmd(root: &Path) -> Command {
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
pub fn which(name: &str) -> PathBuf {
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
pub fn cgroup_parent() -> String {
    if systemd_cgroup() {
        format!("{}.slice", unique("dphcri").replace('-', "_"))
    } else {
        format!("/{}", unique("dph-cri"))
    }
}

/// rmdir a cgroup directory tree, deepest first (cgroupfs only removes empty groups).
pub fn remove_cgroup_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

/// Runs `cmd`, panics with its output unless it succeeds; its stdout.
pub fn sh(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}
