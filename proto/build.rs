//! Generates the tonic/prost code for hanse.v1. protoc comes from the protoc-bin-vendored
//! crate unless PROTOC is set, so no system protoc is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded; nothing else reads the environment now.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    tonic_prost_build::configure()
        // Keeps RequestError small: it travels as the error side of many results.
        .boxed(".hanse.v1.NotLeader.descriptor")
        .compile_protos(
            &[
                "hanse/v1/kv.proto",
                "hanse/v1/raft.proto",
                "hanse/v1/admin.proto",
            ],
            &["."],
        )?;
    Ok(())
}
