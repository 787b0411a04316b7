//! /proc parsers whose input a container process shapes: `host::proc::parse_stat` (liveness;
//! the comm field is whatever the process named itself, parens and spaces included),
//! `host::proc::parse_cgroups` (cgroup paths a cgroup-namespaced container chose) and
//! `host::proc::BootId` (parse/print round trip, as records store it).
//!
//! First byte 0: the rest is a stat line (no panic). 1: the rest is a comm, put in a real stat
//! line, whose state and start time must come out. 2: a /proc/<pid>/cgroup text. 3: a boot id.
#![no_main]

use dataplane_hook::host::proc::{parse_cgroups, parse_stat, BootId};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    let Ok(s) = std::str::from_utf8(rest) else { return };
    match which % 4 {
        0 => {
            let _ = parse_stat(s);
        }
        1 => {
            let line = format!("4242 ({s}) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615\n");
            assert_eq!(parse_stat(&line), Some(('S', 987654)), "{line:?}");
        }
        2 => {
            for l in parse_cgroups(s) {
                assert!(!l.controllers.iter().any(|c| c.is_empty() || c.contains(',')));
            }
        }
        _ => {
            if let Some(b) = BootId::parse(s) {
                let printed = b.to_string();
                assert_eq!(BootId::parse(&printed), Some(b), "{s:?} prints as {printed:?}");
            }
        }
    }
});
