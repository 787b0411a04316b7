//! The seam between decisions and the node: everything that touches sysfs, cgroupfs, mounts
//! and /proc lives below here, named for what it owns.

pub mod cgroup;
pub mod mount;
pub mod proc;
pub mod rdma;
pub mod rlimit;
pub mod sysfs;
