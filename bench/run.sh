#!/usr/bin/env bash
# protoserve vs the codegen baseline on users.UserService, on this machine, loopback only.
#
#   bench/run.sh [NAME='COMMAND with {port}' ...]
#
# Builds protoserve (release) and the bench workspace, then for each of ROUNDS rounds:
#   cold start   per target: spawn -> first successful GetUser, median of COLD_RUNS spawns (ms)
#   start        every target at once, each pinned to SRV_CPUS (idle until loaded)
#   RSS at rest  VmRSS once the server has answered one GetUser
#   check        `loadgen check`: the semantics every target must share (else FAILED)
#   per RPC, each target in turn (order reversed every other round), load from LG_CPUS:
#     GetUser, CreateUser   h2load, CONNS x STREAMS, pre-encoded gRPC bodies, WARMUP s then
#                           DURATION s; only gRPC-OK responses count
#     GetUser-stub          the same GetUser on protoserve-stub: protoserve with
#                           --stubs bench/stubs (one `equals` stub answers bench-user with the
#                           store's user; other ids fall through to the store, so the check
#                           passes); its ratio is to the baseline's GetUser of the same round.
#                           Targets named *-stub serve only this row (and skip the fill)
#     CreateUser-connect,   the same CreateUser over Connect (JSON, connect-protocol-version: 1)
#     CreateUser-json       and over HTTP/JSON (POST /users.UserService/CreateUser, application/json)
#     CreateUser-rest       and over transcoded REST (POST /v1/users, bench/rest's google.api.http rule)
#                           with h2load; not on the baseline (gRPC only): their ratios are to the
#                           target's own gRPC CreateUser of the same round
#     ListUsers(PAGE)       `loadgen list`: streamed users/s (each call must bring PAGE)
#     BulkCreate(BATCH)     `loadgen bulk`: created users/s (BATCH per client stream)
# then once per target: RSS after FILL_N unary CreateUser. Prints the table (medians over
# rounds, ratios to the baseline of the same round) and writes OUT/{raw.tsv,table.txt,env.txt,logs/}.
#
# Extra arguments NAME='COMMAND' add targets: the command must serve users.UserService on
# 127.0.0.1:{port} with bench-user pre-seeded (a NAME ending in -stub: GetUser-stub only).
#
# Knobs (env), defaults in brackets:
#   TARGETS [baseline protoserve protoserve-stub]  which built-in targets run (TARGETS=baseline:
#     baseline only)
#   ROUNDS [3]  DURATION [5] s  WARMUP [1] s  CONNS [2]  STREAMS [50] (per connection)
#   RPCS [GetUser GetUser-stub CreateUser CreateUser-connect CreateUser-json CreateUser-rest
#     ListUsers BulkCreate]
#   PAGE [100]  BATCH [100]
#   COLD_RUNS [5]  FILL_N [1000000] (0 skips the fill)  CHECK [1] (0 skips the semantic check)
#   PIN [1] (0: no taskset)  SRV_CPUS [0]  LG_CPUS [1]  H2_THREADS [1]
#   BUILD [1] (0: use the binaries as they are)
#   PROTOSERVE_TARGET_DIR [bench/target]: cargo --target-dir for protoserve; bench/target
#     keeps clear of the root build's lock. PROTOSERVE_TARGET_DIR="$PWD/target" reuses the
#     root build instead.  PROTOSERVE_BIN: a protoserve binary to use as is (skips its build).
#   PROTOSERVE_REV: build this committed revision (e.g. HEAD) instead of the work tree; it is
#     exported with git archive to bench/target/protoserve-src, the work tree is not touched.
#   OUT [bench/results]
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)

TARGETS=${TARGETS-baseline protoserve protoserve-stub}
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
CONNS=${CONNS:-2} STREAMS=${STREAMS:-50}
RPCS=${RPCS:-GetUser GetUser-stub CreateUser CreateUser-connect CreateUser-json CreateUser-rest ListUsers BulkCreate} PAGE=${PAGE:-100} BATCH=${BATCH:-100}
COLD_RUNS=${COLD_RUNS:-5} FILL_N=${FILL_N:-1000000} CHECK=${CHECK:-1}
PIN=${PIN:-1} SRV_CPUS=${SRV_CPUS:-0} LG_CPUS=${LG_CPUS:-1} H2_THREADS=${H2_THREADS:-1}
BUILD=${BUILD:-1} OUT=${OUT:-$BENCH/results}
PROTOSERVE_TARGET_DIR=${PROTOSERVE_TARGET_DIR:-$BENCH/target}
PROTOSERVE_BIN=${PROTOSERVE_BIN:-} PROTOSERVE_REV=${PROTOSERVE_REV:-}
BASELINE_NAME=baseline
export RUST_LIB_BACKTRACE=0  # one-line errors from loadgen in the logs

