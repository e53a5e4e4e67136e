//! The services this binary can run, in the order `up` starts them.

use std::process::ExitCode;

/// Every service, registry first (others register with it), then the event bus (others
/// publish to it), then the dashboard (every other service exports its traces and logs
/// to it from its start), users before auth (auth creates profiles in it), the event consumers
/// (notifications, analytics) after the producers, gateway last.
pub const NAMES: &[&str] = &[
    "registry",
    "bus",
    "dashboard",
    "users",
    "auth",
    "inventory",
    "payments",
    "orders",
    "notifications",
    "analytics",
    "gateway",
];

/// Runs one service in the foreground until SIGINT/SIGTERM.
pub fn run(name: &str) -> ExitCode {
    match name {
        "registry" => kit::service::main("registry", registry::run),
        "bus" => kit::service::main("bus", bus::run),
        "dashboard" => kit::service::main("dashboard", dashboard::run),
        "users" => kit::service::main("users", users::run),
        "auth" => kit::service::main("auth", auth::run),
        "inventory" => kit::service::main("inventory", inventory::run),
        "payments" => kit::service::main("payments", payments::run),
        "orders" => kit::service::main("orders", orders::run),
        "notifications" => kit::service::main("notifications", notifications::run),
        "analytics" => kit::service::main("analytics", analytics::run),
        "gateway" => kit::service::main("gateway", gateway::run),
        other => {
            eprintln!("unknown service {other:?}; expected one of {NAMES:?}");
            ExitCode::from(kit::config::EX_USAGE as u8)
        }
    }
}
