//! Owns `dataplane-runtime update` (kubelet's UpdateContainerResources → containerd → `runc
//! update --resources -`, or a person's `runc update --memory ...`): the memory limit of a GPU
//! container stays lowered by the headroom granted to it at create (G10), where a plain `runc
//! update` would give it back the pod's full limit.
//!
//! - A container without a completed `gpu_headroom` entry in the ledger: exec'd straight
//!   through, argv and stdin untouched.
//! - A GPU container: the update is read as runc reads it — the `--resources` JSON (a file or
//!   `-`, stdin; every other resource flag is then ignored, as runc does) or else the flags,
//!   turned into the same JSON. When it touches memory, the limit it asks for is re-planned with
//!   the recorded headroom ([`gpu::replan`]: a limit too small for it is refused before runc
//!   runs) and lowered like at create ([`gpu::lower_resources`]: limit, swap allowance,
//!   reservation, v2 `memory.high`). The real runtime then runs `update --resources -` with that
//!   JSON on stdin; when it succeeds the new limits are recorded in the ledger.
//!
//! runc's `update` flags (1.1 to 1.4) all take a value; an unknown one on a GPU container's
//! memory update is refused (pass the resources as JSON with `--resources` instead).

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context};
use serde_json::{json, Map, Value};

use crate::config::Loaded;
use crate::features::gpu::{self, GpuPlan};
use crate::ledger::{self, Effect, Ledger};

/// How runc reads an `update` flag's value, and where it goes in the resources JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `--resources`/`-r`: the JSON itself.
    Resources,
    Uint(&'static str),
    Int(&'static str),
    Str(&'static str),
    /// A size (`units.RAMInBytes`, or `-1`).
    Size(&'static str),
    /// Intel RDT flags: runc reads them in both forms; passed on as flags.
    Rdt,
}

const FLAGS: &[(&str, Kind)] = &[
    ("resources", Kind::Resources),
    ("r", Kind::Resources),
    ("blkio-weight", Kind::Uint("/blockIO/weight")),
    ("cpu-period", Kind::Uint("/cpu/period")),
    ("cpu-rt-period", Kind::Uint("/cpu/realtimePeriod")),
    ("cpu-share", Kind::Uint("/cpu/shares")),
    ("cpu-burst", Kind::Uint("/cpu/burst")),
    ("cpu-quota", Kind::Int("/cpu/quota")),
    ("cpu-rt-runtime", Kind::Int("/cpu/realtimeRuntime")),
    ("cpu-idle", Kind::Int("/cpu/idle")),
    ("pids-limit", Kind::Int("/pids/limit")),
    ("cpuset-cpus", Kind::Str("/cpu/cpus")),
    ("cpuset-mems", Kind::Str("/cpu/mems")),
    ("memory", Kind::Size("/memory/limit")),
    ("memory-swap", Kind::Size("/memory/swap")),
    ("memory-reservation", Kind::Size("/memory/reservation")),
    ("kernel-memory", Kind::Size("/memory/kernel")),
    ("kernel-memory-tcp", Kind::Size("/memory/kernelTCP")),
    ("l3-cache-schema", Kind::Rdt),
    ("mem-bw-schema", Kind::Rdt),
];

const MEMORY_FLAGS: &[&str] = &["memory", "memory-swap", "memory-reservation"];

/// An `update` command line after the command word.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct UpdateArgs {
    /// (name without dashes, value) in order.
    pub flags: Vec<(String, String)>,
    pub positional: Vec<String>,
    /// `-h`/`--help`, or a flag without its value: runc's business.
    pub help_or_incomplete: bool,
}

pub fn parse(rest: &[String]) -> UpdateArgs {
    let mut u = UpdateArgs::default();
    let mut j = 0;
    while j < rest.len() {
        let a = &rest[j];
        if a == "--" {
            u.positional.extend(rest[j + 1..].iter().cloned());
            break;
        }
        match super::flag_name(a) {
            Some(("h", _)) | Some(("help", _)) => {
                u.help_or_incomplete = true;
                j += 1;
            }
            Some((n, Some(v))) => {
                u.flags.push((n.to_string(), v.to_string()));
                j += 1;
            }
            Some((n, None)) => match rest.get(j + 1) {
                Some(v) => {
                    u.flags.push((n.to_string(), v.clone()));
                    j += 2;
                }
                None => {
                    u.help_or_incomplete = true;
                    j += 1;
                }
            },
            None => {
                u.positional.push(a.clone());
                j += 1;
            }
        }
    }
    u
}

impl UpdateArgs {
    /// The last value of flag `name` (Go's flag package keeps the last), if not empty.
    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
    fn resources(&self) -> Option<&str> {
        self.value("resources").or_else(|| self.value("r"))
    }
}

/// docker/go-units `RAMInBytes` as runc 1.1 uses it: a decimal number, an optional space, an
/// optional unit k/m/g/t/p (powers of 1024, any case) with optional `i` and `b`.
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let num_end = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (num, mut sfx) = s.split_at(num_end);
    if num.is_empty() || !num.as_bytes()[0].is_ascii_digit() || num.ends_with('.') {
        return None;
    }
    let n: f64 = num.parse().ok()?;
    sfx = sfx.strip_prefix(' ').unwrap_or(sfx);
    let lower = sfx.to_ascii_lowercase();
    let mut rest = lower.as_str();
    let mut mul = 1f64;
    if let Some(p) = rest.chars().next().and_then(|c| "kmgtp".find(c)) {
        mul = 1024f64.powi(p as i32 + 1);
        rest = &rest[1..];
    }
    rest = rest.strip_prefix('i').unwrap_or(rest);
    rest = rest.strip_prefix('b').unwrap_or(rest);
    rest.is_empty().then_some((n * mul) as i64)
}

/// The flags as the resources JSON runc would build from them (pure).
pub fn flags_to_resources(u: &UpdateArgs) -> anyhow::Result<Value> {
    let mut res = json!({});
    for (name, _) in &u.flags {
        let Some((_, kind)) = FLAGS.iter().find(|(n, _)| n == name) else {
            bail!(
                "unknown runc update flag --{name} (pass the resources as JSON with --resources)"
            );
        };
        let Some(v) = u.value(name) else { continue };
        let bad = || {
            let hint = if matches!(kind, Kind::Size(_)) {
                "a size such as 1536m, 2g or bytes, or -1 for unlimited"
            } else {
                "a number"
            };
            anyhow::anyhow!("invalid value for --{name}: {v:?} (runc takes {hint})")
        };
        let (ptr, value) = match *kind {
            Kind::Resources | Kind::Rdt => continue,
            Kind::Uint(p) => (p, json!(v.parse::<u64>().map_err(|_| bad())?)),
            Kind::Int(p) => (p, json!(v.parse::<i64>().map_err(|_| bad())?)),
            Kind::Str(p) => (p, json!(v)),
            Kind::Size(p) => {
                (p, json!(if v == "-1" { -1 } else { ram_in_bytes(v).ok_or_else(bad)? }))
            }
        };
        set_pointer(&mut res, ptr, value);
    }
    Ok(res)
}

fn set_pointer(root: &mut Value, ptr: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        if !cur.is_object() {
            *cur = json!({});
        }
        let obj = cur.as_object_mut().expect("object");
        if i + 1 == parts.len() {
            obj.insert(p.to_string(), value);
            return;
        }
        cur = obj.entry(p.to_string()).or_insert_with(|| json!({}));
    }
}

