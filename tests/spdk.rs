//! G12 end to end: a container whose hugepages cannot hold the SPDK iobuf pools it announces
//! (`dataplane-hook.io/spdk-iobuf`) is refused at create with both numbers and leaves nothing
//! behind; one whose hugepages can hold them runs.
//!
//! SPDK itself is not packaged for Debian 12, so the application is `iobuf-sim`: a DPDK 22.11
//! program (built here from the source below against the host's dpdk-dev) that makes exactly
//! the hugepage allocations SPDK's `spdk_iobuf_initialize()` makes (lib/thread/iobuf.c,
//! v23.05+): per pool an `rte_ring` of `count` entries (`RING_F_EXACT_SZ`, what
//! `spdk_ring_create` asks for) and one `rte_malloc_socket(bufsize * count, 4096)` (what
//! `spdk_malloc(..., SPDK_MALLOC_DMA)` does), sizes rounded up to 4 KiB, with SPDK's error
//! messages. The control shows the late failure SPDK has (seeds 000/001): the container
//! starts and the pools fail inside the application.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use dataplane_tests::util::*;
use dataplane_tests::*;

const ANN_2MI: &str = "dataplane-hook.io/hugepages-2Mi";
const ANN_IOBUF: &str = "dataplane-hook.io/spdk-iobuf";

/// 2048 small (8 KiB) and 512 large (132 KiB) buffers: 16 MiB + 66 MiB of pools, and rings of
/// 4096 and 1024 slots (384-byte header each): 86024960 bytes, 82.04 MiB, 42 pages of 2 MiB.
const IOBUF: &str = "small=2048,large=512";
const NEED: u64 = 2048 * 8192 + 512 * 135168 + (384 + 4096 * 8) + (384 + 1024 * 8);

const SIM_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <rte_eal.h>
#include <rte_malloc.h>
#include <rte_ring.h>

static unsigned long align4k(unsigned long v) { return (v + 4095UL) & ~4095UL; }

int main(int argc, char **argv) {
    int n = rte_eal_init(argc, argv);
    if (n < 0) { printf("IOBUF-SIM: EAL init failed\n"); return 2; }
    argc -= n; argv += n;
    if (argc != 5) { printf("usage: iobuf-sim EAL... -- small large small_bufsize large_bufsize\n"); return 2; }
    unsigned long small = strtoul(argv[1], 0, 10), large = strtoul(argv[2], 0, 10);
    unsigned long sb = align4k(strtoul(argv[3], 0, 10)), lb = align4k(strtoul(argv[4], 0, 10));
    struct rte_ring *sr = rte_ring_create("iobuf_small", small, SOCKET_ID_ANY, RING_F_EXACT_SZ);
    if (!sr) { printf("Failed to create small iobuf pool\n"); return 1; }
    void *sp = rte_malloc_socket(NULL, sb * small, 4096, SOCKET_ID_ANY);
    if (!sp) { printf("Unable to allocate requested small iobuf pool size\n"); return 1; }
    struct rte_ring *lr = rte_ring_create("iobuf_large", large, SOCKET_ID_ANY, RING_F_EXACT_SZ);
    if (!lr) { printf("Failed to create large iobuf pool\n"); return 1; }
    void *lp = rte_malloc_socket(NULL, lb * large, 4096, SOCKET_ID_ANY);
    if (!lp) { printf("Unable to allocate requested large iobuf pool size\n"); return 1; }
    printf("IOBUF-OK %lu\n", sb * small + lb * large);
    fflush(stdout);
    rte_free(lp); rte_free(sp); rte_ring_free(lr); rte_ring_free(sr);
    rte_eal_cleanup();
    return 0;
}
"#;

/// Builds iobuf-sim into `dir` (once per test binary run).
fn sim_binary() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let dir = std::env::temp_dir().join(format!("dph-iobuf-sim-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("sim.c"), SIM_C).unwrap();
            let flags = Command::new("pkg-config")
                .args(["--cflags", "--libs", "libdpdk"])
                .output()
                .expect("pkg-config (dpdk-dev)");
            assert!(flags.status.success(), "pkg-config libdpdk: install dpdk-dev");
            let flags = String::from_utf8(flags.stdout).unwrap();
            let o = Command::new("gcc")
                .args(["-O1", "-o"])
                .arg(dir.join("iobuf-sim"))
                .arg(dir.join("sim.c"))
                .args(flags.split_whitespace())
                .output()
                .expect("gcc");
            assert!(
                o.status.success(),
                "building iobuf-sim: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            dir.join("iobuf-sim")
        })
        .clone()
}

/// A bundle running iobuf-sim with the pools of [`IOBUF`].
fn sim_bundle() -> TestBundle {
    let b = TestBundle::new(&[
        "/iobuf-sim",
        "-l",
        "0",
        "--no-pci",
        "--no-telemetry",
        "--",
        "2048",
        "512",
        "8192",
        "135168",
    ]);
    std::fs::copy(sim_binary(), b.rootfs().join("iobuf-sim")).unwrap();
    b
}

