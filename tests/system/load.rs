//! `flotilla load` against a running system: a few seconds at a low rate of every
//! scenario (after restocking every product), then the report it wrote, then
//! `flotilla verify` over what the load did.

use serde_json::Value;

use crate::harness::{System, flotilla};

#[tokio::test]
async fn load_runs_every_scenario_and_writes_its_report() {
    let sys = System::start().await;
    let report = tempfile::tempdir().unwrap();
    let dir = report.path().to_str().unwrap();
    let table = sys.cli(&[
        "load",
        "--gateway",
        &sys.gateway,
        "--rate",
        "8",
        "--duration",
        "4s",
        "--users",
        "3",
        "--scenario",
        "browse=4,order=3,cancel=1,login=1,register=1,summary=1",
        "--stock",
        "500",
        "--report",
        dir,
    ]);
    assert!(table.contains("GET /api/products/{sku}"), "{table}");

    let json: Value =
        serde_json::from_slice(&std::fs::read(report.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(json["arrivals"], 32, "{json:#}");
    assert!(json["ok"].as_u64().unwrap() > 0, "{json:#}");
    assert_eq!(
        json["errors_by_status"],
        serde_json::json!({}),
        "unexpected errors: {json:#}\n{}",
        sys.logs()
    );
    // Requests are counted by route template, not by the raw path.
    let endpoints: Vec<&str> = json["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["endpoint"].as_str().unwrap())
        .collect();
    assert!(endpoints.contains(&"POST /api/orders"), "{endpoints:?}");
    assert!(
        endpoints.iter().all(|e| !e.contains("FLT-")),
        "{endpoints:?}"
    );
    let svg = std::fs::read_to_string(report.path().join("chart.svg")).unwrap();
    assert!(svg.starts_with("<svg"));
}

#[tokio::test]
async fn verify_finds_no_violation_after_load() {
    let sys = System::start().await;
    let report = tempfile::tempdir().unwrap();
    sys.cli(&[
        "load",
        "--gateway",
        &sys.gateway,
        "--rate",
        "10",
        "--duration",
        "3s",
        "--users",
        "3",
        "--scenario",
        "order=3,cancel=1",
        "--stock",
        "500",
        "--report",
        report.path().to_str().unwrap(),
    ]);

    let mut cmd = flotilla();
    sys.env(&mut cmd);
    let out = cmd.args(["verify", "--deadline", "30s"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("VIOLATED"), "{text}\n{}", sys.logs());
    assert!(
        text.contains("holds        every accepted order is CONFIRMED or CANCELLED"),
        "{text}"
    );
    assert!(
        text.contains("holds        stock accounts for every order"),
        "{text}"
    );
    assert!(
        text.contains("holds        every event was applied exactly once by each consumer group"),
        "{text}"
    );
    assert_eq!(out.status.code(), Some(0), "{text}");
}
