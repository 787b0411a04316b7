//! Owns what the plugin answers to CreateContainer: the same spec edit the runtime handler makes
//! (hooks injected, features' `edit_spec`), computed on the container as NRI describes it, then
//! expressed as an NRI adjustment. What an adjustment cannot express is a refusal, never a
//! silently dropped edit: the product's hook then does the rest exactly as on the handler path.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Map, Value};

use super::api;
use crate::config::Loaded;
use crate::features::{self, SpecContext};
use crate::host::cgroup;
use crate::oci::Bundle;
use crate::plan::PlanError;
use crate::request::{Request, RequestError, PREFIX};

/// Why a container is refused: its request (the same message as on the handler path) or a plan
/// or spec edit the NRI path cannot make.
#[derive(Debug, thiserror::Error)]
pub enum AdjustError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error(transparent)]
    Plan(#[from] PlanError),
}

/// What the plugin knows about the runtime it serves (from Configure).
#[derive(Debug, Clone, Default)]
pub struct Runtime {
    pub name: String,
    pub version: String,
}

/// The adjustment for a container, None when it does not opt in.
pub fn adjust(
    loaded: &Loaded,
    hook_bin: &Path,
    runtime: &Runtime,
    pod: Option<&api::PodSandbox>,
    c: &api::Container,
) -> Result<Option<api::ContainerAdjustment>, AdjustError> {
    let pod_ann = pod.map(|p| &p.annotations);
    // Opt in: any key of ours on the pod (CRI passes pod annotations to NRI whole, where the
    // runtime handler needs `pod_annotations`) or on the container. Only our own keys are copied:
    // a pod must not be able to write the runtime's keys (group scope, container type).
    let ours: BTreeMap<String, String> = pod_ann
        .into_iter()
        .flatten()
        .chain(c.annotations.iter())
        .filter(|(k, _)| k.starts_with(PREFIX))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if ours.is_empty() {
        return Ok(None);
    }
    // The features' spec edits only look at the spec, never at the bundle dir (the runtime has
    // not made it yet): a path that cannot exist makes any mistake there fail, not read the host.
    let dir = Path::new("/nonexistent-nri-bundle");
    let mut b = Bundle::from_value(dir, spec_of(c, &ours)).map_err(|e| PlanError {
        what: format!("cannot read container {} as NRI describes it", c.id),
        why: e.to_string(),
        fix: "report this with the runtime's version".into(),
    })?;
    if b.is_sandbox() {
        return Ok(None);
    }
    let mut req = Request::parse(&b.annotations(), &b.hugepage_limits())?;
    req.gpu = features::gpu::inspect_bundle(&b, &b.annotations())?;
    if req.enabled == Some(false) {
        return Ok(None);
    }
    if let Some(g) = &req.group {
        // NRI before v0.10 has no namespace adjustment: the member could not join the group's
        // PID namespace, and a group without one is the collision G2 exists to prevent.
        return Err(AdjustError::Plan(PlanError {
            what: format!("cannot put container {} in DPDK group {}", c.id, g.as_str()),
            why: format!(
                "{} {} speaks NRI before v0.10, which cannot set a container's PID namespace",
                runtime_name(runtime),
                runtime.version
            ),
            fix: "run the pod with the dataplane runtime handler (RuntimeClass), or use containerd >= 2.2 or CRI-O >= 1.34".into(),
        }));
    }
    let h = cgroup::hugetlb_hierarchy().ok();
    let ctx = SpecContext {
        config: &loaded.config,
        hugetlb: h.as_ref(),
        container_id: Some(&c.id),
        hook_bin: Some(hook_bin),
    };
    crate::runtime::inject_hook(&mut b, hook_bin, loaded.path.as_deref(), "createRuntime");
    crate::runtime::inject_hook(&mut b, hook_bin, loaded.path.as_deref(), "poststop");
    crate::runtime::set_hook_timeouts(
        &mut b,
        hook_bin,
        crate::deadline::oci_timeout(loaded.config.hook_timeout_secs),
    );
    for f in features::FEATURES {
        (f.edit_spec)(&req, &mut b, &ctx)?;
    }
    // The path this container came through, for `status` and people reading the spec.
    b.raw_object_mut(&["annotations"]).insert(PATH_ANNOTATION.into(), json!("nri"));
    Ok(Some(diff(&c.id, &spec_of(c, &BTreeMap::new()), &b.raw)?))
}

/// Annotation the plugin sets on the containers it adjusts (outside our prefix: every key
/// there is a request the hook validates).
pub const PATH_ANNOTATION: &str = "io.dataplane-hook.path";

