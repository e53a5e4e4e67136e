fn main() -> std::process::ExitCode {
    kit::service::main("registry", registry::run)
}
