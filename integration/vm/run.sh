#!/usr/bin/env bash
# Boot the test VM with a payload directory and return the payload's exit status.
#
#   integration/vm/run.sh [options] PAYLOAD_DIR [ARGS...]
#
# Inside the VM (Debian bookworm, systemd, pure cgroup v2) a oneshot unit runs
# PAYLOAD_DIR/payload.sh ARGS... as root, cwd /payload (a private copy of PAYLOAD_DIR),
# stdout+stderr into /results/payload.log; then the VM powers off. See README.md.
#
# Options:
#   --timeout SECONDS   whole-VM wall-clock limit, boot included (default 900)
#   --mem MB            guest memory (default 4096)
#   --cpus N            guest vCPUs (default: host cores, at most 4)
#   --hugepages N       2 MiB hugepages allocated at boot (default 256); 1 GiB pages too with
#                       --append 'hugepagesz=1G hugepages=N'
#   --results DIR       keep payload.log, console.log, exit-code, timing and whatever the
#                       payload wrote to $DPVM_RESULTS in DIR (emptied first)
#   --env KEY=VALUE     export into the payload's environment (repeatable)
#   --append ARGS       extra kernel command line
#   --accel kvm|tcg     default: kvm only where kvm_intel/kvm_amd is loaded, else tcg
#   --interactive       boot with the serial console on this terminal, a root shell,
#                       /payload and /results mounted, nothing run (Ctrl-a x quits qemu)
#   --quiet             do not print payload.log on success
# Exit status: the payload's; 124 on timeout; 125 when the VM died without an exit code
# (kernel panic, crash, share not mounted, ...); 2 on usage errors.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
timeout_s=900
mem_mb=4096
hugepages=256
cpus=$(nproc); ((cpus > 4)) && cpus=4
results_keep=
accel=${DPVM_ACCEL:-}
interactive=0
quiet=0
append=
envs=()

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }
while (($#)); do
  case $1 in
    --timeout) timeout_s=${2:?}; shift 2 ;;
    --timeout=*) timeout_s=${1#*=}; shift ;;
    --mem) mem_mb=${2:?}; shift 2 ;;
    --mem=*) mem_mb=${1#*=}; shift ;;
    --cpus) cpus=${2:?}; shift 2 ;;
    --cpus=*) cpus=${1#*=}; shift ;;
    --hugepages) hugepages=${2:?}; shift 2 ;;
    --hugepages=*) hugepages=${1#*=}; shift ;;
    --results) results_keep=${2:?}; shift 2 ;;
    --results=*) results_keep=${1#*=}; shift ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --env=*) envs+=("${1#*=}"); shift ;;
    --append) append=${2:?}; shift 2 ;;
    --append=*) append=${1#*=}; shift ;;
    --accel) accel=${2:?}; shift 2 ;;
    --accel=*) accel=${1#*=}; shift ;;
    --interactive) interactive=1; shift ;;
    --quiet) quiet=1; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) echo "run.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
(($# >= 1)) || usage
payload_src=$1; shift
[[ -d $payload_src ]] || { echo "run.sh: $payload_src is not a directory" >&2; exit 2; }
((interactive)) || [[ -f $payload_src/payload.sh ]] ||
  { echo "run.sh: $payload_src/payload.sh not found" >&2; exit 2; }
[[ $timeout_s =~ ^[0-9]+$ && $mem_mb =~ ^[0-9]+$ && $cpus =~ ^[1-9][0-9]*$ && $hugepages =~ ^[0-9]+$ ]] ||
  { echo "run.sh: --timeout, --mem, --cpus and --hugepages take integers" >&2; exit 2; }

log() { echo "run.sh: $*" >&2; }

# --results DIR is emptied before use: refuse a non-empty directory run.sh did not make.
if [[ -n $results_keep && -d $results_keep ]] && [[ -n $(ls -A "$results_keep") ]] &&
   [[ ! -f $results_keep/.dpvm-results ]]; then
  echo "run.sh: --results $results_keep is not empty and was not written by run.sh; refusing to empty it" >&2
  exit 2
fi

img=$("$here/build-image.sh" --print-dir)

if [[ -z $accel ]]; then
  if [[ -e /sys/module/kvm_intel || -e /sys/module/kvm_amd ]] && [[ -r /dev/kvm && -w /dev/kvm ]]; then
    accel=kvm
  else
    accel=tcg
  fi
fi
case $accel in
  kvm) accel_args=(-accel kvm -cpu host) ;;
  tcg) accel_args=(-accel tcg,thread=multi -cpu max) ;;
  *) echo "run.sh: --accel kvm|tcg" >&2; exit 2 ;;
esac

# ---- private work dir: payload copy, results share, qemu's snapshot overlay ----------
# First remove what a SIGKILLed run.sh left (its pid is recorded in the dir and is gone).
for stale in "${TMPDIR:-/tmp}"/dpvm-run.*; do
  [[ -f $stale/run.pid ]] || continue
  kill -0 "$(cat "$stale/run.pid")" 2>/dev/null || rm -rf --one-file-system "$stale"
