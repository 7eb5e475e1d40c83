//! The `dualwrite` binary: parse arguments, run the command, exit with its code.

fn main() {
    std::process::exit(dualwrite::cli::main());
}
