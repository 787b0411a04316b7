//! The container state a hook reads on stdin: `oci::State::from_reader`. A state that parses
//! names a container id that is one safe file name component and an absolute bundle path.
#![no_main]

use dataplane_hook::oci::State;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match State::from_reader(data) {
        Ok(s) => {
            // The id names ledger records and directories under the state dir.
            assert!(
                !s.id.is_empty() && !s.id.contains(['/', '\0']) && s.id != "." && s.id != "..",
                "{:?}",
                s.id
            );
            assert!(s.bundle.is_absolute(), "{:?}", s.bundle);
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(!msg.contains(['\n', '\r']), "multi-line error: {msg:?}");
        }
    }
});
