//! Gathering the facts from this node, once, for the checks.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::cgroup_mounts;
use super::parse::{containerd_handler, crio_handler, hooks_d_entry};
use super::{ConfigFile, Containerd, Facts, Kernel, Meta, Probe};
use crate::config::Config;
use crate::discovery::capture;
use crate::host::sysfs::Sysfs;
use crate::request::PageSize;

fn meta(p: &Path) -> Option<Meta> {
    let m = std::fs::symlink_metadata(p).ok()?;
    let fs_type = rustix::fs::statfs(p).ok().map(|s| s.f_type);
    Some(Meta {
        is_dir: m.is_dir(),
        is_symlink: m.file_type().is_symlink(),
        uid: m.uid(),
        mode: m.mode(),
        fs_type,
    })
}

fn probe<T>(r: rustix::io::Result<T>) -> Probe {
    r.map(|_| ()).map_err(|e| e.raw_os_error())
}

fn raw_probe(rc: libc::c_long) -> Probe {
    if rc == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
    // Called with arguments it must reject: any answer but ENOSYS means the syscall exists.
    if e == libc::ENOSYS {
        Err(e)
    } else {
        Ok(())
    }
}

fn kernel_facts(v2_mounts: &[PathBuf]) -> Kernel {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    use rustix::mount::{fsopen, open_tree, FsOpenFlags, OpenTreeFlags};
    let release = rustix::system::uname().release().to_string_lossy().into_owned();
    // SAFETY: invalid fds and empty paths: the kernel validates and returns EBADF.
    let move_mount = raw_probe(unsafe {
        libc::syscall(libc::SYS_move_mount, -1, c"".as_ptr(), -1, c"".as_ptr(), 0)
    });
    // SAFETY: as above; a null attr with size 0 is rejected after the fd check.
    let mount_setattr = raw_probe(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            std::ptr::null::<u8>(),
            0usize,
        )
    });
    let cgroup_kill = v2_mounts.iter().find_map(|m| {
        let child = std::fs::read_dir(m)
            .ok()?
            .flatten()
            .find(|e| e.file_type().is_ok_and(|t| t.is_dir()))?;
        Some(child.path().join("cgroup.kill").exists())
    });
    Kernel {
        release,
        openat2: probe(rustix::fs::openat2(
            CWD,
            "/",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )),
        fsopen: probe(fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)),
        hugetlbfs: probe(fsopen("hugetlbfs", FsOpenFlags::FSOPEN_CLOEXEC)),
        // Without OPEN_TREE_CLONE: an O_PATH handle on a mount, nothing is copied.
        open_tree: probe(open_tree(CWD, "/", OpenTreeFlags::OPEN_TREE_CLOEXEC)),
        move_mount,
        mount_setattr,
        pidfd_open: probe(rustix::process::pidfd_open(
            rustix::process::getpid(),
            rustix::process::PidfdFlags::empty(),
        )),
        psi: crate::host::read_kernel_file("/proc/pressure/memory").ok(),
        cgroup_kill,
    }
}

fn boot_time() -> Option<u64> {
    crate::host::proc::boot_time()
}

fn mtime(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.mtime() as u64)
}

fn containerd_facts() -> Option<Containerd> {
    let choice = match crate::discovery::containerd(None) {
        Ok(c) => c,
        Err(e) => {
            return Some(Containerd {
                config: crate::discovery::CONTAINERD_DEFAULT_CONFIG.into(),
                dump: Err(e.to_string()),
                running: None,
                config_mtime: None,
            })
        }
    };
    // Neither running nor installed: there is no containerd to check.
    let exe = choice.binary.clone()?;
    let cfg = choice.config.display().to_string();
    let dump = if choice.config.exists() {
        capture(&exe, &["--config", &cfg, "config", "dump"], Duration::from_secs(10))
    } else {
        Err(format!("{cfg} does not exist"))
    };
    let running = choice.daemon.as_ref().and_then(|d| {
        let ticks = crate::host::proc::start_time(d.pid)?;
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some((d.pid, boot_time()? + ticks / hz))
    });
    let dropin = choice
        .config
        .parent()
        .unwrap_or(Path::new("/"))
        .join("conf.d")
        .join(crate::configure::CONTAINERD_DROPIN_NAME);
    let config_mtime = [mtime(&choice.config), mtime(&dropin)].into_iter().flatten().max();
    Some(Containerd { config: choice.config, dump, running, config_mtime })
}

fn read_configs(dirs: &[&str], ext: &str, want: impl Fn(&str) -> bool) -> Vec<ConfigFile> {
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(d) else { continue };
        let mut paths: Vec<PathBuf> = rd
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == ext))
            .collect();
        paths.sort();
        for p in paths {
            if let Ok(content) = std::fs::read_to_string(&p) {
                if want(&content) {
                    out.push(ConfigFile { path: p, content });
                }
            }
        }
    }
    out
}

fn watch_pids() -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else { return out };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmd) = crate::host::read_kernel_bytes(e.path().join("cmdline")) else { continue };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
        let is_hook = args.first().is_some_and(|a| a.ends_with(b"dataplane-hook"));
        if is_hook && args.iter().any(|a| *a == b"watch") {
            out.push(pid);
        }
    }
    out.sort_unstable();
    out
}

