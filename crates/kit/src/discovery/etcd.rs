//! etcd v3 as a discovery backend: `etcd://host:port[,host:port…][?prefix=/flotilla]`
//! (a host without a port means 2379).
//!
//! Keys (under the prefix, `/flotilla` by default):
//!
//! - `<prefix>/services/<service>/<instance-id>`: the JSON of the [`Instance`], attached
//!   to the instance's lease, so a process that dies without deregistering disappears
//!   when its lease runs out (the lease TTL is `lease_ttl` in whole seconds, at least 2).
//! - `<prefix>/traffic/<service>`: the JSON of the service's [`TrafficPolicy`].
//!
//! The client speaks etcd's native gRPC API (KV, Lease, Watch) over tonic, generated
//! from a copy of etcd's own `.proto` files at build time, so nothing but Rust is needed
//! to build it. Plain HTTP/2 only: etcd with client TLS or authentication is not
//! supported yet.
//!
//! [`EtcdResolver`] reads a service with one range and waits for changes with a watch
//! from the revision it last saw. [`EtcdRegistration`] keeps one instance's lease alive
//! over a `LeaseKeepAlive` stream and grants a new lease (and writes the key again) when
//! etcd lost it.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use super::registry::ServiceEntry;
use super::traffic::TrafficPolicy;
use super::{BoxFuture, DiscoveryError, Instance, Resolver, Snapshot};
use crate::config::ConfigError;

/// Code generated from etcd's protos (`proto/etcd`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
}

use pb::etcdserverpb::kv_client::KvClient;
use pb::etcdserverpb::lease_client::LeaseClient;
use pb::etcdserverpb::watch_client::WatchClient;
use pb::etcdserverpb::{
    DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
    LeaseRevokeRequest, PutRequest, RangeRequest, RangeResponse, WatchCreateRequest, WatchRequest,
    watch_request,
};

/// The client port of a host the URL names without one.
pub const DEFAULT_PORT: u16 = 2379;

/// The key prefix when the URL names none.
pub const DEFAULT_PREFIX: &str = "/flotilla";

/// How long a watch waits for a change before answering with a fresh read anyway.
pub const WATCH_WAIT: Duration = Duration::from_secs(20);

/// Longest any single etcd call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// An unchanged registration is written again this often (its live facts, `rss_bytes`,
/// are refreshed then), rather than at every heartbeat: every write wakes every watcher.
const REFRESH: Duration = Duration::from_secs(30);

/// A client of an etcd cluster, for one key prefix. Cheap to clone.
#[derive(Clone)]
pub struct EtcdClient {
    inner: Arc<Inner>,
}

struct Inner {
    /// `host:port,host:port`, for messages.
    hosts: String,
    prefix: String,
    endpoints: Vec<Endpoint>,
    /// Built at first use, inside the runtime (tonic spawns the connection's task).
    channel: OnceLock<Channel>,
}

