//! Pod annotations and the spec's hugepageLimits -> `request::Request::parse`, the edge where
//! untrusted annotations (every pod annotation on CRI-O) become a typed request.
//!
//! Input: records separated by NUL. `KEY=VALUE` is an annotation (a key starting with `/` is
//! short for `dataplane-hook.io/`, so mutations reach the known keys quickly); `#SIZE=LIMIT` is
//! a `hugepageLimits` entry (LIMIT a decimal u64; records whose limit does not parse are
//! dropped).
#![no_main]

use std::collections::BTreeMap;

use dataplane_hook::request::{Bytes, PageSize, Request, PREFIX};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut annotations = BTreeMap::new();
    let mut limits = Vec::new();
    for rec in text.split('\0') {
        let (k, v) = rec.split_once('=').unwrap_or((rec, ""));
        if let Some(size) = k.strip_prefix('#') {
            if let Ok(l) = v.parse::<u64>() {
                limits.push((size.to_string(), l));
            }
        } else if let Some(short) = k.strip_prefix('/') {
            annotations.insert(format!("{PREFIX}{short}"), v.to_string());
        } else {
            annotations.insert(k.to_string(), v.to_string());
        }
    }

    let parsed = Request::parse(&annotations, &limits);
    assert_eq!(parsed, Request::parse(&annotations, &limits), "parsing is deterministic");
    match parsed {
        Ok(r) => {
            for (size, b) in &r.hugepages {
                assert!(
                    b.0 > 0 && b.0 % size.bytes() == 0,
                    "{size}: {b:?} is not a positive page multiple"
                );
            }
            for size in PageSize::ALL {
                if let Some(v) = annotations.get(&format!("{PREFIX}{}", size.annotation())) {
                    assert_eq!(
                        Some(&Bytes::parse_quantity(v).unwrap()),
                        r.hugepages.get(&size),
                        "the annotation wins over hugepageLimits"
                    );
                }
            }
            assert!(
                !(r.group.is_some() && r.file_prefix.is_some()),
                "group and prefix mode together"
            );
            if let Some(h) = r.gpu_headroom {
                assert!(h.0 > 0);
            }
            // The request is stored in the ledger and passed along as JSON.
            let json = serde_json::to_vec(&r).unwrap();
            let back: Request = serde_json::from_slice(&json).unwrap();
            assert_eq!(back, r, "a request survives its JSON round trip");
        }
        Err(e) => {
            // SPEC: one line, naming the annotation.
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error: {msg:?}");
            assert!(msg.starts_with(&format!("invalid annotation {PREFIX}")), "{msg:?}");
        }
    }
});
