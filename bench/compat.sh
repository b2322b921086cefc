#!/usr/bin/env bash
# Wire-compatibility check time on generated schemas, protoserve vs buf, in the
# same run and on the same repository:
#   protoserve compat proto --against main
#   buf breaking proto --against '.git#branch=main,subdir=proto'   (WIRE)
# For each size N (messages; PER_FILE per file, default 10, 0 = all in one file;
# 6 fields each) a temporary git repo
# gets the schema committed on main, then a working-tree edit touching 1% of
# the messages (a widened field, a renamed field, a deleted field with its number
# reserved). Prints the median of RUNS wall-clock runs per tool and size.
# Usage: bench/compat.sh [N...]      (default: 2000 5000 10000)
# Needs: the release binary (cargo build --release) and node_modules/.bin/buf (npm ci).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${PROTOSERVE_BIN:-$root/target/release/protoserve}
buf=${BUF_BIN:-$root/node_modules/.bin/buf}
runs=${RUNS:-5}
sizes=("$@")
[ ${#sizes[@]} -eq 0 ] && sizes=(2000 5000 10000)
[ -x "$bin" ] || { echo "missing $bin: cargo build --release" >&2; exit 2; }
[ -x "$buf" ] || { echo "missing $buf: npm ci" >&2; exit 2; }

gen() { # gen DIR N EDITED(0|1)
  python3 - "$1" "$2" "$3" <<'EOF'
import os, sys
out, n, edited = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
per_file = int(os.environ.get("PER_FILE", "10")) or n
for f in range(0, (n + per_file - 1) // per_file):
    lines = ['syntax = "proto3";', f'package gen.f{f};', '']
    for m in range(f * per_file, min(n, (f + 1) * per_file)):
        touched = edited and m % 100 == 0
        lines.append(f'message M{m} {{')
        lines.append(f'  string id = 1;')
        lines.append(f'  {"int64" if touched else "int32"} count = 2;')
        lines.append(f'  string {"title" if touched else "name"} = 3;')
        if touched:
            lines.append('  reserved 4;')
        else:
            lines.append('  bool active = 4;')
        lines.append(f'  repeated string tags = 5;')
        lines.append(f'  map<string, int64> attrs = 6;')
        lines.append('}')
        lines.append('')
    with open(os.path.join(out, f'f{f:05}.proto'), 'w') as fh:
        fh.write('\n'.join(lines))
EOF
}

median_ms() { # median_ms CMD... -> wall-clock median in ms of $runs runs
  local times=() t0 t1
  for _ in $(seq "$runs"); do
    t0=$(date +%s%N)
    "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  machine: $(nproc) cores, $(uname -sr)  runs: $runs (median)"
echo "protoserve: $("$bin" --version)  buf: $("$buf" --version)"
printf '%-9s %-16s %-16s %s\n' messages "protoserve (ms)" "buf (ms)" "findings (protoserve / buf)"
for n in "${sizes[@]}"; do
  repo=$(mktemp -d)
  trap 'rm -rf "$repo"' EXIT
  (
    cd "$repo"
    git init -q -b main
    mkdir proto
    printf 'version: v1\nbreaking:\n  use: [WIRE]\n' > proto/buf.yaml
    gen proto "$n" 0
    git add -A
    git -c user.name=b -c user.email=b@example.com commit -q -m old
    rm proto/*.proto
    gen proto "$n" 1
  )
  cd "$repo"
  ours=$(median_ms "$bin" compat proto --against main)
  theirs=$(median_ms "$buf" breaking proto --against '.git#branch=main,subdir=proto')
  nours=$({ "$bin" compat proto --against main --format json || true; } | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["findings"]))')
  ntheirs=$({ "$buf" breaking proto --against '.git#branch=main,subdir=proto' --error-format json || true; } | grep -c . || true)
  printf '%-9s %-16s %-16s %s / %s\n' "$n" "$ours" "$theirs" "$nours" "$ntheirs"
  cd "$root"
  rm -rf "$repo"
  trap - EXIT
done
