#!/usr/bin/env bash
# Stub scale: start-up, memory and GetUser rate with N `equals` stubs on one method, loopback only.
#
#   bench/stubs.sh [N ...]            (default: 10 1000 100000)
#
# For each N, generates N stubs for users.UserService/GetUser into a temporary directory,
# in files of at most PER_FILE stubs (a stub file is at most 16 MiB): stub i matches
# `equals: {user_id: u-i}`; the LAST one matches `bench-user` and answers it, so every
# measured call is answered by the last of N stubs. Then, for each of ROUNDS rounds and each
# N in turn (order reversed every other round, so drift in machine load hits every N alike):
#   start-up   spawn -> first successful GetUser(bench-user) (ms): the server is started with
#              --addr 127.0.0.1:0, its "listening on" line gives the port, then h2load probes
#   rss        VmRSS and VmHWM (peak) of the server 0.5 s after that first answer
#   req/s      h2load, CONNS x STREAMS, a pre-encoded gRPC GetUser body, WARMUP s then
#              DURATION s; only gRPC-OK responses count (DATA bytes / the probe's DATA bytes)
# The server runs pinned to SRV_CPUS with request logs off (RUST_LOG=info,protoserve::rpc=off)
# and --no-watch; h2load runs pinned to LG_CPUS. Prints the medians over rounds and, per N,
# the median of the per-round ratio of its req/s to the first N's (compare ratios: they hold
# up on a shared machine better than absolute rates). Raw rows go to OUT/raw.tsv.
#
# Knobs (env), defaults in brackets:
#   ROUNDS [3]  DURATION [5] s  WARMUP [1] s  CONNS [4]  STREAMS [16]  PER_FILE [10000]
#   SRV_CPUS [0]  LG_CPUS [1]  PIN [1] (0: no taskset)
#   PROTOSERVE_BIN [target/release/protoserve]  BUILD [0] (1: cargo build --release first)
#   OUT [bench/results/stubs]  KEEP [0] (1: keep the generated stub directories)
# About 4 minutes with the defaults (3 rounds x 3 sizes x ~7 s, plus start-ups).
set -euo pipefail

BENCH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$BENCH/.." && pwd)
ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} WARMUP=${WARMUP:-1}
CONNS=${CONNS:-4} STREAMS=${STREAMS:-16} PER_FILE=${PER_FILE:-10000}
SRV_CPUS=${SRV_CPUS:-0} LG_CPUS=${LG_CPUS:-1} PIN=${PIN:-1}
PROTOSERVE_BIN=${PROTOSERVE_BIN:-$ROOT/target/release/protoserve} BUILD=${BUILD:-0}
OUT=${OUT:-$BENCH/results/stubs} KEEP=${KEEP:-0}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(10 1000 100000)

die() { echo "stubs.sh: $*" >&2; exit 1; }
log() { echo "$*" >&2; }
for c in h2load taskset awk; do command -v "$c" >/dev/null || die "$c is missing"; done
for n in "${SIZES[@]}"; do [[ $n =~ ^[1-9][0-9]*$ ]] || die "N must be a positive integer, got '$n'"; done
if [ "$BUILD" = 1 ]; then
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin protoserve
fi
[ -x "$PROTOSERVE_BIN" ] || die "missing $PROTOSERVE_BIN (BUILD=1 builds it)"