/// The memory limit an update asks for (pure): None when it leaves the limit alone (absent,
/// null or 0, as runc reads it), Some(None) for unlimited (-1).
pub fn requested_limit(res: &Map<String, Value>) -> anyhow::Result<Option<Option<u64>>> {
    match res.get("memory").and_then(|m| m.get("limit")) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_i64() {
            Some(0) => Ok(None),
            Some(-1) => Ok(Some(None)),
            Some(n) if n > 0 => Ok(Some(Some(n as u64))),
            _ => bail!("invalid memory limit {v} in the resources (bytes, or -1 for unlimited)"),
        },
    }
}

/// Whether the update touches memory at all.
fn touches_memory(res: &Map<String, Value>) -> bool {
    let mem = res.get("memory").and_then(Value::as_object);
    let set =
        |k: &str| mem.and_then(|m| m.get(k)).is_some_and(|v| !v.is_null() && v.as_i64() != Some(0));
    set("limit")
        || set("swap")
        || set("reservation")
        || res
            .get("unified")
            .and_then(Value::as_object)
            .is_some_and(|u| u.keys().any(|k| k.starts_with("memory.")))
}

/// The `--resources` JSON from a file or `-` (stdin): a JSON object.
fn read_resources(src: &str) -> anyhow::Result<Value> {
    let mut text = String::new();
    let read = if src == "-" {
        std::io::stdin().read_to_string(&mut text).map(|_| ())
    } else {
        std::fs::read_to_string(src).map(|t| text = t)
    };
    read.map_err(|e| {
        anyhow::anyhow!("cannot read --resources {src}: {e} (give a readable file, or - for stdin)")
    })?;
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => Ok(v),
        Ok(_) => bail!(
            "--resources {src} is not a JSON object (runc update takes a LinuxResources object)"
        ),
        Err(e) => {
            bail!("--resources {src} is not JSON: {e} (runc update takes a LinuxResources object)")
        }
    }
}

