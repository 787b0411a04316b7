#!/usr/bin/env bash
# Coverage-guided fuzzing of the parsers of untrusted input (fuzz/, cargo fuzz + libFuzzer).
#   scripts/fuzz.sh SECONDS [TARGET...]   every target (or those named) for SECONDS each
# Builds all targets once, then runs each one on its checked-in seeds (fuzz/corpus/<target>,
# only read) plus the inputs earlier runs found (fuzz/target/corpus/<target>, where libFuzzer
# writes what it finds: out of git, kept between runs so long runs build on each other).
# A crash (panic, failed property) stops that target, leaves the input in
# fuzz/artifacts/<target>/ and makes the script exit 1 after running the rest; reproduce one
# with `fuzz/target/<triple>/release/<target> <artifact>`.
# cargo-fuzz needs nightly compiler flags (-Z); RUSTC_BOOTSTRAP=1 lets the stable toolchain
# take them. FUZZ_SANITIZER (default none: the targets are safe Rust; panics and overflow
# checks, enabled with -a, are what they look for) can be set to address.
set -euo pipefail
seconds=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
cd "$(dirname "$0")/../fuzz"
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: cargo-fuzz not found (run ./scripts/install-deps.sh, or: cargo install cargo-fuzz --locked)" >&2
  exit 1
fi
triple=$(rustc -vV | sed -n 's/^host: //p')
targets=("$@")
((${#targets[@]})) || mapfile -t targets < <(cargo fuzz list)
sanitizer=${FUZZ_SANITIZER:-none}
# Its own target dir whatever CARGO_TARGET_DIR says: the main build's artifacts are built
# without coverage instrumentation and must not mix with these.
cargo fuzz build --target-dir target --sanitizer "$sanitizer" --debug-assertions
bin=target/$triple/release
failed=()
for t in "${targets[@]}"; do
  mkdir -p "target/corpus/$t" "artifacts/$t" target/logs
  dict=()
  case $t in
    request | annotation_values) dict=(-dict=dict/request.dict) ;;
    quantity) dict=(-dict=dict/quantity.dict) ;;
    oci_state | oci_bundle) dict=(-dict=dict/oci.dict) ;;
    ledger_records) dict=(-dict=dict/ledger.dict) ;;
    mountinfo | proc_files) dict=(-dict=dict/mountinfo.dict) ;;
    runtime_args) dict=(-dict=dict/runtime_args.dict) ;;
    config_toml) dict=(-dict=dict/config_toml.dict) ;;
  esac
  log=target/logs/$t.log
  if "$bin/$t" "target/corpus/$t" "corpus/$t" "${dict[@]}" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"$log" 2>&1; then
    echo "fuzz: $t: ok ($(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?') runs in ${seconds}s, corpus $(ls "target/corpus/$t" | wc -l) found + $(ls "corpus/$t" | wc -l) seeds)"
  else
    echo "fuzz: $t: CRASH (log fuzz/$log):" >&2
    grep -m1 -A12 -E "panicked at|ERROR: libFuzzer|==ERROR" "$log" >&2 || tail -n 20 "$log" >&2
    grep -o "Test unit written to .*" "$log" >&2 || true
    failed+=("$t")
  fi
done
if ((${#failed[@]})); then
  echo "fuzz: crashes in: ${failed[*]} (inputs in fuzz/artifacts/; turn each into a unit test in the parser's module, then fix)" >&2
  exit 1
fi
