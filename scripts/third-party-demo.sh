#!/usr/bin/env bash
# Zero-downtime upgrades of an unmodified third-party program under `tableroll run`, under
# load, with figures.
#
# The program is Debian's gunicorn (it implements systemd socket activation: it takes its
# listeners from LISTEN_FDS/LISTEN_PID), serving the tiny WSGI app in scripts/third-party/app.py,
# which answers `gen=N pid=P` (N is the generation of the deployment, from APP_GENERATION).
# The script:
#   1. builds `tableroll` (cargo build --release -p tableroll-cli);
#   2. starts generation 1: `tableroll run --dir $TMP/group --listen http=tcp:127.0.0.1:PORT
#      --listen health-gen1=unix:$TMP/health-gen1.sock -- gunicorn ... app:app`;
#   3. runs wrk against the HTTP listener for a fixed time, one new connection per request
#      (`Connection: close`), and meanwhile performs UPGRADES upgrades, one every INTERVAL
#      seconds: start the next generation, wait for its `"event":"owner"` log line, wait for
#      the previous instance to exit and record its status, sample who answers with curl;
#   4. prints wrk's summary, each upgrade's timings from the JSON logs, each old instance's exit
#      status and which generations answered; exits 1 if any request failed or any upgrade
#      did not complete.
#
# Readiness (READY=check, the default): gunicorn 20.1 sends READY=1 from Arbiter.start(),
# before it forks any worker and, without --preload, before it imports the app, so READY=1
# says nothing about whether the new version can serve. Each generation therefore gets a
# second, private listener (a Unix socket of its own, passed by `tableroll run` like the HTTP
# one), and `--ready cmd:scripts/third-party/ready-check.sh` waits until the arbiter has its
# workers and one of them answers there. The shared HTTP listener cannot be probed: until the
# handoff the previous generation answers there too. READY=notify uses gunicorn's READY=1
# instead, for comparison.
#
# Requirements: cargo, gunicorn, wrk, curl, python3 (Debian: apt-get install -y gunicorn wrk
# curl). Missing ones are reported with the command to install them; with
# THIRD_PARTY_DEMO_INSTALL=1, when run as root, the script installs them with apt-get itself.
#
# Everything runs on 127.0.0.1 and in a temporary directory (kept with KEEP_TMP=1). Every
# process the script starts is stopped by pid when it exits.
#
# Settings (environment variables):
#   UPGRADES=5        upgrades to perform
#   INTERVAL=2        seconds between upgrades
#   DURATION=         wrk's duration in seconds (default: 1 + UPGRADES * (INTERVAL + 1) + 3:
#                     the upgrades start INTERVAL apart and all must end while wrk runs)
#   CONNECTIONS=32    wrk connections;  THREADS=2  wrk threads
#   KEEPALIVE=0       1: no `Connection: close` header (wrk reuses connections)
#   WORKERS=2         gunicorn workers; WORKER_CLASS=sync; GRACEFUL_TIMEOUT=10 (seconds)
#   GUNICORN_ARGS=    more gunicorn arguments (split on spaces)
#   READY=check       check | notify (see above)
#   DRAIN_TIMEOUT=20s tableroll run --drain-timeout
#   PORT=0            the HTTP port (0: any free port, read back from the first log)
#   SAMPLES=5         curl requests per sample
#   BROKEN_GENERATION= a generation whose app fails to import (APP_FAIL=1), to see an upgrade
#                     to a broken release refused while the running one keeps serving (the
#                     script then reports that upgrade as not completed and exits 1)
set -euo pipefail

UPGRADES=${UPGRADES:-5}
INTERVAL=${INTERVAL:-2}
DURATION=${DURATION:-$((1 + UPGRADES * (INTERVAL + 1) + 3))}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-2}
KEEPALIVE=${KEEPALIVE:-0}
WORKERS=${WORKERS:-2}
WORKER_CLASS=${WORKER_CLASS:-sync}
GRACEFUL_TIMEOUT=${GRACEFUL_TIMEOUT:-10}
GUNICORN_ARGS=${GUNICORN_ARGS:-}
READY=${READY:-check}
DRAIN_TIMEOUT=${DRAIN_TIMEOUT:-20s}
PORT=${PORT:-0}
SAMPLES=${SAMPLES:-5}
BROKEN_GENERATION=${BROKEN_GENERATION:-0}
# How long one step (a generation becoming the owner, an old one exiting) may take.
STEP_TIMEOUT=40

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
APP_DIR=$ROOT/scripts/third-party

