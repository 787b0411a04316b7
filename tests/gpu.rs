//! Issue 6, create side (G10): a GPU container's memory limit is lowered by its driver-memory
//! headroom — by the wrapper's spec edit (the runtime applies it) or, on the hooks.d path, by the
//! hook writing the container's memory cgroup (teardown restores the previous value); a limit
//! too small for the headroom is refused; an unlimited container follows the configured policy.
//! Real runc, real cgroups (this host: memory on cgroup v1; the v2 variant is a VM payload in
//! integration/vm/payloads/gpu/). No GPU here: the container is a GPU container by its spec
//! (`NVIDIA_VISIBLE_DEVICES`, a CDI annotation), which is all the hook looks at.

use std::path::PathBuf;
use std::time::Duration;

use dataplane_tests::util::{hook_with_stdin, product_error, state_json};
use dataplane_tests::*;
use serde_json::json;

const MI: u64 = 1 << 20;
const GI: u64 = 1 << 30;
const CDI: (&str, &str) = ("cdi.k8s.io/test-gpu", "nvidia.com/gpu=0");

/// A long-running container with `limit` (None: unlimited); `gpu` marks it a GPU container.
fn bundle(limit: Option<u64>, gpu: bool) -> TestBundle {
    let mut b = TestBundle::new(&["sleep", "1000"]);
    // An absolute cgroup path: on a v2 host the caller's own cgroup (a service with processes)
    // cannot have controller-enabled children.
    b.spec["linux"]["cgroupsPath"] = json!(format!("/dataplane-tests/{}", unique("gpu")));
    if let Some(l) = limit {
        b.spec["linux"]["resources"]["memory"] = json!({ "limit": l });
    }
    if gpu {
        b.env("NVIDIA_VISIBLE_DEVICES=0");
        b.annotate(CDI.0, CDI.1);
    }
    b.save();
    b
}

/// The container's memory cgroup directory (v1 `memory` or the v2 unified hierarchy).
fn memory_dir(pid: i32) -> PathBuf {
    util::cgroup_dirs(pid)
        .into_iter()
        .find(|d| d.join("memory.limit_in_bytes").exists() || d.join("memory.max").exists())
        .unwrap_or_else(|| panic!("no memory cgroup for pid {pid}"))
}

/// The memory limit the kernel enforces on `pid` (None: unlimited).
fn enforced_limit(pid: i32) -> Option<u64> {
    let d = memory_dir(pid);
    let file = if d.join("memory.max").exists() { "memory.max" } else { "memory.limit_in_bytes" };
    let v = std::fs::read_to_string(d.join(file)).unwrap();
    let v = v.trim();
    if v == "max" {
        return None;
    }
    let n: u64 = v.parse().unwrap();
    // v1 shows "unlimited" as PAGE_COUNTER_MAX pages.
    (n < 1 << 62).then_some(n)
}

/// v2 only: the container's `memory.high` (Some(None): "max"); None on v1, which has none.
fn memory_high(pid: i32) -> Option<Option<u64>> {
    let v = std::fs::read_to_string(memory_dir(pid).join("memory.high")).ok()?;
    Some(v.trim().parse().ok())
}

/// `memory.high` below a lowered limit: 95% (the default `memory_high_fraction`), page-aligned.
fn high_of(limit: u64) -> u64 {
    ((limit as f64 * 0.95) as u64) / 4096 * 4096
}

use dataplane_tests::watch::CgroupParents;

fn env(extra: &str) -> ProductEnv {
    ProductEnv::new(&format!("[gpu]\nheadroom_per_gpu = \"256Mi\"\n{extra}"))
}

