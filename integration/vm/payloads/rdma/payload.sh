#!/bin/bash
# Guest side of the RDMA payload (G11), run by integration/vm/run.sh inside the VM as root.
#
# Creates two Soft-RoCE devices the way a RoCE node with a pod looks:
#   rxe0 on dph-vh, in the host's network namespace (10.77.0.1/24)
#   rxe1 on dph-vc, inside the network namespace dph-ctr (10.77.0.2/24): "the pod's RoCE netdev"
# then runs the rdma integration tests (tests/rdma.rs) against them: the #[ignore]d Soft-RoCE
# ones and the limit ones (the VM's root has CAP_SYS_RESOURCE, so those take the "granted"
# branch). The real GID tables are kept in $DPVM_RESULTS/rxe-gids.txt (the recorded form of
# hook/tests/fixtures/rdma/rxe.txt).
#
# Expects bin/ next to it: dataplane-hook, dataplane-runtime and rdma-tests (the tests/rdma.rs
# binary); integration/vm/payloads/rdma/run.sh stages them.
set -u
here=$(cd "$(dirname "$0")" && pwd)
results=${DPVM_RESULTS:-/tmp}
export DPH_BIN_DIR=$here/bin DPH_RXE_NETNS=/var/run/netns/dph-ctr DPH_RXE_POD_DEV=rxe1 DPH_RXE_HOST_DEV=rxe0
export RUST_BACKTRACE=1

step() { echo "== $*"; }
die() { echo "FAIL: $*"; exit 1; }

step "node"
uname -r
for t in dataplane-hook dataplane-runtime rdma-tests; do [[ -x $here/bin/$t ]] || die "bin/$t missing (stage with payloads/rdma/run.sh)"; done

step "Soft-RoCE devices"
modprobe rdma_rxe || die "modprobe rdma_rxe"
ip netns add dph-ctr || die "netns"
ip link add dph-vh type veth peer name dph-vc || die "veth"
ip link set dph-vc netns dph-ctr
ip addr add 10.77.0.1/24 dev dph-vh && ip link set dph-vh up
ip -n dph-ctr addr add 10.77.0.2/24 dev dph-vc && ip -n dph-ctr link set dph-vc up && ip -n dph-ctr link set lo up
rdma link add rxe0 type rxe netdev dph-vh || die "rdma link add rxe0"
# rxe drops its device when its netdev leaves a namespace, so rxe1 is made from inside dph-ctr
# (the kernel looks the netdev up in the caller's namespace).
ip netns exec dph-ctr rdma link add rxe1 type rxe netdev dph-vc || die "rdma link add rxe1 (inside dph-ctr)"
for _ in $(seq 50); do
  grep -q '0000:0000:0000:0000:0000:ffff:0a4d:0002' /sys/class/infiniband/rxe1/ports/1/gids/* 2>/dev/null && break
  sleep 0.2
done
rdma link show
ls -l /dev/infiniband/ || true
for d in /sys/class/infiniband_verbs/*; do echo "$(basename "$d") $(cat "$d/dev") $(cat "$d/ibdev")"; done

step "recorded GID tables"
"$here/bin/rdma-tests" --ignored --exact rxe_dump_gid_tables --nocapture 2>&1 | grep -E '^(gid|table) ' | tee "$results/rxe-gids.txt"

step "tests/rdma.rs"
rc=0
"$here/bin/rdma-tests" --test-threads=1 || rc=1
"$here/bin/rdma-tests" --ignored --test-threads=1 --skip rxe_dump_gid_tables || rc=1
cp /tmp/dph-env-*/hook.log "$results/" 2>/dev/null || true
exit $rc
