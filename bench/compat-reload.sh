#!/usr/bin/env bash
# Reload time of a big one-file schema, where the compat check used to dominate:
# serves the N-message schema of bench/compat.sh (all in one file), swaps in the
# edited version, sends SIGHUP and measures until the log says the new
# generation is live (compile + compat check + build + swap + log).
# Usage: bench/compat-reload.sh [N...]   (default: 5000 10000)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PROTOSERVE_BIN:-$root/target/release/protoserve}
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 2; }
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(5000 10000)
gen=$(mktemp)
sed -n '/^import os, sys/,/^EOF$/p' "$root/bench/compat.sh" | sed '$d' > "$gen"
port=50700
for n in "${sizes[@]}"; do
  work=$(mktemp -d)
  mkdir "$work/old" "$work/new" "$work/live"
  PER_FILE=0 python3 "$gen" "$work/old" "$n" 0
  PER_FILE=0 python3 "$gen" "$work/new" "$n" 1
  cp "$work"/old/*.proto "$work/live/"
  port=$((port + 1))
  "$bin" serve "$work/live" --no-watch --addr "127.0.0.1:$port" > "$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 1200); do grep -q "127.0.0.1:$port" "$work/log" && break; sleep 0.05; done
  cp "$work"/new/*.proto "$work/live/"
  t0=$(date +%s%N)
  kill -HUP "$pid"
  for _ in $(seq 12000); do grep -q "generation 2 live" "$work/log" && break; sleep 0.01; done
  t1=$(date +%s%N)
  echo "messages=$n (one file): SIGHUP -> 'generation 2 live' $(( (t1 - t0) / 1000000 )) ms"
  kill "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$work"
done
rm -f "$gen"
