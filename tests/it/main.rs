//! The one integration-test binary: a shared harness and one module per area.

#![allow(unreachable_pub)] // test helpers are shared across modules with `pub`

mod harness;

mod admin;
mod architecture;
mod browser;
mod call_core;
mod cli;
mod compat;
mod core;
mod data;
mod handler_api;
mod interop;
mod ops;
mod otlp;
mod reload;
mod store;
mod stubs;
mod testservice;
mod tls;
mod web;

/// The library example, compiled into the tests so they run its handlers.
#[path = "../../examples/users_service.rs"]
#[allow(dead_code)]
mod example;

/// The interceptor example, compiled into the tests so they run it.
#[path = "../../examples/auth_interceptor.rs"]
#[allow(dead_code)]
mod auth_example;
/// gRPC's interop TestService example, compiled into the tests so they run its handlers.
#[path = "../../examples/interop.rs"]
#[allow(dead_code)]
mod interop_example;
