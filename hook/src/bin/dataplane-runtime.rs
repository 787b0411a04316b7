//! `dataplane-runtime`: runc's command line, with the dataplane hook added to containers at
//! `create`/`run`. Configuration: $DATAPLANE_HOOK_CONFIG, else /etc/dataplane-hook/config.toml.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let loaded = match dataplane_hook::config::Loaded::resolve(None) {
        Ok(l) => l,
        Err(e) => dataplane_hook::log::fail(&e.into()),
    };
    if matches!(args.as_slice(), [a] if a == "--help" || a == "-h" || a == "help") {
        // What this wrapper is, then the real runtime's own help (its command line is ours).
        use std::io::Write;
        let cfg = loaded
            .path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in defaults".into());
        let mut out = std::io::stdout();
        let _ = write!(
            out,
            "dataplane-runtime: a runc-compatible runtime that adds the dataplane hook to containers.\n\
             For `create` and `run` it edits <bundle>/config.json (dataplane-hook.io/* annotations, hugepage\n\
             limits; pod sandboxes and dataplane-hook.io/enabled=false pass through untouched; a container asking\n\
             for nothing more than its private DPDK runtime dir gets it as a tmpfs spec mount, without the hook),\n\
             then execs the real runtime with the same arguments. `update` of a GPU container keeps its driver-memory headroom\n\
             carved out of the new memory limit; every other command goes straight to it.\n\
             Real runtime: runtime_path = {} (config: {cfg}; $DATAPLANE_HOOK_CONFIG overrides).\n\
             Use it as containerd's or CRI-O's runtime handler `dataplane`: dataplane-hook configure --help.\n\n\
             The real runtime's help follows.\n\n",
            loaded.config.runtime_path.display()
        );
        let _ = out.flush();
    }
    // Only the commands the wrapper acts on log; the others (start, delete, state, kill, ...)
    // are exec'd straight through and open the log only to report a failure.
    let acts = dataplane_hook::runtime::acts_on(&args);
    if acts {
        dataplane_hook::log::init(&loaded.config, "dataplane-runtime");
    }
    let err = dataplane_hook::runtime::main(args.clone(), &loaded);
    if !acts {
        dataplane_hook::log::init(&loaded.config, "dataplane-runtime");
    }
    // containerd's runc shim reports runc's --log, not stderr, to the CRI caller.
    dataplane_hook::runtime::report_to_runtime_log(
        &args,
        &format!("dataplane-hook: {}", dataplane_hook::log::one_line(&err)),
    );
    dataplane_hook::log::fail(&err);
}
