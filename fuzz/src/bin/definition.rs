//! cargo-afl entry point for the `definition` target (see ../lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| replyflow_fuzz::Target::Definition.run_on_server_stack(data));
}
