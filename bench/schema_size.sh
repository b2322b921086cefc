#!/usr/bin/env bash
# Startup, reload time and RSS of `protoserve serve` for generated schemas of
# N messages (bench/gen_schema.py: one file, five fields per message, a
# Get/Create/List method for every tenth message), next to the seed schema.
#   startup: spawn to "listening" (compile + snapshot build), RSS then
#   reload:  median of RELOADS reloads (a message appended, then SIGHUP; the
#            "total" of the server's own reload log line), peak RSS (VmHWM)
#            and RSS after the last reload
# Usage: bench/schema_size.sh [N...]   (default: 5000 10000 50000)
# Knobs: RELOADS (3), PROTOSERVE_BIN (target/release/protoserve).
# Binds 127.0.0.1 only (port chosen by the OS).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PROTOSERVE_BIN:-$root/target/release/protoserve}
reloads=${RELOADS:-3}
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(5000 10000 50000)
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 2; }
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

kb() { awk -v k="$2" '$1 == k":" {print $2}' "/proc/$1/status"; }
ms() { # a Rust Debug duration (12.3ms, 1.2s, 850.1µs) -> milliseconds
  awk -v d="$1" 'BEGIN { n = d + 0; if (d ~ /µs$/) n /= 1000; else if (d ~ /ms$/) n += 0; else if (d ~ /s$/) n *= 1000; printf "%.1f", n }'
}
wait_for() { # wait_for LOG PATTERN COUNT: until COUNT lines match (120 s at most)
  for _ in $(seq 1200); do
    [ "$(grep -c -- "$2" "$1" || true)" -ge "$3" ] && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$1" >&2; return 1; }
    sleep 0.1
  done
  echo "timed out waiting for '$2'" >&2; return 1
}

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) cores, $(uname -sr)  reloads: $reloads (median)  binary: $bin"
printf '%-10s %9s %9s %11s %12s %11s %13s %12s\n' schema messages "proto MB" "startup ms" "RSS start MB" "reload ms" "peak RSS MB" "RSS end MB"
for n in seed "${sizes[@]}"; do
  dir=$work/schema-$n
  if [ "$n" = seed ]; then
    mkdir -p "$dir" && cp "$root"/schemas/users/*.proto "$dir"/
    count=$(grep -c '^message ' "$dir"/*.proto | awk -F: '{s += $NF} END {print s}')
  else
    python3 "$root/bench/gen_schema.py" "$dir" "$n"
    count=$n
  fi
  size=$(du -cb "$dir"/*.proto | awk 'END {printf "%.2f", $1 / 1048576}')
  target=$(ls "$dir"/*.proto | head -1)
  log=$work/log-$n; : >"$log"
  t0=$(date +%s%N)
  RUST_LOG=protoserve=info "$bin" serve "$dir" --addr 127.0.0.1:0 --no-watch 2>"$log" >/dev/null &
  pid=$!
  wait_for "$log" "listening on" 1
  t1=$(date +%s%N)
  rss_start=$(kb "$pid" VmRSS)
  totals=()
  for i in $(seq "$reloads"); do
    printf '\nmessage BenchExtra%d { string id = 1; }\n' "$i" >>"$target"
    kill -HUP "$pid"
    wait_for "$log" "reload: generation" "$i"
    totals+=("$(ms "$(grep 'reload: generation' "$log" | tail -1 | sed -E 's/.*total ([0-9.]+[µm]?s)\).*/\1/')")")
  done
  reload=$(printf '%s\n' "${totals[@]}" | sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}')
  printf '%-10s %9s %9s %11d %12.1f %11s %13.1f %12.1f\n' "$n" "$count" "$size" $(((t1 - t0) / 1000000)) \
    "$(echo "$rss_start / 1024" | bc -l)" "$reload" "$(echo "$(kb "$pid" VmHWM) / 1024" | bc -l)" \
    "$(echo "$(kb "$pid" VmRSS) / 1024" | bc -l)"
  kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
done
