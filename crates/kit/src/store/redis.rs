//! Redis: connection manager with timeouts; reconnects by itself after failures.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{StoreError, redact};

/// Connects to `url` (`redis://host:port/db`), failing fast if the server is not there.
pub async fn connect(url: &str, setting: &str) -> Result<ConnectionManager, StoreError> {
    let connect_err = |e: redis::RedisError| StoreError::Connect {
        setting: setting.to_owned(),
        url: redact(url),
        source: Box::new(e),
    };
    let client = redis::Client::open(url).map_err(connect_err)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2);
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_connection_manager_with_config(config),
    )
    .await
    .map_err(|_| StoreError::Connect {
        setting: setting.to_owned(),
        url: redact(url),
        source: "timed out after 5s".into(),
    })?
    .map_err(connect_err)?;
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .map_err(connect_err)?;
    Ok(conn)
}
