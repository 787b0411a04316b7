#!/usr/bin/env bash
# Host side of the RDMA payload: builds the product and the tests/rdma.rs binary, stages them
# with payload.sh and boots the VM through integration/vm/run.sh.
#
#   integration/vm/payloads/rdma/run.sh [integration/vm/run.sh options...]
#   e.g. integration/vm/payloads/rdma/run.sh --results integration/vm/results/rdma
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../../../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
cargo build --release --workspace --bins
tests_bin=$(cargo test --release -p dataplane-tests --test rdma --no-run --message-format=json \
  | python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("target", {}).get("name") == "rdma" and m.get("executable"):
        print(m["executable"])')
[[ -x $tests_bin ]] || { echo "run.sh: no rdma test binary" >&2; exit 1; }
stage=$(mktemp -d "${TMPDIR:-/tmp}/dph-rdma-payload.XXXXXX")
trap 'rm -rf "$stage"' EXIT
install -m755 "$here/payload.sh" "$stage/payload.sh"
mkdir "$stage/bin"
install -m755 "$target/release/dataplane-hook" "$target/release/dataplane-runtime" "$stage/bin/"
install -m755 "$tests_bin" "$stage/bin/rdma-tests"
"$root/integration/vm/run.sh" --timeout "${DPH_VM_TIMEOUT:-1800}" "$@" "$stage"
