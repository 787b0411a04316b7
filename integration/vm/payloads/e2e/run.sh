#!/usr/bin/env bash
# Host side of the end-to-end payload (issue 5): builds the product and the integration-test
# binaries (release profile; the guest is Debian 12 like the host), stages them with
# payload.sh under $CARGO_TARGET_DIR/vm-e2e and boots the VM through integration/vm/run.sh.
#
#   integration/vm/payloads/e2e/run.sh [integration/vm/run.sh options...] [-- libtest args]
#   e.g. integration/vm/payloads/e2e/run.sh --results integration/vm/results/e2e
#        integration/vm/payloads/e2e/run.sh --env DPH_E2E_CONFIGS=crun-systemd --env DPH_E2E_SUITES=core
#
# The GPU/watch (payloads/gpu) and RDMA (payloads/rdma) payload scripts are staged too and run
# after the suites (DPH_E2E_FEATURES=0 skips them).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
opts=() args=()
while (($#)); do
  if [[ $1 == -- ]]; then shift; args=("$@"); break; fi
  opts+=("$1"); shift
done
cargo build --release --workspace --bins
json=$(mktemp "${TMPDIR:-/tmp}/dph-e2e-json.XXXXXX")
trap 'rm -f "$json"' EXIT
cargo test --release -p dataplane-tests --no-run --message-format=json > "$json"
stage=$target/vm-e2e
rm -rf "$stage"
mkdir -p "$stage/bin"
install -m755 "$here/payload.sh" "$stage/payload.sh"
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
ls "$stage/bin"
# Pools: PoolGuard sizes the 2 MiB pool per test (up to 128 pages; the watch tests grow it to
# 1280 MiB beside a 1 GiB neighbour, hence 6 GiB).
exec "$root/integration/vm/run.sh" --timeout "${DPH_VM_TIMEOUT:-5400}" --mem "${DPH_VM_MEM:-6144}" \
  --hugepages "${DPH_VM_HUGEPAGES:-128}" "${opts[@]}" "$stage" "${args[@]}"