/// The GPU grant recorded for `id`, read without the ledger's lock (records are replaced
/// atomically); None for a container that is not a GPU container of ours.
fn recorded_grant(state_dir: &Path, id: &str) -> Option<GpuPlan> {
    if id.is_empty() || id.contains('/') || id.starts_with('.') {
        return None;
    }
    let text = std::fs::read(state_dir.join("containers").join(format!("{id}.json"))).ok()?;
    let rec: ledger::ContainerRecord = serde_json::from_slice(&text).ok()?;
    grant_of(&rec).cloned()
}

fn grant_of(rec: &ledger::ContainerRecord) -> Option<&GpuPlan> {
    rec.entries.iter().find_map(|e| match &e.effect {
        Effect::GpuHeadroom(g) if e.done => Some(g),
        _ => None,
    })
}

/// Runs `update` for a GPU container: Ok(None) when the container is not one (the caller execs
/// the runtime unchanged), else the real runtime's exit code.
pub fn run(
    args: &[String],
    at: usize,
    loaded: &Loaded,
    runtime: &Path,
) -> anyhow::Result<Option<i32>> {
    let u = parse(&args[at + 1..]);
    let [id] = u.positional.as_slice() else { return Ok(None) };
    if u.help_or_incomplete {
        return Ok(None);
    }
    let cfg = &loaded.config;
    let Some(grant) = recorded_grant(&cfg.state_dir, id) else { return Ok(None) };
    let what = || format!("cannot update GPU container {id}");
    let mut res = match u.resources() {
        Some(src) => read_resources(src).with_context(what)?,
        None if MEMORY_FLAGS.iter().any(|f| u.value(f).is_some()) => {
            flags_to_resources(&u).with_context(what)?
        }
        None => return Ok(None), // no memory flag: the limit stays the lowered one
    };
    let obj = res.as_object_mut().expect("read_resources and flags_to_resources give objects");
    let plan = if touches_memory(obj) {
        let requested = requested_limit(obj).with_context(what)?;
        let plan = gpu::replan(id, &grant, requested, cfg, gpu::host_mem_total())
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let v2 = gpu::host_memory_is_v2();
        gpu::lower_resources(obj, &plan, v2);
        if let (true, None, Some(_)) = (v2, plan.high, grant.high) {
            // Now unlimited: lift the memory.high of the old limit too.
            let unified = obj.entry("unified").or_insert_with(|| json!({}));
            if let Some(u) = unified.as_object_mut() {
                u.entry("memory.high").or_insert_with(|| json!("max"));
            }
        }
        tracing::info!(container = %id, headroom = %plan.headroom, requested = ?plan.requested_limit, limit = ?plan.limit, "GPU container update: memory limit lowered by its headroom");
        Some(plan)
    } else {
        None
    };
    let mut argv: Vec<String> = args[..at].to_vec();
    argv.extend(["update".into(), "--resources".into(), "-".into()]);
    for (n, v) in &u.flags {
        if FLAGS.iter().any(|(f, k)| f == n && *k == Kind::Rdt) {
            argv.push(format!("--{n}={v}"));
        }
    }
    argv.push(id.clone());
    let mut child =
        Command::new(runtime).args(&argv).stdin(Stdio::piped()).spawn().with_context(|| {
            format!(
                "cannot execute the real runtime {} (set runtime_path in the config)",
                runtime.display()
            )
        })?;
    let body = serde_json::to_vec(&res).expect("serializes");
    let written = child.stdin.take().expect("piped").write_all(&body);
    let status = child.wait().context("waiting for the real runtime")?;
    written.context("writing the resources to the real runtime")?;
    let code = status.code().unwrap_or_else(|| {
        128 + std::os::unix::process::ExitStatusExt::signal(&status).unwrap_or(0)
    });
    if let (true, Some(plan)) = (status.success(), plan) {
        if let Err(e) = record(&cfg.state_dir, id, &plan) {
            tracing::warn!(container = %id, "updated, but the ledger still has the old limits: {e:#}");
        }
    }
    Ok(Some(code))
}

