fn main() -> std::process::ExitCode {
    kit::service::main("analytics", analytics::run)
}