fn expected_refusal(id: &str, have: u64) -> String {
    format!(
        "dataplane-hook: cannot start SPDK container {id}: {ANN_IOBUF} needs {NEED} bytes (82.0MiB) of hugepages for its iobuf pools (2048 x 8192 B small, 512 x 135168 B large, with rings) but the container has only {have} bytes ({:.1}MiB) of hugepages (set {ANN_2MI} to at least 84Mi, or lower the pool counts in {ANN_IOBUF})",
        have as f64 / (1u64 << 20) as f64
    )
}

fn assert_nothing_left(
    r: &Runner,
    env: &ProductEnv,
    id: &str,
    pool: &PoolGuard,
    mounts_before: &[MountEntry],
) {
    assert_eq!(r.status(id), None, "runc must not know {id} after the failed create");
    assert!(!r.runc_root.path().join(id).exists(), "runc state dir of {id} left");
    pool.assert_baseline("after the refused create");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());
    let new = new_mounts(mounts_before, &host_mounts());
    assert!(new.is_empty(), "mounts left on the host: {new:?}");
    for m in host_mounts().iter().filter(|m| m.fstype == "cgroup" || m.fstype == "cgroup2") {
        for d in
            [format!("{}/{id}", m.mount_point), format!("{}/dataplane-hook/{id}", m.mount_point)]
        {
            assert!(!Path::new(&d).exists(), "cgroup {d} left behind");
        }
    }
}

#[test]
fn iobuf_pools_larger_than_the_hugepages_are_refused_at_create_with_both_numbers() {
    let pool = PoolGuard::new(64);

    // Control: no product, a 64 MiB hugetlbfs. The container is created and started; the pools
    // fail inside the application, after start (SPDK: "could not allocate ... pool").
    let host_fs = HostHugetlbfs::mount("pagesize=2M,size=64M");
    let runc = Runner::runc();
    let run_dir = tempfile::tempdir().unwrap();
    let mut c = sim_bundle();
    c.bind(host_fs.path(), "/dev/hugepages").bind(run_dir.path(), "/var/run/dpdk");
    let idc = unique("spdk-ctl");
    let o = runc.run(&c, &idc);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "control: the pools cannot fit 64 MiB, the app must fail: {out}");
    assert!(
        out.contains("Unable to allocate requested large iobuf pool size"),
        "control failure is the pool allocation: {out}"
    );
    runc.delete(&idc);
    drop(host_fs);
    pool.assert_baseline("after the control");

    // The product, wrapper path: refused before the runtime creates anything.
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let mounts_before = host_mounts();
    let mut b = sim_bundle();
    b.annotate(ANN_2MI, "64Mi").annotate(ANN_IOBUF, IOBUF);
    let id = unique("spdk-small");
    let o = create_with_timeout(&p, &b, &id, Duration::from_secs(60)).expect("create hung");
    assert!(!o.status.success(), "a create whose hugepages cannot hold the pools must fail");
    let line = assert_one_line("wrapper refusal", &o.stderr);
    assert_eq!(line, expected_refusal(&id, 64 << 20));
    assert!(
        env.log_text().contains(&format!("cannot start SPDK container {id}")),
        "refusal logged"
    );
    assert_nothing_left(&p, &env, &id, &pool, &mounts_before);

    // hooks.d path (CRI-O, podman): the hook refuses at createRuntime, before any reservation.
    let env = ProductEnv::new("");
    let runc = Runner::runc();
    let mut h = sim_bundle();
    h.annotate(ANN_2MI, "64Mi").annotate(ANN_IOBUF, IOBUF);
    h.with_hooks_d(&env);
    let id = unique("spdk-hooksd");
    let o = create_with_timeout(&runc, &h, &id, Duration::from_secs(60)).expect("create hung");
    assert!(!o.status.success(), "the hook must fail the create");
    assert_eq!(
        product_error(&o.stderr).as_deref(),
        Some(expected_refusal(&id, 64 << 20).as_str()),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_nothing_left(&runc, &env, &id, &pool, &mounts_before);
}

#[test]
fn iobuf_pools_that_fit_the_reservation_run() {
    let pool = PoolGuard::new(64);
    let env = ProductEnv::new("");
    let p = Runner::product(&env);
    let mut b = sim_bundle();
    // 56 pages: the 42 the pools need plus room for DPDK's own memzones and heap headers.
    b.annotate(ANN_2MI, "112Mi").annotate(ANN_IOBUF, IOBUF);
    let id = unique("spdk-fits");
    p.launch(&b, &id);
    assert!(
        p.wait_stopped(&id, Duration::from_secs(60)),
        "iobuf-sim did not finish: {}",
        output_of(&b)
    );
    let out = output_of(&b);
    assert!(
        out.contains(&format!("IOBUF-OK {}", 2048 * 8192 + 512 * 135168)),
        "the pools must be allocated: {out}"
    );
    p.delete(&id);
    pool.assert_baseline("after the SPDK container");
    assert!(env.records().is_empty(), "ledger records left: {:?}", env.records());

    // One page below the need is refused (the check is exact, not a rule of thumb).
    let mut b = sim_bundle();
    b.annotate(ANN_2MI, "82Mi").annotate(ANN_IOBUF, IOBUF);
    let id = unique("spdk-82");
    let o = create_with_timeout(&p, &b, &id, Duration::from_secs(60)).expect("create hung");
    assert!(!o.status.success());
    assert_eq!(assert_one_line("82Mi", &o.stderr), expected_refusal(&id, 82 << 20));
}
