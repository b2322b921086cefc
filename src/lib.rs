//! protoserve: a gRPC server whose schema is data.
pub mod compat;
pub mod schema;