fn runtime_name(r: &Runtime) -> &str {
    if r.name.is_empty() {
        "the runtime"
    } else {
        &r.name
    }
}

/// The container as an OCI spec (the parts NRI shows), with `extra` annotations merged in.
pub fn spec_of(c: &api::Container, extra: &BTreeMap<String, String>) -> Value {
    let mut ann: Map<String, Value> =
        c.annotations.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
    for (k, v) in extra {
        ann.insert(k.clone(), json!(v));
    }
    // NRI does not show the user; the features read none of it.
    let mut process =
        json!({ "cwd": "/", "user": {"uid": 0, "gid": 0}, "args": c.args, "env": c.env });
    if !c.rlimits.is_empty() {
        process["rlimits"] = Value::Array(
            c.rlimits
                .iter()
                .map(|r| json!({"type": r.r#type, "hard": r.hard, "soft": r.soft}))
                .collect(),
        );
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": "rootfs"},
        "mounts": c.mounts.iter().map(mount_json).collect::<Vec<_>>(),
        "annotations": ann,
    });
    if let Some(h) = &c.hooks {
        spec["hooks"] = hooks_json(h);
    }
    if let Some(l) = &c.linux {
        let mut linux = json!({
            "namespaces": l.namespaces.iter().map(|n| {
                let mut v = json!({"type": n.r#type});
                if !n.path.is_empty() { v["path"] = json!(n.path); }
                v
            }).collect::<Vec<_>>(),
            "devices": l.devices.iter().map(|d| json!({"path": d.path, "type": d.r#type, "major": d.major, "minor": d.minor})).collect::<Vec<_>>(),
        });
        if !l.cgroups_path.is_empty() {
            linux["cgroupsPath"] = json!(l.cgroups_path);
        }
        if let Some(r) = &l.resources {
            let mut res = json!({});
            if let Some(lim) = r.memory.as_ref().and_then(|m| m.limit.as_ref()) {
                res["memory"] = json!({"limit": lim.value});
            }
            if !r.hugepage_limits.is_empty() {
                res["hugepageLimits"] = Value::Array(
                    r.hugepage_limits
                        .iter()
                        .map(|h| json!({"pageSize": h.page_size, "limit": h.limit}))
                        .collect(),
                );
            }
            if !r.unified.is_empty() {
                res["unified"] = json!(r.unified);
            }
            linux["resources"] = res;
        }
        spec["linux"] = linux;
    }
    spec
}

fn mount_json(m: &api::Mount) -> Value {
    json!({"destination": m.destination, "type": m.r#type, "source": m.source, "options": m.options})
}

fn hook_json(h: &api::Hook) -> Value {
    let mut v = json!({"path": h.path});
    if !h.args.is_empty() {
        v["args"] = json!(h.args);
    }
    if !h.env.is_empty() {
        v["env"] = json!(h.env);
    }
    if let Some(t) = &h.timeout {
        v["timeout"] = json!(t.value);
    }
    v
}

const STAGES: &[&str] =
    &["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"];

fn hooks_json(h: &api::Hooks) -> Value {
    let lists = [
        &h.prestart,
        &h.create_runtime,
        &h.create_container,
        &h.start_container,
        &h.poststart,
        &h.poststop,
    ];
    let mut o = Map::new();
    for (stage, list) in STAGES.iter().zip(lists) {
        if !list.is_empty() {
            o.insert((*stage).into(), Value::Array(list.iter().map(hook_json).collect()));
        }
    }
    Value::Object(o)
}

fn hook_from(v: &Value) -> api::Hook {
    let strs = |k: &str| -> Vec<String> {
        v.get(k)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
            .unwrap_or_default()
    };
    api::Hook {
        path: v.get("path").and_then(Value::as_str).unwrap_or_default().into(),
        args: strs("args"),
        env: strs("env"),
        timeout: v.get("timeout").and_then(Value::as_i64).map(|value| api::OptionalInt { value }),
    }
}

fn cannot(id: &str, what: &str) -> PlanError {
    PlanError {
        what: format!("cannot adjust container {id} through NRI"),
        why: format!(
            "the spec edit it needs changes {what}, which an NRI adjustment cannot express"
        ),
        fix: "run the pod with the dataplane runtime handler (RuntimeClass)".into(),
    }
}

fn env_map(v: &Value) -> BTreeMap<String, String> {
    v.pointer("/process/env")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

fn keyed<'a>(v: &'a Value, ptr: &str, key: &str) -> BTreeMap<String, &'a Value> {
    v.pointer(ptr)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| (e.get(key).and_then(Value::as_str).unwrap_or_default().to_string(), e))
        .collect()
}

/// The adjustment that turns `before` into `after`. Every part of the spec an edit may touch is
/// either expressed or refused: after removing what was expressed, the rest must be equal.
pub fn diff(
    id: &str,
    before: &Value,
    after: &Value,
) -> Result<api::ContainerAdjustment, PlanError> {
    let mut adj = api::ContainerAdjustment::default();
    let (mut rest_b, mut rest_a) = (before.clone(), after.clone());

    // Annotations: set and removed ("-key" marks a removal in NRI).
    let ann =
        |v: &Value| v.get("annotations").and_then(Value::as_object).cloned().unwrap_or_default();
    let (ab, aa) = (ann(before), ann(after));
    for (k, v) in &aa {
        if ab.get(k) != Some(v) {
            adj.annotations
                .insert(k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
        }
    }
    for k in ab.keys().filter(|k| !aa.contains_key(*k)) {
        adj.annotations.insert(format!("-{k}"), String::new());
    }

    // Environment.
    let (eb, ea) = (env_map(before), env_map(after));
    for (k, v) in &ea {
        if eb.get(k) != Some(v) {
            adj.env.push(api::KeyValue { key: k.clone(), value: v.clone() });
        }
    }
    for k in eb.keys().filter(|k| !ea.contains_key(*k)) {
        adj.env.push(api::KeyValue { key: format!("-{k}"), value: String::new() });
    }

    // Mounts, by destination.
    let (mb, ma) =
        (keyed(before, "/mounts", "destination"), keyed(after, "/mounts", "destination"));
    for (d, m) in &ma {
        if mb.get(d) != Some(m) {
            if mb.contains_key(d) {
                adj.mounts.push(api::Mount { destination: format!("-{d}"), ..Default::default() });
            }
            let strs = |k: &str| -> Vec<String> {
                m.get(k)
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(Value::as_str).map(String::from).collect())
                    .unwrap_or_default()
            };
            let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
            adj.mounts.push(api::Mount {
                destination: d.clone(),
                r#type: s("type"),
                source: s("source"),
                options: strs("options"),
            });
        }
    }
    for d in mb.keys().filter(|d| !ma.contains_key(*d)) {
        adj.mounts.push(api::Mount { destination: format!("-{d}"), ..Default::default() });
    }

    // Hooks: NRI only appends. Our entries must come after the container's own, unchanged.
    let mut hooks = api::Hooks::default();
    for stage in STAGES {
        let list = |v: &Value| {
            v.pointer(&format!("/hooks/{stage}"))
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        let (hb, ha) = (list(before), list(after));
        if ha.len() < hb.len() || ha[..hb.len()] != hb[..] {
            return Err(cannot(id, &format!("the container's own {stage} hooks")));
        }
        let added: Vec<api::Hook> = ha[hb.len()..].iter().map(hook_from).collect();
        let slot = match *stage {
            "prestart" => &mut hooks.prestart,
            "createRuntime" => &mut hooks.create_runtime,
            "createContainer" => &mut hooks.create_container,
            "startContainer" => &mut hooks.start_container,
            "poststart" => &mut hooks.poststart,
            _ => &mut hooks.poststop,
        };
        *slot = added;
    }
    if hooks != api::Hooks::default() {
        adj.hooks = Some(hooks);
    }

    // rlimits: the runtime replaces a limit of the same type.
    let (rb, ra) =
        (keyed(before, "/process/rlimits", "type"), keyed(after, "/process/rlimits", "type"));
    if rb.keys().any(|t| !ra.contains_key(t)) {
        return Err(cannot(id, "removes a process rlimit"));
    }
    for (t, r) in &ra {
        if rb.get(t) != Some(r) {
            let n = |k: &str| r.get(k).and_then(Value::as_u64).unwrap_or_default();
            adj.rlimits.push(api::PosixRlimit {
                r#type: t.clone(),
                hard: n("hard"),
                soft: n("soft"),
            });
        }
    }

    // Resources: memory limit, hugepage limits, unified.
    let mut res = api::LinuxResources::default();
    let lim = |v: &Value| v.pointer("/linux/resources/memory/limit").cloned();
    match (lim(before), lim(after)) {
        (b, a) if b == a => {}
        (_, Some(a)) => {
            let value =
                a.as_i64().ok_or_else(|| cannot(id, "the memory limit to a non-integer"))?;
            res.memory = Some(api::LinuxMemory { limit: Some(api::OptionalInt64 { value }) });
        }
        (Some(_), None) => return Err(cannot(id, "removes the memory limit")),
        (None, None) => {}
    }
    let (hb, ha) = (
        keyed(before, "/linux/resources/hugepageLimits", "pageSize"),
        keyed(after, "/linux/resources/hugepageLimits", "pageSize"),
    );
    if hb.keys().any(|s| !ha.contains_key(s)) {
        return Err(cannot(
            id,
            "removes hugepage limits (the runtime cannot apply them on this host's cgroup layout)",
        ));
    }
    for (s, h) in &ha {
        if hb.get(s) != Some(h) {
            res.hugepage_limits.push(api::HugepageLimit {
                page_size: s.clone(),
                limit: h.get("limit").and_then(Value::as_u64).unwrap_or_default(),
            });
        }
    }
    let uni = |v: &Value| {
        v.pointer("/linux/resources/unified")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default()
    };
    let (ub, ua) = (uni(before), uni(after));
    if ub.keys().any(|k| !ua.contains_key(k)) {
        return Err(cannot(id, "removes a cgroup v2 unified setting"));
    }
    for (k, v) in &ua {
        if ub.get(k) != Some(v) {
            res.unified
                .insert(k.clone(), v.as_str().map(String::from).unwrap_or_else(|| v.to_string()));
        }
    }
    if res != api::LinuxResources::default() {
        adj.linux = Some(api::LinuxContainerAdjustment { resources: Some(res) });
    }

    // Everything else must be untouched.
    for v in [&mut rest_b, &mut rest_a] {
        let o = v.as_object_mut().expect("a spec is an object");
        for k in ["annotations", "mounts", "hooks"] {
            o.remove(k);
        }
        if let Some(p) = o.get_mut("process").and_then(Value::as_object_mut) {
            p.remove("env");
            p.remove("rlimits");
        }
        if let Some(r) =
            o.get_mut("linux").and_then(|l| l.get_mut("resources")).and_then(Value::as_object_mut)
        {
            for k in ["hugepageLimits", "unified"] {
                r.remove(k);
            }
            if let Some(m) = r.get_mut("memory").and_then(Value::as_object_mut) {
                m.remove("limit");
                if m.is_empty() {
                    r.remove("memory");
                }
            }
        }
        if let Some(l) = o.get_mut("linux").and_then(Value::as_object_mut) {
            if l.get("resources").and_then(Value::as_object).is_some_and(Map::is_empty) {
                l.remove("resources");
            }
        }
    }
    if rest_b != rest_a {
        let changed = rest_a
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(k, v)| rest_b.get(*k) != Some(*v))
            .map(|(k, _)| k.clone())
            .chain(
                rest_b
                    .as_object()
                    .into_iter()
                    .flatten()
                    .filter(|(k, _)| rest_a.get(*k).is_none())
                    .map(|(k, _)| k.clone()),
            )
            .collect::<Vec<_>>()
            .join(", ");
        return Err(cannot(id, &format!("the spec's {changed}")));
    }
    Ok(adj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(ann: &[(&str, &str)]) -> api::Container {
        api::Container {
            id: "c1".into(),
            annotations: ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            args: vec!["sh".into()],
            env: vec!["PATH=/bin".into()],
            linux: Some(api::LinuxContainer {
                namespaces: vec![api::LinuxNamespace { r#type: "pid".into(), path: String::new() }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pod(ann: &[(&str, &str)]) -> api::PodSandbox {
        api::PodSandbox {
            id: "p1".into(),
            annotations: ann.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ..Default::default()
        }
    }

    fn loaded() -> Loaded {
        let dir = tempfile::tempdir().unwrap().keep();
        let config = crate::config::Config {
            state_dir: dir.join("state"),
            log_file: std::path::PathBuf::new(),
            ..Default::default()
        };
        Loaded { config, path: Some(dir.join("config.toml")) }
    }

    fn rt() -> Runtime {
        Runtime { name: "containerd".into(), version: "1.7.24".into() }
    }

    #[test]
    fn a_container_without_our_annotations_gets_no_adjustment() {
        let c = container(&[("io.kubernetes.cri.container-type", "container")]);
        let r = adjust(&loaded(), Path::new("/usr/bin/dataplane-hook"), &rt(), Some(&pod(&[])), &c);
        assert_eq!(r.unwrap(), None);
    }

    #[test]
    fn an_opted_in_pod_gets_our_hooks_with_the_config_and_its_annotations_copied() {
        let l = loaded();
        let c = container(&[("io.kubernetes.cri.container-type", "container")]);
        // A pod must not reach the runtime's keys (group scope, container type) or the
        // product's internal ones through the plugin: NRI shows the plugin every pod annotation.
        let p = pod(&[
            ("dataplane-hook.io/hugepages-2Mi", "16Mi"),
            ("other.io/x", "y"),
            ("io.kubernetes.cri.sandbox-namespace", "victim"),
            ("dataplane-hook.internal/gpu-requested-memory-limit", "1"),
        ]);
        let adj =
            adjust(&l, Path::new("/usr/bin/dataplane-hook"), &rt(), Some(&p), &c).unwrap().unwrap();
        assert_eq!(
            adj.annotations.get("dataplane-hook.io/hugepages-2Mi").map(String::as_str),
            Some("16Mi")
        );
        assert_eq!(adj.annotations.get(PATH_ANNOTATION).map(String::as_str), Some("nri"));
        assert_eq!(
            adj.annotations.keys().map(String::as_str).collect::<Vec<_>>(),
            ["dataplane-hook.io/hugepages-2Mi", PATH_ANNOTATION],
            "only our request keys are copied"
        );
        let hooks = adj.hooks.unwrap();
        let cfg = l.path.unwrap().display().to_string();
        for (list, stage) in
            [(&hooks.create_runtime, "createRuntime"), (&hooks.poststop, "poststop")]
        {
            assert_eq!(list.len(), 1, "{stage}");
            assert_eq!(list[0].path, "/usr/bin/dataplane-hook");
            assert_eq!(
                list[0].args,
                vec!["dataplane-hook".to_string(), "--config".into(), cfg.clone(), stage.into()]
            );
            assert!(list[0].timeout.is_some());
        }
    }

    #[test]
    fn opt_out_and_sandboxes_get_nothing() {
        let c = container(&[("io.kubernetes.cri.container-type", "sandbox")]);
        let p = pod(&[("dataplane-hook.io/hugepages-2Mi", "16Mi")]);
        assert_eq!(adjust(&loaded(), Path::new("/x"), &rt(), Some(&p), &c).unwrap(), None);
        let c = container(&[]);
        let p = pod(&[("dataplane-hook.io/enabled", "false")]);
        assert_eq!(adjust(&loaded(), Path::new("/x"), &rt(), Some(&p), &c).unwrap(), None);
    }

    #[test]
    fn a_group_member_is_refused_naming_the_runtime_version_needed() {
        let p = pod(&[("dataplane-hook.io/dpdk-group", "g1")]);
        let e = adjust(&loaded(), Path::new("/x"), &rt(), Some(&p), &container(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot put container c1 in DPDK group g1: containerd 1.7.24 speaks NRI before v0.10"), "{e}");
        assert!(e.contains("containerd >= 2.2") && !e.contains('\n'), "{e}");
    }

    #[test]
    fn a_bad_annotation_is_refused_with_its_key() {
        let p = pod(&[("dataplane-hook.io/hugepages-2Mi", "lots")]);
        let e = adjust(&loaded(), Path::new("/x"), &rt(), Some(&p), &container(&[]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataplane-hook.io/hugepages-2Mi"), "{e}");
    }

    #[test]
    fn prefix_mode_sets_the_env_by_adjustment() {
        let p = pod(&[("dataplane-hook.io/dpdk-file-prefix", "app1")]);
        let adj =
            adjust(&loaded(), Path::new("/x"), &rt(), Some(&p), &container(&[])).unwrap().unwrap();
        assert_eq!(
            adj.env,
            vec![api::KeyValue { key: "DPDK_FILE_PREFIX".into(), value: "app1".into() }]
        );
    }

    #[test]
    fn edits_an_adjustment_cannot_express_are_refused_not_dropped() {
        let before = json!({"ociVersion": "1.0.2", "process": {"cwd": "/", "env": []}, "linux": {"resources": {"hugepageLimits": [{"pageSize": "2MB", "limit": 4}]}}});
        let mut after = before.clone();
        after["linux"]["resources"].as_object_mut().unwrap().remove("hugepageLimits");
        assert!(diff("c", &before, &after).unwrap_err().to_string().contains("hugepage limits"));
        let mut after = before.clone();
        after["linux"]["namespaces"] = json!([{"type": "pid", "path": "/proc/1/ns/pid"}]);
        assert!(diff("c", &before, &after).unwrap_err().to_string().contains("linux"));
        let mut after = before.clone();
        after["process"]["rlimits"] = json!([{"type": "RLIMIT_MEMLOCK", "hard": 1, "soft": 1}]);
        after["linux"]["resources"]["memory"] = json!({"limit": 1024});
        let adj = diff("c", &before, &after).unwrap();
        assert_eq!(adj.rlimits.len(), 1);
        assert_eq!(
            adj.linux.unwrap().resources.unwrap().memory.unwrap().limit.unwrap().value,
            1024
        );
    }
}
