//! `flotilla up`, `status` and `run` end to end.

use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{System, alive, flotilla, free_port};

#[tokio::test]
async fn up_serves_survives_a_crash_and_stops_cleanly() {
    let mut sys = System::start().await;

    // The whole catalog through the gateway, page by page.
    let mut count = 0;
    let mut url = format!("{}/api/products?limit=10", sys.gateway);
    loop {
        let page: Value = sys
            .http
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        count += page["items"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => url = format!("{}/api/products?limit=10&cursor={c}", sys.gateway),
            None => break,
        }
    }
    assert!(count >= 20, "demo catalog seeded: {count}");

    // Kill inventory outright; the supervisor restarts it and traffic recovers.
    let before = sys.instances("inventory").await;
    assert_eq!(before.len(), 1);
    let old_id = before[0]["id"].as_str().unwrap().to_owned();
    let old_pid: u32 = before[0]["metadata"]["pid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    kill(Pid::from_raw(old_pid as i32), Signal::SIGKILL).unwrap();
    let killed = Instant::now();
    let mut failures = 0;
    loop {
        let ok = sys
            .http
            .get(format!("{}/api/products/FLT-BOAT-001", sys.gateway))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        let new_pid_serving = sys.instances("inventory").await.iter().any(|i| {
            i["healthy"] == true && i["metadata"]["pid"].as_str() != Some(&old_pid.to_string())
        });
        if ok && new_pid_serving {
            break;
        }
        failures += 1;
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "not recovered within 10 s ({failures} failed polls); logs:\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("recovered {:?} after SIGKILL", killed.elapsed());

    // The registry drops the dead instance once its lease (1 s here) runs out.
    let deadline = Instant::now() + Duration::from_secs(10);
    while sys
        .instances("inventory")
        .await
        .iter()
        .any(|i| i["id"] == old_id.as_str())
    {
        assert!(Instant::now() < deadline, "dead instance still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sys.remember_pids().await;

    // The registry itself crashes: clients keep their last known instances, and the
    // services register again once the supervisor has restarted it.
    let registry = sys.instances("registry").await;
    let registry_pid: u32 = registry[0]["metadata"]["pid"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    kill(Pid::from_raw(registry_pid as i32), Signal::SIGKILL).unwrap();
    for _ in 0..10 {
        let res = sys
            .http
            .get(format!("{}/api/products/FLT-BOAT-001", sys.gateway))
            .send()
            .await
            .unwrap();
        assert_eq!(
            res.status(),
            200,
            "the gateway keeps routing while the registry is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let back = sys
            .operator
            .get(format!("{}/v1/services/inventory", sys.registry))
            .send()
            .await
            .ok()
            .filter(|r| r.status() == 200);
        if let Some(r) = back {
            let v: Value = r.json().await.unwrap();
            if v["instances"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["healthy"] == true))
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "services did not re-register; logs:\n{}",
            sys.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let res = sys
        .http
        .get(format!("{}/api/products/FLT-BOAT-001", sys.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    sys.remember_pids().await;

    // `flotilla status` sees it all, with memory per process.
    let mut status = flotilla();
    sys.env(&mut status);
    let out = status.arg("status").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "status failed: {text}");
    for service in ["registry", "inventory", "gateway"] {
        assert!(text.contains(service), "{text}");
    }
    assert!(text.contains("MiB") && text.contains("total RSS"), "{text}");

    // SIGINT stops everything and leaves no process behind.
    let pids = sys.pids().to_vec();
    assert!(
        pids.len() >= 4,
        "registry, gateway, two inventories: {pids:?}"
    );
    let exit = sys.interrupt();
    assert!(exit.success(), "flotilla up exit: {exit}");
    for pid in pids {
        assert!(!alive(pid), "process {pid} survived the stop");
    }

    // And `status` now says the system is down.
    let mut status = flotilla();
    sys.env(&mut status);
    assert!(!status.arg("status").output().unwrap().status.success());
}

#[tokio::test]
async fn a_taken_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = flotilla()
        .args(["up", "--data-dir"])
        .arg(dir.path())
        .env("FLOTILLA_GATEWAY__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "FLOTILLA_REGISTRY__LISTEN",
            format!("127.0.0.1:{}", free_port()),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&port.to_string()) && err.contains("FLOTILLA_GATEWAY__LISTEN"),
        "{err}"
    );
}

#[tokio::test]
async fn bad_configuration_names_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    // No certificate where the service looks for it: mTLS is not optional.
    let out = flotilla()
        .args(["run", "inventory"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_DISCOVERY", "static://")
        .env_remove("FLOTILLA_INSECURE_INTERNAL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLOTILLA_TLS__CA"), "{err}");

    // The rest is about other settings.
    let out = flotilla()
        .args(["run", "inventory"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_INSECURE_INTERNAL", "1")
        .env("FLOTILLA_DISCOVERY", "static://")
        .env("FLOTILLA_INVENTORY__STORE", "mongodb://localhost/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("FLOTILLA_INVENTORY__STORE"), "{err}");

    let out = flotilla()
        .args(["run", "gateway"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_INSECURE_INTERNAL", "1")
        .env("FLOTILLA_DISCOVERY", "consul://x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOTILLA_DISCOVERY"));

    let out = flotilla()
        .args(["run", "gateway"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_INSECURE_INTERNAL", "1")
        .env("FLOTILLA_GATEWAY__LISTEN", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOTILLA_GATEWAY__LISTEN"));

    let out = flotilla()
        .args(["run", "inventory"])
        .env("FLOTILLA_DATA_DIR", dir.path())
        .env("FLOTILLA_INSECURE_INTERNAL", "1")
        .env("FLOTILLA_DISCOVERY", "static://")
        .env("FLOTILLA_INVENTORY__STORE", "redis://127.0.0.1:1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "unreachable store");
    assert!(String::from_utf8_lossy(&out.stderr).contains("FLOTILLA_INVENTORY__STORE"));
}

#[tokio::test]
async fn the_gateway_publishes_one_openapi_document_covering_every_route() {
    let sys = System::start().await;
    // Instances appear in the gateway's view as discovery reports them: poll briefly.
    let deadline = Instant::now() + Duration::from_secs(15);
    let doc = loop {
        let doc: Value = sys
            .http
            .get(format!("{}/openapi.json", sys.gateway))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let missing = doc["x-flotilla-unavailable"].as_array().map_or(0, Vec::len);
        if missing == 0 || Instant::now() > deadline {
            break doc;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"), "{doc}");
    assert_eq!(
        doc["x-flotilla-unavailable"],
        serde_json::json!([]),
        "{doc}"
    );
    let paths: Vec<&String> = doc["paths"].as_object().unwrap().keys().collect();
    for route in gateway::routes::default_routes() {
        assert!(
            paths
                .iter()
                .any(|p| *p == &route.prefix || p.starts_with(&format!("{}/", route.prefix))),
            "route {} is not in the document: {paths:?}",
            route.prefix
        );
    }
    let docs = sys
        .http
        .get(format!("{}/docs", sys.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    assert!(docs.text().await.unwrap().contains("/openapi.json"));
    // Stopping is covered by the test above; dropping `sys` stops this system.
}
