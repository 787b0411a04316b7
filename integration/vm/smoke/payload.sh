#!/bin/bash
# Smoke payload for the VM harness: proves the "mainstream node" works — pure cgroup v2 with
# systemd, runc (cgroupfs and systemd drivers), crun, containerd and podman running a busybox
# container, and DPDK's testpmd forwarding on hugepages. Prints PASS/FAIL per check and exits
# non-zero if any check failed. Runs as root inside the VM (integration/vm/run.sh).
set -u
here=$(cd "$(dirname "$0")" && pwd)
work=/var/tmp/dpvm-smoke
rm -rf "$work"; mkdir -p "$work"
fails=0
passes=0

# check NAME CMD... : run CMD with output in $work/NAME.log; PASS if it exits 0.
check() {
  local name=$1; shift
  local t0=$SECONDS
  if "$@" >"$work/$name.log" 2>&1; then
    echo "PASS $name ($((SECONDS - t0)) s)"
    passes=$((passes + 1))
  else
    echo "FAIL $name ($((SECONDS - t0)) s)"
    sed 's/^/    | /' "$work/$name.log"
    fails=$((fails + 1))
  fi
}

echo "== node"
uname -r
echo "pid 1: $(cat /proc/1/comm)"
findmnt -t cgroup,cgroup2 || true
echo "controllers: $(cat /sys/fs/cgroup/cgroup.controllers)"
grep -E '^HugePages_(Total|Free)' /proc/meminfo
runc --version | head -1; crun --version | head -1; containerd --version; podman --version
dpkg-query -W -f '${Package} ${Version}\n' dpdk 2>/dev/null || true
echo

# ---- node shape -------------------------------------------------------------------
cgroup_v2_only() {
  [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]] || { echo "/sys/fs/cgroup is not cgroup2"; return 1; }
  if findmnt -rn -t cgroup | grep -q .; then echo "cgroup v1 hierarchies mounted:"; findmnt -t cgroup; return 1; fi
  local c missing=
  for c in cpuset cpu io memory hugetlb pids rdma misc; do
    grep -qw "$c" /sys/fs/cgroup/cgroup.controllers || missing+=" $c"
  done
  [[ -z $missing ]] || { echo "missing controllers:$missing"; return 1; }
  grep -qw hugetlb /sys/fs/cgroup/cgroup.subtree_control || echo "(hugetlb not yet in subtree_control; runtimes enable it)"
}
check cgroup2-controllers cgroup_v2_only
check systemd-pid1 test "$(cat /proc/1/comm)" = systemd
check hugepages-256 bash -c '[[ $(awk "/^HugePages_Total/{print \$2}" /proc/meminfo) -ge 256 ]]'

# ---- a busybox rootfs and OCI bundles ----------------------------------------------
rootfs=$work/rootfs
make_rootfs() {
  mkdir -p "$rootfs"/{bin,sbin,etc,proc,sys,dev,tmp,run,var,root}
  cp /bin/busybox "$rootfs/bin/busybox"
  chroot "$rootfs" /bin/busybox --install -s /bin
  echo 'root:x:0:0:root:/root:/bin/sh' >"$rootfs/etc/passwd"
  echo 'root:x:0:' >"$rootfs/etc/group"
  chmod 1777 "$rootfs/tmp"
  "$rootfs/bin/busybox" true
}
check rootfs make_rootfs

# What every container prints: its cgroup, pids.max and the 2MB hugetlb limit it got.
probe='cg=$(sed -n "s/^0:://p" /proc/self/cgroup); d=/sys/fs/cgroup$cg; [ -f $d/pids.max ] || d=/sys/fs/cgroup; echo "SMOKE-OK cg=$cg pids=$(cat $d/pids.max) huge=$(cat $d/hugetlb.2MB.max 2>/dev/null || echo -)"'

# expect_probe LOG CGROUP_REGEX [PIDS [HUGE]]
expect_probe() {
  local line
  line=$(grep -a '^SMOKE-OK' "$1" | tail -1)
  [[ -n $line ]] || { echo "no SMOKE-OK line"; return 1; }
  echo "$line"
  [[ $line =~ cg=($2)\  ]] || { echo "cgroup does not match $2"; return 1; }
  [[ -z ${3:-} || $line == *" pids=$3 "* ]] || { echo "pids.max is not $3"; return 1; }
  [[ -z ${4:-} || $line == *" huge=$4"* ]] || { echo "hugetlb.2MB.max is not $4"; return 1; }
}

# oci_run NAME CGROUPS_PATH EXPECTED_CGROUP_REGEX RUNTIME [GLOBAL FLAGS...]
oci_run() {
  local name=$1 cgpath=$2 expect=$3; shift 3
  local b=$work/bundle-$name
  mkdir -p "$b"
  (cd "$b" && runc spec) || return 1
  "$here/mkoci.py" bundle-config "$b/config.json" "$b/config.json" "$rootfs" "$cgpath" \
    /bin/sh -c "$probe" || return 1
  "$@" run --bundle "$b" "smoke-$name" </dev/null >"$b/out" 2>&1
  local rc=$?
  cat "$b/out"
  "$1" delete -f "smoke-$name" >/dev/null 2>&1 || true
  [[ $rc -eq 0 ]] || { echo "$* run exited $rc"; return 1; }
  expect_probe "$b/out" "$expect" 123 4194304
}
echo
echo "== OCI runtimes"
check runc-cgroupfs oci_run runc-fs /dpvm-smoke/runc '/dpvm-smoke/runc' runc
check runc-systemd oci_run runc-sd system.slice:dpvm:runc-sd '/system\.slice/dpvm-runc-sd\.scope' runc --systemd-cgroup
check crun-cgroupfs oci_run crun-fs /dpvm-smoke/crun '/dpvm-smoke/crun' crun
check crun-systemd oci_run crun-sd system.slice:dpvm:crun-sd '/system\.slice/dpvm-crun-sd\.scope(/container)?' crun --cgroup-manager=systemd

