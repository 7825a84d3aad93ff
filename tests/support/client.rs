//! Test clients: one connection per call over HTTP/1.1, h2c (prior knowledge) or TLS.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const LIMIT: Duration = Duration::from_secs(20);

/// A response, body collected.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// The echo backend that answered.
    pub fn served_by(&self) -> String {
        self.headers
            .get("x-echo-service")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map_or("", |v| v.to_str().unwrap())
    }
}

/// GET `path` with this Host.
pub fn get(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(path)
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A request for HTTP/2: the Host goes into `:authority`.
pub fn get_h2(host: &str, path: &str) -> Request<Full<Bytes>> {
    Request::get(format!("http://{host}{path}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

pub async fn h1(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    timeout(LIMIT, h1_over(stream, req))
        .await
        .expect("HTTP/1.1 request timed out")
}

pub async fn h1_over<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Reply {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    collect(sender.send_request(req).await.unwrap()).await
}

pub async fn h2c(addr: SocketAddr, req: Request<Full<Bytes>>) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    timeout(LIMIT, h2_over(stream, req))
        .await
        .expect("h2c request timed out")
}

pub async fn h2_over<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    req: Request<Full<Bytes>>,
) -> Reply {
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .unwrap();
    tokio::spawn(conn);
    collect(sender.send_request(req).await.unwrap()).await
}

async fn collect(response: http::Response<hyper::body::Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body,
    }
}

/// What a TLS handshake showed.
pub struct Tls {
    pub cert: Vec<u8>,
    pub alpn: Option<Vec<u8>>,
    pub resumed: bool,
}

/// A client configuration that accepts any certificate (the tests look at which one came).
pub fn tls_config(alpn: &[&str]) -> Arc<rustls::ClientConfig> {
    tls_config_with(alpn, rustls::DEFAULT_VERSIONS)
}

/// Like [`tls_config`], with these protocol versions only.
pub fn tls_config_with(
    alpn: &[&str],
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Like [`tls_config`], presenting this client certificate chain (leaf first) and key.
pub fn tls_config_with_cert(
    alpn: &[&str],
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::DEFAULT_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_client_auth_cert(chain, key)
        .unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Arc::new(config)
}

/// Connects with TLS; `sni` None sends no SNI.
pub async fn tls_connect(
    addr: SocketAddr,
    sni: Option<&str>,
    config: Arc<rustls::ClientConfig>,
) -> (tokio_rustls::client::TlsStream<TcpStream>, Tls) {
    let name = match sni {
        Some(s) => ServerName::try_from(s.to_string()).unwrap(),
        None => ServerName::IpAddress(addr.ip().into()),
    };
    let stream = TcpStream::connect(addr).await.unwrap();
    let tls = timeout(
        LIMIT,
        tokio_rustls::TlsConnector::from(config).connect(name, stream),
    )
    .await
    .unwrap()
    .unwrap();
    let (_, session) = tls.get_ref();
    let info = Tls {
        cert: session
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default(),
        alpn: session.alpn_protocol().map(|p| p.to_vec()),
        resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    };
    (tls, info)
}

/// One request over a new TLS connection, HTTP/2 when ALPN chose it.
pub async fn https(
    addr: SocketAddr,
    sni: Option<&str>,
    alpn: &[&str],
    host: &str,
    path: &str,
) -> (Reply, Tls) {
    let (stream, info) = tls_connect(addr, sni, tls_config(alpn)).await;
    let reply = if info.alpn.as_deref() == Some(b"h2") {
        timeout(LIMIT, h2_over(stream, get_h2(host, path)))
            .await
            .unwrap()
    } else {
        timeout(LIMIT, h1_over(stream, get(host, path)))
            .await
            .unwrap()
    };
    (reply, info)
}

/// Sends raw bytes and reads the response until the server closes (use `Connection: close`).
pub async fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    timeout(LIMIT, stream.read_to_end(&mut out))
        .await
        .expect("raw request timed out")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A GET of `path` on `host` over a new HTTP/1.1 connection from the loopback address `from`
/// (clients of distinct addresses, for access lists and limits), with extra fields.
pub async fn get_from(
    addr: SocketAddr,
    from: &str,
    host: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> Reply {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(from.parse().unwrap(), 0))
        .unwrap();
    let stream = socket.connect(addr).await.unwrap();
    let mut req = Request::get(path).header("host", host);
    for (k, v) in fields {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::new())).unwrap();
    timeout(LIMIT, h1_over(stream, req))
        .await
        .expect("answered")
}
