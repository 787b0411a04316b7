#!/usr/bin/env bash
# Build (or reuse) the VM image for integration/vm/run.sh.
#
#   integration/vm/build-image.sh [--force] [--print-dir]
#
# Output: integration/vm/cache/img-<hash>/{disk.img,vmlinuz,initrd.img,packages.lst,kernel-version}
# where <hash> covers this script, packages.txt and everything under guest/ (contents and
# executable bits, as git records them, so checkouts with another umask share it). It is only
# rebuilt when one of them changes; a build goes into a temp dir and is renamed into place,
# so an interrupted build never leaves a half image. With --print-dir the image directory is
# the only thing printed on stdout (run.sh uses that).
#
# Environment:
#   DPVM_CACHE         cache dir (default integration/vm/cache)
#   DPVM_MIRROR        Debian mirror (default: the host's apt sources, else deb.debian.org)
#   DPVM_SECURITY_MIRROR  Debian security mirror (same default rules)
#   DPVM_SUITE         default bookworm
#   DPVM_DISK_FREE_MB  free space in the image's filesystem (default 2048; the disk is sparse)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${DPVM_CACHE:-$here/cache}
suite=${DPVM_SUITE:-bookworm}
free_mb=${DPVM_DISK_FREE_MB:-2048}
force=0
print_dir=0
for a in "$@"; do
  case $a in
    --force) force=1 ;;
    --print-dir) print_dir=1 ;;
    -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument: $a" >&2; exit 2 ;;
  esac
done

log() { echo "build-image: $*" >&2; }

# ---- inputs and their hash --------------------------------------------------------------
mapfile -t packages < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/packages.txt" | grep -v '^$')
inputs_hash() {
  {
    echo "suite=$suite free_mb=$free_mb"
    sha256sum "$here/build-image.sh" "$here/packages.txt" | sed "s| $here/| |"
    (cd "$here/guest" && find . -type f -print0 | LC_ALL=C sort -z |
       while IFS= read -r -d '' f; do
         x=-; [[ -x $f ]] && x=x
         printf '%s %s %s\n' "$(sha256sum <"$f" | cut -d' ' -f1)" "$x" "$f"
       done)
  } | sha256sum | cut -c1-16
}
hash=$(inputs_hash)
out=$cache/img-$hash

done_msg() {
  if ((print_dir)); then echo "$out"; else log "image ready: $out"; fi
}

if ((!force)) && [[ -f $out/disk.img && -f $out/vmlinuz && -f $out/initrd.img ]]; then
  done_msg
  exit 0
fi

[[ $(id -u) -eq 0 ]] || { log "must run as root (mmdebstrap root mode, file ownership in the image)"; exit 1; }
"$here/install-deps.sh"

mkdir -p "$cache"
# One build at a time; a second caller waits and then finds the image ready.
exec 9>"$cache/.build.lock"
flock 9
if ((!force)) && [[ -f $out/disk.img && -f $out/vmlinuz && -f $out/initrd.img ]]; then
  done_msg
  exit 0
fi

