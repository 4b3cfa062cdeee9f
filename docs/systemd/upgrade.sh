#!/bin/sh
# Upgrades a tableroll template service (app@.service, app-run@.service) with no downtime:
# starts whichever of instances 1 and 2 is not running, and tells how the upgrade ended, as
# `tableroll wait` judges it from the group's journal: the new instance took over (and passed
# the old one's probation, if it has one), or why it did not. Install the new binary first.
# See docs/deploying.md.
#
#   upgrade.sh [UNIT] [DIR] [TIMEOUT]
#
# UNIT defaults to app, DIR (the coordination directory) to /run/UNIT, TIMEOUT (how long to
# wait for the verdict) to 5m: make it longer than TimeoutStartSec= plus any --probation.
#
# Exit status, as `tableroll wait`'s: 0 once the new instance took over; 1 if nothing was
# started (an earlier upgrade is still draining) or the new instance failed (the old one keeps
# serving; the reason is printed); 2 if there was no verdict within TIMEOUT; 3 if DIR cannot be
# watched, or was removed during the wait.
set -eu

unit="${1:-app}"
dir="${2:-/run/$unit}"
timeout="${3:-5m}"

if ! command -v tableroll >/dev/null 2>&1; then
    echo "tableroll is not installed" \
        "(cargo install --locked --path tableroll-cli --bin tableroll --root /usr/local)" >&2
    exit 1
fi

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

# `tableroll wait` counts only what happens after it watches the group, and says so in one
# line on stdout: read through a FIFO before anything is started.
fifo_dir="$(mktemp -d)"
waiter=''
trap 'if [ -n "$waiter" ]; then kill "$waiter" 2>/dev/null || true; fi; rm -rf "$fifo_dir"' EXIT
mkfifo "$fifo_dir/wait"
tableroll wait --dir "$dir" --timeout "$timeout" >"$fifo_dir/wait" &
waiter=$!
exec 3<"$fifo_dir/wait"
if ! read -r watching <&3; then
    # It ended before it watched (DIR is missing, say): its message and status stand.
    status=0
    wait "$waiter" || status=$?
    waiter=''
    exit "$status"
fi
echo "$watching"

if [ -n "$old" ]; then
    echo "starting $unit@$new to take over from $unit@$old"
else
    echo "no instance is running: starting $unit@$new"
fi
started=yes
if ! systemctl start "$unit@$new.service"; then
    # systemd saw the new instance fail, and it is gone: one last look, then the verdict.
    started=no
    kill -TERM "$waiter" 2>/dev/null || true
fi
status=0
wait "$waiter" || status=$?
waiter=''
cat <&3
if [ "$started" = no ] && [ "$status" -ne 0 ]; then
    echo "$unit@$new did not become ready${old:+; $unit@$old keeps serving}" >&2
    systemctl --no-pager --lines=20 status "$unit@$new.service" >&2 || true
fi
exit "$status"
