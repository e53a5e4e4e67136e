fn main() -> std::process::ExitCode {
    kit::service::main("auth", auth::run)
}