impl std::fmt::Debug for EtcdClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdClient")
            .field("hosts", &self.inner.hosts)
            .field("prefix", &self.inner.prefix)
            .finish()
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end`).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether `part` can be one segment of a key (a service name or an instance id).
fn valid_segment(part: &str) -> bool {
    !part.is_empty() && !part.contains('/')
}

impl EtcdClient {
    /// A client for `etcd://host[:port][,host[:port]…][?prefix=/flotilla]` (port 2379
    /// unless given); connects at the first call (a cluster that is down is an error of
    /// that call, not of this one).
    pub fn from_url(url: &str, setting: &str) -> Result<Self, ConfigError> {
        let bad = super::setting_error(setting);
        let rest = url
            .strip_prefix("etcd://")
            .ok_or_else(|| ConfigError::UnknownScheme {
                setting: setting.to_owned(),
                url: url.to_owned(),
                expected: "etcd://host:port[,host:port…]",
            })?;
        let (hosts, query) = rest.split_once('?').unwrap_or((rest, ""));
        let hosts = hosts.trim_end_matches('/');
        let mut prefix = DEFAULT_PREFIX.to_owned();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("prefix", p)) if p.starts_with('/') && !p.contains("//") => {
                    prefix = p.trim_end_matches('/').to_owned();
                }
                Some(("prefix", p)) => {
                    return Err(bad(format!(
                        "prefix={p:?} must be a key path starting with '/'"
                    )));
                }
                _ => return Err(bad(format!("unknown etcd:// option {pair:?}"))),
            }
        }
        let mut endpoints = Vec::new();
        for host in hosts.split(',').map(str::trim) {
            let host = if host.contains(':') {
                host.to_owned()
            } else {
                format!("{host}:{DEFAULT_PORT}")
            };
            if !super::is_host_port(&host) || host.contains('/') {
                return Err(bad(format!(
                    "{host:?} in {url:?} is not host[:port] (etcd://host:port[,host:port…])"
                )));
            }
            let endpoint = Endpoint::from_shared(format!("http://{host}"))
                .map_err(|e| bad(format!("{host:?}: {e}")))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            endpoints.push(endpoint);
        }
        Ok(Self {
            inner: Arc::new(Inner {
                hosts: hosts.to_owned(),
                prefix,
                endpoints,
                channel: OnceLock::new(),
            }),
        })
    }

    /// The cluster's `host:port` list, as the URL gave it.
    pub fn hosts(&self) -> &str {
        &self.inner.hosts
    }

    /// The key prefix everything lives under (`/flotilla`).
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn channel(&self) -> Channel {
        self.inner
            .channel
            .get_or_init(|| match self.inner.endpoints.as_slice() {
                [one] => one.connect_lazy(),
                many => Channel::balance_list(many.iter().cloned()),
            })
            .clone()
    }

    fn err(&self, message: impl std::fmt::Display) -> DiscoveryError {
        DiscoveryError::Backend {
            backend: format!("etcd {}", self.inner.hosts),
            message: message.to_string(),
        }
    }

    /// Runs one call with [`CALL_TIMEOUT`].
    async fn call<T>(
        &self,
        what: &str,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, DiscoveryError> {
        match tokio::time::timeout(CALL_TIMEOUT, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.err(format!("{what}: {}", status_text(&status)))),
            Err(_) => Err(self.err(format!("{what} timed out after {CALL_TIMEOUT:?}"))),
        }
    }

    fn services_key(&self) -> String {
        format!("{}/services/", self.inner.prefix)
    }

    fn service_key(&self, service: &str) -> String {
        format!("{}/services/{service}/", self.inner.prefix)
    }

    fn instance_key(&self, service: &str, id: &str) -> String {
        format!("{}/services/{service}/{id}", self.inner.prefix)
    }

    fn traffic_key(&self, service: &str) -> String {
        format!("{}/traffic/{service}", self.inner.prefix)
    }

    /// Keys from `key` (every key under it with `prefix`), at `revision` (0: now).
    async fn range(
        &self,
        key: &str,
        prefix: bool,
        revision: i64,
    ) -> Result<RangeResponse, DiscoveryError> {
        let request = RangeRequest {
            key: key.as_bytes().to_vec(),
            range_end: if prefix { prefix_end(key) } else { Vec::new() },
            revision,
            ..RangeRequest::default()
        };
        self.call("range", KvClient::new(self.channel()).range(request))
            .await
    }

    async fn put(&self, key: &str, value: Vec<u8>, lease: i64) -> Result<(), DiscoveryError> {
        let request = PutRequest {
            key: key.as_bytes().to_vec(),
            value,
            lease,
            ..PutRequest::default()
        };
        self.call("put", KvClient::new(self.channel()).put(request))
            .await
            .map(drop)
    }

    async fn delete(&self, key: &str) -> Result<(), DiscoveryError> {
        let request = DeleteRangeRequest {
            key: key.as_bytes().to_vec(),
            ..DeleteRangeRequest::default()
        };
        self.call(
            "delete",
            KvClient::new(self.channel()).delete_range(request),
        )
        .await
        .map(drop)
    }

    /// Removes instance `id` of `service` now, without waiting for its lease (what a
    /// supervisor does for a process it saw die).
    pub async fn remove_instance(&self, service: &str, id: &str) -> Result<(), DiscoveryError> {
        self.delete(&self.instance_key(service, id)).await
    }

    /// One service: its instances and traffic rules, read at one revision (which is the
    /// entry's `index`).
    pub async fn service(&self, service: &str) -> Result<ServiceEntry, DiscoveryError> {
        if !valid_segment(service) {
            return Err(self.err(format!("{service:?} is not a service name")));
        }
        let instances = self.range(&self.service_key(service), true, 0).await?;
        let revision = instances.header.as_ref().map_or(0, |h| h.revision);
        let traffic = self
            .range(&self.traffic_key(service), false, revision)
            .await?;
        Ok(ServiceEntry {
            name: service.to_owned(),
            instances: instances
                .kvs
                .iter()
                .filter_map(|kv| decode_instance(&kv.key, &kv.value))
                .collect(),
            index: u64::try_from(revision).unwrap_or(0),
            traffic: traffic
                .kvs
                .first()
                .and_then(|kv| decode_traffic(&kv.key, &kv.value)),
        })
    }

    /// Every service with at least one instance, by name, with its traffic rules.
    pub async fn services(&self) -> Result<Vec<ServiceEntry>, DiscoveryError> {
        let all = self.range(&self.services_key(), true, 0).await?;
        let revision = all.header.as_ref().map_or(0, |h| h.revision);
        let rules = self
            .range(&format!("{}/traffic/", self.inner.prefix), true, revision)
            .await?;
        let index = u64::try_from(revision).unwrap_or(0);
        let mut services: BTreeMap<String, ServiceEntry> = BTreeMap::new();
        let services_key = self.services_key();
        for kv in &all.kvs {
            let Some(name) = String::from_utf8_lossy(&kv.key)
                .strip_prefix(services_key.as_str())
                .and_then(|rest| rest.split_once('/'))
                .map(|(name, _)| name.to_owned())
            else {
                continue;
            };
            let Some(instance) = decode_instance(&kv.key, &kv.value) else {
                continue;
            };
            services
                .entry(name.clone())
                .or_insert_with(|| ServiceEntry {
                    name,
                    instances: Vec::new(),
                    index,
                    traffic: None,
                })
                .instances
                .push(instance);
        }
        let traffic_key = self.traffic_key("");
        for kv in &rules.kvs {
            let key = String::from_utf8_lossy(&kv.key);
            if let Some(entry) = key
                .strip_prefix(traffic_key.as_str())
                .and_then(|name| services.get_mut(name))
            {
                entry.traffic = decode_traffic(&kv.key, &kv.value);
            }
        }
        Ok(services.into_values().collect())
    }

    /// Sets the traffic rules of `service` (`None` removes them); rules that
    /// [`TrafficPolicy::validate`] refuses are not written.
    pub async fn set_traffic(
        &self,
        service: &str,
        traffic: Option<&TrafficPolicy>,
    ) -> Result<(), DiscoveryError> {
        if !valid_segment(service) {
            return Err(self.err(format!("{service:?} is not a service name")));
        }
        let key = self.traffic_key(service);
        match traffic {
            Some(rules) => {
                rules
                    .validate()
                    .map_err(|e| self.err(format!("invalid traffic rules: {e}")))?;
                let value = serde_json::to_vec(rules).map_err(|e| self.err(e))?;
                self.put(&key, value, 0).await
            }
            None => self.delete(&key).await,
        }
    }

    /// Waits until the instances or traffic rules of `service` may have changed after
    /// `revision`, or [`WATCH_WAIT`] passed.
    async fn changed_after(&self, service: &str, revision: u64) -> Result<(), DiscoveryError> {
        let start = i64::try_from(revision).unwrap_or(i64::MAX - 1) + 1;
        let create = |watch_id: i64, key: String, prefix: bool| WatchRequest {
            request_union: Some(watch_request::RequestUnion::CreateRequest(
                WatchCreateRequest {
                    range_end: if prefix { prefix_end(&key) } else { Vec::new() },
                    key: key.into_bytes(),
                    start_revision: start,
                    watch_id,
                    ..WatchCreateRequest::default()
                },
            )),
        };
        let requests = [
            create(1, self.service_key(service), true),
            create(2, self.traffic_key(service), false),
        ];
        // The request side stays open: closing it could end the watches.
        let outbound = futures_util::StreamExt::chain(
            futures_util::stream::iter(requests),
            futures_util::stream::pending(),
        );
        let mut watches = WatchClient::new(self.channel());
        let mut events = self.call("watch", watches.watch(outbound)).await?;
        let deadline = tokio::time::sleep(WATCH_WAIT);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                message = events.message() => match message {
                    // A watch that etcd cancels (its start was compacted away) also calls
                    // for a fresh read.
                    Ok(Some(r)) if !r.events.is_empty() || r.canceled => return Ok(()),
                    Ok(Some(_)) => {}
                    Ok(None) => return Err(self.err("the watch stream ended")),
                    Err(status) => {
                        return Err(self.err(format!("watch: {}", status_text(&status))));
                    }
                },
                () = &mut deadline => return Ok(()),
            }
        }
    }
}

