#!/usr/bin/env bash
# Builds the installer image offline, without a container engine: an OCI image layout (FROM
# scratch, one layer) that `skopeo copy`, `ctr images import` or a registry push can take.
#
#   build-image.sh [--stage-only] <bin dir> <output dir> [tag]
#
# <bin dir> holds dataplane-hook and dataplane-runtime. The installer copies them onto every
# node, whose C library may be older than the build host's: build them static (`make build`
# does: crt-static, for the host's target triple, in target/<triple>/release)
# (dynamic binaries are refused unless DPH_ALLOW_DYNAMIC=1).
#
# The layer holds what the installer runs and what it loads:
#   /usr/bin/dataplane-hook, /usr/bin/dataplane-runtime   static
#   /install.sh, /etc/dataplane-hook/config.toml          the entrypoint and the default config
#   /bin/busybox and its applets in /bin                  static: sh, cp, sed, grep, ...
#   /usr/bin/nsenter                                      util-linux's (busybox's cannot enter a
#                                                         cgroup namespace), with the shared
#                                                         libraries it loads (ldd) at their paths
# --stage-only writes that tree to <output dir>/rootfs for Containerfile (FROM scratch, COPY).
# Otherwise <output dir> becomes an OCI image layout with <tag> (default: the crate version),
# written with tar, gzip and sha256sum alone; reproducible (SOURCE_DATE_EPOCH, default the last
# commit's time).
set -euo pipefail

stage_only=
if [[ ${1:-} == --stage-only ]]; then stage_only=1; shift; fi
bin_dir=${1:?usage: build-image.sh [--stage-only] <bin dir> <output dir> [tag]}
out=${2:?usage: build-image.sh [--stage-only] <bin dir> <output dir> [tag]}
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$here/../../Cargo.toml" | head -1)
tag=${3:-$version}

for b in dataplane-hook dataplane-runtime; do
    [[ -x $bin_dir/$b ]] || { echo "build-image: $bin_dir/$b is missing" >&2; exit 1; }
    # Shared libraries show as `lib => path` (a static-pie says "statically linked").
    if ldd "$bin_dir/$b" 2>&1 | grep -q '=>' && [[ ${DPH_ALLOW_DYNAMIC:-} != 1 ]]; then
        echo "build-image: $bin_dir/$b is dynamically linked: it would not run on nodes with an older C library (build it static, see the top of this script, or set DPH_ALLOW_DYNAMIC=1)" >&2
        exit 1
    fi
done
busybox=$(command -v busybox) || { echo "build-image: busybox is missing (apt-get install busybox-static)" >&2; exit 1; }
if ldd "$busybox" 2>&1 | grep -q '=>'; then echo "build-image: $busybox is not static (apt-get install busybox-static)" >&2; exit 1; fi
nsenter=$(command -v nsenter) || { echo "build-image: nsenter is missing (util-linux)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root"/{bin,usr/bin,etc/dataplane-hook,tmp,proc,sys,dev,host}
chmod 1777 "$root/tmp"
install -m 0755 "$bin_dir/dataplane-hook" "$bin_dir/dataplane-runtime" "$root/usr/bin/"
install -m 0755 "$here/install.sh" "$root/install.sh"
install -m 0644 "$here/config.toml" "$root/etc/dataplane-hook/config.toml"
install -m 0755 "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
    [[ $applet == busybox || -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
done
# util-linux nsenter and every library it loads, at the paths the dynamic loader expects (and
# those of dynamic dataplane binaries, when allowed: then the image runs them, on this C library).
install -m 0755 "$nsenter" "$root/usr/bin/nsenter"
rm -f "$root/bin/nsenter"
for lib in $(for f in "$nsenter" "$bin_dir/dataplane-hook" "$bin_dir/dataplane-runtime"; do ldd "$f" 2>/dev/null | grep -o '/[^ ]*'; done | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
printf 'root:x:0:0:root:/:/bin/sh\n' > "$root/etc/passwd"
printf 'root:x:0:\n' > "$root/etc/group"

if [[ -n $stage_only ]]; then
    rm -rf "$out/rootfs"
    mkdir -p "$out"
    cp -a "$root" "$out/rootfs"
    echo "build-image: staged $out/rootfs (buildah build -f $here/Containerfile $out)"
    exit 0
fi

# The OCI layout, by hand: one gzip'd tar layer (root-owned, sorted, fixed mtimes: the same
# inputs give the same digests), its config, the manifest, the index. (umoci 0.4.7's `insert`
# leaves the layer's tar stream unterminated, which Go's archive/tar — containerd — rejects.)
epoch=${SOURCE_DATE_EPOCH:-$(git -C "$here" log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
if [[ -e $out && ! -f $out/oci-layout ]]; then
    echo "build-image: $out exists and is not an OCI layout: refusing to overwrite it" >&2
    exit 1
fi
rm -rf "$out"
mkdir -p "$out/blobs/sha256"
put_blob() { # put_blob <file> -> prints "<hex digest> <size>"
    local d s
    d=$(sha256sum "$1" | cut -d' ' -f1)
    s=$(stat -c %s "$1")
    mv "$1" "$out/blobs/sha256/$d"
    echo "$d $s"
}
tar --sort=name --numeric-owner --owner=0 --group=0 --mtime="@$epoch" --format=pax \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -C "$root" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
gzip -9n < "$work/layer.tar" > "$work/layer.tar.gz"
read -r layer_digest layer_size < <(put_blob "$work/layer.tar.gz")
cat > "$work/config.json" <<JSON
{"created":"$created","architecture":"amd64","os":"linux","config":{"Env":["PATH=/usr/bin:/bin"],"Entrypoint":["/install.sh"],"Cmd":["run"],"WorkingDir":"/","Labels":{"org.opencontainers.image.title":"dataplane-hook-installer","org.opencontainers.image.version":"$version"}},"rootfs":{"type":"layers","diff_ids":["sha256:$diff_id"]},"history":[{"created":"$created","created_by":"packaging/kubernetes/build-image.sh"}]}
JSON
read -r config_digest config_size < <(put_blob "$work/config.json")
cat > "$work/manifest.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:$config_digest","size":$config_size},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"sha256:$layer_digest","size":$layer_size}]}
JSON
read -r manifest_digest manifest_size < <(put_blob "$work/manifest.json")
printf '{"imageLayoutVersion":"1.0.0"}\n' > "$out/oci-layout"
cat > "$out/index.json" <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:$manifest_digest","size":$manifest_size,"annotations":{"org.opencontainers.image.ref.name":"$tag"}}]}
JSON
echo "build-image: $out:$tag (manifest sha256:$manifest_digest)"
echo "  load it: skopeo copy oci:$out:$tag docker-archive:dataplane-hook-installer.tar:dataplane-hook-installer:$tag"
echo "       or: tar -C $out -cf installer.oci.tar . && ctr -n k8s.io images import --index-name dataplane-hook-installer:$tag installer.oci.tar"
