#!/usr/bin/env bash
# Host side of the end-to-end payload (issue 5): builds the product and the integration-test
# binaries (release profile; the guest is Debian 12 like the host), stages them with
# payload.sh under $CARGO_TARGET_DIR/vm-e2e and boots the VM through integration/vm/run.sh,
# once per entry of DPH_E2E_BOOTS (default `runc-systemd runc-cgroupfs crun-systemd features`):
# a configuration's suites in one fresh VM each (a leak or hang in one cannot spoil the next,
# and each gets its own timeout), then one VM for the GPU/watch and RDMA payloads.
#
#   integration/vm/payloads/e2e/run.sh [integration/vm/run.sh options...] [-- libtest args]
#   e.g. integration/vm/payloads/e2e/run.sh --results integration/vm/results/e2e
#        DPH_E2E_BOOTS=crun-systemd integration/vm/payloads/e2e/run.sh --env DPH_E2E_SUITES=core
#
# A boot `a,b` runs configurations a and b in one VM (e.g. `DPH_E2E_BOOTS=runc-systemd,crun-systemd
# --env DPH_E2E_SUITES=cri`). With --results DIR, boot B keeps its logs in DIR/B (payload.log, <config>-<suite>.log,
# timings.txt, console.log, timing); DIR/timings.txt sums up every boot. --env options go to
# every boot (the boot's own DPH_E2E_CONFIGS/DPH_E2E_FEATURES come after them and win).
# DPH_E2E_NO_BUILD=1 reuses the staged payload. Exit status: 0 when every boot passed, else
# the first failing boot's (124 timeout, 125 VM died, see run.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
opts=() args=() results=
while (($#)); do
  case $1 in
    --) shift; args=("$@"); break ;;
    --results) results=${2:?}; shift 2 ;;
    --results=*) results=${1#*=}; shift ;;
    *) opts+=("$1"); shift ;;
  esac
done
boots=${DPH_E2E_BOOTS:-runc-systemd runc-cgroupfs crun-systemd features}
stage=$target/vm-e2e
if [[ ${DPH_E2E_NO_BUILD:-0} == 1 && -x $stage/payload.sh ]]; then
  echo "e2e: reusing $stage"
else
  cargo build --release --workspace --bins
  json=$(mktemp "${TMPDIR:-/tmp}/dph-e2e-json.XXXXXX")
  trap 'rm -f "$json"' EXIT
  cargo test --release -p dataplane-tests --no-run --message-format=json > "$json"
  rm -rf "$stage"
  mkdir -p "$stage/bin"
  install -m755 "$target/release/dataplane-hook" "$target/release/dataplane-runtime" \
    "$target/release/dataplane-bench" "$stage/bin/"
  # Every integration-test executable as bin/<test>-tests (core-tests, cri-tests, ...).
  python3 - "$json" "$stage/bin" <<'PY'
import json, shutil, sys
for l in open(sys.argv[1]):
    m = json.loads(l)
    t = m.get("target", {})
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in t.get("kind", []):
        shutil.copy2(m["executable"], f"{sys.argv[2]}/{t['name']}-tests")
PY
  for f in gpu rdma; do
    mkdir "$stage/$f"
    install -m755 "$root/integration/vm/payloads/$f/payload.sh" "$stage/$f/payload.sh"
    ln -s ../bin "$stage/$f/bin"
  done
fi
install -m755 "$here/payload.sh" "$stage/payload.sh"
# tests/cri.rs also runs on containerd 1.7.24 (issue 14): its binaries travel with the payload
# (the guest has neither the repository's scripts/ nor the network); payload.sh points
# DPH_CONTAINERD17_DIR at them.
c17=$("$root/scripts/containerd17.sh")
rm -rf "$stage/containerd-1.7.24"
mkdir -p "$stage/containerd-1.7.24/usr/bin"
install -m755 "$c17"/usr/bin/{containerd,containerd-shim-runc-v2,ctr} "$stage/containerd-1.7.24/usr/bin/"
ls "$stage/bin"

if [[ -n $results ]]; then
  # A results dir of the one-boot layout (run.sh's own): emptied, it now holds one dir a boot.
  [[ -f $results/.dpvm-results ]] && find "$results" -mindepth 1 -delete
  mkdir -p "$results"
  rm -f "$results/timings.txt"
fi
rc=0 summary=()
for boot in $boots; do
  case $boot in
    features) benv=(--env DPH_E2E_CONFIGS=none --env DPH_E2E_FEATURES=1) ;;
    *) benv=(--env "DPH_E2E_CONFIGS=${boot//,/ }" --env DPH_E2E_FEATURES=0) ;;
  esac
  keep=()
  [[ -n $results ]] && keep=(--results "$results/$boot")
  echo "== e2e: boot $boot"
  t0=$SECONDS
  # Pools: PoolGuard sizes the 2 MiB pool per test (up to 128 pages; the watch tests grow it
  # to 1280 MiB beside a 1 GiB neighbour, hence 6 GiB). 2 vCPUs at most (shared hosts).
  st=0
  "$root/integration/vm/run.sh" --timeout "${DPH_VM_TIMEOUT:-3600}" --mem "${DPH_VM_MEM:-6144}" \
    --cpus "${DPH_VM_CPUS:-2}" --hugepages "${DPH_VM_HUGEPAGES:-128}" "${keep[@]}" "${opts[@]}" \
    "${benv[@]}" "$stage" "${args[@]}" || st=$?
  summary+=("e2e: boot $boot exit $st, $((SECONDS - t0))s")
  ((st != 0 && rc == 0)) && rc=$st
  if [[ -n $results ]]; then
    { echo "${summary[-1]}"; sed 's/^/  /' "$results/$boot/timings.txt" 2>/dev/null; } >>"$results/timings.txt"
  fi
done
printf '%s\n' "${summary[@]}"
exit $rc
