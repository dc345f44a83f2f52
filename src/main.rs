fn main() -> std::process::ExitCode {
    runyard::cli::main()
}
