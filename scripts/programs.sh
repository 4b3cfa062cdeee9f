#!/usr/bin/env bash
# Verifies the recipes of docs/programs.md: third-party servers under `tableroll run`, each
# upgraded UPGRADES times under HTTP load. Not part of the test suite; run it by hand:
#
#   scripts/programs.sh                       # every recipe, a new connection per request
#   RECIPES="gunicorn node" MODES="close keepalive" scripts/programs.sh
#
# The command lines are not written here: each recipe is the ```sh block that follows a
# `<!-- recipe: NAME -->` line in docs/programs.md, run as it stands by bash (`eval`) with these
# shell variables set (not exported, so the program does not see them):
#   DIR     the coordination directory (shared by every instance of the recipe)
#   PORT    the HTTP port (0 for the first instance, which binds any free port; then that port)
#   HEALTH  a Unix socket path private to this instance, for a readiness probe
#   VENV    the virtualenv with the Python servers;  APPS  scripts/programs (the tiny apps)
# and `tableroll` a shell function that runs this checkout's binary with `--log-format json`
# added after the subcommand, so that the script can read the log. For each recipe and mode it:
#   1. starts instance 1 and waits for its `"event":"owner"` log line;
#   2. runs wrk (closed loop, CONNECTIONS connections; mode `close` sends `Connection: close`,
#      one new connection per request; `keepalive` reuses connections) and meanwhile performs
#      UPGRADES upgrades, one every INTERVAL seconds: start the next instance with the same
#      command, wait for its owner line, then for the previous instance to exit, recording its
#      exit status;
#   3. stops the last instance with SIGTERM once wrk is done.
# At the end it prints one line per recipe and mode: requests, failures by kind (connect, read,
# write, timeout, non-2xx), upgrades completed, the old instances' exit statuses, and the
# median program-start-to-owner and drain times from the JSON logs. It exits 1 if an upgrade
# did not complete (the new instance never became the owner, or the old one never exited);
# lost requests are reported, not treated as a failure: some recipes show a loss on purpose.
#
# Requirements, installed when missing: wrk, curl, node, gcc and python3 with venv and headers
# from Debian packages (with apt-get, when run as root; otherwise the script prints the
# command and exits 2), and gunicorn, uvicorn and uWSGI (compiled, about a minute) from PyPI
# with pip into a virtualenv under PROGRAMS_CACHE, reused by later runs.
#
# Everything runs on 127.0.0.1 and in a temporary directory (kept with KEEP_TMP=1). Every
# process the script starts is stopped by pid when it exits.
#
# Settings (environment variables):
#   RECIPES=          recipe names to run, in this order (default: every recipe in the page)
#   MODES=close       close | keepalive | "close keepalive"
#   UPGRADES=5        upgrades per recipe and mode;  INTERVAL=2  seconds between upgrades
#   CONNECTIONS=32    wrk connections;  THREADS=2  wrk threads
#   STEP_TIMEOUT=40   seconds one step (becoming the owner, exiting) may take
#   PROGRAMS_CACHE=   where the virtualenv lives (default: ~/.cache/tableroll-programs)
set -euo pipefail

UPGRADES=${UPGRADES:-5}
INTERVAL=${INTERVAL:-2}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
MODES=${MODES:-close}
RECIPES=${RECIPES:-}
STEP_TIMEOUT=${STEP_TIMEOUT:-40}
PROGRAMS_CACHE=${PROGRAMS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/tableroll-programs}
PIP_PACKAGES=(gunicorn==27.0.1 uvicorn==0.54.0 uWSGI==2.0.31)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DOC=$ROOT/docs/programs.md
APPS=$ROOT/scripts/programs
COUNT_LUA=$ROOT/scripts/third-party/count.lua # counts answers by X-Generation, prints WRK_RESULT

