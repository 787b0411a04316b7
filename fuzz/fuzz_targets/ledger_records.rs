//! Ledger records (`ledger::ContainerRecord`, `ledger::GroupRecord`), read back by poststop,
//! gc, status and watch: a record that deserializes re-serializes to one that deserializes
//! equal, and serializing is stable.
#![no_main]

use dataplane_hook::ledger::{ContainerRecord, GroupRecord};
use libfuzzer_sys::fuzz_target;

fn round_trip<T>(data: &[u8])
where
    T: serde::de::DeserializeOwned + serde::Serialize + PartialEq + std::fmt::Debug,
{
    let Ok(rec) = serde_json::from_slice::<T>(data) else { return };
    let bytes = serde_json::to_vec(&rec).unwrap();
    let back: T = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("a written record does not read back: {e}: {}", String::from_utf8_lossy(&bytes))
    });
    assert_eq!(back, rec);
    assert_eq!(serde_json::to_vec(&back).unwrap(), bytes, "serializing is stable");
}

fuzz_target!(|data: &[u8]| {
    round_trip::<ContainerRecord>(data);
    round_trip::<GroupRecord>(data);
});