fn gpus() -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir("/dev")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| {
                    n == "kfd"
                        || n.strip_prefix("nvidia")
                            .is_some_and(|r| !r.is_empty() && r.bytes().all(|b| b.is_ascii_digit()))
                })
                .map(|n| format!("/dev/{n}"))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Whether `d` exists and this process may write in it; asked with access(2), never by
/// writing (doctor changes nothing on the node).
fn writable_dir(d: &Path) -> Result<bool, String> {
    if !d.exists() {
        return Ok(false);
    }
    rustix::fs::access(d, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK)
        .map(|()| true)
        .map_err(|e| std::io::Error::from(e).to_string())
}

/// The log file: writable if it exists, else its directory must let the hook create it.
fn log_writable(p: &Path) -> Result<(), String> {
    if p.exists() {
        return rustix::fs::access(p, rustix::fs::Access::WRITE_OK)
            .map_err(|e| std::io::Error::from(e).to_string());
    }
    let mut dir = p.parent().unwrap_or(Path::new("/"));
    // The hook creates missing parents: the first existing ancestor must be writable.
    while !dir.exists() {
        dir = dir.parent().unwrap_or(Path::new("/"));
    }
    writable_dir(dir).and_then(|w| {
        if w {
            Ok(())
        } else {
            Err(format!("{} does not exist", dir.display()))
        }
    })
}

impl Facts {
    pub fn gather(
        config_path: Option<PathBuf>,
        config_error: Option<String>,
        config: Config,
    ) -> Facts {
        let hook_exe = std::env::current_exe()
            .and_then(|p| p.canonicalize())
            .unwrap_or_else(|_| PathBuf::from("dataplane-hook"));
        let wrapper = hook_exe.with_file_name("dataplane-runtime");
        let sysfs = Sysfs::default();
        let mut pools = BTreeMap::new();
        let mut node_pools = BTreeMap::new();
        for size in PageSize::ALL {
            pools.insert(size, sysfs.pool(size));
            node_pools.insert(size, sysfs.node_pools(size));
        }
        let mountinfo = crate::host::read_kernel_file("/proc/self/mountinfo").unwrap_or_default();
        let v2: Vec<PathBuf> = cgroup_mounts(&mountinfo)
            .into_iter()
            .filter(|(t, _, _)| t == "cgroup2")
            .map(|(_, m, _)| m)
            .collect();
        let v2_controllers = v2
            .iter()
            .map(|m| {
                (
                    m.clone(),
                    crate::host::read_kernel_file(m.join("cgroup.controllers")).unwrap_or_default(),
                )
            })
            .collect();
        let runtimes = crate::discovery::runtimes();
        let containerd = containerd_facts();
        let kubelet_driver =
            std::fs::read_to_string("/var/lib/kubelet/config.yaml").ok().and_then(|t| {
                t.lines().find_map(|l| {
                    l.trim()
                        .strip_prefix("cgroupDriver:")
                        .map(|v| v.trim().trim_matches('"').to_string())
                })
            });
        let hook_files = read_configs(
            &[crate::configure::PODMAN_HOOKS_DIR, "/etc/containers/oci/hooks.d"],
            "json",
            |c| {
                hooks_d_entry(c)
                    .map_or(c.contains("dataplane-hook"), |(p, _)| p.ends_with("dataplane-hook"))
            },
        );
        let crio_dropins = read_configs(&[crate::configure::CRIO_CONFIG_DIR], "conf", |c| {
            crio_handler(c).is_some()
        });
        let mut resolved = BTreeMap::new();
        let mut named: Vec<String> =
            hook_files.iter().filter_map(|f| hooks_d_entry(&f.content).map(|(p, _)| p)).collect();
        named.extend(crio_dropins.iter().filter_map(|f| crio_handler(&f.content)));
        if let Some(Ok(d)) = containerd.as_ref().map(|c| &c.dump) {
            named.extend(containerd_handler(d).and_then(|(_, b, _)| b));
        }
        for p in named {
            let pb = PathBuf::from(&p);
            resolved.insert(pb.clone(), pb.canonicalize().ok());
        }
        let log = if config.log_file.as_os_str().is_empty() {
            Ok(())
        } else {
            log_writable(&config.log_file)
        };
        let textfile_dir = if config.metrics.textfile_dir.as_os_str().is_empty() {
            Ok(false)
        } else {
            writable_dir(&config.metrics.textfile_dir)
        };
        Facts {
            config_path,
            config_error,
            hook_exe,
            wrapper_exists: wrapper.is_file(),
            wrapper,
            // What the wrapper would exec, if it is there.
            real_runtime: crate::discovery::resolve_command(&config.runtime_path)
                .filter(|p| p.is_file()),
            pools,
            node_pools,
            kernel: kernel_facts(&v2),
            mountinfo,
            v2_controllers,
            systemd_pid1: Path::new("/run/systemd/system").is_dir(),
            runtimes,
            containerd,
            kubelet_driver,
            hook_files,
            crio_dropins,
            resolved,
            state_dir: meta(&config.state_dir),
            log,
            cap_sys_resource: crate::host::rlimit::grantable().cap_sys_resource,
            gpus: gpus(),
            watch_pids: watch_pids(),
            textfile_dir,
            nri: crate::nri::PluginState::read(&config.state_dir).map(|s| {
                let alive = s.process.is_alive();
                (s, alive)
            }),
            config,
        }
    }
}
