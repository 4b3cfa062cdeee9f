#!/usr/bin/env bash
# Readiness check for `tableroll run --ready cmd:...` in scripts/third-party-demo.sh.
#
#   ready-check.sh HEALTH_SOCKET WORKERS
#
# Exits 0 once the gunicorn arbiter that `tableroll run` started ($TABLEROLL_CHILD_PID) has
# WORKERS worker processes and one of them answers on HEALTH_SOCKET, a Unix socket only this
# generation listens on (a second --listen of its own `tableroll run`). The shared HTTP
# listener cannot be used for this: until the handoff the previous generation answers there
# too. gunicorn's own READY=1 comes too early to rely on: the arbiter sends it from
# Arbiter.start(), before it forks any worker and (without --preload) before the app is
# imported.
set -euo pipefail
socket=$1
workers=$2
arbiter=${TABLEROLL_CHILD_PID:?TABLEROLL_CHILD_PID is not set}

# The arbiter's children, from /proc (field 4 of /proc/PID/stat is the parent pid; the
# command name in field 2 may contain spaces, so cut after its closing parenthesis).
children=0
for stat in /proc/[0-9]*/stat; do
  read -r line 2>/dev/null <"$stat" || continue
  read -ra fields <<<"${line##*) }"
  [[ ${fields[1]:-} == "$arbiter" ]] && children=$((children + 1))
done
((children >= workers)) || exit 1

curl -fsS --max-time 1 --unix-socket "$socket" -o /dev/null http://localhost/health
