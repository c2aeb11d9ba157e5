//! Compiles proto/*.proto with protox (pure Rust), so building needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build does not emit this itself; without it proto edits are ignored.
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["tidemark.proto"], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
