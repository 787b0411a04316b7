#!/bin/sh
# dataplane-hook node installer: the entrypoint of the installer image (packaging/kubernetes/).
#
#   install.sh run        install, then run `dataplane-hook watch` in the foreground (the
#                         DaemonSet's main process; the default)
#   install.sh install    copy the binaries onto the host, write the config if there is none,
#                         run `dataplane-hook configure --runtime <the node's runtime>` and
#                         restart that runtime when something changed; then exit
#   install.sh uninstall  undo exactly what install did
#   install.sh prestop    uninstall unless DPH_UNINSTALL_ON_STOP=false (the DaemonSet's preStop)
#
# The container runs with the host's PID namespace and the host's / mounted at $DPH_HOST_ROOT;
# commands that must see the host as it is (configure, the runtime restart, watch) run in the
# host's mount namespace through $DPH_HOST_EXEC. Every change is recorded under $DPH_STATE on
# the host before it is made, so uninstall can undo it after any number of pod restarts:
# files configure created are removed, files it edited get their original content back —
# each only if it still holds what configure wrote (an admin's later edit is never undone, it
# is reported). The binaries stay while containers set up by the hook still run (their
# poststop hook and their shim need them); uninstall says so and a later uninstall or a node
# reboot finishes the job.
#
# Settings (environment):
#   DPH_HOST_ROOT     where the host's / is mounted in this container      [/host]
#   DPH_HOST_PID      a host process whose mount and cgroup namespaces are the host's   [1]
#   DPH_HOST_EXEC     prefix that runs a command in those namespaces
#                                                         [/usr/bin/nsenter -t $DPH_HOST_PID -m -C --]
#   DPH_INSTALL_DIR   host dir for dataplane-hook and dataplane-runtime     [/opt/dataplane-hook/bin]
#   DPH_CONFIG        host path of the config (written when missing)        [/etc/dataplane-hook/config.toml]
#   DPH_STATE         host dir of the installer's record                   [/var/lib/dataplane-hook-installer]
#   DPH_RUNTIME       containerd | crio | podman | auto (the running one)   [auto]
#   DPH_CONFIGURE_ARGS extra arguments for `dataplane-hook configure`       []
#   DPH_RELOAD        auto (systemctl restart on systemd hosts) | none | a command run on the host [auto]
#   DPH_WATCH         true | false: run mode runs the watchdog              [true]
#   DPH_UNINSTALL_ON_STOP true | false: prestop uninstalls                   [true]
set -eu

HOST=${DPH_HOST_ROOT-/host}
HOST_PID=${DPH_HOST_PID:-1}
# An absolute path: busybox sh prefers its own applets, and busybox nsenter has no -C.
HOST_EXEC=${DPH_HOST_EXEC-/usr/bin/nsenter -t $HOST_PID -m -C --}
DEST=${DPH_INSTALL_DIR:-/opt/dataplane-hook/bin}
CONFIG=${DPH_CONFIG:-/etc/dataplane-hook/config.toml}
STATE=${DPH_STATE:-/var/lib/dataplane-hook-installer}
RUNTIME=${DPH_RUNTIME:-auto}
RELOAD=${DPH_RELOAD:-auto}
SRC=${DPH_IMAGE_DIR:-/usr/bin}
DEFAULT_CONFIG=${DPH_DEFAULT_CONFIG:-/etc/dataplane-hook/config.toml}

say() { echo "dataplane-hook-installer: $*"; }
die() { echo "dataplane-hook-installer: $*" >&2; exit 1; }
# A command in the host's mount namespace (word splitting of HOST_EXEC is intended).
on_host() { $HOST_EXEC "$@"; }
# Host path -> path visible here; host path -> one file name for the record.
here() { echo "$HOST$1"; }
key() { echo "$1" | sed 's,/,%,g'; }

REC=$(here "$STATE")
LIST="$REC/files"

hook() { on_host "$DEST/dataplane-hook" --config "$CONFIG" "$@"; }

detect_runtime() {
    [ "$RUNTIME" != auto ] && { echo "$RUNTIME"; return; }
    found=
    for p in /proc/[0-9]*; do
        c=$(cat "$p/comm" 2>/dev/null) || continue
        case "$c" in
            crio) echo crio; return ;;
            containerd) found=containerd ;;
        esac
    done
    if [ -n "$found" ]; then echo "$found"; return; fi
    for d in /usr/bin /usr/local/bin; do
        [ -x "$(here $d/podman)" ] && { echo podman; return; }
    done
    die "cannot tell the node's container runtime: no crio or containerd process, no podman binary (set DPH_RUNTIME=containerd|crio|podman)"
}

