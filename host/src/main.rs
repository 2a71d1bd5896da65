fn main() -> std::process::ExitCode {
    policy_server::cli::main()
}
