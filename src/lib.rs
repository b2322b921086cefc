//! protoserve