say() { printf '[programs %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- requirements ---------------------------------------------------------------------------
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=$(command -v python3 || echo python3)

missing_debian_packages() { # prints the Debian packages to install
  local tool
  for tool in wrk curl gcc; do
    command -v "$tool" >/dev/null || echo "$tool"
  done
  command -v node >/dev/null || echo nodejs
  "$PYTHON" -c 'import ensurepip' 2>/dev/null || echo "python3 python3-venv"
  "$PYTHON" -c 'import os, sysconfig, sys
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
    2>/dev/null || echo python3-dev
}

install_requirements() {
  local missing
  missing=$(missing_debian_packages | tr '\n' ' ')
  if [[ -n ${missing// /} ]]; then
    if [[ $(id -u) != 0 ]]; then
      say "missing Debian packages: $missing"
      say "install them with: apt-get update && apt-get install -y $missing (or run this as root)"
      exit 2
    fi
    say "installing $missing with apt-get"
    apt-get update -qq >&2
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >&2
    PYTHON=/usr/bin/python3
  fi
  # The virtualenv is named after the packages and the interpreter, so a change makes a new one.
  local key
  key=$( { echo "${PIP_PACKAGES[*]}"; "$PYTHON" --version; } | sha256sum | cut -c1-12)
  VENV=$PROGRAMS_CACHE/venv-$key
  if [[ ! -e $VENV/.complete ]]; then
    say "installing ${PIP_PACKAGES[*]} with pip into $VENV (uWSGI compiles: about a minute)"
    rm -rf "$VENV"
    mkdir -p "$PROGRAMS_CACHE"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "${PIP_PACKAGES[@]}" >&2
    touch "$VENV/.complete"
  fi
}

install_requirements
say "building tableroll (cargo build --release -p tableroll-cli)"
(cd "$ROOT" && cargo build --release -p tableroll-cli) >&2
TABLEROLL=${CARGO_TARGET_DIR:-$ROOT/target}/release/tableroll
[[ -x $TABLEROLL ]] || die "no binary at $TABLEROLL"

# --- processes and cleanup ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tableroll-programs.XXXXXX")
STARTED=() # every pid this script started, stopped at exit if still running
WRK_PID=

alive() { # pid: running and not yet a zombie
  local state
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ $state != Z ]]
}

cleanup() {
  local pid deadline
  for pid in "${STARTED[@]}"; do
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  # `tableroll run` passes SIGTERM on and waits for its program; give them a few seconds.
  deadline=$(($(now_ms) + 10000))
  for pid in "${STARTED[@]}"; do
    while alive "$pid" && (($(now_ms) < deadline)); do sleep 0.05; done
    alive "$pid" && kill -KILL "$pid" 2>/dev/null
  done
  wait 2>/dev/null
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    say "kept $TMP"
  else
    rm -rf "$TMP"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- the recipes, from docs/programs.md -----------------------------------------------------
# Writes $TMP/recipes/NAME for each marked block and prints the names in the page's order.
extract_recipes() {
  mkdir -p "$TMP/recipes"
  awk -v out="$TMP/recipes" '
    /^<!-- recipe: [a-z0-9-]+ -->$/ { name = $3; state = 1; next }
    state == 1 && $0 == "```sh" { file = out "/" name; printf "" >file; state = 2; next }
    state == 1 { print "recipe " name ": no ```sh block right after its marker" >"/dev/stderr"; exit 1 }
    state == 2 && $0 == "```" { close(file); print name; state = 0; next }
    state == 2 { print >>file }
    END { if (state) { print "recipe " name ": unterminated" >"/dev/stderr"; exit 1 } }
  ' "$DOC"
}

all_recipes=$(extract_recipes) || die "could not read the recipes in $DOC"
[[ -n $all_recipes ]] || die "no recipe in $DOC"
for name in $all_recipes; do
  grep -q '^tableroll run ' "$TMP/recipes/$name" || die "recipe $name does not start with 'tableroll run'"
done
RECIPES=${RECIPES:-$all_recipes}
for name in $RECIPES; do
  [[ -f $TMP/recipes/$name ]] || die "no recipe $name in $DOC (there are: ${all_recipes//$'\n'/ })"
done
for mode in $MODES; do
  case $mode in close | keepalive) ;; *) die "MODES: close or keepalive, not $mode" ;; esac
done

# --- one recipe -----------------------------------------------------------------------------
declare -a PID=() # instance number -> pid of its `tableroll run`

start_instance() { # run_dir recipe n port: starts instance n of the recipe in the background
  local run=$1 recipe=$2 n=$3 port=$4
  : >"$run/i$n.err"
  # The inner bash closes the probe's connection (IDLE_FD) first: it is the script's, not theirs.
  # shellcheck disable=SC2016 # expanded by the inner bash, which runs the recipe
  bash -c '
    [[ -z $8 ]] || eval "exec $8>&-"
    DIR=$1 PORT=$2 HEALTH=$3 VENV=$4 APPS=$5 TABLEROLL_BIN=$6
    tableroll() { exec "$TABLEROLL_BIN" "$1" --log-format json "${@:2}"; }
    eval "$7"' recipe "$run/group" "$port" "$run/health-$n.sock" "$VENV" "$APPS" "$TABLEROLL" \
    "$(cat "$TMP/recipes/$recipe")" "${IDLE_FD:-}" >"$run/i$n.out" 2>"$run/i$n.err" &
  PID[n]=$!
  STARTED+=("$!")
}

# The idle-connection probe: a connection opened to the old program just before an upgrade
# that sends its request only after the old program was told to stop. It shows what the
# program does with connections it accepted but has not read from yet when it stops: under
# load those are clients whose request is on its way.
IDLE_FD=
open_idle() { # port
  exec {IDLE_FD}<>"/dev/tcp/127.0.0.1/$1"
}
use_idle() { # sets IDLE_ANSWER: the answer's body without the pid (gen=N), "closed" (no
  # answer before the connection ended) or "no answer" (none in 5 s); closes the connection
  local line status=0
  IDLE_ANSWER=closed
  # In a subshell that ignores SIGPIPE: a write to a connection the server reset must not kill
  # the script.
  if (trap '' PIPE; printf 'GET / HTTP/1.1\r\nHost: probe\r\nConnection: close\r\n\r\n' >&"$IDLE_FD") 2>/dev/null; then
    while :; do
      { IFS= read -r -t 5 line <&"$IDLE_FD"; } 2>/dev/null || { status=$?; break; }
      [[ $line != gen=* ]] || IDLE_ANSWER=${line%% pid=*}
    done
    ((status <= 128)) || [[ $IDLE_ANSWER != closed ]] || IDLE_ANSWER="no answer"
  fi
  exec {IDLE_FD}>&-
  IDLE_FD=
}

wait_owner() { # run n: until instance n logs that it owns the sockets; 1 if it exits or times out
  local run=$1 n=$2 deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
  until grep -q '"event":"owner"' "$run/i$n.err"; do
    alive "${PID[n]}" || return 1
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
}

wait_exit() { # pid: sets EXIT_STATUS to its exit status, or "timeout" (runs in this shell,
  # the only one that can reap it)
  local pid=$1 deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
  EXIT_STATUS=0
  while alive "$pid"; do
    (($(now_ms) < deadline)) || { EXIT_STATUS=timeout; return; }
    sleep 0.02
  done
  wait "$pid" || EXIT_STATUS=$?
}

json_field() { # file event field: the field's value in each line of that event
  grep "\"event\":\"$2\"" "$1" | sed -n "s/.*\"$3\":\"\\{0,1\\}\\([^,}\"]*\\).*/\\1/p"
}

median() { # numbers on stdin: their median, or "-"
  sort -n | awk '{ v[NR] = $1 } END { if (NR) printf "%.0f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; else printf "-" }'
}

run_recipe() { # recipe mode: appends one line to $TMP/results
  local recipe=$1 mode=$2 run port n old status duration wrk_status=0 completed=0 statuses=()
  local idle=-
  run=$TMP/$recipe-$mode
  mkdir -p "$run/group"
  PID=()
  say "== $recipe ($mode): $(tr -s ' \\\n' ' ' <"$TMP/recipes/$recipe")"
  start_instance "$run" "$recipe" 1 0
  if ! wait_owner "$run" 1; then
    cat "$run/i1.err" >&2
    die "$recipe: instance 1 did not become the owner"
  fi
  port=$(json_field "$run/i1.err" listener address | sed -n 's/^127\.0\.0\.1:\([0-9]*\)$/\1/p' | head -n1)
  [[ -n $port ]] || die "$recipe: no HTTP port in instance 1's log"
  say "$recipe: instance 1 serves on 127.0.0.1:$port: $(curl -s --max-time 2 "http://127.0.0.1:$port/")"

  # The upgrades start INTERVAL apart, one second after wrk; all must end while wrk runs.
  duration=$((1 + UPGRADES * (INTERVAL + 1) + 3))
  local wrk_args=(-t "$THREADS" -c "$CONNECTIONS" -d "${duration}s" --timeout 5s -s "$COUNT_LUA")
  [[ $mode == keepalive ]] || wrk_args+=(-H 'Connection: close')
  wrk "${wrk_args[@]}" "http://127.0.0.1:$port/" >"$run/wrk.txt" 2>&1 &
  WRK_PID=$!
  STARTED+=("$WRK_PID")
  sleep 1

  local next_at=$(($(now_ms) + INTERVAL * 1000)) wait_ms last=1
  for ((n = 2; n <= UPGRADES + 1; n++)); do
    wait_ms=$((next_at - $(now_ms)))
    ((wait_ms <= 0)) || sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))"
    next_at=$(($(now_ms) + INTERVAL * 1000))
    old=$((n - 1))
    if ! alive "$WRK_PID"; then
      say "$recipe: wrk ended before upgrade $old -> $n"
      UNLOADED+=("$recipe ($mode): upgrade $old -> $n")
    fi
    if ((n == 2)); then
      open_idle "$port"
      sleep 0.2 # for the old program to accept it
    fi
    start_instance "$run" "$recipe" "$n" "$port"
    if ! wait_owner "$run" "$n"; then
      say "$recipe: instance $n did not become the owner; its log:"
      cat "$run/i$n.err" >&2
      wait_exit "${PID[n]}"
      statuses+=("new:$EXIT_STATUS")
      if [[ -n $IDLE_FD ]]; then
        exec {IDLE_FD}>&-
        IDLE_FD=
      fi
      break
    fi
    last=$n
    if ((n == 2)); then
      sleep 0.2 # the old program got its stop signal with the owner line
      use_idle
      idle=$IDLE_ANSWER
      say "$recipe: the idle connection opened before upgrade 1 -> 2 got: $idle"
    fi
    wait_exit "${PID[old]}"
    status=$EXIT_STATUS
    statuses+=("$status")
    say "$recipe: upgrade $old -> $n: instance $old exited with $status"
    [[ $status == timeout ]] || completed=$((completed + 1))
  done

  wait "$WRK_PID" || wrk_status=$?
  WRK_PID=
  kill -TERM "${PID[last]}"
  wait_exit "${PID[last]}"
  say "$recipe: wrk exited with $wrk_status; the last instance ($last) exited with $EXIT_STATUS after SIGTERM"

  local result owner_ms drain_ms i
  result=$(sed -n 's/^WRK_RESULT //p' "$run/wrk.txt")
  [[ -n $result ]] || { cat "$run/wrk.txt" >&2; die "$recipe: wrk printed no result"; }
  owner_ms=$(for ((i = 2; i <= last; i++)); do json_field "$run/i$i.err" owner child_started_to_owner_ms; done | median)
  drain_ms=$(for ((i = 1; i < last; i++)); do json_field "$run/i$i.err" drained drain_ms; done | median)
  local IFS=,
  echo "$recipe $mode $completed/$UPGRADES ${statuses[*]:--} $owner_ms $drain_ms ${idle// /-} $result" >>"$TMP/results"
}

