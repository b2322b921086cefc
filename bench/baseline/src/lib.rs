//! Generated prost types and tonic stubs for `users.UserService`, shared by the
//! baseline server, the load client and the micro-benchmarks.
pub mod pb {
    #![allow(missing_debug_implementations, unreachable_pub)]
    tonic::include_proto!("users");
}
