#!/usr/bin/env bash
# The product doing its main job on real containers with real DPDK, before and after:
#   1. the incident the product was born from: a DPDK primary and two secondaries in three
#      containers; the secondaries collide on their PID-named fbarray lock
#   2. two DPDK primaries with the default file prefix on one node
#   3. an application crash that leaks hugepages
# Each story runs first on plain runc (the problem), then through dataplane-runtime (the fix).
#
# usage: scripts/demo.sh [BIN_DIR]     (as root; `make demo` builds and passes target/release)
#
# The demo sizes the host's 2Mi hugepage pool itself and restores it at the end; containers,
# mounts and files it made are removed on exit, also on Ctrl-C. It waits for the pool lock the
# integration tests use, so it never runs while a test is using the pool.
set -euo pipefail

BIN_DIR=$(realpath "${1:-target/release}")
HOOK=$BIN_DIR/dataplane-hook
RUNTIME=$BIN_DIR/dataplane-runtime
BUNDLE=$BIN_DIR/dph-test-bundle      # writes the integration tests' OCI bundle (tests/bin)
POOL_PAGES=128                     # 256 MiB of 2Mi pages: enough for two testpmd primaries
RESERVE=64Mi                       # what each container asks the product for
HP=/sys/kernel/mm/hugepages/hugepages-2048kB
POOL_LOCK=/run/lock/dataplane-tests.pool

# --- presentation ---------------------------------------------------------------------------
if [[ -t 1 ]]; then B=$'\e[1m' R=$'\e[31m' G=$'\e[32m' D=$'\e[2m' N=$'\e[0m'; else B= R= G= D= N=; fi
T0=$SECONDS
title() { printf '\n%s━━ %s%s\n' "$B" "$*" "$N"; }
step()  { printf '%s▸ %s%s\n' "$B" "$*" "$N"; }
say()   { printf '  %s\n' "$*"; }
quote() { sed -e "s/^/    ${D}│${N} /"; }
good()  { printf '  %s✔ %s%s\n' "$G" "$*" "$N"; }
bad()   { printf '  %s✘ %s%s\n' "$R" "$*" "$N"; }
die()   { printf 'demo: %s\n' "$*" >&2; exit 1; }
meminfo() { awk '/^HugePages_(Total|Free|Rsvd)/ {printf "%s %s  ", $1, $2} END {print ""}' /proc/meminfo; }
free_pages() { cat "$HP/free_hugepages"; }
rsvd_pages() { cat "$HP/resv_hugepages"; }

# --- preconditions --------------------------------------------------------------------------
[[ $(id -u) -eq 0 ]] || die "run as root (mounts, cgroups and hugepages): sudo make demo"
for b in "$HOOK" "$RUNTIME" "$BUNDLE"; do [[ -x $b ]] || die "$b not built (run: make build)"; done
for t in runc dpdk-testpmd flock mountpoint; do
  command -v "$t" >/dev/null || die "$t not found (run: scripts/install-deps.sh)"
done
[[ -d $HP ]] || die "this kernel has no 2Mi hugepage size ($HP)"

