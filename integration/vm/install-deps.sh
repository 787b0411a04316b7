#!/usr/bin/env bash
# Host-side dependencies of the VM harness (integration/vm). Idempotent and fast when
# everything is already there: apt is only touched when a tool is missing.
set -euo pipefail

# tool -> Debian package that provides it
declare -A NEED=(
  [qemu-system-x86_64]=qemu-system-x86
  [mmdebstrap]=mmdebstrap
  [mke2fs]=e2fsprogs
  [sha256sum]=coreutils
  [timeout]=coreutils
  [setsid]=util-linux
)

missing=()
for tool in "${!NEED[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${NEED[$tool]}")
done
# qemu's 9p/virtio firmware and vga roms come with qemu-system-x86 (seabios, ipxe-qemu);
# mmdebstrap needs the archive keyring to verify the mirror.
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: need root to install: ${missing[*]}" >&2
  exit 1
fi

mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
echo "install-deps: installing ${pkgs[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only if they are missing or older than a day.
if [[ -z $(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -mmin -1440 2>/dev/null | head -1) ]]; then
  apt-get update -q >&2
fi
apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