SRV_PIN=() LG_PIN=()
if [ "$PIN" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SRV_PIN=(taskset -c "$SRV_CPUS") LG_PIN=(taskset -c "$LG_CPUS")
fi

WORK=$(mktemp -d /tmp/protoserve-stubs.XXXXXX)
PID=""
stop() {
  [ -n "$PID" ] || return 0
  kill -TERM -- "-$PID" 2>/dev/null || true
  for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$PID" 2>/dev/null || true
  wait "$PID" 2>/dev/null || true
  PID=""
}
cleanup() { stop; [ "$KEEP" = 1 ] && log "stub directories kept in $WORK" || rm -rf "$WORK"; }
trap cleanup EXIT
trap 'cleanup; exit 130' INT TERM
mkdir -p "$OUT"
RAW=$OUT/raw.tsv
: >"$RAW"

# GetUserRequest{user_id: "bench-user"} in a gRPC frame: flag 0, length 12, field 1 (0x0a), 10 bytes.
BODY=$WORK/GetUser.bin
printf '\x00\x00\x00\x00\x0c\x0a\x0abench-user' >"$BODY"
URL_PATH=/users.UserService/GetUser
H2=(h2load -H 'content-type: application/grpc' -H 'te: trailers' -d "$BODY")

# ---- stub files --------------------------------------------------------------------------
gen() { # n dir
  mkdir -p "$2"
  awk -v n="$1" -v per="$PER_FILE" -v dir="$2" 'BEGIN {
    for (i = 0; i < n; i++) {
      if (i % per == 0) { if (f) close(f); f = sprintf("%s/stubs-%05d.yaml", dir, i / per) }
      if (i == n - 1) {
        id = "bench-user"; name = "Bench"; email = "bench@example.com"
      } else {
        id = "u-" i; name = "User " i; email = "u" i "@example.com"
      }
      printf "- method: users.UserService/GetUser\n  match: {request: {equals: {user_id: %s}}}\n  answer: {message: {id: %s, name: %s, email: %s, age: 30}}\n", id, id, name, email > f
    }
  }'
}
for n in "${SIZES[@]}"; do gen "$n" "$WORK/n$n"; done
log "generated stubs in $WORK ($(du -sh "$WORK" | cut -f1))"

# ---- one measurement -----------------------------------------------------------------------
ms_now() { echo $(($(date +%s%N) / 1000000)); }
ok_data() { sed -nE 's/^traffic:.*\(([0-9]+)\) data$/\1/p'; }

measure() { # round n
  local round=$1 n=$2 logf="$OUT/server-n$2-r$1.log" t0 port="" probe ref tries=0 ready rss hwm out data secs rate
  : >"$logf"
  t0=$(ms_now)
  RUST_LOG=info,protoserve::rpc=off setsid "${SRV_PIN[@]}" "$PROTOSERVE_BIN" serve "$ROOT/schemas/users" \
    --stubs "$WORK/n$n" --no-watch --addr 127.0.0.1:0 >"$logf" 2>&1 </dev/null &
  PID=$!
  # The port from the "listening on" line, then the first good GetUser.
  while :; do
    kill -0 "$PID" 2>/dev/null || { log "  n=$n: the server exited (log: $logf)"; PID=""; return 1; }
    if [ -z "$port" ]; then
      port=$(sed -nE 's/.*listening on 127\.0\.0\.1:([0-9]+).*/\1/p' "$logf" | head -1)
    fi
    if [ -n "$port" ]; then
      probe=$(timeout 5 "${LG_PIN[@]}" "${H2[@]}" -n 1 -c 1 "http://127.0.0.1:$port$URL_PATH" 2>&1 || true)
      ref=$(ok_data <<<"$probe")
      [ -n "$ref" ] && [ "$ref" != 0 ] && break
    fi
    [ $((tries += 1)) -lt 6000 ] || { log "  n=$n: no good GetUser within 60 s (log: $logf)"; stop; return 1; }
    sleep 0.01
  done
  ready=$(($(ms_now) - t0))
  sleep 0.5
  local pid=$PID
  while [[ $(cat "/proc/$pid/comm" 2>/dev/null) =~ ^(setsid|taskset)$ ]]; do pid=$(pgrep -P "$pid" | head -1) || break; done
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status")
  hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$pid/status")
  local url="http://127.0.0.1:$port$URL_PATH"
  timeout $((WARMUP + 10)) "${LG_PIN[@]}" "${H2[@]}" -t 1 -c "$CONNS" -m "$STREAMS" -D "$WARMUP" "$url" >/dev/null 2>&1 || true
  out=$(timeout $((DURATION + 10)) "${LG_PIN[@]}" "${H2[@]}" -t 1 -c "$CONNS" -m "$STREAMS" -D "$DURATION" "$url" 2>&1 || true)
  data=$(ok_data <<<"$out")
  secs=$(sed -nE 's/^finished in ([0-9.]+)(m?s),.*/\1 \2/p' <<<"$out" | awk '{ print ($2 == "ms") ? $1 / 1000 : $1 }')
  stop
  if [ -z "$data" ] || [ -z "$secs" ]; then
    log "  n=$n: h2load failed: $(tail -3 <<<"$out" | tr '\n' ' ')"; return 1
  fi
  rate=$(awk -v d="$data" -v r="$ref" -v s="$secs" 'BEGIN { printf "%.0f", d / r / s }')
  printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$n" "$ready" "$rss" "$hwm" "$rate" >>"$RAW"
  log "$(printf '  n=%-7s start-up %6s ms  rss %6.1f MB  peak %6.1f MB  %8s ok/s' "$n" "$ready" \
    "$(awk -v k="$rss" 'BEGIN { print k / 1024 }')" "$(awk -v k="$hwm" 'BEGIN { print k / 1024 }')" "$rate")"
}