WORK=$(mktemp -d /tmp/dph-demo.XXXXXX)
RUNC_ROOT=$WORK/runc-root          # private runc state: the demo never sees other containers
PRODUCT_ROOT=$WORK/product-root
CONFIG=$WORK/config.toml
POOL_BEFORE=
MOUNTED_HUGEPAGES=0
MADE_HUGEPAGES_DIR=0
MADE_RUN_DPDK=0
MADE_RTE_DIR=0
HUGE_FILES_BEFORE=$WORK/hugepage-files.before

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  set +e
  for root in "$RUNC_ROOT" "$PRODUCT_ROOT"; do
    [[ -d $root ]] || continue
    for id in $(runc --root "$root" list -q 2>/dev/null); do
      if [[ $root == "$PRODUCT_ROOT" ]]; then
        DATAPLANE_HOOK_CONFIG=$CONFIG "$RUNTIME" --root "$root" delete --force "$id" >/dev/null 2>&1
      else
        runc --root "$root" delete --force "$id" >/dev/null 2>&1
      fi
    done
  done
  # hugepage files the demo's plain-runc containers leaked on the host (never anyone else's)
  if [[ -f $HUGE_FILES_BEFORE ]]; then
    comm -13 "$HUGE_FILES_BEFORE" <(ls -1 /dev/hugepages 2>/dev/null | sort) | while read -r f; do
      rm -f "/dev/hugepages/$f"
    done
  fi
  ((MOUNTED_HUGEPAGES)) && umount /dev/hugepages
  ((MADE_HUGEPAGES_DIR)) && rmdir /dev/hugepages
  ((MADE_RTE_DIR)) && rm -rf /var/run/dpdk/rte
  ((MADE_RUN_DPDK)) && rmdir /var/run/dpdk 2>/dev/null
  [[ -n $POOL_BEFORE ]] && echo "$POOL_BEFORE" > "$HP/nr_hugepages"
  [[ -f $CONFIG ]] && "$HOOK" --config "$CONFIG" gc >/dev/null 2>&1
  rm -rf "$WORK"
  if ((rc != 0)); then
    printf '\ndemo: stopped (exit %d); containers, mounts and the pool size were restored\n' "$rc" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the host, as a DPDK node usually has it -------------------------------------------------
exec {LOCK_FD}>"$POOL_LOCK"
if ! flock -n "$LOCK_FD"; then
  say "waiting for the hugepage pool (an integration test is using it) ..."
  flock -w 600 "$LOCK_FD" || die "the hugepage pool stayed busy for 10 minutes ($POOL_LOCK)"
fi
POOL_BEFORE=$(cat "$HP/nr_hugepages")
echo "$POOL_PAGES" > "$HP/nr_hugepages"
[[ $(cat "$HP/nr_hugepages") -eq $POOL_PAGES ]] || die "could not size the 2Mi pool to $POOL_PAGES pages"
for ((i = 0; i < 100; i++)); do  # someone outside the lock may be finishing with the pool
  (($(free_pages) == POOL_PAGES && $(rsvd_pages) == 0)) && break
  sleep 0.1
done
(($(free_pages) == POOL_PAGES && $(rsvd_pages) == 0)) \
  || die "hugepages are in use by someone else ($(meminfo)); stop them and retry"

if ! mountpoint -q /dev/hugepages; then
  [[ -d /dev/hugepages ]] || { mkdir /dev/hugepages; MADE_HUGEPAGES_DIR=1; }
  mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
  MOUNTED_HUGEPAGES=1
fi
ls -1 /dev/hugepages | sort > "$HUGE_FILES_BEFORE"
[[ -d /var/run/dpdk ]] || { mkdir -p /var/run/dpdk; MADE_RUN_DPDK=1; }
[[ -e /var/run/dpdk/rte ]] || MADE_RTE_DIR=1

cat > "$CONFIG" <<EOF
# dataplane-hook configuration for this demo (defaults otherwise; see README "Configuration")
state_dir = "$WORK/state"
log_file  = "$WORK/dataplane-hook.log"
EOF

# --- bundles: a rootfs that bind-mounts the host's /usr read-only ----------------------------
TESTPMD=(dpdk-testpmd -l 0-1 --no-pci --vdev=net_null0 --vdev=net_null1
         -- --total-num-mbufs=2048 --stats-period 1)

# make_bundle DIR "ANNOTATIONS" ARGS...: the integration tests' bundle (tests/harness, written
# by dph-test-bundle), with the host's /dev/hugepages and /var/run/dpdk bind-mounted in, as DPDK
# deployments commonly do. ANNOTATIONS: "KEY=VALUE KEY=VALUE" (no spaces in values).
make_bundle() {
  local dir=$1 annotations=$2 kv; shift 2
  local opts=(--hostname demo --bind /dev/hugepages:/dev/hugepages --bind /var/run/dpdk:/var/run/dpdk)
  for kv in $annotations; do opts+=(--annotation "$kv"); done
  mkdir -p "$dir"
  "$BUNDLE" "$dir" "${opts[@]}" -- "$@"
}

RESERVATION="dataplane-hook.io/hugepages-2Mi=$RESERVE"

