#!/usr/bin/env python3
"""Tools for the smoke payload (standard library only).

mkoci.py image ROOTFS OUT.tar NAME
    Write an OCI image layout tarball (one uncompressed layer) of ROOTFS, importable with
    `ctr images import OUT.tar`; the image is named NAME (io.containerd.image.name).
mkoci.py bundle-config IN.json OUT.json ROOTFS CGROUPS_PATH ARG...
    Turn `runc spec` output into a non-interactive spec running ARG... in the read-only
    ROOTFS (an absolute path) with a pids limit of
    123, a 2MB hugetlb limit of 4 MiB, CGROUPS_PATH and no cgroup namespace (so the container
    sees its real cgroup path in /proc/self/cgroup).
"""
import hashlib, io, json, os, sys, tarfile


def blob(tar, data, media_type):
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": "sha256:" + digest, "size": len(data)}


def image(rootfs, out, name):
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w", format=tarfile.PAX_FORMAT) as layer:
        def owner0(ti):
            ti.uid = ti.gid = 0
            ti.uname = ti.gname = "root"
            return ti
        for entry in sorted(os.listdir(rootfs)):
            layer.add(os.path.join(rootfs, entry), arcname=entry, filter=owner0)
    layer_data = layer_buf.getvalue()
    with tarfile.open(out, "w") as tar:
        def small(path, obj):
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(path)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        small("oci-layout", {"imageLayoutVersion": "1.0.0"})
        layer_desc = blob(tar, layer_data, "application/vnd.oci.image.layer.v1.tar")
        config = {
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin:/sbin:/usr/bin:/usr/sbin"], "Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_desc["digest"]]},
        }
        config_desc = blob(tar, json.dumps(config).encode(), "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = blob(tar, json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")
        manifest_desc["annotations"] = {"io.containerd.image.name": name,
                                        "org.opencontainers.image.ref.name": name.rsplit(":", 1)[-1]}
        manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
        small("index.json", {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                             "manifests": [manifest_desc]})


def bundle_config(src, dst, rootfs, cgroups_path, args):
    with open(src) as f:
        spec = json.load(f)
    spec["process"]["terminal"] = False
    spec["process"]["args"] = args
    spec["root"] = {"path": rootfs, "readonly": True}
    spec["linux"]["cgroupsPath"] = cgroups_path
    spec["linux"]["namespaces"] = [n for n in spec["linux"]["namespaces"] if n["type"] != "cgroup"]
    res = spec["linux"].setdefault("resources", {})
    res["pids"] = {"limit": 123}
    res["hugepageLimits"] = [{"pageSize": "2MB", "limit": 4 << 20}]
    with open(dst, "w") as f:
        json.dump(spec, f, indent=1)


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "image":
        image(*sys.argv[2:])
    elif len(sys.argv) >= 7 and sys.argv[1] == "bundle-config":
        bundle_config(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:])
    else:
        sys.exit(__doc__)