say() { printf '[demo %s] %s\n' "$(date +%T.%3N)" "$*" >&2; }
die() { say "FAILED: $*"; exit 1; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# --- requirements ---------------------------------------------------------------------------
missing=()
for tool in gunicorn wrk curl; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
[[ -x /usr/bin/python3 ]] || command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
  if [[ ${THIRD_PARTY_DEMO_INSTALL:-0} == 1 && $(id -u) == 0 ]]; then
    say "installing ${missing[*]} with apt-get"
    apt-get update -qq
    apt-get install -y -qq gunicorn wrk curl python3 >&2
  else
    say "missing: ${missing[*]}"
    say "install them with: apt-get update && apt-get install -y gunicorn wrk curl"
    say "(or run this script as root with THIRD_PARTY_DEMO_INSTALL=1 to let it do so)"
    exit 2
  fi
fi
PYTHON=/usr/bin/python3
[[ -x $PYTHON ]] || PYTHON=$(command -v python3)
case $READY in check | notify) ;; *) die "READY must be check or notify, not $READY" ;; esac

say "building tableroll (cargo build --release -p tableroll-cli)"
(cd "$ROOT" && cargo build --release -p tableroll-cli) >&2
TABLEROLL=${CARGO_TARGET_DIR:-$ROOT/target}/release/tableroll
[[ -x $TABLEROLL ]] || die "no binary at $TABLEROLL"

# --- processes and cleanup ------------------------------------------------------------------
TMP=$(mktemp -d "${TMPDIR:-/tmp}/tableroll-third-party.XXXXXX")
mkdir "$TMP/group"
declare -a GEN_PID=()  # generation -> pid of its `tableroll run`
WRK_PID=

