//! Real non-Rust clients against the release binary (set up by scripts/test.sh).
