//! cargo-afl entry point for the `token` target (see ../lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| replyflow_fuzz::Target::Token.run_on_server_stack(data));
}