alive() { # pid: running and not yet a zombie
  local state
  state=$(awk '{ sub(/^.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null) || return 1
  [[ -n $state && $state != Z ]]
}

program_pids() { # n: the pids of the programs generation n's supervisor reported starting
  grep '"event":"started"' "$TMP/gen$1.err" 2>/dev/null | grep -o '"child_pid":[0-9]*' | grep -o '[0-9]*$' || true
}

cleanup() {
  local code=$? n pid program deadline
  trap - EXIT INT TERM
  set +e
  [[ -n $WRK_PID ]] && alive "$WRK_PID" && kill -TERM "$WRK_PID" 2>/dev/null
  for pid in "${GEN_PID[@]}"; do
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
  done
  deadline=$(($(now_ms) + 15000))
  for n in "${!GEN_PID[@]}"; do
    pid=${GEN_PID[n]}
    while alive "$pid" && (($(now_ms) < deadline)); do sleep 0.1; done
    alive "$pid" || continue
    kill -KILL "$pid" 2>/dev/null
    # A supervisor kills its program's process group itself after the drain timeout; this
    # one could not, so its program's group (group id = the program's pid) goes too.
    for program in $(program_pids "$n"); do
      grep -qs gunicorn "/proc/$program/cmdline" && kill -KILL -- "-$program" 2>/dev/null
    done
  done
  wait 2>/dev/null || true
  if [[ ${KEEP_TMP:-0} == 1 ]]; then
    say "logs kept in $TMP"
  else
    rm -rf "$TMP"
  fi
  exit "$code"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

start_generation() { # n
  local n=$1 ready
  if [[ $READY == notify ]]; then
    ready=notify
  else
    ready="cmd:$(printf '%q %q %q' "$APP_DIR/ready-check.sh" "$TMP/health-gen$n.sock" "$WORKERS")"
  fi
  # shellcheck disable=SC2086 # GUNICORN_ARGS is split on purpose
  APP_GENERATION=$n APP_FAIL=$((n == BROKEN_GENERATION)) \
    "$TABLEROLL" run --dir "$TMP/group" --id "gen$n" --log-format json \
    --listen "http=tcp:127.0.0.1:$PORT" --listen "health-gen$n=unix:$TMP/health-gen$n.sock" \
    --ready "$ready" --ready-timeout 30s --drain-timeout "$DRAIN_TIMEOUT" \
    -- gunicorn --chdir "$APP_DIR" --workers "$WORKERS" --worker-class "$WORKER_CLASS" \
    --graceful-timeout "$GRACEFUL_TIMEOUT" $GUNICORN_ARGS app:app \
    >"$TMP/gen$n.out" 2>"$TMP/gen$n.err" &
  GEN_PID[n]=$!
}

wait_owner() { # n: until its log says it owns the sockets
  local n=$1 deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
  until grep -q '"event":"owner"' "$TMP/gen$n.err"; do
    alive "${GEN_PID[n]}" || return 1
    (($(now_ms) < deadline)) || return 1
    sleep 0.02
  done
}

wait_exit() { # pid: sets EXIT_STATUS to its exit status, or "timeout" (not in a subshell:
  # only this shell can reap its children)
  local pid=$1 deadline=$(($(now_ms) + STEP_TIMEOUT * 1000))
  EXIT_STATUS=0
  while alive "$pid"; do
    (($(now_ms) < deadline)) || { EXIT_STATUS=timeout; return; }
    sleep 0.02
  done
  wait "$pid" || EXIT_STATUS=$?
}

sample() { # the generations that answered SAMPLES requests, as "gen=3,gen=3,..."
  local i out answers=()
  for ((i = 0; i < SAMPLES; i++)); do
    out=$(curl -s --max-time 2 "http://127.0.0.1:$PORT/" | cut -d' ' -f1) || out=
    answers+=("${out:-error}")
  done
  (IFS=,; echo "${answers[*]}")
}

# --- generation 1 and the load --------------------------------------------------------------
say "temporary directory: $TMP"
start_generation 1
wait_owner 1 || { cat "$TMP/gen1.err" >&2; die "generation 1 did not become the owner"; }
if [[ $PORT == 0 ]]; then
  PORT=$(grep '"event":"listener"' "$TMP/gen1.err" | grep '"name":"http"' |
    sed -n 's/.*"address":"127\.0\.0\.1:\([0-9]*\)".*/\1/p' | head -n1)
  [[ -n $PORT ]] || die "could not read the HTTP port from generation 1's log"
fi
say "generation 1 serves on 127.0.0.1:$PORT; first answers: $(sample)"

wrk_args=(-t "$THREADS" -c "$CONNECTIONS" -d "${DURATION}s" --timeout 5s --latency -s "$APP_DIR/count.lua")
[[ $KEEPALIVE == 1 ]] || wrk_args+=(-H 'Connection: close')
say "wrk ${wrk_args[*]} http://127.0.0.1:$PORT/"
wrk "${wrk_args[@]}" "http://127.0.0.1:$PORT/" >"$TMP/wrk.txt" 2>&1 &
WRK_PID=$!
sleep 1

# --- the upgrades ---------------------------------------------------------------------------
# One line per upgrade: n old_status under_load wall_owner_ms wall_exit_ms during after
: >"$TMP/upgrades.txt"
failed=0
last=1 # the newest generation that became the owner
next_at=$(($(now_ms) + INTERVAL * 1000))
for ((n = 2; n <= UPGRADES + 1; n++)); do
  # Upgrades start INTERVAL seconds apart (or back to back if one took longer).
  wait_ms=$((next_at - $(now_ms)))
  ((wait_ms <= 0)) || sleep "$((wait_ms / 1000)).$(printf '%03d' $((wait_ms % 1000)))"
  next_at=$(($(now_ms) + INTERVAL * 1000))
  old=$((n - 1))
  under_load=yes
  alive "$WRK_PID" || under_load=no
  say "upgrade $old -> $n: starting generation $n"
  t0=$(now_ms)
  start_generation "$n"
  if ! wait_owner "$n"; then
    say "generation $n did not become the owner; its log:"
    cat "$TMP/gen$n.err" >&2
    wait_exit "${GEN_PID[n]}"
    echo "$n failed:$EXIT_STATUS $under_load - - - -" >>"$TMP/upgrades.txt"
    say "generation $n: tableroll run exited with status $EXIT_STATUS; generation $old keeps serving: $(sample)"
    failed=1
    break
  fi
  t1=$(now_ms)
  last=$n
  during=$(sample)
  wait_exit "${GEN_PID[old]}"
  status=$EXIT_STATUS
  t2=$(now_ms)
  after=$(sample)
  alive "$WRK_PID" || under_load=no
  say "upgrade $old -> $n: owner after $((t1 - t0)) ms, generation $old exited ($status) $((t2 - t1)) ms later; answers since: $after"
  echo "$n $status $under_load $((t1 - t0)) $((t2 - t1)) $during $after" >>"$TMP/upgrades.txt"
  [[ $status == 0 && $under_load == yes ]] || failed=1
done

wrk_status=0
wait "$WRK_PID" || wrk_status=$?
WRK_PID=
say "wrk finished (status $wrk_status); stopping the last generation ($last) with SIGTERM"
kill -TERM "${GEN_PID[last]}"
wait_exit "${GEN_PID[last]}"
last_status=$EXIT_STATUS

# --- the report -----------------------------------------------------------------------------
set +e
setup="$(gunicorn --version 2>&1 | head -n1); $(wrk -v 2>&1 | head -n1 | cut -d' ' -f1-2); \
workers=$WORKERS class=$WORKER_CLASS graceful-timeout=${GRACEFUL_TIMEOUT}s ${GUNICORN_ARGS:+args=\"$GUNICORN_ARGS\" }\
readiness=$READY drain-timeout=$DRAIN_TIMEOUT; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s \
$([[ $KEEPALIVE == 1 ]] && echo keep-alive || echo 'Connection: close'); $UPGRADES upgrades ${INTERVAL}s apart"
"$PYTHON" - "$TMP" "$UPGRADES" "$wrk_status" "$last" "$last_status" "$failed" "$setup" <<'PY'
import json, os, re, statistics, sys

tmp, upgrades, wrk_status, last, last_status, failed, setup = sys.argv[1:]
upgrades, wrk_status, last, failed = int(upgrades), int(wrk_status), int(last), int(failed)
problems = []
print()
print("setup: " + setup)

def events(n):
    found = {}
    try:
        lines = open(os.path.join(tmp, "gen%d.err" % n), errors="replace").read().splitlines()
    except OSError:
        return found
    for line in lines:
        if not line.startswith('{"'):
            continue  # gunicorn's own log lines share the stream
        try:
            event = json.loads(line)
        except ValueError:
            continue
        found.setdefault(event["event"], []).append(event)
    return found

def first(evs, name, field):
    try:
        return evs[name][0][field]
    except (KeyError, IndexError):
        return None

def fmt(value, unit=" ms"):
    return "-" if value is None else "%.1f%s" % (value, unit)

print()
print("== wrk " + "=" * 70)
text = open(os.path.join(tmp, "wrk.txt"), errors="replace").read()
print("\n".join(l for l in text.splitlines() if not l.startswith("WRK_RESULT")))
match = re.search(r"^WRK_RESULT (.*)$", text, re.M)
result = dict(kv.split("=", 1) for kv in match.group(1).split()) if match else {}
if not result:
    problems.append("wrk printed no result (status %d)" % wrk_status)
else:
    requests = int(result["requests"])
    errors = {k: int(result[k]) for k in ("connect", "read", "write", "timeout")}
    non2xx = int(result["status"])
    print("requests: %d in %.2f s (%.0f/s)" % (
        requests, int(result["duration_us"]) / 1e6, requests / (int(result["duration_us"]) / 1e6)))
    print("socket errors: connect %(connect)d, read %(read)d, write %(write)d, timeout %(timeout)d" % errors)
    print("non-2xx/3xx responses: %d" % non2xx)
    print("latency: p50 %.2f ms, p99 %.2f ms, max %.2f ms" % (
        int(result["p50_us"]) / 1e3, int(result["p99_us"]) / 1e3, int(result["max_us"]) / 1e3))
    print("responses by generation: %s" % result["by_generation"].replace(",", ", "))
    if requests == 0:
        problems.append("wrk made no request")
    if sum(errors.values()) or non2xx:
        problems.append("%d socket errors and %d non-2xx responses" % (sum(errors.values()), non2xx))
if wrk_status:
    problems.append("wrk exited with status %d" % wrk_status)

print()
print("== upgrades (figures from the JSON logs of tableroll run) " + "=" * 19)
columns = "%-8s %9s %9s %18s %9s %11s %9s %6s"
print(columns % ("upgrade", "ready_ms", "owner_ms", "start_to_owner_ms", "drain_ms", "handoff_ms",
                 "old_exit", "load"))
rows = [l.split() for l in open(os.path.join(tmp, "upgrades.txt")).read().splitlines() if l.strip()]
samples, figures = [], []
for row in rows:
    n, status, load = int(row[0]), row[1], row[2]
    new, old = events(n), events(n - 1)
    if status.startswith("failed:"):
        old = {}  # the old instance was not taken over: its later drain is not this upgrade's
    owner_ts = first(new, "owner", "ts")
    drained_ts = first(old, "drained", "ts")
    handoff = (drained_ts - owner_ts) * 1e3 if owner_ts and drained_ts else None
    values = (first(new, "child_ready", "start_to_ready_ms"), first(new, "owner", "ready_ms"),
              first(new, "owner", "child_started_to_owner_ms"), first(old, "drained", "drain_ms"),
              handoff)
    figures.append(values)
    print(columns % (("%d -> %d" % (n - 1, n),) + tuple(fmt(v, "") for v in values) + (status, load)))
    samples.append((n, row[5:7] if len(row) >= 7 else ["-", "-"]))
    if status.startswith("failed:"):
        problems.append("upgrade %d -> %d did not complete: generation %d never became the owner "
                        "(its tableroll run exited with status %s)" % (n - 1, n, n, status[7:]))
        samples.pop()
    elif status != "0":
        problems.append("upgrade %d -> %d: the old instance's status is %s" % (n - 1, n, status))
    if load != "yes":
        problems.append("upgrade %d -> %d did not happen under load" % (n - 1, n))
    if "killed" in old:
        problems.append("generation %d's program was killed after the drain timeout" % (n - 1))
for label, pick in (("median", statistics.median), ("max", max)):
    if figures:
        cells = []
        for i in range(5):
            known = [f[i] for f in figures if f[i] is not None]
            cells.append(fmt(pick(known), "") if known else "-")
        print(columns % ((label,) + tuple(cells) + ("", "")))
if len(rows) < upgrades:
    problems.append("only %d of %d upgrades were attempted" % (len(rows), upgrades))
print("""ready_ms          new instance, child_ready.start_to_ready_ms: program start -> ready
owner_ms          new instance, owner.ready_ms: ready -> owner of the sockets
start_to_owner_ms new instance, owner.child_started_to_owner_ms
drain_ms          old instance, drained.drain_ms: stop signal -> its program exited
handoff_ms        new instance's owner line -> old instance's drained line (log timestamps)
old_exit          exit status of the old `tableroll run`; load: wrk was running""")

print()
print("== who answered (curl, %s requests each) " % len(samples[0][1][0].split(",")) + "=" * 38 if samples else "== who answered")
print("(during drain: right after the new owner's log line; after exit: once the old instance exited)")
for n, (during, after) in samples:
    print("upgrade %d -> %d: during drain: %s" % (n - 1, n, during))
    print("%s  after exit:   %s" % (" " * len("upgrade %d -> %d" % (n - 1, n)), after))
    if any(a != "gen=%d" % n for a in after.split(",")):
        problems.append("after upgrade %d -> %d not every answer came from generation %d" % (n - 1, n, n))

print()
print("== exit statuses " + "=" * 60)
for row in rows:
    if row[1].startswith("failed:"):
        print("generation %d (tableroll run, a failed upgrade): %s" % (int(row[0]), row[1][7:]))
    else:
        print("generation %d (tableroll run, after its takeover): %s" % (int(row[0]) - 1, row[1]))
print("generation %d (tableroll run, after SIGTERM at the end): %s (drain_ms %s)" % (
    last, last_status, fmt(first(events(last), "drained", "drain_ms"), "")))
if last_status != "0":
    problems.append("the last generation exited with %s" % last_status)
for n in range(1, last + 1):
    evs = events(n)
    for name in ("failed", "refused", "killed", "error", "timeout"):
        for e in evs.get(name, []):
            problems.append("generation %d logged %s: %s" % (n, name, e.get("message")))

print()
if failed and not problems:
    problems.append("an upgrade did not complete")
if problems:
    print("RESULT: FAILED")
    for p in problems:
        print("  - " + p)
    sys.exit(1)
print("RESULT: OK: %d upgrades under load, every request answered" % len(rows))
PY