/// A status as one line: its code, and its message where it has one.
fn status_text(status: &tonic::Status) -> String {
    let source = std::error::Error::source(status)
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    if status.message().is_empty() {
        format!("{:?}{source}", status.code())
    } else {
        format!("{:?}: {}{source}", status.code(), status.message())
    }
}

fn decode_instance(key: &[u8], value: &[u8]) -> Option<Instance> {
    serde_json::from_slice(value)
        .inspect_err(|e| {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "ignoring an etcd key that is not an instance");
        })
        .ok()
}

fn decode_traffic(key: &[u8], value: &[u8]) -> Option<TrafficPolicy> {
    serde_json::from_slice::<TrafficPolicy>(value)
        .map_err(|e| e.to_string())
        .and_then(|t| t.validate().map(|()| t))
        .inspect_err(|e| {
            tracing::warn!(key = %String::from_utf8_lossy(key), error = %e, "ignoring invalid traffic rules in etcd");
        })
        .ok()
}

/// Resolves through etcd: a range for the current set, a watch for changes.
#[derive(Debug, Clone)]
pub struct EtcdResolver {
    client: EtcdClient,
}

impl EtcdResolver {
    /// A resolver over `client`.
    pub fn new(client: EtcdClient) -> Self {
        Self { client }
    }
}