# Copies a binary onto the host without ever writing into a file a process may be executing:
# a new file beside it, then a rename.
put_binary() {
    src=$1 dst=$(here "$DEST/$(basename "$1")")
    if [ -f "$dst" ] && cmp -s "$src" "$dst"; then return 0; fi
    cp "$src" "$dst.new"
    chmod 0755 "$dst.new"
    mv -f "$dst.new" "$dst"
    say "installed $DEST/$(basename "$1")"
}

record() { # record <created|updated|backup> <host path>: first record of a path wins
    grep -q " $2\$" "$LIST" 2>/dev/null && return 0
    if [ "$1" = updated ]; then cp -p "$(here "$2")" "$REC/orig/$(key "$2")"; fi
    echo "$1 $2" >> "$LIST"
}

reload_runtime() {
    rt=$1
    [ "$rt" = podman ] && return 0   # podman reads hooks.d at every run
    case "$RELOAD" in
        none) say "DPH_RELOAD=none: restart $rt yourself to load the runtime handler"; return 0 ;;
        auto)
            unit=$rt
            if [ -d "$(here /run/systemd/system)" ]; then
                # containerd does not reload its CRI config on SIGHUP, CRI-O not its runtime
                # handlers: restart. Running containers keep running (their shims and conmon
                # are separate processes); the CRI API is away for a moment, kubelet retries.
                say "restarting $unit"
                on_host systemctl restart "$unit" || die "cannot restart $unit (systemctl restart $unit failed)"
            else
                say "warning: the host does not run systemd: restart $rt yourself to load the runtime handler"
            fi ;;
        *) say "reloading $rt: $RELOAD"; on_host sh -c "$RELOAD" || die "the reload command failed: $RELOAD" ;;
    esac
}

do_install() {
    [ -d "$HOST/" ] || die "the host's / is not mounted at $HOST"
    mkdir -p "$REC/orig" "$REC/new" "$(here "$DEST")"
    [ -f "$REC/install-dir" ] || { [ -n "$(ls -A "$(here "$DEST")")" ] && echo kept > "$REC/install-dir" || echo created > "$REC/install-dir"; }
    put_binary "$SRC/dataplane-hook"
    put_binary "$SRC/dataplane-runtime"
    if [ ! -f "$(here "$CONFIG")" ]; then
        mkdir -p "$(dirname "$(here "$CONFIG")")"
        cp "$DEFAULT_CONFIG" "$(here "$CONFIG")"
        chmod 0644 "$(here "$CONFIG")"
        cp "$DEFAULT_CONFIG" "$REC/config"
        say "wrote $CONFIG"
    fi
    rt=$(detect_runtime)
    echo "$rt" > "$REC/runtime"
    say "configuring $rt"
    # What configure would touch, recorded (with the originals) before it touches anything.
    # shellcheck disable=SC2086
    plan=$(hook configure --runtime "$rt" --dry-run $DPH_CONFIGURE_ARGS_EXPANDED) || die "configure --dry-run failed: $plan"
    echo "$plan" | sed -nE 's/^would (create|update) ([^ ]+) \(.*/\1 \2/p' | while read -r verb path; do
        [ "$verb" = create ] && record created "$path" || record updated "$path"
    done
    # shellcheck disable=SC2086
    out=$(hook configure --runtime "$rt" $DPH_CONFIGURE_ARGS_EXPANDED) || die "configure failed: $out"
    echo "$out" | sed 's/^/  /'
    echo "$out" | sed -nE 's/^(created|updated) ([^ ]+) .*, backup ([^ ]+)$/\3/p' | while read -r b; do record backup "$b"; done
    # What configure wrote, to recognise an admin's later edit at uninstall.
    while read -r verb path; do
        [ "$verb" = backup ] && continue
        [ -f "$(here "$path")" ] && cp "$(here "$path")" "$REC/new/$(key "$path")"
    done < "$LIST"
    if echo "$out" | grep -q '^nothing to change'; then
        say "$rt was already configured: no restart"
    else
        reload_runtime "$rt"
    fi
    say "installed: $rt runs $DEST/dataplane-runtime for RuntimeClass dataplane"
}