done
work=$(mktemp -d "${TMPDIR:-/tmp}/dpvm-run.XXXXXX")
echo $$ >"$work/run.pid"
qpid=
cleanup() {
  local rc=$?
  if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
    kill -TERM "$qpid" 2>/dev/null || true
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$qpid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  rm -rf --one-file-system "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'log interrupted; exit 130' INT
trap 'log terminated; exit 143' TERM
trap 'exit 129' HUP

mkdir -p "$work/payload" "$work/results" "$work/tmp"
# A copy, so payload writes never touch the source tree (reflink where the fs can).
cp -a --reflink=auto "$payload_src/." "$work/payload/"
(($#)) && printf '%s\0' "$@" >"$work/results/.args"
((${#envs[@]})) && printf '%s\0' "${envs[@]}" >"$work/results/.env"

if [[ $(id -u) -eq 0 ]]; then sm=passthrough; else sm=mapped-xattr; fi
cmdline="root=/dev/vda rw console=ttyS0 panic=-1 systemd.unified_cgroup_hierarchy=1 cgroup_no_v1=all hugepages=$hugepages net.ifnames=0 mitigations=off random.trust_cpu=on"
((interactive)) && cmdline+=" dpvm.interactive"
[[ -n $append ]] && cmdline+=" $append"

# qemu dies with run.sh even when run.sh is SIGKILLed (no trap runs then).
qemu=(setpriv --pdeathsig KILL -- qemu-system-x86_64 -name dpvm -nodefaults -no-user-config
  "${accel_args[@]}" -smp "$cpus" -m "$mem_mb"
  -kernel "$img/vmlinuz" -initrd "$img/initrd.img" -append "$cmdline"
  -drive "file=$img/disk.img,format=raw,if=virtio,snapshot=on,cache=unsafe"
  -virtfs "local,path=$work/payload,mount_tag=payload,security_model=$sm,id=payload"
  -virtfs "local,path=$work/results,mount_tag=results,security_model=$sm,id=results"
  -device virtio-rng-pci -nic none -vga none -display none -no-reboot)

if ((interactive)); then
  log "interactive VM ($accel): root shell on the console; 'poweroff' or Ctrl-a x to leave"
  TMPDIR=$work/tmp "${qemu[@]}" -serial mon:stdio || true
  exit 0
fi

t0=$(date +%s.%N)
log "booting $(basename "$img") ($accel, ${cpus} vCPU, ${mem_mb} MiB, timeout ${timeout_s}s) with $payload_src"
TMPDIR=$work/tmp "${qemu[@]}" -serial "file:$work/results/console.log" -monitor none \
  </dev/null >"$work/qemu.out" 2>&1 &
qpid=$!
deadline=$((SECONDS + timeout_s))
timed_out=0
while kill -0 "$qpid" 2>/dev/null; do
  if ((SECONDS >= deadline)); then timed_out=1; break; fi
  sleep 0.5
done
if ((timed_out)); then
  kill -TERM "$qpid" 2>/dev/null || true
  sleep 1
  kill -KILL "$qpid" 2>/dev/null || true
fi
qrc=0
wait "$qpid" || qrc=$?
qpid=
elapsed=$(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || awk "BEGIN{print $(date +%s.%N) - $t0}")

R=$work/results
rc=
[[ -f $R/exit-code ]] && rc=$(tr -dc 0-9 <"$R/exit-code")
reason=
if ((timed_out)); then
  reason="timed out after ${timeout_s}s"
elif grep -qa 'Kernel panic' "$R/console.log" 2>/dev/null; then
  reason="kernel panic"
elif [[ -z $rc ]]; then
  reason="VM stopped without an exit code (qemu status $qrc)"
fi

if [[ -f $R/guest-timing ]]; then
  # shellcheck disable=SC1091
  . "$R/guest-timing"
fi
{
  echo "total_s=$(printf '%.1f' "$elapsed")"
  [[ -n ${payload_start_uptime:-} ]] && echo "boot_s=$payload_start_uptime"
  [[ -n ${payload_end_uptime:-} && -n ${payload_start_uptime:-} ]] &&
    echo "payload_s=$(awk "BEGIN{print $payload_end_uptime - $payload_start_uptime}")"
  echo "accel=$accel"
} >"$R/timing"

# The last 60 lines of the serial console before the shutdown (up to the payload's end when
# it ended), without CRs and colour escapes.
console_tail() {
  [[ -f $R/console.log ]] || return 0
  tr -d '\r' <"$R/console.log" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' |
    awk '{ l[NR] = $0 } /dpvm: payload\.sh exited with/ { end = NR }
         END { if (!end) end = NR; for (i = (end > 60 ? end - 59 : 1); i <= end; i++) print l[i] }'
}
if [[ -n $reason || $rc != 0 || $quiet -eq 0 ]]; then
  if [[ -s $R/payload.log ]]; then
    echo "======== payload.log ========"
    cat "$R/payload.log"
    echo "======== end payload.log ========"
  fi
fi
if [[ -n $reason ]]; then
  echo "======== last 60 lines of the serial console ========"
  console_tail
  echo "======== end console ========"
  if [[ -s $work/qemu.out ]]; then
    echo "======== qemu ========"; cat "$work/qemu.out"; echo "======== end qemu ========"
  fi
elif [[ $rc != 0 ]]; then
  echo "======== last 60 lines of the serial console ========"
  console_tail
  echo "======== end console ========"
fi

if [[ -n $results_keep ]]; then
  mkdir -p "$results_keep"
  find "$results_keep" -mindepth 1 -delete
  cp -a "$R/." "$results_keep/"
  rm -f "$results_keep/.args" "$results_keep/.env"
  : >"$results_keep/.dpvm-results"
fi

if [[ -n $reason ]]; then
  log "FAIL: $reason ($(tr '\n' ' ' <"$R/timing"))"
  ((timed_out)) && exit 124
  exit 125
fi
log "payload exited with $rc ($(tr '\n' ' ' <"$R/timing"))"
exit "$rc"
