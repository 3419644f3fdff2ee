//! cargo-afl entry point for the `inbound` target (see ../lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| replyflow_fuzz::Target::Inbound.run_on_server_stack(data));
}