# ---- mirrors: the host's Debian sources ----------------------------------------------
host_uris() {
  # URIs from one-line (*.list) and deb822 (*.sources) files that are enabled.
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -f $f ]] && awk '$1=="deb"{for(i=2;i<=NF;i++) if($i ~ /^[a-z]+:\/\//){print $i; break}}' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -f $f ]] && awk 'tolower($1)=="uris:"{for(i=2;i<=NF;i++) print $i}' "$f"
  done
}
pick_uri() { host_uris | sed 's|/*$||' | grep -E "$1" | head -1; }
mirror=${DPVM_MIRROR:-$(pick_uri '/debian$' || true)}
mirror=${mirror:-http://deb.debian.org/debian}
secmirror=${DPVM_SECURITY_MIRROR:-$(pick_uri '/debian-security$' || true)}
secmirror=${secmirror:-http://deb.debian.org/debian-security}

# ---- build ---------------------------------------------------------------------------
# We hold the lock: any .build-* dir is what a killed build left behind.
for stale in "$cache"/.build-*; do
  [[ -d $stale ]] || continue
  findmnt -rn -o TARGET | grep -F "$stale/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
  rm -rf --one-file-system "$stale"
done
tmp=$(mktemp -d "$cache/.build-$hash.XXXXXX")
chmod 755 "$tmp"   # apt downloads as _apt (sandboxed) and needs to get in
cleanup() {
  local rc=$?
  # mmdebstrap unmounts its own /proc,/sys,/dev binds, but never recurse into a mount.
  if [[ -d $tmp ]]; then
    findmnt -rn -o TARGET | grep -F "$tmp/" | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
    rm -rf --one-file-system "$tmp"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

root=$tmp/rootfs
t0=$SECONDS
log "mmdebstrap $suite (${#packages[@]} packages) from $mirror ..."
include=$(IFS=,; echo "${packages[*]}")
# guest/ goes in before any package is installed, so that e.g. initramfs-tools builds the
# initrd with our config. Owned by root, world-readable, whatever the checkout looks like.
mmdebstrap --variant=minbase --mode=root --format=directory \
  --include="$include" \
  --setup-hook="tar -C '$here/guest' --owner=0 --group=0 --mode=u+rwX,go+rX,go-w -cf - . | tar -C \"\$1\" --no-overwrite-dir -xf -" \
  --aptopt='Acquire::Retries "3"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  "$suite" "$root" \
  "deb $mirror $suite main" \
  "deb $mirror $suite-updates main" \
  "deb $secmirror $suite-security main" >&2
log "mmdebstrap took $((SECONDS - t0)) s"

echo dpvm >"$root/etc/hostname"
cat >"$root/etc/hosts" <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	dpvm
::1		localhost ip6-localhost ip6-loopback
HOSTS
mkdir -p "$root/payload" "$root/results"
cat >"$root/etc/fstab" <<'FSTAB'
# <fs>   <mount>   <type> <options>                                                  <dump> <pass>
/dev/vda /         ext4   rw,errors=remount-ro                                       0      1
payload  /payload  9p     trans=virtio,version=9p2000.L,msize=262144,access=any,nofail 0     0
results  /results  9p     trans=virtio,version=9p2000.L,msize=262144,access=any,nofail 0     0
FSTAB
# Root with no password: this is a throw-away test VM (interactive console only).
chroot "$root" passwd -d root >/dev/null
chroot "$root" systemctl enable dpvm-payload.service >&2
# Nothing on this VM needs these, and every second of boot is slow under TCG.
# dpdk.service (Debian's /etc/dpdk/dpdk.conf hugepage/bind setup) costs ~14 s of boot and
# would touch the hugepage pools the payloads want to own.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
         fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service dpdk.service \
         podman.service podman.socket podman-restart.service podman-auto-update.service \
         podman-auto-update.timer podman-clean-transient.service getty@tty1.service; do
  chroot "$root" systemctl disable "$u" >/dev/null 2>&1 || true
done
chroot "$root" dpkg-query -W -f '${Package} ${Version}\n' >"$tmp/packages.lst"
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/*_Packages "$root"/tmp/* || true

kver=$(cd "$root/boot" && ls vmlinuz-* | sed 's/^vmlinuz-//' | sort -V | tail -1)
[[ -n $kver && -f $root/boot/initrd.img-$kver ]] || { log "no kernel/initrd in the rootfs"; exit 1; }
cp "$root/boot/vmlinuz-$kver" "$tmp/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$tmp/initrd.img"
# The initrd (MODULES=list, guest/usr/share/initramfs-tools/modules.d/dpvm) carries
# virtio_blk/virtio_pci, ext4 and 9p; modules-load.d loads 9p again from the root fs.
for m in 9p 9pnet_virtio virtio_blk ext4; do
  if ! find "$root/lib/modules/$kver" -name "$m.ko*" | grep -q . &&
     ! grep -qw "$m" "$root/lib/modules/$kver/modules.builtin"; then
    log "kernel $kver has no module $m"; exit 1
  fi
done

initrd_list=$(chroot "$root" lsinitramfs "/boot/initrd.img-$kver")
for m in virtio_blk virtio_pci ext4; do
  grep -q "/$m\.ko" <<<"$initrd_list" || { log "initrd lacks $m.ko"; exit 1; }
done
[[ -x $root/usr/local/sbin/dpvm-run-payload ]] || { log "guest files missing in the rootfs"; exit 1; }

used_mb=$(du -sm --apparent-size "$root" | cut -f1)
size_mb=$((used_mb * 115 / 100 + free_mb))
log "rootfs ${used_mb} MiB; ext4 image ${size_mb} MiB (sparse)"
truncate -s "${size_mb}M" "$tmp/disk.img"
mke2fs -q -F -t ext4 -L dpvm-root -d "$root" "$tmp/disk.img"
rm -rf --one-file-system "$root"
echo "$kver" >"$tmp/kernel-version"
echo "$hash" >"$tmp/inputs-hash"

rm -rf --one-file-system "$out"
chmod 755 "$tmp"
mv "$tmp" "$out"
# Older images are dead weight (a running VM keeps its open file alive anyway).
for old in "$cache"/img-*; do
  [[ $old == "$out" ]] || rm -rf --one-file-system "$old"
done
log "built in $((SECONDS - t0)) s"
done_msg
