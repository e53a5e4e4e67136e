fn main() -> std::process::ExitCode {
    kit::service::main("payments", payments::run)
}
