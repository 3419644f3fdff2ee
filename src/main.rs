//! The `replyflow` binary: parse the command line and hand over to [`replyflow::cli`].
fn main() -> std::process::ExitCode {
    replyflow::cli::main()
}
