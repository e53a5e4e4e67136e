//! A connector for hyper and tonic clients that speaks the internal transport: TCP,
//! then (with mTLS) a TLS handshake presenting this service's certificate and checking
//! the server's against the CA.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tower::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connects like `HttpConnector`, adding mTLS when the transport has it. Use it with
/// `hyper_util::client::legacy::Client::builder(..).build(connector)` or tonic's
/// `Endpoint::connect_with_connector_lazy(connector)`.
#[derive(Clone)]
pub struct InternalConnector {
    http: HttpConnector,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl std::fmt::Debug for InternalConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalConnector")
            .field("mtls", &self.tls.is_some())
            .finish()
    }
}

impl InternalConnector {
    pub(super) fn new(mut http: HttpConnector, tls: Option<Arc<rustls::ClientConfig>>) -> Self {
        // The scheme says nothing here: the transport decides whether to wrap in TLS.
        http.enforce_http(false);
        Self {
            http,
            tls: tls.map(tokio_rustls::TlsConnector::from),
        }
    }
}

/// A connection made by [`InternalConnector`].
#[derive(Debug)]
pub enum InternalIo {
    /// Plain text (`FLOTILLA_INSECURE_INTERNAL=1`).
    Plain(TokioIo<TcpStream>),
    /// Mutual TLS.
    Tls(TokioIo<Box<TlsStream<TcpStream>>>),
}

impl Service<Uri> for InternalConnector {
    type Response = InternalIo;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<InternalIo, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let host = uri.host().unwrap_or_default().to_owned();
        let connect = self.http.call(uri);
        let tls = self.tls.clone();
        Box::pin(async move {
            let tcp = connect.await?;
            let Some(tls) = tls else {
                return Ok(InternalIo::Plain(tcp));
            };
            // Servers are checked by their SPIFFE identity, not by this name; it only
            // has to be well-formed (IPv6 hosts come bracketed in URIs).
            let name = ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                .unwrap_or_else(|_| {
                    ServerName::try_from("flotilla.internal").expect("a valid name")
                });
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(InternalIo::Tls(TokioIo::new(Box::new(stream))))
        })
    }
}

impl Connection for InternalIo {
    fn connected(&self) -> Connected {
        match self {
            Self::Plain(io) => io.inner().connected(),
            Self::Tls(io) => {
                let (tcp, session) = io.inner().get_ref();
                let connected = tcp.connected();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl hyper::rt::Read for InternalIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for InternalIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(io) => hyper::rt::Write::is_write_vectored(io),
            Self::Tls(io) => hyper::rt::Write::is_write_vectored(io),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write_vectored(cx, bufs),
            Self::Tls(io) => Pin::new(io).poll_write_vectored(cx, bufs),
        }
    }
}