#[test]
fn gpu_container_memory_limit_is_lowered_by_its_headroom_through_the_wrapper() {
    require_root();
    let _cg = CgroupParents::new();
    // Control: plain runc enforces exactly the pod's limit; driver memory comes on top of it.
    let runc = Runner::runc();
    let b = bundle(Some(GI), true);
    let id = unique("gpu-ctl");
    runc.launch(&b, &id);
    let pid = runc.pid(&id).unwrap();
    assert_eq!(enforced_limit(pid), Some(GI), "control: runc applies the spec's limit");
    runc.delete(&id);

    // The product: 1 GPU x 256Mi of headroom carved out of the 1Gi.
    let env = env("");
    let p = Runner::product(&env);
    let mut b = bundle(Some(GI), true);
    let id = unique("gpu-dp");
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    assert_eq!(enforced_limit(pid), Some(GI - 256 * MI), "log: {}", env.log_text());
    if let Some(high) = memory_high(pid) {
        // cgroup v2 (the VM): memory.high below the lowered max, through `unified`.
        assert_eq!(high, Some(high_of(GI - 256 * MI)), "memory.high");
    }
    let spec = b.reload().clone();
    assert_eq!(spec["linux"]["resources"]["memory"]["limit"], json!(GI - 256 * MI));
    // The wrapper tells the hook in the hook entry it injected (a pod cannot write one), not in
    // an annotation (a pod can).
    assert!(
        spec["annotations"].get("dataplane-hook.internal/gpu-requested-memory-limit").is_none(),
        "{}",
        spec["annotations"]
    );
    let entry = spec["hooks"]["createRuntime"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["path"] == json!(hook_bin().display().to_string()))
        .unwrap();
    assert_eq!(
        entry["env"],
        json!([format!("DATAPLANE_HOOK_GPU_REQUESTED_LIMIT={GI}")]),
        "{entry}"
    );
    // The grant is in the ledger for `watch` (and `status`), with the limit the pod asked for.
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state_dir.join(format!("containers/{id}.json"))).unwrap(),
    )
    .unwrap();
    let grant = rec["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "gpu_headroom")
        .expect("a gpu_headroom entry");
    assert_eq!(grant["done"], json!(true));
    assert_eq!(grant["headroom"], json!(256 * MI));
    assert_eq!(grant["requested_limit"], json!(GI));
    assert_eq!(
        grant["set_cgroup"],
        json!(false),
        "the wrapper's spec edit did it; the hook must not lower twice"
    );
    p.delete(&id);
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());

    // The annotation overrides the per-GPU default; a non-GPU container is left alone.
    let mut b = bundle(Some(GI), true);
    b.annotate("dataplane-hook.io/gpu-headroom", "384Mi");
    let id = unique("gpu-ann");
    p.launch(&b, &id);
    assert_eq!(enforced_limit(p.pid(&id).unwrap()), Some(GI - 384 * MI));
    p.delete(&id);
    let b = bundle(Some(GI), false);
    let id = unique("cpu");
    p.launch(&b, &id);
    assert_eq!(enforced_limit(p.pid(&id).unwrap()), Some(GI), "not a GPU container: untouched");
    p.delete(&id);
}

