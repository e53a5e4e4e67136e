fn main() -> std::process::ExitCode {
    kit::service::main("users", users::run)
}
