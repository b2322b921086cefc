#!/usr/bin/env bash
# Hot-reload figures for protoserve (loopback only, one process):
#   reload() latency (compile + check + build + swap) for the seed schema and a
#   generated 200-file / 2000-message schema, save -> serving through the file
#   watcher (includes the 100 ms debounce), and GetUser throughput and failures
#   while reloading every 20 ms. See examples/reload_bench.rs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
exec cargo run --quiet --release --manifest-path "$root/Cargo.toml" --example reload_bench
