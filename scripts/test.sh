#!/usr/bin/env bash
# The one test command: installs what the tests need, builds the release binary
# the interop tests run against, then runs every test.
#   - .venv: grpcio, grpcio-tools and grpcurl for the interop tests (tests/interop/requirements.txt)
#   - node_modules: the real `buf` CLI for the compat parity test, connect-web, protoc-gen-es
#     and esbuild for the browser test (package-lock.json)
#   - chromium (Debian package, installed when running as root) for the browser test
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
    echo "==> installing npm dev dependencies (buf, connect-web, esbuild)"
    npm ci --no-audit --no-fund --loglevel=error
    stamp package-lock.json > node_modules/.stamp
  fi
fi

# Headless Chromium for the browser test (tests/it/browser.rs): Debian's package.
if [ -z "${CHROMIUM:-}" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "==> installing chromium (browser test)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } ||
      echo "WARNING: could not install chromium: the browser test will fail" >&2
  else
    echo "WARNING: chromium is missing and this is not root: run 'apt-get install chromium' (Debian)" \
      "or set CHROMIUM=/path/to/chromium, else the browser test fails" >&2
  fi
fi

echo "==> building the release binary"
cargo build --release --locked
echo "==> running the tests"
PROTOSERVE_BIN="$PWD/target/release/protoserve" cargo test --locked "$@"