# Multi-process testpmd (story 1): a primary sharing its ports' queues with two secondaries.
# The secondaries log EAL at debug level, as the incident's engineers did to find the cause.
MP=(-- --total-num-mbufs=2048 --stats-period 1 --num-procs=3 --rxq=3 --txq=3)
MP_PRIMARY=(dpdk-testpmd -l 0-1 --no-pci --vdev=net_null0 --vdev=net_null1 "${MP[@]}" --proc-id=0)
mp_secondary() { # PROC_ID
  echo dpdk-testpmd -l 0-1 --no-pci --proc-type=secondary --log-level=lib.eal:debug "${MP[@]}" "--proc-id=$1"
}

# The two ways to run a container: plain runc, and the product as a drop-in for runc.
plain()   { runc --root "$RUNC_ROOT" "$@"; }
product() { DATAPLANE_HOOK_CONFIG=$CONFIG "$RUNTIME" --root "$PRODUCT_ROOT" "$@"; }

# launch RUNNER DIR ID: create + start, the container's stdout/stderr into DIR/out.log
launch() {
  local runner=$1 dir=$2 id=$3 err
  if ! "$runner" create --bundle "$dir" "$id" </dev/null >"$dir/out.log" 2>&1; then
    err=$(tail -n 3 "$dir/out.log")
    bad "create $id failed:"; printf '%s\n' "$err" | quote; return 1
  fi
  "$runner" start "$id"
}
state_of() { "$1" state "$2" 2>/dev/null | sed -n 's/.*"status": *"\([a-z]*\)".*/\1/p'; }
wait_forwarding() { # DIR SECONDS
  local i
  for ((i = 0; i <= $2 * 10; i++)); do
    grep -q 'Port statistics' "$1/out.log" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}
wait_stopped() { # RUNNER ID SECONDS
  local i s
  for ((i = 0; i < $3 * 10; i++)); do
    s=$(state_of "$1" "$2"); [[ $s == stopped || -z $s ]] && return 0
    sleep 0.1
  done
  return 1
}
stats_line() { grep 'RX-packets' "$1/out.log" | tail -n 1 | sed 's/^ *//'; } # latest, port 1
# Files in the host's /dev/hugepages that the demo's plain-runc containers left there.
host_leftovers() { comm -13 "$HUGE_FILES_BEFORE" <(ls -1 /dev/hugepages | sort); }
remove_host_leftovers() { host_leftovers | while read -r f; do rm -f "/dev/hugepages/$f"; done; }
# delete quietly; runc's own messages only when the delete fails
delete() { # RUNNER ID
  local out
  out=$("$1" delete --force "$2" 2>&1) || { bad "delete $2 failed:"; printf '%s\n' "$out" | quote; return 1; }
}
eal_error() { grep -E 'EAL: (Cannot|FATAL|Error)|Cannot init|another primary' "$1/out.log" | head -n 2; }

printf '%sdataplane-hook demo%s — real runc, real dpdk-testpmd (DPDK %s), real hugetlbfs\n' "$B" "$N" \
  "$(dpkg-query -W -f='${Version}' dpdk-dev 2>/dev/null | cut -d- -f1 || echo '?')"
say "host: 2Mi pool sized to $POOL_PAGES pages for the demo (was $POOL_BEFORE); /dev/hugepages and /var/run/dpdk are the host's"
say "containers: rootfs with the host's /usr read-only, the host's /dev/hugepages and /var/run/dpdk bind-mounted (a common DPDK deployment)"

##############################################################################################
title "1. The incident: a DPDK primary and two secondaries, one container each"
##############################################################################################
step "Before: plain runc; the containers share the host's /dev/hugepages and /var/run/dpdk, each has its own PID namespace"
make_bundle "$WORK/mp" "" "${MP_PRIMARY[@]}"
# shellcheck disable=SC2046 # word splitting of the command line is wanted
make_bundle "$WORK/ms1" "" $(mp_secondary 1)
# shellcheck disable=SC2046
make_bundle "$WORK/ms2" "" $(mp_secondary 2)
launch plain "$WORK/mp" ctl-primary
wait_forwarding "$WORK/mp" 20 || die "the primary did not start: $(tail -n 5 "$WORK/mp/out.log")"
good "ctl-primary forwards:     $(stats_line "$WORK/mp")"
launch plain "$WORK/ms1" ctl-secondary-1
wait_forwarding "$WORK/ms1" 20 || die "secondary 1 did not attach: $(tail -n 5 "$WORK/ms1/out.log")"
good "ctl-secondary-1 attached: $(stats_line "$WORK/ms1")"
launch plain "$WORK/ms2" ctl-secondary-2
wait_stopped plain ctl-secondary-2 20 || die "ctl-secondary-2 kept running"
wait_forwarding "$WORK/ms2" 0 && die "ctl-secondary-2 attached on plain runc: the incident did not reproduce"
grep -q 'fbarray_memseg.*_1' "$WORK/ms2/out.log" \
  || die "ctl-secondary-2 died, but not on the PID collision: $(tail -n 5 "$WORK/ms2/out.log")"
