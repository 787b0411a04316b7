//! `request::Bytes::parse_quantity`: every hugepage, headroom and buffer size annotation goes
//! through it. Properties: no panic (all arithmetic checked), one-line errors, and a quantity
//! that parses prints (Display) as a spelling that parses back to the same bytes.
#![no_main]

use dataplane_hook::request::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    match Bytes::parse_quantity(s) {
        Ok(b) => {
            let printed = b.to_string();
            assert_eq!(
                Bytes::parse_quantity(&printed),
                Ok(b),
                "{s:?} -> {b:?} prints as {printed:?}"
            );
            // Surrounding whitespace is ignored, nothing else about the spelling is.
            assert_eq!(Bytes::parse_quantity(&format!(" {s}\t")), Ok(b));
        }
        Err(e) => assert!(!e.contains(['\n', '\r']), "multi-line error for {s:?}: {e:?}"),
    }
});
