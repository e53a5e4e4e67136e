//! `flotilla chaos run kill` against a running system: services SIGKILLed at random
//! under load, and the steady-state hypothesis holds afterwards — the load within its
//! error budget, every instance back, and no accepted order, payment or unit of stock
//! lost (`flotilla verify`'s invariants).

use serde_json::Value;

use crate::harness::{System, flotilla};

#[tokio::test]
async fn kills_under_load_keep_the_steady_state() {
    let mut sys = System::start().await;
    let report = tempfile::tempdir().unwrap();
    let out = sys.cli(&[
        "chaos",
        "run",
        "kill",
        "--duration",
        "18s",
        "--rate",
        "5",
        "--every",
        "3s..5s",
        "--seed",
        "10",
        "--users",
        "3",
        "--scenario",
        "browse=2,order=3,cancel=1",
        "--stock",
        "1000",
        "--gateway",
        &sys.gateway,
        "--report",
        report.path().to_str().unwrap(),
    ]);
    println!("{out}");
    sys.remember_pids().await;
    assert!(
        out.contains("verdict: the steady-state hypothesis holds"),
        "{out}\n{}",
        sys.logs()
    );
    for hypothesis in [
        "holds        steady state before",
        "holds        error budget",
        "holds        every instance killed was restarted",
        "holds        steady state after",
        "holds        every accepted order is CONFIRMED or CANCELLED, once",
        "holds        a confirmed order has one captured payment",
        "holds        stock accounts for every order",
    ] {
        assert!(out.contains(hypothesis), "{hypothesis}: {out}");
    }

    let chaos: Value =
        serde_json::from_slice(&std::fs::read(report.path().join("chaos.json")).unwrap()).unwrap();
    let kills: Vec<&Value> = chaos["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["killed"] == true)
        .collect();
    assert!(kills.len() >= 3, "{chaos:#}");
    for k in &kills {
        assert_ne!(
            k["target"], "gateway",
            "the gateway is not killed at random"
        );
        assert_ne!(k["target"], "bus");
        assert!(k["back_after_s"].as_f64().is_some(), "{k}");
    }
    assert_eq!(chaos["seed"], 10);
    assert!(report.path().join("report.json").exists());
}

#[tokio::test]
async fn killing_payments_and_inventory_mid_saga_loses_no_order_money_stock_or_event() {
    // Slow payments keep sagas in flight across each kill.
    let mut sys = System::start_with(&[("FLOTILLA_PAYMENTS__PROVIDER_LATENCY", "100ms")]).await;
    let report = tempfile::tempdir().unwrap();
    let out = sys.cli(&[
        "chaos",
        "run",
        "kill",
        "--service",
        "payments,inventory",
        "--duration",
        "20s",
        "--rate",
        "6",
        "--every",
        "3s..4s",
        "--seed",
        "7",
        "--users",
        "3",
        "--scenario",
        "order=4,cancel=1",
        "--stock",
        "1000",
        "--gateway",
        &sys.gateway,
        "--report",
        report.path().to_str().unwrap(),
    ]);
    println!("{out}");
    sys.remember_pids().await;
    for hypothesis in [
        "holds        every instance killed was restarted",
        "holds        every accepted order is CONFIRMED or CANCELLED, once",
        "holds        a confirmed order has one captured payment",
        "holds        stock accounts for every order",
        "holds        no reservation outlives its TTL",
        "holds        every event was applied exactly once by each consumer group",
        "holds        no dead letters",
    ] {
        assert!(
            out.contains(hypothesis),
            "{hypothesis}: {out}\n{}",
            sys.logs()
        );
    }
    let chaos: Value =
        serde_json::from_slice(&std::fs::read(report.path().join("chaos.json")).unwrap()).unwrap();
    let killed: Vec<&str> = chaos["actions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["killed"] == true)
        .filter_map(|a| a["target"].as_str())
        .collect();
    assert!(killed.contains(&"payments"), "{killed:?}");
    assert!(killed.contains(&"inventory"), "{killed:?}");
    assert!(
        killed
            .iter()
            .all(|k| matches!(*k, "payments" | "inventory")),
        "{killed:?}"
    );
}

#[tokio::test]
async fn store_restart_needs_the_infra_profile() {
    let sys = System::start().await;
    let mut cmd = flotilla();
    sys.env(&mut cmd);
    let out = cmd
        .args(["chaos", "run", "store-restart"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("needs the infra profile"), "{err}");
}
