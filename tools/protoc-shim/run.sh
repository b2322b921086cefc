#!/bin/sh
# PROTOC for build scripts: builds (once) and runs the protox-based shim beside this file.
set -e
here=$(cd "$(dirname "$0")" && pwd)
unset CARGO_TARGET_DIR CARGO_BUILD_TARGET RUSTC_WORKSPACE_WRAPPER
exec "${CARGO:-cargo}" run --quiet --manifest-path "$here/Cargo.toml" --target-dir "$here/target" -- "$@"
