//! Owns runtime discovery: which container runtimes are installed and running on this node,
//! their versions, and which containerd (binary, version, config, socket) is the one in use.
//! `configure` and `doctor` both ask here, so they cannot disagree about the node.
//!
//! Also the one PATH lookup ([`resolve_command`], used by the wrapper for `runtime_path`) and
//! the one `--version` parser ([`parse_version`]).

use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------------------------------------
// PATH.

/// The search path when PATH is unset: what runc, execvp and `sh` assume.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Where runtimes are installed besides PATH (a daemon's or a minimal shell's PATH often lacks
/// the sbin dirs or /opt/bin, but the runtime is still there).
const USUAL_DIRS: [&str; 6] =
    ["/usr/local/bin", "/usr/bin", "/usr/local/sbin", "/usr/sbin", "/opt/bin", "/bin"];

/// PATH's directories, in order ([`DEFAULT_PATH`] when PATH is unset).
pub fn path_dirs() -> Vec<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    std::env::split_paths(&paths).collect()
}

/// What exec would run for `cmd`: a path (anything with a `/`) is taken as it is, unchecked; a
/// bare name is the first regular file of that name in PATH.
pub fn resolve_command(cmd: &Path) -> Option<PathBuf> {
    resolve_in(&path_dirs(), cmd)
}

fn resolve_in(dirs: &[PathBuf], cmd: &Path) -> Option<PathBuf> {
    if cmd.components().count() > 1 || cmd.is_absolute() {
        return Some(cmd.to_path_buf());
    }
    dirs.iter().map(|d| d.join(cmd)).find(|p| p.is_file())
}

/// Distinct installed executables called `name` (PATH first, then the usual dirs); a file
/// reached twice (a symlink, /bin → /usr/bin) is listed once, under its first name.
pub fn installed(name: &str) -> Vec<PathBuf> {
    let mut dirs = path_dirs();
    dirs.extend(USUAL_DIRS.iter().map(PathBuf::from));
    installed_in(&dirs, name)
}

fn installed_in(dirs: &[PathBuf], name: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let mut canon: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let p = d.join(name);
        let Ok(meta) = std::fs::metadata(&p) else { continue };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            continue;
        }
        let c = p.canonicalize().unwrap_or_else(|_| p.clone());
        if !canon.contains(&c) {
            canon.push(c);
            out.push(p);
        }
    }
    out
}

/// Lexical normalization (no symlinks followed): `a/./b/../c` → `a/c`.
pub fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Whether two paths name the same file (through symlinks where they exist, lexically where
/// they do not yet).
pub fn same_file(a: &Path, b: &Path) -> bool {
    let ca = a.canonicalize().unwrap_or_else(|_| normalize(a));
    let cb = b.canonicalize().unwrap_or_else(|_| normalize(b));
    ca == cb
}

// ---------------------------------------------------------------------------------------------
// Versions.

/// A version as a `--version` output (or a kernel release) states it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    /// 0 when the output has only `major.minor` (`crun version 1.21`).
    pub patch: u32,
    /// The whole word it was read from, without a leading `v` (`1.6.20~ds1`, `2.0.2`): what
    /// messages show, distro suffix included.
    pub text: String,
}

impl Version {
    pub fn triple(&self) -> (u32, u32, u32) {
        (self.major, self.minor, self.patch)
    }
}

/// The first word of the first line that starts `N.N` (after an optional `v`): `runc version
/// 1.1.5+ds1`, `crun version 1.21`, `podman version 5.4.2`, `containerd
/// github.com/containerd/containerd 1.7.24~ds1 <commit>`, `containerd containerd.io 2.0.0
/// <commit>`, `.../containerd/v2 v2.0.2 <commit>`, a kernel release `6.1.0-18-amd64`.
pub fn parse_version(out: &str) -> Option<Version> {
    for word in out.lines().next()?.split_whitespace() {
        let w = word.trim_start_matches('v');
        let mut it = w.split(|c: char| !c.is_ascii_digit());
        let (Some(a), Some(b)) = (it.next(), it.next()) else { continue };
        if a.is_empty() || b.is_empty() || !w[a.len()..].starts_with('.') {
            continue;
        }
        let (Ok(major), Ok(minor)) = (a.parse(), b.parse()) else { continue };
        let patch = it.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        return Some(Version { major, minor, patch, text: w.to_string() });
    }
    None
}

