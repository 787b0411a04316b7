#!/usr/bin/env bash
# containerd 1.7 for the tests (#14, #15): Debian 13's (trixie) containerd package, checked by
# its SHA-256 from trixie's Packages index and unpacked into a private directory. Nothing is
# installed over the system's containerd 1.6 and no package source is added to apt.
#   scripts/containerd17.sh [DIR]   prints DIR (default below) once DIR/usr/bin/containerd is there
# DIR/usr/bin holds containerd, containerd-shim-runc-v2 and ctr. Run it with its own config,
# socket, root and state (never /run/containerd or /var/lib/containerd).
set -euo pipefail
version='1.7.24~ds1-6+deb13u1'
sha256=ed708deb96fe476a3bce4efa5c0538dfbcf717ab9a7c7944ba7260342c25899c
file="containerd_${version}_amd64.deb"
dir=${1:-/var/cache/dataplane-tests/containerd-1.7.24}
if [[ -x $dir/usr/bin/containerd && $(cat "$dir/.sha256" 2>/dev/null) == "$sha256" ]]; then
  echo "$dir"
  exit 0
fi
[[ $(dpkg --print-architecture) == amd64 ]] || { echo "containerd17: only amd64 is pinned" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp" "$dir.new"' EXIT
# The pool keeps the current version; snapshot.debian.org keeps every version ever published.
urls=("https://deb.debian.org/debian/pool/main/c/containerd/$file"
      "https://snapshot.debian.org/archive/debian/20261201T000000Z/pool/main/c/containerd/$file")
got=
for u in "${urls[@]}"; do
  if curl -fsSL --retry 3 -o "$tmp/$file" "$u"; then got=1; break; fi
done
[[ $got ]] || { echo "containerd17: cannot download $file (tried ${urls[*]})" >&2; exit 1; }
echo "$sha256  $tmp/$file" | sha256sum -c --quiet - || { echo "containerd17: $file does not match its pinned SHA-256" >&2; exit 1; }
rm -rf "$dir.new"
mkdir -p "$dir.new"
dpkg-deb -x "$tmp/$file" "$dir.new"
echo "$sha256" >"$dir.new/.sha256"
rm -rf "$dir"
mv "$dir.new" "$dir"
echo "$dir"
