//! cargo-afl entry point for the `reply` target (see ../lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| replyflow_fuzz::Target::Reply.run_on_server_stack(data));
}