impl Resolver for EtcdResolver {
    fn resolve<'a>(
        &'a self,
        service: &'a str,
        after: Option<u64>,
    ) -> BoxFuture<'a, Result<Snapshot, DiscoveryError>> {
        Box::pin(async move {
            if let Some(revision) = after {
                self.client.changed_after(service, revision).await?;
            }
            let entry = self.client.service(service).await?;
            Ok(Snapshot {
                instances: entry.instances,
                revision: entry.index,
                traffic: entry.traffic,
            })
        })
    }

    fn kind(&self) -> &'static str {
        "etcd"
    }
}

/// The lease TTL etcd gets for `ttl`: whole seconds, rounded up, at least 2.
pub fn lease_seconds(ttl: Duration) -> i64 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    i64::try_from(secs).unwrap_or(i64::MAX).max(2)
}

/// The facts whose change is worth a write at once (all but the live `rss_bytes`).
fn lasting(metadata: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut m = metadata.clone();
    m.remove("rss_bytes");
    m
}

/// An open `LeaseKeepAlive` stream for one lease.
struct KeepAlive {
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: tonic::Streaming<LeaseKeepAliveResponse>,
}

/// What keeps one instance's key and lease alive.
struct Keeper {
    client: EtcdClient,
    key: String,
    addr: String,
    id: String,
    ttl: i64,
    metadata: Box<dyn Fn() -> BTreeMap<String, String> + Send>,
    /// The live lease, `None` once etcd has lost it.
    lease: Option<i64>,
    stream: Option<KeepAlive>,
    /// The lasting facts last written, and when.
    written: BTreeMap<String, String>,
    written_at: Instant,
}

impl Keeper {
    /// Grants a fresh lease and writes the instance under it.
    async fn register(&mut self) -> Result<(), DiscoveryError> {
        let grant = self
            .client
            .call(
                "lease grant",
                LeaseClient::new(self.client.channel()).lease_grant(LeaseGrantRequest {
                    ttl: self.ttl,
                    id: 0,
                }),
            )
            .await?;
        if !grant.error.is_empty() {
            return Err(self.client.err(format!("lease grant: {}", grant.error)));
        }
        self.lease = Some(grant.id);
        self.stream = None;
        self.write().await
    }

