//! Generates the prost types and tonic stubs from `proto/users.proto`, compiled
//! in-process by protox (no protoc needed).
fn main() -> anyhow::Result<()> {
    let proto = "proto/users.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
