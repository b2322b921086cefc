//! protoserve: a gRPC server whose schema is data.
pub mod schema;
