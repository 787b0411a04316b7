#!/bin/bash
# Guest side of the end-to-end payload (issue 5), run by integration/vm/run.sh inside the VM as
# root: the integration suites on the mainstream node (pure cgroup v2, systemd, containerd).
#
# The suites (tests/core.rs, groups.rs, gc.rs, safety.rs, podman.rs, cri.rs; the harness reads
# DPH_RUNTIME and DPH_SYSTEMD_CGROUP, podman.rs and cri.rs hand them to podman and containerd)
# run once per configuration:
#   runc-systemd   runc --systemd-cgroup      (podman --cgroup-manager systemd, SystemdCgroup)
#   runc-cgroupfs  runc (cgroupfs driver)
#   crun-systemd   crun --systemd-cgroup      (podman --runtime crun, BinaryName = crun)
# Then the GPU/watch and RDMA payloads (staged next to this one by payloads/e2e/run.sh) unless
# DPH_E2E_FEATURES=0. payloads/e2e/run.sh boots one VM per configuration and one for the
# features (DPH_E2E_CONFIGS=none).
#
# Env: DPH_E2E_CONFIGS (or `none`), DPH_E2E_SUITES, DPH_E2E_ONCE (suites run once, on the
# VM's defaults: runc with cgroupfs; default none), DPH_E2E_FEATURES, DPH_TEST_THREADS.
# Arguments are passed to every test binary (e.g. a name filter).
# Prints `e2e: <config> <suite> ok|FAILED|SKIPPED <seconds>s` per run and a summary; exits 1 on
# any failure. $DPVM_RESULTS/timings.txt keeps the summary, product logs of failing tests too.
set -u
here=$(cd "$(dirname "$0")" && pwd)
results=${DPVM_RESULTS:-/tmp}
export DPH_BIN_DIR=$here/bin RUST_BACKTRACE=1
# containerd 1.7.24 for cri.rs's `*_on_containerd_1_7` tests, staged by payloads/e2e/run.sh.
[[ -x $here/containerd-1.7.24/usr/bin/containerd ]] && export DPH_CONTAINERD17_DIR=$here/containerd-1.7.24
configs=${DPH_E2E_CONFIGS:-runc-systemd runc-cgroupfs crun-systemd}
[[ $configs == none ]] && configs=
suites=${DPH_E2E_SUITES:-core groups gc safety podman cri}
once=${DPH_E2E_ONCE:-}
threads=${DPH_TEST_THREADS:-2}
summary=()
rc=0
t_all=$SECONDS

step() { echo; echo "== $*"; }

step "node"
uname -r
grep cgroup2 /proc/self/mountinfo || { echo "FAIL: no cgroup2 mount"; exit 1; }
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
echo "subtree_control: $(cat /sys/fs/cgroup/cgroup.subtree_control)"
echo "system.slice subtree_control: $(cat /sys/fs/cgroup/system.slice/cgroup.subtree_control)"
runc --version | head -1; crun --version | head -1; containerd --version; podman --version
grep -E 'MemTotal|HugePages_Total' /proc/meminfo
ls "$here/bin"
# Tests write under /tmp and their cwd: keep both on the guest's local disk, not 9p.
mkdir -p /var/tmp/e2e && cd /var/tmp/e2e || exit 1

# run_suite CONFIG SUITE: one test binary, timed, its output kept.
run_suite() {
  local config=$1 suite=$2 bin=$here/bin/$2-tests t0=$SECONDS st
  if [[ ! -x $bin ]]; then
    summary+=("e2e: $config $suite SKIPPED 0s (bin/$suite-tests not staged)"); echo "${summary[-1]}"; return
  fi
  step "$config: tests/$suite.rs"
  "$bin" --test-threads="$threads" "${args[@]}" 2>&1 | tee "$results/$config-$suite.log"
  st=${PIPESTATUS[0]}
  if ((st == 0)); then
    summary+=("e2e: $config $suite ok $((SECONDS - t0))s")
  else
    summary+=("e2e: $config $suite FAILED $((SECONDS - t0))s (exit $st)"); rc=1
    mkdir -p "$results/$config-$suite-env"
    for d in /tmp/dph-env-*; do [[ -d $d ]] && cp -a "$d" "$results/$config-$suite-env/" 2>/dev/null; done
  fi
  echo "${summary[-1]}"
  rm -rf /tmp/dph-env-* 2>/dev/null
}
args=("$@")

for config in $configs; do
  case $config in
    runc-systemd) export DPH_RUNTIME=runc DPH_SYSTEMD_CGROUP=1 ;;
    runc-cgroupfs) export DPH_RUNTIME=runc DPH_SYSTEMD_CGROUP=0 ;;
    crun-systemd) export DPH_RUNTIME=crun DPH_SYSTEMD_CGROUP=1 ;;
    crun-cgroupfs) export DPH_RUNTIME=crun DPH_SYSTEMD_CGROUP=0 ;;
    *) echo "unknown config $config"; exit 2 ;;
  esac
  t_cfg=$SECONDS
  for suite in $suites; do run_suite "$config" "$suite"; done
  summary+=("e2e: $config total $((SECONDS - t_cfg))s"); echo "${summary[-1]}"
done
unset DPH_RUNTIME DPH_SYSTEMD_CGROUP

for suite in $once; do run_suite runc-own "$suite"; done

if [[ ${DPH_E2E_FEATURES:-1} != 0 ]]; then
  # The watch bench is a benchmark, not a test: the shortest run is enough here (3: the bench's minimum).
  export DPH_WATCH_BENCH_RUNS=${DPH_WATCH_BENCH_RUNS:-3} DPH_WATCH_BENCH_IDLE=${DPH_WATCH_BENCH_IDLE:-5}
  for f in gpu rdma; do
    t0=$SECONDS
    if [[ ! -x $here/$f/payload.sh ]]; then
      summary+=("e2e: feature $f SKIPPED 0s (payloads/$f not staged)"); continue
    fi
    step "payloads/$f"
    mkdir -p "$results/$f"
    if DPVM_RESULTS=$results/$f bash "$here/$f/payload.sh" 2>&1 | tee "$results/$f/payload.log"; [[ ${PIPESTATUS[0]} == 0 ]]; then
      summary+=("e2e: feature $f ok $((SECONDS - t0))s")
    else
      summary+=("e2e: feature $f FAILED $((SECONDS - t0))s"); rc=1
    fi
    echo "${summary[-1]}"
  done
fi

step "summary"
summary+=("e2e: all $((SECONDS - t_all))s, exit $rc")
printf '%s\n' "${summary[@]}" | tee "$results/timings.txt"
exit $rc
