#!/usr/bin/env bash
# Generates the package's shell completions and man page from the built binary, into
# <bin dir>/packaging/ (where hook/Cargo.toml's [package.metadata.deb] assets expect them).
# Usage: packaging/gen-assets.sh <dir with the built dataplane-hook>
set -euo pipefail
bin_dir=${1:?usage: gen-assets.sh <bin dir>}
hook="$bin_dir/dataplane-hook"
out="$bin_dir/packaging"
mkdir -p "$out"
"$hook" completions bash > "$out/dataplane-hook.bash"
"$hook" completions zsh  > "$out/_dataplane-hook"
"$hook" completions fish > "$out/dataplane-hook.fish"
"$hook" manpage | gzip -9n > "$out/dataplane-hook.8.gz"
echo "gen-assets: completions and man page in $out"
