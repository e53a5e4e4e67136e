fn main() -> std::process::ExitCode {
    kit::service::main("notifications", notifications::run)
}
