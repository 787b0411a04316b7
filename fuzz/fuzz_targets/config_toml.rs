//! The node config: `config::Config::parse` (TOML) and the PSI trigger line. A config that
//! parses serializes to TOML that parses back equal; errors are one line.
#![no_main]

use std::path::Path;

use dataplane_hook::config::{parse_pressure_trigger, Config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let path = Path::new("/etc/dataplane-hook/config.toml");
    match Config::parse(text, path) {
        Ok(c) => {
            let _ = c.rdma.memlock_bytes();
            let _ = parse_pressure_trigger(&c.watch.pressure_trigger);
            let again = toml::to_string(&c).expect("a config serializes");
            let back = Config::parse(&again, path).unwrap_or_else(|e| panic!("{e}\n{again}"));
            assert_eq!(back, c, "{again}");
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error: {msg:?}");
        }
    }
    if let Ok((_, stall, window)) = parse_pressure_trigger(text) {
        assert!(stall > 0 && stall <= window);
    }
});
