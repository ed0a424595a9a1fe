//! The `dbmazz` binary: see `dbmazz --help`.

fn main() -> std::process::ExitCode {
    dbmazz::cli::main()
}