/// Runs `cmd args` with a timeout (a wedged runtime must not hang doctor or configure);
/// stdout on success, else the last line of stderr.
pub fn capture(cmd: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", cmd.display()))?;
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{} {} did not answer in {}s",
                    cmd.display(),
                    args.join(" "),
                    timeout.as_secs()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e.to_string()),
        }
    }
    let o = child.wait_with_output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    if o.status.success() {
        Ok(text)
    } else {
        Err(String::from_utf8_lossy(&o.stderr).lines().last().unwrap_or("failed").to_string())
    }
}

/// How long a `--version` may take.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// `bin --version`, as printed.
pub fn version_output(bin: &Path) -> Option<String> {
    capture(bin, &["--version"], VERSION_TIMEOUT).ok()
}

/// `bin --version`, parsed.
pub fn version_of(bin: &Path) -> Option<Version> {
    version_output(bin).as_deref().and_then(parse_version)
}

// ---------------------------------------------------------------------------------------------
// Processes and installed runtimes.

/// A running process of a daemon.
#[derive(Debug, Clone)]
pub struct Daemon {
    pub pid: i32,
    pub exe: PathBuf,
    /// argv without argv[0].
    pub args: Vec<String>,
}

/// Processes whose comm is exactly `name`, by pid.
pub fn running(name: &str) -> Vec<Daemon> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let mut args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        if !args.is_empty() {
            args.remove(0);
        }
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_else(|_| PathBuf::from(name));
        out.push(Daemon { pid, exe, args });
    }
    out.sort_by_key(|d| d.pid);
    out
}

/// The value of `long`/`short` (`--config x`, `--config=x`, `-c x`, `-c=x`) in a daemon's
/// command line (argv without argv[0]).
pub fn config_flag(args: &[String], long: &str, short: &str) -> Option<PathBuf> {
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for f in [long, short] {
            if a == f {
                return args.get(i + 1).map(PathBuf::from);
            }
            if let Some(v) = a.strip_prefix(&format!("{f}=")) {
                return Some(PathBuf::from(v));
            }
        }
        i += 1;
    }
    None
}

/// The runtimes doctor reports on, in the order it prints them.
pub const RUNTIMES: [&str; 5] = ["runc", "crun", "containerd", "podman", "crio"];

/// An installed runtime: every copy of it, and what the first says its version is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeBin {
    pub name: &'static str,
    pub paths: Vec<PathBuf>,
    /// `<bin> --version` output of the first path.
    pub version: Option<String>,
}