bad "ctl-secondary-2 died at startup; DPDK says:"
grep -E "couldn't lock|Cannot init" "$WORK/ms2/out.log" | head -n 3 | quote
say "(each secondary is PID 1 in its own PID namespace, so both lock /var/run/dpdk/rte/fbarray_memseg-..._1)"
delete plain ctl-secondary-2; delete plain ctl-secondary-1; delete plain ctl-primary
remove_host_leftovers

GROUP="dataplane-hook.io/dpdk-group=demo $RESERVATION"
step "After: the same three through dataplane-runtime, each annotated dataplane-hook.io/dpdk-group: demo"
make_bundle "$WORK/gp" "$GROUP" "${MP_PRIMARY[@]}"
# shellcheck disable=SC2046
make_bundle "$WORK/gs1" "$GROUP" $(mp_secondary 1)
# shellcheck disable=SC2046
make_bundle "$WORK/gs2" "$GROUP" $(mp_secondary 2)
launch product "$WORK/gp" dp-primary
wait_forwarding "$WORK/gp" 30 || die "the primary did not start: $(tail -n 5 "$WORK/gp/out.log")"
launch product "$WORK/gs1" dp-secondary-1
launch product "$WORK/gs2" dp-secondary-2
for c in gs1 gs2; do
  wait_forwarding "$WORK/$c" 40 || die "a secondary did not attach: $(tail -n 5 "$WORK/$c/out.log")"
