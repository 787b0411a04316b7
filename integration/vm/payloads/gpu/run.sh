#!/usr/bin/env bash
# Host side of the GPU payload (G10 on pure cgroup v2): builds the product, the tests/gpu.rs and
# tests/watch.rs binaries and dataplane-bench (its watchdog section), stages them with payload.sh and boots the
# VM through integration/vm/run.sh.
#
#   integration/vm/payloads/gpu/run.sh [integration/vm/run.sh options...]
#   e.g. integration/vm/payloads/gpu/run.sh --results integration/vm/results/gpu
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --workspace --bins
test_bin() {
  cargo test --release -p dataplane-tests --test "$1" --no-run --message-format=json \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == sys.argv[1] and m.get("executable"):
        print(m["executable"])' "$1"
}
gpu_bin=$(test_bin gpu)
watch_bin=$(test_bin watch)
[[ -x $gpu_bin && -x $watch_bin ]] || { echo "run.sh: test binaries missing" >&2; exit 1; }
stage=$(mktemp -d "${TMPDIR:-/tmp}/dph-gpu-payload.XXXXXX")
trap 'rm -rf "$stage"' EXIT
install -m755 "$here/payload.sh" "$stage/payload.sh"
mkdir "$stage/bin"
install -m755 "$target/release/dataplane-hook" "$target/release/dataplane-runtime" \
  "$target/release/dataplane-bench" "$stage/bin/"
install -m755 "$gpu_bin" "$stage/bin/gpu-tests"
install -m755 "$watch_bin" "$stage/bin/watch-tests"
# The watch tests grow the hugetlb pool up to 1280 MiB beside a 1 GiB charged neighbour.
"$root/integration/vm/run.sh" --timeout "${DPH_VM_TIMEOUT:-1800}" --mem "${DPH_VM_MEM:-6144}" "$@" "$stage"
