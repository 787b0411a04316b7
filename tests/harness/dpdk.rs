//! DPDK command lines for the tests (`dpdk-testpmd` 22.11 from Debian's dpdk-dev).

/// A testpmd primary with two null ports, small enough for a small private hugetlbfs
/// (`--total-num-mbufs=2048`), printing stats every second without stdin.
pub fn testpmd_primary(extra_eal: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["dpdk-testpmd", "-l", "0-1", "--no-pci", "--vdev=net_null0", "--vdev=net_null1"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend(extra_eal.iter().map(|s| s.to_string()));
    v.extend(["--", "--total-num-mbufs=2048", "--stats-period", "1"].iter().map(|s| s.to_string()));
    v
}

/// The line testpmd prints once it forwards.
pub const FORWARDING: &str = "Port statistics";