{
  echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
  echo "host: $(nproc) cores, $(lscpu | sed -nE 's/^Model name: *//p' | head -1)"
  echo "protoserve: $PROTOSERVE_BIN (work tree at $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'))"
  echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "settings: SIZES=${SIZES[*]} ROUNDS=$ROUNDS DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS STREAMS=$STREAMS PER_FILE=$PER_FILE pinned=$([ ${#SRV_PIN[@]} -gt 0 ] && echo yes || echo no)"
} | tee "$OUT/env.txt" >&2

for round in $(seq "$ROUNDS"); do
  log "== round $round/$ROUNDS"
  order=("${SIZES[@]}")
  if [ $((round % 2)) = 0 ]; then
    order=()
    for ((i = ${#SIZES[@]} - 1; i >= 0; i--)); do order+=("${SIZES[$i]}"); done
  fi
  for n in "${order[@]}"; do measure "$round" "$n" || true; done
done

# ---- table: medians over rounds; ratio = median of per-round ratios to the first N ----------
log "== medians over $ROUNDS rounds"
awk -F'\t' -v first="${SIZES[0]}" -v sizes="${SIZES[*]}" '
  function median(list,   a, k, t, i, j) {
    k = split(list, a, " ")
    for (i = 2; i <= k; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
    return k == 0 ? "" : (k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2)
  }
  { start[$2] = start[$2] " " $3; rss[$2] = rss[$2] " " $4; hwm[$2] = hwm[$2] " " $5
    rate[$2] = rate[$2] " " $6; byround[$1, $2] = $6; rounds[$1] = 1 }
  END {
    for (r in rounds) for (i = 1; i <= split(sizes, S, " "); i++)
      if (((r, first) in byround) && ((r, S[i]) in byround)) ratio[S[i]] = ratio[S[i]] " " byround[r, S[i]] / byround[r, first]
    printf "%10s %12s %12s %12s %12s %10s\n", "stubs", "start-up ms", "RSS MB", "peak MB", "GetUser/s", "ratio"
    for (i = 1; i <= split(sizes, S, " "); i++) {
      n = S[i]
      if (!(n in rate)) { printf "%10s %12s\n", n, "FAILED"; continue }
      printf "%10s %12.0f %12.1f %12.1f %12.0f %10.3f\n", n, median(start[n]), median(rss[n]) / 1024,
        median(hwm[n]) / 1024, median(rate[n]), median(ratio[n])
    }
  }' "$RAW" | tee "$OUT/table.txt"
