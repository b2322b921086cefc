#!/usr/bin/env bash
# The one test command: installs what the tests need, builds the release binary
# the interop tests run against, then runs every test.
#   - .venv: grpcio, grpcio-tools and grpcurl for the interop tests (tests/interop/requirements.txt)
#   - node_modules: the real `buf` CLI for the compat parity test (package-lock.json)
# Extra arguments go to `cargo test` (e.g. scripts/test.sh core::).
set -euo pipefail
cd "$(dirname "$0")/.."

stamp() { sha256sum "$1" | cut -d' ' -f1; }

req=tests/interop/requirements.txt
if [ ! -x .venv/bin/python ] || [ "$(cat .venv/.stamp 2>/dev/null)" != "$(stamp "$req")" ]; then
  echo "==> setting up .venv (Python interop clients)"
  python3 -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
  stamp "$req" > .venv/.stamp
fi

if [ -f package-lock.json ]; then
  if [ ! -d node_modules ] || [ "$(cat node_modules/.stamp 2>/dev/null)" != "$(stamp package-lock.json)" ]; then
    echo "==> installing npm dev dependencies (buf)"
    npm ci --no-audit --no-fund --loglevel=error
    stamp package-lock.json > node_modules/.stamp
  fi
fi

echo "==> building the release binary"
cargo build --release --locked
echo "==> running the tests"
PROTOSERVE_BIN="$PWD/target/release/protoserve" cargo test --locked "$@"