#[test]
fn hooks_d_path_writes_the_memory_cgroup_and_teardown_restores_it() {
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let runc = Runner::runc();
    let mut b = bundle(Some(GI), true);
    b.with_hooks_d(&env);
    let id = unique("gpu-hooksd");
    runc.launch(&b, &id);
    let pid = runc.pid(&id).unwrap();
    let dir = memory_dir(pid);
    assert_eq!(
        enforced_limit(pid),
        Some(GI - 256 * MI),
        "the hook lowered the cgroup: {}",
        env.log_text()
    );
    let high = memory_high(pid);
    if let Some(h) = high {
        assert_eq!(h, Some(high_of(GI - 256 * MI)), "v2: the hook wrote memory.high too");
    }
    let spec: serde_json::Value =
        serde_json::from_slice(&std::fs::read(b.path().join("config.json")).unwrap()).unwrap();
    assert_eq!(
        spec["linux"]["resources"]["memory"]["limit"],
        json!(GI),
        "hooks.d never edits the spec"
    );
    let rec = std::fs::read_to_string(env.state_dir.join(format!("containers/{id}.json"))).unwrap();
    assert!(
        rec.contains("\"set_cgroup\": true") && rec.contains(&format!("\"previous\": \"{GI}\"")),
        "{rec}"
    );

    // Stop it but keep its cgroup (runc removes it only at delete), then poststop by hand:
    // teardown writes the previous limit back.
    runc.kill(&id, "KILL");
    assert!(runc.wait_stopped(&id, Duration::from_secs(5)));
    assert!(dir.exists());
    let o = hook_with_stdin(&env, "poststop", &state_json(&id, Some(pid), b.path(), "stopped"));
    assert!(o.status.success(), "poststop: {}", String::from_utf8_lossy(&o.stderr));
    let file = if dir.join("memory.max").exists() { "memory.max" } else { "memory.limit_in_bytes" };
    assert_eq!(
        std::fs::read_to_string(dir.join(file)).unwrap().trim(),
        GI.to_string(),
        "teardown restored the limit"
    );
    if high.is_some() {
        assert_eq!(
            std::fs::read_to_string(dir.join("memory.high")).unwrap().trim(),
            "max",
            "and memory.high"
        );
    }
    assert!(env.records().is_empty());
    // runc's own poststop at delete finds nothing left (idempotent).
    let o = runc.delete(&id);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

#[test]
fn a_limit_too_small_for_the_headroom_is_refused_and_leaves_nothing() {
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    // Wrapper path.
    let p = Runner::product(&env);
    let b = bundle(Some(256 * MI), true);
    let id = unique("gpu-small");
    let o = p.create(&b, &id);
    assert!(!o.status.success(), "a 256Mi limit cannot hold 256Mi of headroom");
    let e = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    assert!(
        e.contains(&format!("cannot give GPU container {id} its driver-memory headroom"))
            && e.contains("memory limit 256Mi minus 256Mi of headroom")
            && e.contains("at least 320Mi"),
        "{e}"
    );
    assert_eq!(p.status(&id), None, "no container was created");
    // hooks.d path: the hook refuses at createRuntime; runc fails the create.
    let runc = Runner::runc();
    let mut b = bundle(Some(256 * MI), true);
    b.with_hooks_d(&env);
    let id = unique("gpu-small-hd");
    let o = runc.create(&b, &id);
    assert!(!o.status.success());
    let e = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    assert!(e.contains("its driver-memory headroom"), "{e}");
    runc.delete(&id);
    assert!(env.records().is_empty(), "a failed create leaves no record: {:?}", env.records());
}

#[test]
fn unlimited_gpu_containers_follow_the_configured_policy() {
    require_root();
    let _cg = CgroupParents::new();
    // allow (default): runs unlimited.
    let env_allow = env("");
    let p = Runner::product(&env_allow);
    let b = bundle(None, true);
    let id = unique("gpu-unl");
    p.launch(&b, &id);
    assert_eq!(enforced_limit(p.pid(&id).unwrap()), None);
    let rec =
        std::fs::read_to_string(env_allow.state_dir.join(format!("containers/{id}.json"))).unwrap();
    assert!(rec.contains("gpu_headroom"), "its headroom is still granted for watch: {rec}");
    p.delete(&id);

    // refuse.
    let env_refuse = env("unlimited_policy = \"refuse\"");
    let p = Runner::product(&env_refuse);
    let b = bundle(None, true);
    let id = unique("gpu-unl-refuse");
    let o = p.create(&b, &id);
    assert!(!o.status.success());
    let e = product_error(&o.stderr).unwrap();
    assert!(e.contains("no memory limit") && e.contains("\"refuse\""), "{e}");

    // limit-to-node: the node's memory minus the headroom (hooks.d path too).
    let env_node = env("unlimited_policy = \"limit-to-node\"");
    let total = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024;
    let want = (total - 256 * MI) / 4096 * 4096;
    let p = Runner::product(&env_node);
    let b = bundle(None, true);
    let id = unique("gpu-unl-node");
    p.launch(&b, &id);
    assert_eq!(enforced_limit(p.pid(&id).unwrap()), Some(want));
    p.delete(&id);
    let runc = Runner::runc();
    let mut b = bundle(None, true);
    b.with_hooks_d(&env_node);
    let id = unique("gpu-unl-node-hd");
    runc.launch(&b, &id);
    assert_eq!(enforced_limit(runc.pid(&id).unwrap()), Some(want));
    runc.delete(&id);
    assert!(env_node.records().is_empty());
}

/// `update --resources - ID` with `resources` on stdin, as containerd runs it for kubelet's
/// UpdateContainerResources; `global`: runc flags before the command.
fn update_json(
    mut c: std::process::Command,
    global: &[&str],
    id: &str,
    resources: &str,
) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = c
        .args(global)
        .args(["update", "--resources", "-", id])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(resources.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn update_flags(mut c: std::process::Command, args: &[&str]) -> std::process::Output {
    c.arg("update").args(args).output().unwrap()
}

/// Plain runc on the product runner's containers (its private root).
fn plain_runc_on(p: &Runner) -> std::process::Command {
    let mut c = std::process::Command::new(oci_runtime());
    c.arg("--root").arg(p.runc_root.path());
    if systemd_cgroup() {
        c.arg("--systemd-cgroup");
    }
    c
}

fn ok(what: &str, o: &std::process::Output) {
    assert!(o.status.success(), "{what}: {}", String::from_utf8_lossy(&o.stderr));
}

/// The container's `gpu_headroom` ledger entry.
fn grant(env: &ProductEnv, id: &str) -> serde_json::Value {
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state_dir.join(format!("containers/{id}.json"))).unwrap(),
    )
    .unwrap();
    rec["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "gpu_headroom")
        .expect("a gpu_headroom entry")
        .clone()
}

/// Checks the limit (and on v2 memory.high below it) of a GPU container after an update.
fn assert_carved(pid: i32, requested: u64, what: &str) {
    let want = requested - 256 * MI;
    assert_eq!(
        enforced_limit(pid),
        Some(want),
        "{what}: the limit keeps 256Mi of headroom carved out of {requested}"
    );
    if let Some(high) = memory_high(pid) {
        assert_eq!(high, Some(high_of(want)), "{what}: memory.high below the new limit");
    }
}

#[test]
fn update_of_a_gpu_container_keeps_its_headroom_carved_out_of_the_new_limit() {
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let p = Runner::product(&env);
    let b = bundle(Some(GI), true);
    let id = unique("gpu-upd");
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    assert_carved(pid, GI, "create");

    // Control: plain runc, as kubelet's UpdateContainerResources reaches it through containerd
    // (the pod's full limit in `--resources -`), gives the headroom back to the container.
    let kubelet = json!({ "memory": { "limit": GI }, "cpu": { "shares": 1024 } }).to_string();
    ok("plain runc update", &update_json(plain_runc_on(&p), &[], &id, &kubelet));
    assert_eq!(
        enforced_limit(pid),
        Some(GI),
        "control: plain runc update restores the full limit (the carve is lost)"
    );

    // The wrapper: the same update keeps the carve (here: puts it back).
    ok("wrapper update", &update_json(p.command(), &[], &id, &kubelet));
    assert_carved(pid, GI, "same limit through the wrapper");
    // A raised limit, with more global flags before the command (runc argv as containerd builds it).
    let log = env.root.join("runc-update.log");
    let raised = json!({ "memory": { "limit": 2 * GI } }).to_string();
    ok(
        "raise",
        &update_json(
            p.command(),
            &["--log", log.to_str().unwrap(), "--log-format", "json"],
            &id,
            &raised,
        ),
    );
    assert_carved(pid, 2 * GI, "raised to 2Gi");
    let g = grant(&env, &id);
    assert_eq!(
        (g["requested_limit"].clone(), g["limit"].clone(), g["headroom"].clone()),
        (json!(2 * GI), json!(2 * GI - 256 * MI), json!(256 * MI)),
        "recorded: {g}"
    );
    // runc's flags (a person's `runc update --memory`), flags after the id as urfave accepts.
    ok("flags", &update_flags(p.command(), &[&id, "--memory", "1536m", "--cpu-share=512"]));
    assert_carved(pid, 1536 * MI, "--memory 1536m");
    assert_eq!(grant(&env, &id)["requested_limit"], json!(1536 * MI));
    // An update without memory leaves the (lowered) limit alone.
    ok("cpu only", &update_flags(p.command(), &["--cpu-share", "256", &id]));
    assert_carved(pid, 1536 * MI, "cpu-only update");

    // Bad input: refused with one line, before runc runs (the limit stays).
    let o = update_flags(p.command(), &["--memory", "300m", &id]);
    assert!(!o.status.success(), "300Mi cannot hold 256Mi of headroom + 64Mi");
    let e = util::assert_one_line("too small", &o.stderr);
    eprintln!("refused: {e}");
    assert!(
        e.contains(&format!("cannot update GPU container {id} without its driver-memory headroom"))
            && e.contains("at least 320Mi"),
        "{e}"
    );
    for (args, want) in [
        (vec!["--memory", "lots", id.as_str()], "invalid value for --memory: \"lots\""),
        (
            vec!["--memory", "1g", "--frobnicate", "1", id.as_str()],
            "unknown runc update flag --frobnicate",
        ),
        (
            vec!["-r", "/nonexistent/resources.json", id.as_str()],
            "cannot read --resources /nonexistent/resources.json",
        ),
    ] {
        let o = update_flags(p.command(), &args);
        assert!(!o.status.success(), "{args:?}");
        let e = util::assert_one_line(&format!("{args:?}"), &o.stderr);
        assert!(
            e.contains(&format!("cannot update GPU container {id}")) && e.contains(want),
            "{e}"
        );
    }
    let o = update_json(p.command(), &[], &id, "{ not json");
    let e = util::assert_one_line("not json", &o.stderr);
    assert!(!o.status.success() && e.contains("is not JSON"), "{e}");
    assert_carved(pid, 1536 * MI, "after the refusals");

    p.delete(&id);
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
}

#[test]
fn update_of_a_non_gpu_container_passes_through_unchanged() {
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let p = Runner::product(&env);
    let b = bundle(Some(GI), false);
    let id = unique("cpu-upd");
    p.launch(&b, &id);
    let pid = p.pid(&id).unwrap();
    ok(
        "json",
        &update_json(p.command(), &[], &id, &json!({ "memory": { "limit": 2 * GI } }).to_string()),
    );
    assert_eq!(enforced_limit(pid), Some(2 * GI));
    ok("flags", &update_flags(p.command(), &["--memory", "512m", &id]));
    assert_eq!(enforced_limit(pid), Some(512 * MI));
    // runc's own errors stay runc's (nothing of ours in between).
    let o = update_flags(p.command(), &["--memory", "lots", &id]);
    assert!(!o.status.success());
    assert!(
        !String::from_utf8_lossy(&o.stderr).contains("dataplane-hook"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    p.delete(&id);
}

/// The node's MemTotal in bytes.
fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn gpu_headroom_beyond_the_bound_is_refused_with_one_line_and_leaves_nothing() {
    // Issue 13: any pod may annotate gpu-headroom, and an unlimited GPU container (policy
    // "allow") pays nothing for it, while the watchdog tolerates it node-wide as uncharged
    // memory: `1Ei` switched the watchdog off (and past i64::MAX its sums wrapped into kills
    // of other tenants). The bound: [gpu] max_headroom_per_gpu (32Gi default) per GPU, never
    // more than the node's memory.
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let p = Runner::product(&env);
    let bound = (32 * GI).min(mem_total());
    for value in ["1Ei".to_string(), "9Ei".to_string(), (bound + 1).to_string()] {
        let mut b = bundle(None, true);
        b.annotate("dataplane-hook.io/gpu-headroom", &value);
        let id = unique("gpu-huge");
        let o = p.create(&b, &id);
        assert!(
            !o.status.success(),
            "gpu-headroom {value} on an unlimited GPU container was accepted (bound {bound})"
        );
        let e = util::assert_one_line(&value, &o.stderr);
        assert!(
            e.starts_with(&format!(
                "dataplane-hook: cannot give GPU container {id} its driver-memory headroom: "
            )) && e.contains(&format!(
                "is more than the {} a container with 1 GPU may be granted",
                dataplane_hook::request::Bytes(bound)
            )) && e.ends_with(&format!(
                "(lower dataplane-hook.io/gpu-headroom to at most {})",
                dataplane_hook::request::Bytes(bound)
            )),
            "{e}"
        );
        assert_eq!(p.status(&id), None, "no container was created");
    }
    // The hooks.d path refuses it the same way.
    let runc = Runner::runc();
    let mut b = bundle(None, true);
    b.annotate("dataplane-hook.io/gpu-headroom", "1Ei");
    b.with_hooks_d(&env);
    let id = unique("gpu-huge-hd");
    let o = runc.create(&b, &id);
    assert!(!o.status.success(), "hooks.d: 1Ei accepted");
    let e = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stderr)));
    assert!(e.contains("is more than the"), "{e}");
    runc.delete(&id);
    assert!(env.records().is_empty(), "a refused create leaves no record: {:?}", env.records());
    // At the bound it runs (unlimited, with its grant in the ledger for watch).
    let mut b = bundle(None, true);
    b.annotate("dataplane-hook.io/gpu-headroom", &bound.to_string());
    let id = unique("gpu-bound");
    p.launch(&b, &id);
    assert_eq!(grant(&env, &id)["headroom"], json!(bound));
    p.delete(&id);
    assert!(env.records().is_empty());
}

