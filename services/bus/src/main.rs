fn main() -> std::process::ExitCode {
    kit::service::main("bus", bus::run)
}
