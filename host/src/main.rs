fn main() -> std::process::ExitCode {
    // Before any thread exists: the allocator reads it when a thread first allocates.
    policy_server::memory::limit_allocator_arenas();
    policy_server::cli::main()
}
