#!/bin/bash
# Guest side of the GPU payload (G10), run by integration/vm/run.sh inside the VM as root.
#
# The VM is the mainstream node the CI host is not: pure cgroup v2 (memory.max, memory.high,
# cgroup.kill), systemd, and a root with CAP_SYS_RESOURCE (PSI triggers with a 1 s window).
# Runs tests/gpu.rs (memory.max + memory.high through the wrapper's `unified` edit and through
# the hook's cgroup writes, teardown restoring both) and tests/watch.rs (cgroup.kill of a GPU
# container whose emulated driver memory passes its headroom), then `make bench`'s watchdog
# section (dataplane-bench --only watchdog).
# Results: $DPVM_RESULTS/watch-bench.md, the product logs.
#
# Expects bin/ next to it: dataplane-hook, dataplane-runtime, dataplane-bench, gpu-tests
# and watch-tests; integration/vm/payloads/gpu/run.sh stages them.
set -u
here=$(cd "$(dirname "$0")" && pwd)
results=${DPVM_RESULTS:-/tmp}
export DPH_BIN_DIR=$here/bin RUST_BACKTRACE=1

step() { echo "== $*"; }
die() { echo "FAIL: $*"; exit 1; }

step "node"
uname -r
for t in dataplane-hook dataplane-runtime dataplane-bench gpu-tests watch-tests; do
  [[ -x $here/bin/$t ]] || die "bin/$t missing (stage with payloads/gpu/run.sh)"
done
grep cgroup2 /proc/self/mountinfo || die "no cgroup2 mount"
cat /sys/fs/cgroup/cgroup.controllers
grep -q memory /sys/fs/cgroup/cgroup.controllers || die "memory controller not on v2"
cat /proc/pressure/memory || die "no PSI"
grep -E 'MemTotal|HugePages_Total' /proc/meminfo

rc=0
step "tests/gpu.rs"
"$here/bin/gpu-tests" --test-threads=1 || rc=1
step "tests/watch.rs"
"$here/bin/watch-tests" --test-threads=1 --nocapture || rc=1
step "watch bench"
# --runs: at least 3 (the bench's minimum); DPH_WATCH_BENCH_IDLE: each idle window in seconds.
DPH_WATCH_BENCH_IDLE=${DPH_WATCH_BENCH_IDLE:-20} "$here/bin/dataplane-bench" --bin-dir "$here/bin" --only watchdog \
  --runs "${DPH_WATCH_BENCH_RUNS:-5}" --out "$results/watch-bench.md" > /dev/null || rc=1
cat "$results/watch-bench.md"
for f in /tmp/dph-env-*/watch.stderr /tmp/dph-env-*/hook.log; do
  [[ -f $f ]] && cp "$f" "$results/$(basename "$(dirname "$f")")-$(basename "$f")"
done
exit $rc
