//! The runtime's command line as the wrapper reads it (`runtime::parse_args`, `command_index`,
//! `acts_on`, `runtime::update::parse`, `ram_in_bytes`, `flags_to_resources`) and the hook's
//! fast stage parse (`cli::hook_stage`, which must read a stage as clap does). Input: argv separated by NUL (as /proc/<pid>/cmdline),
//! without argv[0].
#![no_main]

use std::path::Path;

use clap::Parser;
use dataplane_hook::cli::{self, Cli};
use dataplane_hook::runtime::{self, update};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let args: Vec<String> =
        if text.is_empty() { vec![] } else { text.split('\0').map(String::from).collect() };
    let cwd = Path::new("/run/containerd/bundle");

    let i = runtime::command_index(&args);
    let acts = runtime::acts_on(&args);
    let inv = match runtime::parse_args(&args, cwd) {
        Ok(inv) => inv,
        Err(e) => {
            // A line the wrapper cannot read is refused in one line (as the binary prints it),
            // before anything is touched.
            let msg = dataplane_hook::log::one_line(&e.into());
            assert!(!msg.contains('\n'), "{args:?}: {msg}");
            assert!(msg.starts_with("cannot read the runtime command line: "), "{args:?}: {msg}");
            assert!(acts, "{args:?}: a refused line must be acted on (refused), not passed on");
            return;
        }
    };
    assert_eq!(inv.command_index, i);
    if let Some(c) = &inv.command {
        assert_eq!(Some(c), args.get(i), "the command is the word after the global flags");
    }
    assert_eq!(acts, inv.creates() || inv.command.as_deref() == Some("update"));
    if !inv.creates() {
        assert_eq!(inv.id, None);
        if !matches!(inv.command.as_deref(), Some("create" | "run")) {
            assert_eq!(inv.bundle, cwd);
        }
    } else {
        let id = inv.id.as_ref().expect("a create line has its id");
        assert!(args[i + 1..].contains(id));
    }

    if inv.command.as_deref() == Some("update") {
        let u = update::parse(&args[i + 1..]);
        let _ = update::flags_to_resources(&u);
    }
    for a in &args {
        let _ = update::ram_in_bytes(a);
    }

    // The hook's argv includes argv[0].
    let mut hook_argv = vec!["dataplane-hook".to_string()];
    hook_argv.extend(args.iter().cloned());
    if let Some(c) = cli::hook_stage(&hook_argv) {
        let stage = hook_argv.last().unwrap();
        assert!(["createRuntime", "prestart", "poststop"].contains(&stage.as_str()));
        // The fast path reads a stage exactly as clap would (clap reads everything else).
        let clap = Cli::try_parse_from(&hook_argv)
            .unwrap_or_else(|e| panic!("{hook_argv:?}: fast path took what clap refuses: {e}"));
        assert_eq!(format!("{c:?}"), format!("{clap:?}"), "{hook_argv:?}");
    }
});
