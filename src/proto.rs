//! The generated gRPC code, kept in one module, and the descriptor set that reflection serves.
#[allow(
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic,
    rustdoc::all
)]
pub mod pb {
    tonic::include_proto!("replyflow.v1");

    /// Encoded `FileDescriptorSet` of every proto file, for server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/replyflow_descriptor.bin"));
}