# True when containers set up by (or running through) this install still run.
in_use() {
    live=$(hook gc 2>/dev/null | sed -n 's/^live //p' | tr '\n' ' ')
    shims=$(grep -ls "$DEST/dataplane-" "$HOST"/run/containerd/io.containerd.runtime.v2.task/*/*/options.json \
        "$HOST"/run/containerd/io.containerd.runtime.v2.task/*/*/config.json 2>/dev/null | wc -l)
    [ -n "$live" ] || [ "$shims" -gt 0 ]
}

do_uninstall() {
    [ -f "$LIST" ] || [ -f "$REC/install-dir" ] || { say "nothing recorded under $STATE: nothing to undo"; return 0; }
    rt=$(cat "$REC/runtime" 2>/dev/null || echo "")
    changed=
    if [ -f "$LIST" ]; then
        while read -r verb path; do
            f=$(here "$path") k=$(key "$path")
            case "$verb" in
                backup) rm -f "$f" ;;
                created|updated)
                    if [ ! -f "$f" ]; then
                        [ "$verb" = updated ] && say "warning: $path is gone; its original is kept in $STATE/orig/$k"
                        continue
                    fi
                    if [ -f "$REC/new/$k" ] && ! cmp -s "$f" "$REC/new/$k"; then
                        say "warning: $path was changed after configure wrote it: left as it is"
                        [ "$verb" = updated ] && echo "$path" >> "$REC/kept"
                        continue
                    fi
                    if [ "$verb" = created ]; then rm -f "$f"; say "removed $path"
                    else cp "$REC/orig/$k" "$f.dph-restore" && mv -f "$f.dph-restore" "$f"; say "restored $path"; fi
                    changed=1 ;;
            esac
        done < "$LIST"
    fi
    [ -n "$changed" ] && [ -n "$rt" ] && reload_runtime "$rt"
    if in_use; then
        say "warning: containers set up by dataplane-hook still run; $DEST stays until they are gone (run uninstall again, or it goes at the next install/uninstall)"
        rm -f "$LIST"
        return 0
    fi
    if [ -f "$REC/config" ] && cmp -s "$REC/config" "$(here "$CONFIG")"; then
        rm -f "$(here "$CONFIG")"
        rmdir "$(dirname "$(here "$CONFIG")")" 2>/dev/null || true
        say "removed $CONFIG"
    elif [ -f "$REC/config" ] && [ -f "$(here "$CONFIG")" ]; then
        say "left $CONFIG: changed since the installer wrote it"
    fi
    rm -f "$(here "$DEST/dataplane-hook")" "$(here "$DEST/dataplane-runtime")"
    if [ "$(cat "$REC/install-dir" 2>/dev/null)" = created ]; then
        rmdir "$(here "$DEST")" 2>/dev/null || true
        rmdir "$(dirname "$(here "$DEST")")" 2>/dev/null || true
    fi
    if [ -f "$REC/kept" ]; then
        # The originals of files an admin edited since stay, for restoring by hand.
        find "$REC" -mindepth 1 -maxdepth 1 ! -name orig ! -name kept -exec rm -rf {} +
        say "uninstalled; the originals of the files left as they are stay in $STATE/orig"
    else
        rm -rf "$REC"
        say "uninstalled"
    fi
}

DPH_CONFIGURE_ARGS_EXPANDED=${DPH_CONFIGURE_ARGS:-}

case "${1:-run}" in
    install) do_install ;;
    uninstall) do_uninstall ;;
    prestop)
        if [ "${DPH_UNINSTALL_ON_STOP:-true}" = false ]; then
            say "DPH_UNINSTALL_ON_STOP=false: the node stays configured"
        else
            do_uninstall
        fi ;;
    run)
        do_install
        if [ "${DPH_WATCH:-true}" = true ]; then
            say "running dataplane-hook watch"
            # shellcheck disable=SC2086
            exec $HOST_EXEC "$DEST/dataplane-hook" --config "$CONFIG" watch
        fi
        say "DPH_WATCH=false: idle"
        trap 'exit 0' TERM INT
        while :; do sleep 3600 & wait $! || true; done ;;
    *) die "usage: install.sh [run|install|uninstall]" ;;
esac
