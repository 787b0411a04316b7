//! Reading what doctor gathered: containerd config dumps, CRI-O drop-ins, hooks.d files,
//! mountinfo's cgroup mounts. Pure.

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::cgroup_mounts;

/// The `dataplane` handler of a containerd config dump: (runtime_type, BinaryName, pod_annotations).
pub fn containerd_handler(dump: &str) -> Option<(String, Option<String>, Vec<String>)> {
    let t: toml::Table = dump.parse().ok()?;
    let plugins = t.get("plugins")?.as_table()?;
    let h = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"].iter().find_map(|p| {
        plugins
            .get(*p)?
            .get("containerd")?
            .get("runtimes")?
            .get(crate::configure::HANDLER)?
            .as_table()
            .cloned()
    })?;
    let rt = h.get("runtime_type").and_then(|v| v.as_str()).unwrap_or("").to_string();
    let bin = h
        .get("options")
        .and_then(|o| o.get("BinaryName"))
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty())
        .map(String::from);
    let ann = h
        .get("pod_annotations")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
        .unwrap_or_default();
    Some((rt, bin, ann))
}

/// `SystemdCgroup` of containerd's `runc` handler in a config dump.
pub fn containerd_systemd_cgroup(dump: &str) -> Option<bool> {
    let t: toml::Table = dump.parse().ok()?;
    let plugins = t.get("plugins")?.as_table()?;
    ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime"].iter().find_map(|p| {
        plugins
            .get(*p)?
            .get("containerd")?
            .get("runtimes")?
            .get("runc")?
            .get("options")?
            .get("SystemdCgroup")?
            .as_bool()
    })
}

/// The hook binary a hooks.d file runs, and its stages. None: not valid oci-hooks JSON.
pub fn hooks_d_entry(content: &str) -> Option<(String, Vec<String>)> {
    let v: serde_json::Value = serde_json::from_str(content).ok()?;
    let path = v.get("hook")?.get("path")?.as_str()?.to_string();
    let stages =
        v.get("stages")?.as_array()?.iter().filter_map(|s| s.as_str().map(String::from)).collect();
    Some((path, stages))
}

/// `runtime_path` of CRI-O's `dataplane` handler in a drop-in.
pub fn crio_handler(content: &str) -> Option<String> {
    let t: toml::Table = content.parse().ok()?;
    t.get("crio")?
        .get("runtime")?
        .get("runtimes")?
        .get(crate::configure::HANDLER)?
        .get("runtime_path")?
        .as_str()
        .map(String::from)
}

/// The cgroup layout: ("v1" | "v2" | "hybrid", description).
pub fn cgroup_layout(
    mountinfo: &str,
    v2_controllers: &BTreeMap<PathBuf, String>,
) -> (&'static str, String) {
    let mounts = cgroup_mounts(mountinfo);
    let mut v1: Vec<String> = Vec::new();
    let mut v2: Vec<String> = Vec::new();
    for (fstype, mount, sopts) in &mounts {
        if fstype == "cgroup" {
            let ctrls: Vec<&str> = sopts
                .split(',')
                .filter(|o| {
                    !matches!(*o, "rw" | "ro") && !o.starts_with("name=") && !o.contains('=')
                })
                .collect();
            if !ctrls.is_empty() {
                v1.push(ctrls.join(","));
            }
        } else {
            let c = v2_controllers
                .get(mount)
                .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
                .unwrap_or_default();
            v2.push(format!(
                "{} ({})",
                mount.display(),
                if c.is_empty() { "no controllers".into() } else { c }
            ));
        }
    }
    match (v1.is_empty(), v2.is_empty()) {
        (true, false) => ("v2", format!("cgroup v2 only: {}", v2.join(", "))),
        (false, true) => ("v1", format!("cgroup v1 only: {}", v1.join(" "))),
        (false, false) => (
            "hybrid",
            format!("hybrid: v1 controllers {} and cgroup2 at {}", v1.join(" "), v2.join(", ")),
        ),
        (true, true) => ("none", "no cgroup filesystem is mounted".to_string()),
    }
}
