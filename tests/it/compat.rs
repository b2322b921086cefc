//! End-to-end tests for `protoserve compat`.
