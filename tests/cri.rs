//! Issue 4 (G9) end to end through containerd's CRI: being written (see tests/podman.rs and
//! tests/shim_config.rs for the parts that are done).
