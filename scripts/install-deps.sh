#!/usr/bin/env bash
# Installs what `make demo`, `make test` and `make bench` need on a Debian 12 host.
# Idempotent and fast when everything is there: dpkg is asked first, apt-get only runs (and
# `apt-get update` only happens) when a package is missing. The VM suite has its own
# installer (integration/vm/install-deps.sh), called by `make test-vm`.
set -euo pipefail

# Debian package -> why it is needed.
PACKAGES=(
  runc            # the real OCI runtime behind dataplane-runtime, and the control in tests
  dpdk-dev        # dpdk-testpmd, dpdk-proc-info: real DPDK in the demo and the tests
  busybox-static  # a static shell and tools inside test containers
  containerd      # containerd integration tests (1.6; 1.7 comes from scripts/containerd17.sh)
  curl            # downloads containerd 1.7 (scripts/containerd17.sh)
  podman          # podman hooks.d integration tests
  conmon          # podman's container monitor
  crun            # second OCI runtime (refuses hybrid cgroup hosts; tested where it can run)
  umoci           # unpacks OCI images into bundles
  skopeo          # copies OCI images (local image layouts for the tests)
  protobuf-compiler # protoc: builds the CRI v1 client (k8s-cri) that tests/cri.rs drives containerd with
  util-linux      # nsenter, flock, mount, unshare
  iproute2        # ip (network namespaces in tests)
  kmod            # modprobe (kernel modules some tests load)
  make            # the front door itself
  time            # /usr/bin/time -v for peak-RSS figures
  prometheus-node-exporter # the real node_exporter scraping the metrics textfiles (tests/metrics.rs)
  python3-pip     # installs kubernetes-validate (below)
  zsh             # the shipped zsh completions are checked with it (tests/packaging.rs)
  fish            # the shipped fish completions complete with it (tests/packaging.rs)
)

# One dpkg-query for all of them; a package dpkg has never heard of prints nothing.
declare -A installed=()
while read -r status name; do
  [[ $status == ii ]] && installed[$name]=1
done < <(dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "${PACKAGES[@]}" 2>/dev/null || true)
missing=()
for p in "${PACKAGES[@]}"; do
  [[ -n ${installed[$p]:-} ]] || missing+=("$p")
done

# A Rust toolchain is expected to be there already (rustup or Debian's cargo).
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install a Rust toolchain >= 1.88 (https://rustup.rs) and re-run" >&2
  exit 1
fi

# Not from Debian (tests/packaging.rs, `make deb`, `make fuzz`): the Kubernetes schemas, offline,
# from PyPI; cargo-deb and cargo-fuzz from crates.io (a few minutes of building, once).
extras() {
  if ! kubernetes-validate --version >/dev/null 2>&1 && ! python3 -m kubernetes_validate --version >/dev/null 2>&1; then
    echo "install-deps: installing kubernetes-validate (PyPI)"
    python3 -m pip install -q kubernetes-validate 2>/dev/null || python3 -m pip install -q --break-system-packages kubernetes-validate
  fi
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-deb (crates.io)"
    cargo install -q --locked cargo-deb
  fi
  # The fuzz smoke run in `make test` (scripts/fuzz.sh); it drives libFuzzer through the
  # toolchain that is there (stable, with RUSTC_BOOTSTRAP=1 for the -Z flags it passes).
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-fuzz (crates.io)"
    cargo install -q --locked cargo-fuzz
  fi
  # tests/cri.rs runs every CRI test on containerd 1.6 (the system's) and 1.7: Debian 13's
  # 1.7.24, pinned by SHA-256 and unpacked into a private dir, never over the system's.
  # A no-op when it is there already.
  if [[ $(id -u) -eq 0 ]]; then
    echo "install-deps: containerd 1.7 in $("$(dirname "$0")/containerd17.sh")"
  elif ! "$(dirname "$0")/containerd17.sh" >/dev/null 2>&1; then
    echo "install-deps: need root to unpack containerd 1.7 into /var/cache/dataplane-tests (run as root, or: sudo $(dirname "$0")/containerd17.sh)" >&2
    exit 1
  fi
}

if ((${#missing[@]} == 0)); then
  extras
  echo "install-deps: all dependencies present"
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: need root to install: ${missing[*]} (run as root, or: sudo apt-get install ${missing[*]})" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_install() { apt-get install -y -q --no-install-recommends "${missing[@]}"; }
# Package lists may be absent (fresh image) or stale: refresh only when the install needs it.
if ! apt_install; then
  echo "install-deps: refreshing package lists (apt-get update)"
  apt-get update -q
  apt_install
fi
extras
echo "install-deps: done"
