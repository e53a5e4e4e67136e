//! Service-to-service mTLS under `flotilla up`: on by default, internal listeners refuse
//! callers without a certificate from the system's CA, and the call policy holds.

use std::os::unix::fs::PermissionsExt;

use serde_json::Value;

use crate::harness::System;

#[tokio::test]
async fn internal_listeners_take_only_certified_callers_the_policy_allows() {
    let sys = System::start().await;

    // The dev CA and one certificate per service, keys readable by the owner only.
    let tls = sys.data.path().join("tls");
    for name in ["ca", "registry", "bus", "gateway", "orders", "operator"] {
        assert!(tls.join(format!("{name}.crt")).exists(), "{name}.crt");
        let mode = std::fs::metadata(tls.join(format!("{name}.key")))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}.key");
    }

    // No certificate: the registry does not answer plain HTTP, nor a TLS client
    // without a certificate.
    let plain = sys.registry.replace("https://", "http://");
    assert!(
        sys.http
            .get(format!("{plain}/v1/services"))
            .send()
            .await
            .is_err()
    );
    let anonymous = reqwest::Client::builder()
        .tls_danger_accept_invalid_certs(true)
        .build()
        .unwrap();
    assert!(
        anonymous
            .get(format!("{}/v1/services", sys.registry))
            .send()
            .await
            .is_err()
    );

    // The operator may use the registry, but not call a service directly.
    let inventory = &sys.instances("inventory").await[0];
    let addr = inventory["addr"].as_str().unwrap();
    let res = sys
        .operator
        .get(format!("https://{addr}/api/products/FLT-BOAT-001"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    let problem: Value = res.json().await.unwrap();
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("operator may not call inventory"),
        "{problem}"
    );

    // Meanwhile the gateway, allowed, reaches it over mTLS.
    let res = sys
        .http
        .get(format!("{}/api/products/FLT-BOAT-001", sys.gateway))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // And the commands speak as the operator.
    assert!(sys.cli(&["status"]).contains("inventory"));
}

#[tokio::test]
async fn the_insecure_switch_runs_the_whole_system_in_plain_text() {
    // `up` and every service start without certificates (and without panicking for
    // want of a TLS provider), and the internal listeners answer plain HTTP.
    let sys = System::start_with(&[("FLOTILLA_INSECURE_INTERNAL", "1")]).await;
    assert!(!sys.data.path().join("tls").join("ca.key").exists());
    let res = sys
        .http
        .get(format!("{}/v1/services", sys.registry))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let products: Value = sys
        .http
        .get(format!("{}/api/products/FLT-BOAT-001", sys.gateway))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(products["sku"], "FLT-BOAT-001");
}
