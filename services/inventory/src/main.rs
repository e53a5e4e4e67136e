fn main() -> std::process::ExitCode {
    kit::service::main("inventory", inventory::run)
}
