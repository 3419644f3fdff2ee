//! Compiles `proto/replyflow/v1/*.proto` without a system `protoc`: protox parses the files into a
//! descriptor set, tonic-prost-build generates the code from it, and the encoded set is written to
//! `OUT_DIR` for server reflection (compile_fds does not write it).
use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let mut files: Vec<PathBuf> = fs::read_dir("proto/replyflow/v1")?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "proto"))
        .collect();
    files.sort();
    let fds = protox::compile(&files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("replyflow_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // ApprovalService and ReminderService answer UNIMPLEMENTED until their issues land.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    Ok(())
}