    /// Writes the instance under the current lease.
    async fn write(&mut self) -> Result<(), DiscoveryError> {
        let lease = self.lease.ok_or_else(|| self.client.err("no lease"))?;
        let metadata = (self.metadata)();
        let instance = Instance {
            id: self.id.clone(),
            addr: self.addr.clone(),
            healthy: true,
            metadata: metadata.clone(),
        };
        let value = serde_json::to_vec(&instance).map_err(|e| self.client.err(e))?;
        self.client.put(&self.key, value, lease).await?;
        self.written = lasting(&metadata);
        self.written_at = Instant::now();
        Ok(())
    }

    /// Renews the lease once over the keep-alive stream (opening it if needed), within
    /// `wait`. `Ok(false)`: etcd no longer knows the lease.
    async fn renew(&mut self, lease: i64, wait: Duration) -> Result<bool, DiscoveryError> {
        let renewed = tokio::time::timeout(wait, self.renew_once(lease))
            .await
            .unwrap_or_else(|_| {
                Err(self
                    .client
                    .err(format!("lease keep-alive timed out after {wait:?}")))
            });
        if renewed.is_err() {
            self.stream = None;
        }
        renewed
    }

    async fn renew_once(&mut self, lease: i64) -> Result<bool, DiscoveryError> {
        let request = LeaseKeepAliveRequest { id: lease };
        if let Some(stream) = &self.stream {
            stream
                .requests
                .send(request)
                .await
                .map_err(|_| self.client.err("the keep-alive stream closed"))?;
        } else {
            // etcd answers the stream's headers with its first response, so the first
            // request must be on its way before the call can complete.
            let (requests, rx) = mpsc::channel(4);
            let _ = requests.try_send(request);
            let outbound = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|r| (r, rx))
            });
            let mut lease_client = LeaseClient::new(self.client.channel());
            let responses = self
                .client
                .call("lease keep-alive", lease_client.lease_keep_alive(outbound))
                .await?;
            self.stream = Some(KeepAlive {
                requests,
                responses,
            });
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(self.client.err("no keep-alive stream"));
        };
        match stream.responses.message().await {
            Ok(Some(r)) => Ok(r.ttl > 0),
            Ok(None) => Err(self.client.err("the keep-alive stream ended")),
            Err(status) => Err(self
                .client
                .err(format!("lease keep-alive: {}", status_text(&status)))),
        }
    }

    /// One heartbeat: renew (or replace) the lease, and write the instance again when
    /// its lasting facts changed, after a recovery, or every [`REFRESH`].
    async fn beat(&mut self, every: Duration, force_write: bool) -> Result<(), DiscoveryError> {
        let Some(lease) = self.lease else {
            return self.register().await;
        };
        if !self.renew(lease, every).await? {
            tracing::info!(lease, "etcd lost the lease; registering with a new one");
            self.lease = None;
            return self.register().await;
        }
        let changed = lasting(&(self.metadata)()) != self.written;
        if force_write || changed || self.written_at.elapsed() >= REFRESH {
            self.write().await?;
        }
        Ok(())
    }

    async fn run(mut self, every: Duration, mut stopped: watch::Receiver<bool>) -> Option<i64> {
        let mut failing = false;
        loop {
            tokio::select! {
                () = tokio::time::sleep(every) => {}
                _ = stopped.changed() => return self.lease,
            }
            match self.beat(every, failing).await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!(etcd = %self.client.inner.hosts, "registered again");
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "etcd heartbeat failed; retrying");
                }
                Err(_) => {}
            }
        }
    }
}

/// Keeps one instance registered in etcd: its key lives on a lease renewed every third
/// of the TTL; a lost lease (etcd restarted without its data, or was down too long) is
/// replaced and the key written again. [`EtcdRegistration::deregister`] deletes the key
/// and revokes the lease.
#[derive(Debug)]
pub struct EtcdRegistration {
    client: EtcdClient,
    key: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<Option<i64>>,
}

