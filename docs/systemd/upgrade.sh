#!/bin/sh
# Upgrades a tableroll template service (app@.service, app-run@.service) with no downtime:
# starts whichever of instances 1 and 2 is not running. `systemctl start` returns once the new
# instance owns the sockets and is ready (Type=notify); the old one drains and exits by itself.
# Install the new binary first. See docs/deploying.md.
#
#   upgrade.sh [UNIT] [DIR]      UNIT defaults to app, DIR (the coordination directory) to /run/UNIT
#
# Exits 0 once the new instance is the owner; non-zero if nothing was started (an earlier
# upgrade is still draining) or the new instance failed (the old one then keeps serving).
set -eu

unit="${1:-app}"
dir="${2:-/run/$unit}"

state() {
    systemctl show --property=ActiveState --value "$unit@$1.service"
}

idle() {
    case "$1" in inactive | failed) return 0 ;; *) return 1 ;; esac
}

s1="$(state 1)"
s2="$(state 2)"
if [ "$s1" = active ] && idle "$s2"; then
    old=1 new=2
elif [ "$s2" = active ] && idle "$s1"; then
    old=2 new=1
elif idle "$s1" && idle "$s2"; then
    old='' new=1
else
    echo "$unit@1 is $s1 and $unit@2 is $s2: wait until one of them is inactive (still draining?)" >&2
    exit 1
fi

if [ "$(state "$new")" = failed ]; then
    systemctl reset-failed "$unit@$new.service"
fi
if [ -n "$old" ]; then
    echo "starting $unit@$new to take over from $unit@$old"
else
    echo "no instance is running: starting $unit@$new"
fi
if ! systemctl start "$unit@$new.service"; then
    echo "$unit@$new did not become ready${old:+; $unit@$old keeps serving}" >&2
    systemctl --no-pager --lines=20 status "$unit@$new.service" >&2 || true
    exit 1
fi

# Exit status 0: a live owner holds the group (1: none, 2: could not tell). Without the
# `tableroll` command, systemd's word (the start above succeeded: READY=1) is all there is.
if command -v tableroll >/dev/null 2>&1; then
    tableroll status --dir "$dir"
else
    echo "$unit@$new is ready; tableroll is not installed, so the group was not checked" \
        "(cargo install --locked --path tableroll-cli --bin tableroll --root /usr/local)" >&2
fi