#[test]
fn gpu_headroom_on_a_container_without_a_gpu_is_refused() {
    // Issue 13: the annotation alone used to make any container a GPU container (one GPU):
    // granted headroom that watch tolerates, and a candidate watch kills.
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let p = Runner::product(&env);
    let mut b = bundle(Some(GI), false);
    b.annotate("dataplane-hook.io/gpu-headroom", "256Mi");
    let id = unique("cpu-headroom");
    let o = p.create(&b, &id);
    assert!(
        !o.status.success(),
        "a container without a GPU was given a GPU headroom: {}",
        env.log_text()
    );
    let e = util::assert_one_line("no GPU", &o.stderr);
    assert!(
        e.starts_with(&format!("dataplane-hook: cannot give container {id} a GPU driver-memory headroom: dataplane-hook.io/gpu-headroom is set but the spec gives it no GPU"))
            && e.ends_with("(remove dataplane-hook.io/gpu-headroom, or give the container its GPU)"),
        "{e}"
    );
    assert_eq!(p.status(&id), None);
    assert!(env.records().is_empty());
}

#[test]
fn a_forged_limit_marker_annotation_is_refused_on_the_hooks_d_and_wrapper_paths() {
    // Issue 13: the wrapper used to tell the hook "I lowered the limit" with an annotation.
    // On CRI-O every pod annotation reaches the spec, and the hooks.d path reads the spec as it
    // comes: a pod that set it ran with its full limit while watch granted it the headroom.
    // Now the wrapper says so in its own hook entry, and the annotation is refused.
    require_root();
    let _cg = CgroupParents::new();
    let env = env("");
    let marker = "dataplane-hook.internal/gpu-requested-memory-limit";
    // The forger claims its pod asked for 1Gi + the 256Mi headroom, so that its real 1Gi limit
    // looks like one already lowered: the hook used to agree and write nothing.
    let forged = (GI + 256 * MI).to_string();
    let runc = Runner::runc();
    let mut b = bundle(Some(GI), true);
    b.annotate(marker, &forged);
    b.with_hooks_d(&env);
    let id = unique("gpu-forged-hd");
    let o = runc.create(&b, &id);
    if o.status.success() {
        let pid = runc.pid(&id).unwrap();
        let limit = enforced_limit(pid);
        runc.delete(&id);
        panic!("hooks.d: the forged marker was accepted; the container runs with limit {limit:?} (its headroom is 256Mi)");
    }
    // runc quotes the hook's stderr in its own error (`"` as `\"`).
    let e = product_error(&o.stderr)
        .unwrap_or_else(|| panic!("{}", String::from_utf8_lossy(&o.stderr)))
        .replace("\\\"", "\"");
    assert!(
        e.starts_with(&format!("dataplane-hook: cannot set up a GPU container: annotation {marker}=\"{forged}\" is reserved"))
            && e.ends_with(&format!("(remove the annotation {marker})")),
        "{e}"
    );
    runc.delete(&id);
    assert!(env.records().is_empty(), "{:?}", env.records());

    // The wrapper path (CRI-O with the dataplane runtime handler passes it too).
    let p = Runner::product(&env);
    let mut b = bundle(Some(GI), true);
    b.annotate(marker, &forged);
    let id = unique("gpu-forged");
    let o = p.create(&b, &id);
    if o.status.success() {
        p.start(&id);
        let limit = enforced_limit(p.pid(&id).unwrap());
        p.delete(&id);
        panic!("wrapper: the forged marker was accepted; the container runs with limit {limit:?}");
    }
    let e = util::assert_one_line("forged marker", &o.stderr);
    assert!(e.contains(&format!("annotation {marker}=\"{forged}\" is reserved")), "{e}");
    assert_eq!(p.status(&id), None);
    assert!(env.records().is_empty());
}