impl EtcdRegistration {
    /// Registers now (failing if etcd cannot be reached) and keeps the lease alive.
    /// `metadata` is called at every heartbeat; a change in anything but `rss_bytes` is
    /// written at once, the rest every 30 s.
    pub async fn start(
        client: EtcdClient,
        service: &str,
        id: &str,
        addr: String,
        ttl: Duration,
        metadata: impl Fn() -> BTreeMap<String, String> + Send + 'static,
    ) -> Result<Self, DiscoveryError> {
        if !valid_segment(service) || !valid_segment(id) {
            return Err(client.err(format!(
                "{service:?}/{id:?} cannot be an etcd key (empty, or has '/')"
            )));
        }
        let ttl = lease_seconds(ttl);
        let key = client.instance_key(service, id);
        let mut keeper = Keeper {
            client: client.clone(),
            key: key.clone(),
            addr,
            id: id.to_owned(),
            ttl,
            metadata: Box::new(metadata),
            lease: None,
            stream: None,
            written: BTreeMap::new(),
            written_at: Instant::now(),
        };
        keeper.register().await?;
        let (stop, stopped) = watch::channel(false);
        let every = Duration::from_secs(u64::try_from(ttl).unwrap_or(2)) / 3;
        let task = tokio::spawn(keeper.run(every, stopped));
        Ok(Self {
            client,
            key,
            stop,
            task,
        })
    }

    /// Stops the heartbeats, deletes the key (watchers hear of it at once) and revokes
    /// the lease.
    pub async fn deregister(self) {
        let _ = self.stop.send(true);
        let lease = self.task.await.ok().flatten();
        if let Err(e) = self.client.delete(&self.key).await {
            tracing::warn!(error = %e, "deregistration failed; the lease will expire");
            return;
        }
        if let Some(id) = lease {
            let mut leases = LeaseClient::new(self.client.channel());
            let revoke = leases.lease_revoke(LeaseRevokeRequest { id });
            if let Err(e) = self.client.call("lease revoke", revoke).await {
                tracing::debug!(error = %e, "revoking the lease failed; it will expire");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let c = EtcdClient::from_url("etcd://127.0.0.1:2379", "X").unwrap();
        assert_eq!(c.prefix(), "/flotilla");
        assert_eq!(
            c.instance_key("orders", "o-1"),
            "/flotilla/services/orders/o-1"
        );
        assert_eq!(c.traffic_key("orders"), "/flotilla/traffic/orders");
        let c = EtcdClient::from_url("etcd://a:1,b:2/?prefix=/shop/", "X").unwrap();
        assert_eq!(c.prefix(), "/shop");
        assert_eq!(c.inner.endpoints.len(), 2);
        let c = EtcdClient::from_url("etcd://a,b:2", "X").unwrap();
        let hosts: Vec<&str> = c
            .inner
            .endpoints
            .iter()
            .filter_map(|e| e.uri().authority().map(|a| a.as_str()))
            .collect();
        assert_eq!(hosts, ["a:2379", "b:2"]);
        for bad in [
            "etcd://",
            "etcd://a:1,",
            "etcd://a:x",
            "etcd://a:1?prefix=shop",
            "etcd://a:1?bogus=1",
        ] {
            let err = EtcdClient::from_url(bad, "FLOTILLA_DISCOVERY").unwrap_err();
            assert!(
                err.to_string().contains("FLOTILLA_DISCOVERY"),
                "{bad}: {err}"
            );
        }
        assert!(EtcdClient::from_url("registry://a:1", "X").is_err());
    }

    #[test]
    fn prefix_ends_and_lease_seconds() {
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("a\u{7f}"), b"a\x80".to_vec());
        assert_eq!(lease_seconds(Duration::from_millis(500)), 2);
        assert_eq!(lease_seconds(Duration::from_millis(2500)), 3);
        assert_eq!(lease_seconds(Duration::from_secs(10)), 10);
    }

    #[test]
    fn only_lasting_facts_count_as_a_change() {
        let mut a = BTreeMap::from([
            ("version".to_owned(), "1".to_owned()),
            ("rss_bytes".to_owned(), "100".to_owned()),
        ]);
        let before = lasting(&a);
        a.insert("rss_bytes".into(), "200".into());
        assert_eq!(lasting(&a), before);
        a.insert("version".into(), "2".into());
        assert_ne!(lasting(&a), before);
    }
}
