fn main() -> std::process::ExitCode {
    kit::service::main("dashboard", dashboard::run)
}