# ---- containerd ------------------------------------------------------------------
echo
echo "== containerd"
image=localhost/dpvm-smoke:latest
ctr_import() {
  "$here/mkoci.py" image "$rootfs" "$work/image.tar" "$image" || return 1
  ctr -n dpvm images import "$work/image.tar" || return 1
  ctr -n dpvm images ls -q | grep -Fx "$image"
}
ctr_run() {
  # ctr's default: runc through the io.containerd.runc.v2 shim, cgroupfs, /<ns>/<id>
  ctr -n dpvm run --rm "$image" smoke-ctr /bin/sh -c "$probe" </dev/null >"$work/ctr.out" 2>&1
  local rc=$?
  cat "$work/ctr.out"
  [[ $rc -eq 0 ]] || return 1
  expect_probe "$work/ctr.out" '/dpvm/smoke-ctr'
}
ctr_run_systemd() {
  ctr -n dpvm run --rm --runc-systemd-cgroup --cgroup system.slice:dpvm:ctr-sd "$image" smoke-ctr-sd \
    /bin/sh -c "$probe" </dev/null >"$work/ctr-sd.out" 2>&1
  local rc=$?
  cat "$work/ctr-sd.out"
  [[ $rc -eq 0 ]] || return 1
  expect_probe "$work/ctr-sd.out" '/system\.slice/dpvm-ctr-sd\.scope'
}
check containerd-running systemctl is-active containerd
check ctr-import ctr_import
check ctr-run ctr_run
if ctr run --help 2>&1 | grep -q -- --runc-systemd-cgroup; then
  check ctr-run-systemd ctr_run_systemd
fi

# ---- podman ------------------------------------------------------------------------
echo
echo "== podman"
cp -a "$rootfs" "$work/rootfs-podman"
podman_run() {
  local name=$1 expect=$2; shift 2
  podman "$@" run --rm --network none --cgroupns host --pids-limit 123 \
    --rootfs "$work/rootfs-podman" /bin/sh -c "$probe" </dev/null >"$work/$name.out" 2>&1
  local rc=$?
  cat "$work/$name.out"
  [[ $rc -eq 0 ]] || return 1
  expect_probe "$work/$name.out" "$expect" 123
}
check podman-crun-systemd podman_run podman-crun '/machine\.slice/libpod-[0-9a-f]+\.scope(/container)?' \
  --runtime crun --cgroup-manager systemd
check podman-runc-cgroupfs podman_run podman-runc '/libpod_parent/libpod-[0-9a-f]+(/container)?' \
  --runtime runc --cgroup-manager cgroupfs

# ---- DPDK ----------------------------------------------------------------------------
echo
echo "== DPDK"
testpmd() {
  # testpmd needs a forwarding lcore besides the main one ("No cores defined for forwarding"
  # with -l 0): with one vCPU, put both lcores on CPU 0.
  local lcores=(-l 0,1)
  (($(nproc) > 1)) || lcores=(--lcores 0@0,1@0)
  timeout -s INT 10 dpdk-testpmd "${lcores[@]}" --no-pci --vdev=net_null0 --vdev=net_null1 \
    --file-prefix vmtest -- --total-num-mbufs=2048 --stats-period 1 </dev/null >"$work/testpmd.out" 2>&1
  local rc=$?
  cat "$work/testpmd.out"
  # timeout's SIGINT ends it: 124 (or 0 if it handled the signal and exited by itself)
  [[ $rc -eq 124 || $rc -eq 0 ]] || { echo "dpdk-testpmd exited $rc"; return 1; }
  local rx tx
  rx=$(awk '/RX-packets:/{v=$2; if (v>m) m=v} END{print m+0}' "$work/testpmd.out")
  tx=$(awk '/TX-packets:/{v=$2; if (v>m) m=v} END{print m+0}' "$work/testpmd.out")
  echo "max RX-packets: $rx, max TX-packets: $tx"
  ((rx > 0 && tx > 0))
}
# DPDK keeps its hugepage files (<prefix>map_*) after exit so that secondaries could attach:
# the pages stay allocated until someone deletes them (the leak the product cleans up).
hugepages_released() {
  local left
  left=$(find /dev/hugepages -maxdepth 1 -name 'vmtestmap_*' | wc -l)
  echo "testpmd left $left hugepage files in /dev/hugepages"
  rm -f /dev/hugepages/vmtestmap_*
  rm -rf /var/run/dpdk/vmtest
  grep -E '^HugePages_(Total|Free|Rsvd)' /proc/meminfo
  [[ $(awk '/^HugePages_Free/{print $2}' /proc/meminfo) -eq $(awk '/^HugePages_Total/{print $2}' /proc/meminfo) ]]
}
check dpdk-testpmd testpmd
check hugepages-released hugepages_released

echo
echo "== summary: $passes passed, $fails failed"
cp "$work"/*.log "$work"/*.out "${DPVM_RESULTS:-/tmp}/" 2>/dev/null || true
((fails == 0))