/// Each of [`RUNTIMES`], installed or not.
pub fn runtimes() -> Vec<RuntimeBin> {
    RUNTIMES
        .into_iter()
        .map(|name| {
            let paths = installed(name);
            let version = paths.first().and_then(|p| version_output(p));
            RuntimeBin { name, paths, version }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Which containerd.

pub const CONTAINERD_DEFAULT_CONFIG: &str = "/etc/containerd/config.toml";
pub const CONTAINERD_DEFAULT_SOCKET: &str = "/run/containerd/containerd.sock";

/// A running containerd and the config it reads.
#[derive(Debug, Clone)]
pub struct ContainerdProcess {
    pub daemon: Daemon,
    /// Its `--config` (a relative one resolved against the daemon's working directory), else
    /// the default.
    pub config: PathBuf,
}

/// The running containerd daemons, by pid.
pub fn containerd_processes() -> Vec<ContainerdProcess> {
    running("containerd")
        .into_iter()
        .map(|d| {
            let c = config_flag(&d.args, "--config", "-c")
                .unwrap_or_else(|| CONTAINERD_DEFAULT_CONFIG.into());
            // A relative --config is relative to the daemon's working directory.
            let config = if c.is_relative() {
                std::fs::read_link(format!("/proc/{}/cwd", d.pid)).unwrap_or_default().join(c)
            } else {
                c
            };
            ContainerdProcess { daemon: d, config }
        })
        .collect()
}

/// The containerd in use: the running one's config wins; an explicit config picks among
/// several; with none running, the first installed binary and the default config.
#[derive(Debug, Clone)]
pub struct Containerd {
    pub config: PathBuf,
    /// The binary: the running daemon's, else the first installed one.
    pub binary: Option<PathBuf>,
    pub version: Option<Version>,
    /// The running daemon that reads `config` (the first, when several do).
    pub daemon: Option<Daemon>,
    /// How it was chosen, in words (`the config of the running containerd (pid 42)`).
    pub how: String,
    /// Every installed containerd binary (more than one is worth telling).
    pub installed: Vec<PathBuf>,
    /// Its API socket: the daemon's `--address`, else the config's `[grpc] address`, else the
    /// default.
    pub socket: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// Which one is meant cannot be told: `pid N <exe> --config <file>` each.
    #[error("several containerd daemons run with different configs: {}", .0.join("; "))]
    SeveralContainerds(Vec<String>),
}

/// Which containerd and which config (`explicit`: the config the user named).
pub fn containerd(explicit: Option<&Path>) -> Result<Containerd, DiscoveryError> {
    let procs = containerd_processes();
    let bins = installed("containerd");
    let (config, daemon, how) = if let Some(c) = explicit {
        match procs.iter().find(|p| same_file(&p.config, c)) {
            Some(p) => (
                c.to_path_buf(),
                Some(p.daemon.clone()),
                format!("running as pid {} with this config", p.daemon.pid),
            ),
            None => (
                c.to_path_buf(),
                None,
                "given by --containerd-config; no running containerd uses it".to_string(),
            ),
        }
    } else {
        let mut configs: Vec<&PathBuf> = Vec::new();
        for p in &procs {
            if !configs.iter().any(|x| same_file(x, &p.config)) {
                configs.push(&p.config);
            }
        }
        match configs.len() {
            0 => (
                CONTAINERD_DEFAULT_CONFIG.into(),
                None,
                "containerd is not running; its default config".to_string(),
            ),
            1 => {
                let p = &procs[0];
                let how = if procs.len() > 1 {
                    format!("{} containerd processes, all with this config", procs.len())
                } else {
                    format!("the config of the running containerd (pid {})", p.daemon.pid)
                };
                (p.config.clone(), Some(p.daemon.clone()), how)
            }
            _ => {
                return Err(DiscoveryError::SeveralContainerds(
                    procs
                        .iter()
                        .map(|p| {
                            format!(
                                "pid {} {} --config {}",
                                p.daemon.pid,
                                p.daemon.exe.display(),
                                p.config.display()
                            )
                        })
                        .collect(),
                ));
            }
        }
    };
    let binary = daemon.as_ref().map(|d| d.exe.clone()).or_else(|| bins.first().cloned());
    let version = binary.as_deref().and_then(version_of);
    let socket = containerd_socket(daemon.as_ref(), &config);
    Ok(Containerd { config, binary, version, daemon, how, installed: bins, socket })
}

fn containerd_socket(daemon: Option<&Daemon>, config: &Path) -> PathBuf {
    if let Some(a) = daemon.and_then(|d| config_flag(&d.args, "--address", "-a")) {
        return a;
    }
    std::fs::read_to_string(config)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("grpc")?.get("address")?.as_str().map(PathBuf::from))
        .filter(|a| !a.as_os_str().is_empty())
        .unwrap_or_else(|| CONTAINERD_DEFAULT_SOCKET.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(out: &str) -> Option<(u32, u32, u32, String)> {
        parse_version(out).map(|v| (v.major, v.minor, v.patch, v.text))
    }

    #[test]
    fn versions_parse_from_real_outputs() {
        let cases: &[(&str, (u32, u32, u32), &str)] = &[
            ("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\ngo: go1.19.8\n", (1, 1, 5), "1.1.5+ds1"),
            ("runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\n", (1, 1, 12), "1.1.12"),
            ("crun version 1.21\ncommit: 10269840aa07fb7e6b7e1acff6198692d8ff5c88\nrundir: /run/crun\n", (1, 21, 0), "1.21"),
            ("crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n", (1, 8, 1), "1.8.1"),
            ("podman version 5.4.2\n", (5, 4, 2), "5.4.2"),
            ("podman version 4.3.1\n", (4, 3, 1), "4.3.1"),
            ("containerd github.com/containerd/containerd 1.6.20~ds1 1.6.20~ds1-1+deb12u3\n", (1, 6, 20), "1.6.20~ds1"),
            ("containerd github.com/containerd/containerd 1.7.24~ds1 1.7.24~ds1-6+b2\n", (1, 7, 24), "1.7.24~ds1"),
            ("containerd containerd.io 2.0.0 207ad711eabd375a01713109a8a197d197ff6542\n", (2, 0, 0), "2.0.0"),
            ("containerd github.com/containerd/containerd/v2 v2.0.2 c507a0257ea6462fbd6f5ba4f5c74facb04021f4\n", (2, 0, 2), "2.0.2"),
            ("crio version 1.28.1\n", (1, 28, 1), "1.28.1"),
            ("6.18.44-fc-v669", (6, 18, 44), "6.18.44-fc-v669"),
            ("6.1.0-18-amd64", (6, 1, 0), "6.1.0-18-amd64"),
        ];
        for (out, (a, b, c), text) in cases {
            assert_eq!(v(out), Some((*a, *b, *c, text.to_string())), "{out:?}");
        }
        assert_eq!(v("no digits here"), None);
        assert_eq!(v(""), None);
        // Only the first line counts: a later `go1.19.8` is not the runtime's version.
        assert_eq!(v("runc\ngo: go1.19.8\n"), None);
        // A number without a dot is not a version.
        assert_eq!(v("thing 42 build\n"), None);
    }

    #[test]
    fn config_flags_in_all_their_spellings() {
        let a = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            config_flag(&a(&["--log-level", "info", "--config", "/c.toml"]), "--config", "-c"),
            Some("/c.toml".into())
        );
        assert_eq!(config_flag(&a(&["-c=/k3s.toml"]), "--config", "-c"), Some("/k3s.toml".into()));
        assert_eq!(config_flag(&a(&["--config=/x"]), "--config", "-c"), Some("/x".into()));
        assert_eq!(config_flag(&a(&["-c", "/x"]), "--config", "-c"), Some("/x".into()));
        assert_eq!(config_flag(&a(&["--address", "/s"]), "--config", "-c"), None);
        assert_eq!(config_flag(&a(&["--config"]), "--config", "-c"), None);
    }

    #[test]
    fn a_bare_name_is_looked_up_in_path_and_a_path_is_taken_as_it_is() {
        let d = tempfile::tempdir().unwrap();
        let bin = d.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("fake-runtime"), "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(bin.join("fake-runtime"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::create_dir(bin.join("a-dir")).unwrap();
        // A symlink to the same file in a later dir is the same install, listed once.
        let again = d.path().join("again");
        std::fs::create_dir(&again).unwrap();
        std::os::unix::fs::symlink(bin.join("fake-runtime"), again.join("fake-runtime")).unwrap();
        let dirs = vec![d.path().join("missing"), bin.clone(), again];
        let found = (
            resolve_in(&dirs, Path::new("fake-runtime")),
            resolve_in(&dirs, Path::new("a-dir")),
            installed_in(&dirs, "fake-runtime"),
        );
        assert_eq!(found.0, Some(bin.join("fake-runtime")));
        assert_eq!(found.1, None, "a directory is not a command");
        assert_eq!(found.2, vec![bin.join("fake-runtime")]);
        std::fs::set_permissions(bin.join("fake-runtime"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        assert!(installed_in(&dirs, "fake-runtime").is_empty(), "not executable: not installed");
        assert_eq!(
            resolve_command(Path::new("/does/not/exist")),
            Some(PathBuf::from("/does/not/exist")),
            "a path is exec'd as it is; exec says what is wrong with it"
        );
        assert_eq!(resolve_command(Path::new("./x")), Some(PathBuf::from("./x")));
    }

    #[test]
    fn containerd_socket_comes_from_the_flag_then_the_config_then_the_default() {
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config.toml");
        std::fs::write(&cfg, "version = 2\n[grpc]\naddress = \"/run/k3s/containerd.sock\"\n")
            .unwrap();
        let daemon = |args: &[&str]| Daemon {
            pid: 1,
            exe: "/usr/bin/containerd".into(),
            args: args.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            containerd_socket(Some(&daemon(&["--address", "/a.sock"])), &cfg),
            PathBuf::from("/a.sock")
        );
        assert_eq!(
            containerd_socket(Some(&daemon(&[])), &cfg),
            PathBuf::from("/run/k3s/containerd.sock")
        );
        assert_eq!(
            containerd_socket(None, &d.path().join("none.toml")),
            PathBuf::from(CONTAINERD_DEFAULT_SOCKET)
        );
    }

    #[test]
    fn paths_normalize_lexically_and_same_file_sees_through_them() {
        assert_eq!(normalize(Path::new("/a/./b/../c")), PathBuf::from("/a/c"));
        assert!(same_file(Path::new("/x/../etc/./hosts"), Path::new("/etc/hosts")));
    }
}
