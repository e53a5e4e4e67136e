fn main() -> std::process::ExitCode {
    kit::service::main("gateway", gateway::run)
}
