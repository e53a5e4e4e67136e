fn main() -> std::process::ExitCode {
    kit::service::main("orders", orders::run)
}