/// Records the updated grant, and the memory cgroup values the hook wrote at create (hooks.d
/// path) as the runtime has just set them, so that teardown restores the limit the pod now has.
fn record(state_dir: &Path, id: &str, plan: &GpuPlan) -> anyhow::Result<()> {
    let l = Ledger::open(state_dir)?;
    let _lock = l.lock_container(id)?;
    let Some(mut rec) = l.load(id)? else { return Ok(()) }; // deleted meanwhile
    let or_max = |b: Option<crate::request::Bytes>, v1: bool| match b {
        Some(b) => b.0.to_string(),
        None if v1 => "-1".into(),
        None => "max".into(),
    };
    for e in &mut rec.entries {
        match &mut e.effect {
            Effect::GpuHeadroom(g) if e.done => *g = plan.clone(),
            Effect::CgroupValue { file, value, previous } => {
                match file.file_name().and_then(|f| f.to_str()) {
                    Some(name @ ("memory.max" | "memory.limit_in_bytes")) => {
                        let v1 = name == "memory.limit_in_bytes";
                        *value = or_max(plan.limit, v1);
                        *previous = Some(or_max(plan.requested_limit, v1));
                    }
                    Some("memory.high") => *value = or_max(plan.high, false),
                    _ => {}
                }
            }
            _ => {}
        }
    }
    l.save(&rec)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_args as v;

    #[test]
    fn update_command_lines_parse_like_runc() {
        let u = parse(&v(&["--memory", "1g", "-r=-", "--memory-swap=2g", "ctr"]));
        assert_eq!(u.positional, v(&["ctr"]));
        assert_eq!(u.resources(), Some("-"));
        assert_eq!(u.value("memory-swap"), Some("2g"));
        let u = parse(&v(&["ctr", "--memory", "1g"]));
        assert_eq!(
            (u.positional.as_slice(), u.value("memory")),
            (v(&["ctr"]).as_slice(), Some("1g")),
            "flags after the id (urfave reorders)"
        );
        assert!(parse(&v(&["--help"])).help_or_incomplete);
        assert!(parse(&v(&["ctr", "--memory"])).help_or_incomplete);
        assert_eq!(parse(&v(&["--", "a", "-b"])).positional, v(&["a", "-b"]));
    }

    #[test]
    fn sizes_parse_like_go_units() {
        for (s, n) in [
            ("1073741824", 1 << 30),
            ("1g", 1 << 30),
            ("1G", 1 << 30),
            ("1GiB", 1 << 30),
            ("1gb", 1 << 30),
            ("512m", 512 << 20),
            ("1.5k", 1536),
            ("2 m", 2 << 20),
            ("10b", 10),
        ] {
            assert_eq!(ram_in_bytes(s), Some(n), "{s}");
        }
        for s in ["", "g", "-5", "1x", "1gg", "1.g", "abc", "1gibb"] {
            assert_eq!(ram_in_bytes(s), None, "{s:?}");
        }
    }

    #[test]
    fn flags_become_the_resources_json_runc_builds() {
        let u = parse(&v(&[
            "--memory",
            "1g",
            "--memory-swap",
            "-1",
            "--cpu-quota",
            "-1",
            "--cpu-period=100000",
            "--cpuset-cpus",
            "0-1",
            "--pids-limit",
            "50",
            "--l3-cache-schema",
            "L3:0=f",
            "--blkio-weight",
            "500",
            "c",
        ]));
        let r = flags_to_resources(&u).unwrap();
        assert_eq!(
            r,
            json!({"memory": {"limit": 1u64 << 30, "swap": -1}, "cpu": {"quota": -1, "period": 100000, "cpus": "0-1"},
                   "pids": {"limit": 50}, "blockIO": {"weight": 500}})
        );
        let e = flags_to_resources(&parse(&v(&["--memory", "lots", "c"]))).unwrap_err().to_string();
        assert_eq!(e, "invalid value for --memory: \"lots\" (runc takes a size such as 1536m, 2g or bytes, or -1 for unlimited)");
        let e = flags_to_resources(&parse(&v(&["--memory", "1g", "--frobnicate", "1", "c"])))
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown runc update flag --frobnicate"), "{e}");
    }

    #[test]
    fn the_requested_limit_is_read_as_runc_reads_it() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(requested_limit(&m(json!({}))).unwrap(), None);
        assert_eq!(requested_limit(&m(json!({"memory": {"limit": 0}}))).unwrap(), None);
        assert_eq!(requested_limit(&m(json!({"memory": {"limit": -1}}))).unwrap(), Some(None));
        assert_eq!(requested_limit(&m(json!({"memory": {"limit": 5}}))).unwrap(), Some(Some(5)));
        assert!(requested_limit(&m(json!({"memory": {"limit": "5"}}))).is_err());
        assert!(touches_memory(&m(json!({"memory": {"swap": 5}}))));
        assert!(touches_memory(&m(json!({"unified": {"memory.high": "5"}}))));
        assert!(!touches_memory(&m(json!({"memory": {"limit": 0}, "cpu": {"shares": 2}}))));
    }
}