die() { echo "run.sh: $*" >&2; exit 1; }
log() { echo "$*" >&2; }

# ---- (a) tools ----------------------------------------------------------------------------
need_pkg() { # command debian-package
  command -v "$1" >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "$1 is missing: install the Debian package $2 (needs root)"
  log "installing $2 (for $1)"
  apt-get install -y -qq "$2" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; } ||
    die "apt-get install $2 failed"
  command -v "$1" >/dev/null || die "$2 installed but $1 is still missing"
}
need_pkg h2load nghttp2-client
need_pkg taskset util-linux
command -v cargo >/dev/null || die "cargo is missing"

# ---- (b) build ----------------------------------------------------------------------------
wants() { [[ " $TARGETS " == *" $1 "* ]]; }
LOADGEN=$BENCH/target/release/loadgen
BASELINE_BIN=$BENCH/target/release/baseline
if [ "$BUILD" = 1 ]; then
  log "building the bench workspace (baseline, loadgen)"
  cargo build --release --quiet --manifest-path "$BENCH/Cargo.toml" -p baseline -p loadgen
  if { wants protoserve || wants protoserve-stub; } && [ -z "$PROTOSERVE_BIN" ]; then
    src=$ROOT
    if [ -n "$PROTOSERVE_REV" ]; then
      # A committed revision, exported (git archive) so the work tree is left alone.
      src=$BENCH/target/protoserve-src
      rev=$(git -C "$ROOT" rev-parse --verify "$PROTOSERVE_REV^{commit}") || die "unknown revision $PROTOSERVE_REV"
      if [ "$(cat "$src/.rev" 2>/dev/null)" != "$rev" ]; then
        log "exporting protoserve $PROTOSERVE_REV ($rev) to $src"
        rm -rf "$src" && mkdir -p "$src"
        git -C "$ROOT" archive "$rev" | tar -x -C "$src"
        echo "$rev" >"$src/.rev"
      fi
    fi
    log "building protoserve from $src (release, --target-dir $PROTOSERVE_TARGET_DIR)"
    cargo build --release --quiet --manifest-path "$src/Cargo.toml" --bin protoserve \
      --target-dir "$PROTOSERVE_TARGET_DIR"
  fi
fi
PROTOSERVE_BIN=${PROTOSERVE_BIN:-$PROTOSERVE_TARGET_DIR/release/protoserve}
[ -x "$LOADGEN" ] || die "missing $LOADGEN (run with BUILD=1)"

# ---- targets: NAME -> command words, {port} replaced at start ------------------------------
names=()
declare -A CMDS=()
add_target() { names+=("$1"); CMDS[$1]=$2; }
for t in $TARGETS; do
  case $t in
    baseline)
      [ -x "$BASELINE_BIN" ] || die "missing $BASELINE_BIN (run with BUILD=1)"
      add_target baseline "$BASELINE_BIN --addr 127.0.0.1:{port}" ;;
    protoserve)
      [ -x "$PROTOSERVE_BIN" ] || die "missing $PROTOSERVE_BIN (BUILD=1 builds it; or set PROTOSERVE_BIN)"
      add_target protoserve "$PROTOSERVE_BIN serve $ROOT/schemas/users $BENCH/rest --data $BENCH/data/bench-user.yaml --addr 127.0.0.1:{port}" ;;
    protoserve-stub)
      [ -x "$PROTOSERVE_BIN" ] || die "missing $PROTOSERVE_BIN (BUILD=1 builds it; or set PROTOSERVE_BIN)"
      add_target protoserve-stub "$PROTOSERVE_BIN serve $ROOT/schemas/users $BENCH/rest --data $BENCH/data/bench-user.yaml --stubs $BENCH/stubs --addr 127.0.0.1:{port}" ;;
    *) die "unknown target '$t' in TARGETS (known: baseline protoserve protoserve-stub; add others as NAME='COMMAND')" ;;
  esac
done
for arg in "$@"; do
  [[ $arg == *=* && $arg == *'{port}'* ]] || die "an extra target is NAME='COMMAND with {port}', got: $arg"
  add_target "${arg%%=*}" "${arg#*=}"