done
sleep 1.2
for c in gp:dp-primary gs1:dp-secondary-1 gs2:dp-secondary-2; do
  [[ $(state_of product "${c#*:}") == running ]] || die "${c#*:} is not running"
  good "$(printf '%-15s' "${c#*:}") runs:  $(stats_line "$WORK/${c%%:*}")"
done
say "one group: a runtime dir, a hugetlbfs (one reservation) and a PID namespace of its own, shared by the three:"
"$HOOK" --config "$CONFIG" status | quote
delete product dp-secondary-2; delete product dp-secondary-1; delete product dp-primary
if (($(free_pages) == POOL_PAGES && $(rsvd_pages) == 0)); then
  good "all three deleted, the group is gone, pool back to baseline: $(meminfo)"
else
  bad "all three deleted, pool NOT at baseline: $(meminfo)"; exit 1
fi

##############################################################################################
title "2. Two DPDK apps on one node, both with the default file prefix \"rte\""
##############################################################################################
step "Before: plain runc"
make_bundle "$WORK/a" "" "${TESTPMD[@]}"
make_bundle "$WORK/b" "" "${TESTPMD[@]}"
launch plain "$WORK/a" ctl-a
wait_forwarding "$WORK/a" 20 || die "testpmd in ctl-a did not start: $(tail -n 5 "$WORK/a/out.log")"
good "ctl-a forwards:  $(stats_line "$WORK/a")"
launch plain "$WORK/b" ctl-b
wait_stopped plain ctl-b 20 || die "ctl-b kept running"
if wait_forwarding "$WORK/b" 0; then
  die "ctl-b forwarded on plain runc: the problem did not reproduce"
fi
bad "ctl-b died at startup; DPDK says:"
eal_error "$WORK/b" | quote
say "(both use /var/run/dpdk/rte/config on the host: only one primary per prefix and node)"
delete plain ctl-a; delete plain ctl-b
if [[ -n $(host_leftovers) ]]; then
  say "(deleting ctl-a killed it: it left $(host_leftovers | wc -l) hugepage files in the host's /dev/hugepages -- that is story 3; removed them)"
  remove_host_leftovers
fi

step "After: the same two containers through dataplane-runtime, each asking for $RESERVE of 2Mi hugepages"
make_bundle "$WORK/pa" "$RESERVATION" "${TESTPMD[@]}"
make_bundle "$WORK/pb" "$RESERVATION" "${TESTPMD[@]}"
say "annotation: dataplane-hook.io/hugepages-2Mi: $RESERVE   runtime: $RUNTIME (runc command line)"
launch product "$WORK/pa" dp-a
launch product "$WORK/pb" dp-b
for c in pa pb; do
  wait_forwarding "$WORK/$c" 30 || die "testpmd in dp-${c#p} did not start: $(tail -n 5 "$WORK/$c/out.log")"
done
sleep 1.2   # one more stats period, so both show traffic
good "dp-a forwards:   $(stats_line "$WORK/pa")"
good "dp-b forwards:   $(stats_line "$WORK/pb")"
say "each got a private hugetlbfs (reserved in the kernel) and a private /var/run/dpdk; the host now shows:"
meminfo | quote
step "dataplane-hook status"
"$HOOK" --config "$CONFIG" status | quote
delete product dp-a; delete product dp-b
if (($(free_pages) == POOL_PAGES && $(rsvd_pages) == 0)); then
  good "both deleted, pool back to baseline: $(meminfo)"
else
  bad "both deleted, pool NOT at baseline: $(meminfo)"; exit 1
fi

##############################################################################################
title "3. A DPDK app killed with SIGKILL while holding hugepages"
##############################################################################################
step "Before: plain runc, the host's /dev/hugepages"
make_bundle "$WORK/c" "" "${TESTPMD[@]}"
BASE_FREE=$(free_pages)
say "before start:            $(meminfo)"
launch plain "$WORK/c" ctl-crash
wait_forwarding "$WORK/c" 20 || die "testpmd in ctl-crash did not start: $(tail -n 5 "$WORK/c/out.log")"
say "testpmd running:         $(meminfo)"
plain kill ctl-crash KILL
wait_stopped plain ctl-crash 10 || die "ctl-crash did not stop"
delete plain ctl-crash
say "killed (-9) and deleted: $(meminfo)"
LEAKED=$(host_leftovers | wc -l)
bad "$((BASE_FREE - $(free_pages))) pages still taken, held by $LEAKED files nobody will delete:"
ls -l /dev/hugepages | grep -E 'rtemap_' | head -n 3 | quote
((LEAKED > 3)) && say "    ... and $((LEAKED - 3)) more"
remove_host_leftovers
say "(removed them by hand: $(meminfo))"

step "After: the same container through dataplane-runtime with dataplane-hook.io/hugepages-2Mi: $RESERVE"
make_bundle "$WORK/pc" "$RESERVATION" "${TESTPMD[@]}"
BASE_FREE=$(free_pages); BASE_RSVD=$(rsvd_pages)
say "before start:            $(meminfo)"
launch product "$WORK/pc" dp-crash
wait_forwarding "$WORK/pc" 30 || die "testpmd in dp-crash did not start: $(tail -n 5 "$WORK/pc/out.log")"
say "testpmd running:         $(meminfo)"
say "(the kernel reserved all $((${RESERVE%Mi} / 2)) pages of the container up front: those in use show as taken, the rest as reserved)"
product kill dp-crash KILL
wait_stopped product dp-crash 10 || die "dp-crash did not stop"
delete product dp-crash
say "killed (-9) and deleted: $(meminfo)"
if (($(free_pages) == BASE_FREE && $(rsvd_pages) == BASE_RSVD)); then
  good "pool back to baseline: nothing leaked, nothing to clean by hand"
else
  bad "pool NOT at baseline (free $(free_pages) != $BASE_FREE or reserved $(rsvd_pages) != $BASE_RSVD)"
  exit 1
fi
"$HOOK" --config "$CONFIG" status | quote

title "Done in $((SECONDS - T0))s; the pool goes back to $POOL_BEFORE pages and everything the demo made is removed"
