//! cargo-afl entry point for the `condition` target (see ../lib.rs).
fn main() {
    afl::fuzz!(|data: &[u8]| replyflow_fuzz::Target::Condition.run_on_server_stack(data));
}
