//! `dph-test-bundle DIR [--annotation KEY=VALUE]... [--bind HOST:CONTAINER]... [--hostname NAME]
//! -- ARGS...`: writes the OCI bundle the integration tests use (tests/harness: `make_rootfs`,
//! `default_spec`) into DIR, so scripts/demo.sh runs its containers on the same spec instead
//! of a copy of it.

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dph-test-bundle: {e}");
            ExitCode::from(2)
        }
    }
}

fn run(argv: Vec<String>) -> Result<(), String> {
    let usage = "usage: dph-test-bundle DIR [--annotation K=V]... [--bind HOST:CONTAINER]... [--hostname NAME] -- ARGS...";
    let mut it = argv.into_iter();
    let dir = PathBuf::from(it.next().ok_or(usage)?);
    let (mut annotations, mut binds, mut hostname) = (vec![], vec![], None);
    loop {
        match it.next().as_deref() {
            Some("--") => break,
            Some("--annotation") => {
                let kv = it.next().ok_or(usage)?;
                let (k, v) = kv.split_once('=').ok_or_else(|| format!("not K=V: {kv:?}"))?;
                annotations.push((k.to_string(), v.to_string()));
            }
            Some("--bind") => {
                let hc = it.next().ok_or(usage)?;
                let (h, c) =
                    hc.split_once(':').ok_or_else(|| format!("not HOST:CONTAINER: {hc:?}"))?;
                binds.push((h.to_string(), c.to_string()));
            }
            Some("--hostname") => hostname = Some(it.next().ok_or(usage)?),
            _ => return Err(usage.into()),
        }
    }
    let args: Vec<String> = it.collect();
    if args.is_empty() {
        return Err(usage.into());
    }
    dataplane_tests::make_rootfs(&dir.join("rootfs")).map_err(|e| format!("rootfs: {e}"))?;
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut spec = dataplane_tests::default_spec(&a);
    if let Some(h) = hostname {
        spec["hostname"] = json!(h);
    }
    for (h, c) in binds {
        spec["mounts"].as_array_mut().expect("mounts").push(json!({
            "destination": c, "type": "bind", "source": h, "options": ["rbind", "rw"]
        }));
    }
    for (k, v) in annotations {
        spec["annotations"][k] = json!(v);
    }
    let text = serde_json::to_vec_pretty(&spec).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("config.json"), text).map_err(|e| format!("config.json: {e}"))
}
