#!/usr/bin/env bash
# The Debian package in CI (`make test-deb`, part of `make test`): installs the .deb with
# `dpkg -i`, runs the end-to-end suites against the installed binaries (DPH_BIN_DIR=/usr/bin:
# real runc and DPDK containers through /usr/bin/dataplane-runtime, which injects
# /usr/bin/dataplane-hook), then purges the package — also when a suite failed or the run was
# interrupted — and checks that nothing of it is left: files, units and their enablement,
# tmpfiles entry, state dir, dpkg's records; and that no runtime's config changed.
# (tests/packaging.rs covers the rest: the package's contents, the installed config, the
# refused removal while containers run.)
#
# Usage: packaging/test-deb.sh <package.deb> [cargo test args...]   (as root)
set -uo pipefail

deb=${1:?usage: test-deb.sh <package.deb> [cargo test args...]}
shift
pkg=dataplane-hook
say() { echo "test-deb: $*" >&2; }

[ "$(id -u)" -eq 0 ] || { say "must run as root"; exit 2; }
[ -f "$deb" ] || { say "no package at $deb (make deb)"; exit 2; }

# One package install at a time on this machine (tests/packaging.rs takes the same lock).
exec 9>/run/lock/dataplane-tests.deb
flock 9

installed() {
    local s
    s=$(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg" 2>/dev/null) || return 1
    case "$s" in un* | pn* | "") return 1 ;; *) return 0 ;; esac
}
if installed; then
    say "$pkg is already installed here: refusing to touch it"
    exit 2
fi
if [ -e /usr/bin/dataplane-hook ] || [ -e /usr/bin/dataplane-runtime ]; then
    say "/usr/bin/dataplane-hook or dataplane-runtime exists and is not the package's: refusing"
    exit 2
fi

# What of the package's kind exists on the node (names with dataplane-hook/-runtime in them).
traces() {
    {
        find /etc -maxdepth 4 -name '*dataplane[-_]hook*'
        find /usr/bin /usr/sbin /usr/lib/tmpfiles.d /etc/tmpfiles.d /var/lib/dpkg/info /var/log -maxdepth 1 \( -name '*dataplane[-_]hook*' -o -name '*dataplane-runtime*' \)
        find /usr/share /usr/lib/systemd /lib/systemd /etc/systemd /var/lib/systemd -maxdepth 3 -name '*dataplane[-_]hook*'
        find /var/lib/prometheus /var/lib/node_exporter -maxdepth 2 -name '*dataplane[-_]hook*'
        [ -e /run/dataplane-hook ] && echo /run/dataplane-hook
        if [ -d /run/systemd/system ]; then
            systemctl list-units --all --no-legend --plain 'dataplane-hook*' | sed 's/^/unit: /'
            systemctl list-unit-files --no-legend --plain 'dataplane-hook*' | sed 's/^/unit file: /'
        fi
    } 2>/dev/null | sort -u
}
# Every file under the runtimes' config dirs, with its content hash: installing, testing and
# purging must not change one.
runtime_configs() {
    find /etc/containerd /etc/crio /etc/containers /usr/share/containers/oci/hooks.d -type f -print0 2>/dev/null | sort -z | xargs -0r sha256sum
}

work=$(mktemp -d /tmp/dph-test-deb.XXXXXX)
traces >"$work/traces.before"
runtime_configs >"$work/configs.before"

status=0
purged=0
clean=1
purge_and_check() {
    [ "$purged" = 1 ] && return
    purged=1
    if installed; then
        if ! dpkg --purge "$pkg" >"$work/purge.log" 2>&1; then
            cat "$work/purge.log" >&2
            say "FAIL: dpkg --purge failed; forcing removal"
            DATAPLANE_HOOK_FORCE_REMOVE=1 dpkg --purge "$pkg" >&2 || true
            clean=0
        fi
    fi
    if installed; then
        say "FAIL: $pkg is still installed after purge: $(dpkg-query -W -f='${db:Status-Abbrev}' "$pkg")"
        clean=0
    fi
    traces >"$work/traces.after"
    local left
    left=$(comm -13 "$work/traces.before" "$work/traces.after")
    if [ -n "$left" ]; then
        say "FAIL: purge left these behind:"
        echo "$left" | sed 's/^/  /' >&2
        clean=0
    fi
    runtime_configs >"$work/configs.after"
    if ! diff -u "$work/configs.before" "$work/configs.after" >&2; then
        say "FAIL: a runtime's configuration changed"
        clean=0
    fi
    if [ "$clean" = 1 ]; then
        say "purged; nothing left behind, no runtime config changed"
    elif [ "$status" = 0 ]; then
        status=1
    fi
    rm -rf "$work"
}
on_exit() {
    purge_and_check
    exit "$status"
}
trap on_exit EXIT
child=
on_signal() {
    say "interrupted: stopping the suites, then purging"
    # The whole process group: cargo and the test executables it runs.
    [ -n "$child" ] && kill -TERM -- "-$child" 2>/dev/null && wait "$child" 2>/dev/null
    status=130
    exit
}
trap on_signal INT TERM HUP

say "dpkg -i $deb"
if ! dpkg -i "$deb" >&2; then
    say "FAIL: dpkg -i"
    status=1
    exit
fi
for f in /usr/bin/dataplane-hook /usr/bin/dataplane-runtime /etc/dataplane-hook/config.toml; do
    [ -e "$f" ] || { say "FAIL: $f not installed"; status=1; exit; }
done

start=$(date +%s)
say "running: DPH_BIN_DIR=/usr/bin cargo test --release -p dataplane-tests $*"
# In the background and its own process group, so that a signal to this script is handled at
# once and stops cargo and the tests with it (on_signal).
DPH_BIN_DIR=/usr/bin setsid "${CARGO:-cargo}" test --release -p dataplane-tests "$@" 9>&- &
child=$!
wait "$child" || status=$?
child=
say "suites took $(( $(date +%s) - start )) s (exit $status)"
exit
