//! DPDK command lines for the tests (`dpdk-testpmd` 22.11 from Debian's dpdk-dev).

/// A testpmd primary with two null ports, small enough for a small private hugetlbfs
/// (`--total-num-mbufs=2048`), printing stats every second without stdin.
pub fn testpmd_primary(extra_eal: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["dpdk-testpmd", "-l", "0-1", "--no-pci", "--vdev=net_null0", "--vdev=net_null1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.extend(extra_eal.iter().map(|s| s.to_string()));
    v.extend(["--", "--total-num-mbufs=2048", "--stats-period", "1"].iter().map(|s| s.to_string()));
    v
}

/// The line testpmd prints once it forwards.
pub const FORWARDING: &str = "Port statistics";

/// Whether the testpmd in `b` forwards (printed its stats at least once).
pub fn forwarding(b: &crate::TestBundle) -> bool {
    crate::stdout_of(b).contains(FORWARDING)
}

/// Multi-process testpmd (seed 002): a primary that shares its ports' queues with
/// `num_procs - 1` secondaries.
pub fn testpmd_mp_primary(num_procs: u32, extra_eal: &[&str]) -> Vec<String> {
    let mut v: Vec<String> =
        ["dpdk-testpmd", "-l", "0-1", "--no-pci", "--vdev=net_null0", "--vdev=net_null1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    v.extend(extra_eal.iter().map(|s| s.to_string()));
    v.extend(mp_app_args(num_procs, 0));
    v
}

/// A testpmd secondary attaching to the primary's memory and ports.
pub fn testpmd_secondary(num_procs: u32, proc_id: u32, extra_eal: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = [
        "dpdk-testpmd",
        "-l",
        "0-1",
        "--no-pci",
        "--proc-type=secondary",
        "--log-level=lib.eal:debug",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.extend(extra_eal.iter().map(|s| s.to_string()));
    v.extend(mp_app_args(num_procs, proc_id));
    v
}

fn mp_app_args(num_procs: u32, proc_id: u32) -> Vec<String> {
    vec![
        "--".into(),
        "--total-num-mbufs=2048".into(),
        "--stats-period".into(),
        "1".into(),
        format!("--num-procs={num_procs}"),
        format!("--proc-id={proc_id}"),
        format!("--rxq={num_procs}"),
        format!("--txq={num_procs}"),
    ]
}

/// Wraps a command in a shell loop that retries until it succeeds (a secondary started before
/// its primary is up).
pub fn retrying(cmd: &[String]) -> Vec<String> {
    vec!["sh".into(), "-c".into(), format!("until {}; do sleep 0.5; done", cmd.join(" "))]
}

/// DPDK's error when a secondary's PID-named fbarray collides (seed 002).
pub const SECONDARY_COLLISION: &str = "Cannot init memory";