done
[ ${#names[@]} -gt 0 ] || die "no targets"
wants baseline || log "note: no baseline in TARGETS: the ratio column stays empty"

SRV_PIN=() LG_PIN=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SRV_PIN=(taskset -c "$SRV_CPUS") LG_PIN=(taskset -c "$LG_CPUS")
fi

mkdir -p "$OUT/logs"
RAW=$OUT/raw.tsv
: >"$RAW"
"$LOADGEN" bodies --out "$OUT/bodies"

# ---- (c) server lifecycle: each server in its own session, stopped by process group ------
# All targets of a round run side by side, idle unless loaded, so that the same RPC is
# measured on each target seconds apart and drift in machine load hits both alike.
declare -A PIDS=() PORTS=()
PORT=""
start() { # name logfile
  local words port pid tries=0
  port=$("$LOADGEN" free-port)
  read -r -a words <<<"${CMDS[$1]//\{port\}/$port}"
  setsid "${SRV_PIN[@]}" "${words[@]}" >"$2" 2>&1 </dev/null &
  pid=$!
  PIDS[$1]=$pid PORTS[$1]=$port
  until "${LG_PIN[@]}" "$LOADGEN" wait --addr "127.0.0.1:$port" --timeout 1 >/dev/null 2>&1; do
    if ! kill -0 "$pid" 2>/dev/null; then
      log "  $1 exited during startup (log: $2)"; stop "$1"; return 1
    fi
    if [ $((tries += 1)) -ge 30 ]; then
      log "  $1 did not answer GetUser(bench-user) on 127.0.0.1:$port within 30 s (log: $2)"
      stop "$1"; return 1
    fi
  done
}
stop() { # name
  local pid=${PIDS[$1]:-}
  [ -n "$pid" ] || return 0
  kill -TERM -- "-$pid" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  unset "PIDS[$1]" "PORTS[$1]"
}
stop_all() { local n; for n in "${!PIDS[@]}"; do stop "$n"; done; }
trap stop_all EXIT
trap 'stop_all; exit 130' INT TERM

rss_kb() { # name: VmRSS of the server process (setsid and taskset exec it; follow children if not)
  local pid=${PIDS[$1]}
  while [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^(setsid|taskset|bash|sh)$ ]]; do
    pid=$(pgrep -P "$pid" | head -1) || break
  done
  awk '/^VmRSS:/ {print $2}' "/proc/$pid/status"
}
row() { printf '%s\n' "$(IFS=$'\t'; echo "$*")" >>"$RAW"; }

# ---- (d) load ------------------------------------------------------------------------------
# Request headers per protocol (h2load sends -d bodies as POST).
GRPC_HEADERS=(-H 'content-type: application/grpc' -H 'te: trailers')
CONNECT_HEADERS=(-H 'content-type: application/json' -H 'connect-protocol-version: 1')
JSON_HEADERS=(-H 'content-type: application/json')
h2() { # seconds h2load-args... (runs pinned, bounded in time)
  local t=$1; shift
  timeout "$t" "${LG_PIN[@]}" h2load "${HEADERS[@]}" "$@" 2>&1 || true
}
h2_rpc() { # round name metric method body headers-array
  local url="http://127.0.0.1:$PORT/users.UserService/$4" body=$5 probe ref stats
  [[ $4 == /* ]] && url="http://127.0.0.1:$PORT$4"  # a REST path
  local -n HEADERS=$6
  local tag="$OUT/logs/$2-r$1-${3//\//-}"
  # One request first: its DATA bytes are the size of one good response (gRPC errors have
  # none; Connect and HTTP/JSON errors have a non-2xx status).
  probe=$(h2 10 -n 1 -c 1 -d "$body" "$url")
  ref=$(sed -nE 's/^traffic:.*\(([0-9]+)\) data$/\1/p' <<<"$probe")
  if [ -z "$ref" ] || [ "$ref" = 0 ] || ! grep -q '^status codes: 1 2xx' <<<"$probe"; then
    log "  $2 $3: the probe request got no good response (an error?); h2load said:"
    log "$(sed 's/^/    /' <<<"$probe")"
    row "$1" "$2" "$3" FAIL; return
  fi
  h2 $((WARMUP + 10)) -t "$H2_THREADS" -c "$CONNS" -m "$STREAMS" -D "$WARMUP" -d "$body" "$url" >/dev/null
  rm -f "$tag.log"  # h2load appends to an existing log file
  h2 $((DURATION + 10)) -t "$H2_THREADS" -c "$CONNS" -m "$STREAMS" -D "$DURATION" -d "$body" \
    --log-file="$tag.log" "$url" >"$tag.out"
  if ! stats=$("$LOADGEN" h2stats "$tag.out" "$tag.log" "$ref" 2>"$tag.err"); then
    log "  $2 $3: h2load failed (see $tag.out, $tag.err)"; row "$1" "$2" "$3" FAIL; return
  fi
  rm -f "$tag.log"
  report_row "$1" "$2" "$3" "$stats"
}
stream_rpc() { # round name metric loadgen-subcommand args...
  local round=$1 name=$2 metric=$3 stats err; shift 3
  err="$OUT/logs/$name-r$round-${metric%%(*}.err"
  if ! stats=$(timeout $((WARMUP + DURATION + 30)) "${LG_PIN[@]}" "$LOADGEN" "$@" --addr "127.0.0.1:$PORT" \
      --conns "$CONNS" --streams "$STREAMS" --warmup "$WARMUP" --duration "$DURATION" 2>"$err"); then
    log "  $name $metric: loadgen failed (see $err)"
    row "$round" "$name" "$metric" FAIL; return
  fi
  report_row "$round" "$name" "$metric" "$stats"
}
report_row() { # round name metric "value p50 p99 ok%"
  local value p50 p99 ok
  read -r value p50 p99 ok <<<"$4"
  row "$1" "$2" "$3" "$value" "$p50" "$p99" "$ok"
  printf '  %-12s %-23s %10.0f ok/s  p50 %7sus  p99 %7sus  ok %s%%\n' "$2" "$3" "$value" "$p50" "$p99" "$ok" >&2
}

run_rpc() { # round name rpc
  local bodies=$OUT/bodies
  case $3 in
    GetUser | CreateUser) h2_rpc "$1" "$2" "$3" "$3" "$bodies/$3.bin" GRPC_HEADERS ;;
    GetUser-stub) h2_rpc "$1" "$2" "$3" GetUser "$bodies/GetUser.bin" GRPC_HEADERS ;;
    CreateUser-connect) h2_rpc "$1" "$2" "$(metric_of "$3")" CreateUser "$bodies/CreateUser.json" CONNECT_HEADERS ;;
    CreateUser-json) h2_rpc "$1" "$2" "$(metric_of "$3")" CreateUser "$bodies/CreateUser.json" JSON_HEADERS ;;
    CreateUser-rest) h2_rpc "$1" "$2" "$(metric_of "$3")" /v1/users "$bodies/CreateUser.json" JSON_HEADERS ;;
    ListUsers) stream_rpc "$1" "$2" "ListUsers($PAGE)" list --page-size "$PAGE" ;;
    BulkCreate) stream_rpc "$1" "$2" "BulkCreate($BATCH)" bulk --batch "$BATCH" ;;
    *) die "unknown rpc '$3' in RPCS (known: GetUser GetUser-stub CreateUser CreateUser-connect CreateUser-json CreateUser-rest ListUsers BulkCreate)" ;;
  esac
}
metric_of() {
  case $1 in
    ListUsers) echo "ListUsers($PAGE)" ;;
    BulkCreate) echo "BulkCreate($BATCH)" ;;
    CreateUser-connect) echo "CreateUser/connect-json" ;;
    CreateUser-json) echo "CreateUser/http-json" ;;
    CreateUser-rest) echo "CreateUser/rest" ;;
    *) echo "$1" ;;
  esac
}
# The codegen baseline speaks gRPC only: it has no web-protocol rows. Stub targets (*-stub)
# serve only GetUser-stub, and only they serve it.
serves() { # name rpc
  if [[ $1 == *-stub ]]; then [[ $2 == GetUser-stub ]]; return; fi
  [[ $2 != GetUser-stub ]] || return 1
  [[ $1 != "$BASELINE_NAME" || $2 != CreateUser-* ]]
}

# ---- main ------------------------------------------------------------------------------------
{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(nproc) cores, $(lscpu | sed -nE 's/^Model name: *//p' | head -1)"
  if [ -n "$PROTOSERVE_REV" ]; then
    echo "protoserve: $PROTOSERVE_REV = $(git -C "$ROOT" rev-parse --short "$PROTOSERVE_REV")"
  else
    echo "protoserve: work tree at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?')"
  fi
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "h2load: $(h2load --version | head -1)"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS STREAMS=$STREAMS" \
       "PAGE=$PAGE BATCH=$BATCH COLD_RUNS=$COLD_RUNS FILL_N=$FILL_N PIN=$PIN SRV_CPUS=$SRV_CPUS" \
       "LG_CPUS=$LG_CPUS pinned=$([ ${#SRV_PIN[@]} -gt 0 ] && echo yes || echo no)"
  for n in "${names[@]}"; do echo "target $n: ${CMDS[$n]}"; done
} >"$OUT/env.txt"
cat "$OUT/env.txt" >&2
read -r load1 _ </proc/loadavg
if awk -v l="$load1" 'BEGIN { exit !(l > 0.5) }'; then
  log "WARNING: load average is $load1 before the run: other work shares these cores, expect noise"
fi

fail_round() { # round name: every RPC of this round FAILED for name
  local rpc
  for rpc in $RPCS; do
    if serves "$2" "$rpc"; then row "$1" "$2" "$(metric_of "$rpc")" FAIL; fi
  done
}

SECONDS=0
for round in $(seq "$ROUNDS"); do
  log "== round $round/$ROUNDS"
  # Alternate the order between rounds, so going first or second is no advantage.
  order=("${names[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#names[@]} - 1; i >= 0; i--)); do order+=("${names[$i]}"); done
  fi
  # Cold start: fresh processes, pinned like the measured servers, nothing else running.
  for name in "${order[@]}"; do
    read -r -a words <<<"${CMDS[$name]}"
    coldlog="$OUT/logs/$name-r$round-coldstart.log"
    if cold=$("${LG_PIN[@]}" "$LOADGEN" coldstart --runs "$COLD_RUNS" -- "${SRV_PIN[@]}" "${words[@]}" 2>"$coldlog"); then
      row "$round" "$name" cold-start-ms "${cold%%$'\t'*}"
      log "  $name cold start: median ${cold%%$'\t'*} ms (runs: ${cold#*$'\t'})"
    else
      row "$round" "$name" cold-start-ms FAIL; log "  $name cold start failed: $(tail -1 "$coldlog")"
    fi
  done
  live=()
  for name in "${order[@]}"; do
    if start "$name" "$OUT/logs/$name-r$round.log"; then live+=("$name"); else fail_round "$round" "$name"; fi
  done
  sleep 0.5
  for name in "${live[@]}"; do row "$round" "$name" rss-rest-kb "$(rss_kb "$name")"; done
  checked=()
  for name in "${live[@]}"; do
    logf="$OUT/logs/$name-r$round.log"
    if [ "$CHECK" = 1 ] && ! "${LG_PIN[@]}" "$LOADGEN" check --addr "127.0.0.1:${PORTS[$name]}" 2>>"$logf"; then
      log "  $name FAILED the semantic check: $(tail -1 "$logf")"
      stop "$name"; fail_round "$round" "$name"
    else
      checked+=("$name")
    fi
  done
  for rpc in $RPCS; do
    for name in "${checked[@]}"; do
      serves "$name" "$rpc" || continue
      PORT=${PORTS[$name]}
      run_rpc "$round" "$name" "$rpc"
    done
  done
  stop_all
done

if [ "$FILL_N" -gt 0 ]; then
  log "== memory after $FILL_N CreateUser"
  for name in "${names[@]}"; do
    [[ $name != *-stub ]] || continue  # the same server as protoserve, with one stub
    logf="$OUT/logs/$name-fill.log"
    start "$name" "$logf" || { row 1 "$name" "rss-fill-kb:$FILL_N" FAIL; continue; }
    if took=$("${LG_PIN[@]}" "$LOADGEN" fill --addr "127.0.0.1:${PORTS[$name]}" -n "$FILL_N" \
        --conns "$CONNS" --streams "$STREAMS" 2>>"$logf"); then
      sleep 0.5
      kb=$(rss_kb "$name")
      row 1 "$name" "rss-fill-kb:$FILL_N" "$kb"
      log "  $name: $((kb / 1024)) MB after $FILL_N CreateUser (${took}s)"
    else
      row 1 "$name" "rss-fill-kb:$FILL_N" FAIL; log "  $name: fill failed (log: $logf)"
    fi
    stop "$name"
  done
fi

log "== medians over $ROUNDS rounds (${SECONDS}s); ratio = median of per-round ratios to $BASELINE_NAME"
"$LOADGEN" report "$RAW" "$BASELINE_NAME" | tee "$OUT/table.txt"

# Reload latency (schema hot reload): protoserve only, after the comparison (RELOAD=0 skips).
if [ "${RELOAD:-1}" = 1 ]; then
  log "== hot reload (bench/reload.sh)"
  "$(dirname "$0")/reload.sh" | tee "$OUT/reload.txt"
fi