# --- all of them ----------------------------------------------------------------------------
: >"$TMP/results"
UNLOADED=() # upgrades that started after wrk had finished
say "temporary directory: $TMP"
for recipe in $RECIPES; do
  for mode in $MODES; do
    run_recipe "$recipe" "$mode"
  done
done

printf '\n%s; %s; wrk -t%s -c%s, %s upgrades %ss apart; %s\n' "$(date -u +%F)" \
  "$(nproc) cores" "$THREADS" "$CONNECTIONS" "$UPGRADES" "$INTERVAL" \
  "$(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2), node $(node --version), ${PIP_PACKAGES[*]}"
columns='%-18s %-9s %9s %7s %5s %5s %7s %7s %8s %-10s %8s %8s %s\n'
# shellcheck disable=SC2059 # the format is the variable
printf "$columns" recipe mode requests connect read write timeout non-2xx upgrades "old exits" \
  owner_ms drain_ms "idle conn"
failed=0
while read -r recipe mode upgrades statuses owner_ms drain_ms idle fields; do
  declare -A w=()
  for kv in $fields; do w[${kv%%=*}]=${kv#*=}; done
  # shellcheck disable=SC2059
  printf "$columns" "$recipe" "$mode" "${w[requests]}" "${w[connect]}" "${w[read]}" \
    "${w[write]}" "${w[timeout]}" "${w[status]}" "$upgrades" "$statuses" "$owner_ms" "$drain_ms" "$idle"
  [[ ${upgrades%/*} == "$UPGRADES" ]] || failed=1
  unset w
done <"$TMP/results"
echo "owner_ms: median program start -> new instance owns the sockets; drain_ms: median stop"
echo "signal -> old program exited (both from the JSON logs); old exits: each old instance's status;"
echo "idle conn: the answer on a connection accepted by instance 1 but written to only after"
echo "its program was told to stop (gen=N: answered by generation N; closed: lost)"
for upgrade in "${UNLOADED[@]}"; do
  echo "warning: $upgrade started after the load had ended (upgrades took longer than INTERVAL)"
done
if ((failed)); then
  echo "RESULT: FAILED: an upgrade did not complete"
  exit 1
fi
echo "RESULT: OK: every upgrade completed"
