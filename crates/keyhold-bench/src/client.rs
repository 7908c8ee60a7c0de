//! Keep-alive HTTP/1.1 connections to the proxy, over TLS (rustls with the ring provider) or
//! plain TCP, each carrying one request at a time.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject as _;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Connection settings: the address, the default Host header and the TLS configuration.
#[derive(Clone)]
pub(crate) struct Target {
    /// `HOST:PORT` to open TCP connections to.
    address: String,
    /// `HOST[:PORT]` as written in the URL, the default Host header.
    authority: String,
    /// TLS settings; `None` for `http://`.
    tls: Option<(TlsConnector, ServerName<'static>)>,
}

/// How to trust the server certificate.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Trust<'a> {
    /// Certificates from a PEM file of CA certificates.
    CaFile(&'a Path),
    /// Any certificate, without verification.
    Insecure,
}

impl Target {
    /// Parses a base URL `https://HOST[:PORT]` or `http://HOST[:PORT]`.
    ///
    /// `server_name` overrides the TLS server name, which defaults to the URL host.
    ///
    /// # Errors
    ///
    /// Returns an error for a URL with a path or another scheme, an https URL without a trust
    /// setting, or a CA file that cannot be read.
    pub(crate) fn new(
        url: &str,
        trust: Option<Trust<'_>>,
        server_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let uri: Uri = url
            .parse()
            .with_context(|| format!("invalid --url {url:?}; expected https://HOST[:PORT]"))?;
        let host = uri
            .host()
            .with_context(|| format!("--url {url:?} has no host; expected https://HOST[:PORT]"))?;
        if uri
            .path_and_query()
            .is_some_and(|path| path.as_str() != "/")
        {
            bail!(
                "--url {url:?} must not contain a path; give the XksProxyUriPath with --uri-path"
            );
        }
        let (tls, default_port) = match uri.scheme_str() {
            Some("https") => {
                let trust = trust.context(
                    "an https URL needs --ca-file FILE to verify the server certificate, or \
                     --insecure to skip verification",
                )?;
                let name = server_name.unwrap_or_else(|| host.trim_matches(['[', ']']));
                let name = ServerName::try_from(name.to_owned())
                    .with_context(|| format!("invalid TLS server name {name:?}"))?;
                (Some((TlsConnector::from(client_config(trust)?), name)), 443)
            }
            Some("http") => (None, 80),
            _ => bail!("--url {url:?} must start with https:// or http://"),
        };
        let port = uri.port_u16().unwrap_or(default_port);
        let authority = uri.authority().map_or_else(
            || host.to_owned(),
            |authority| authority.as_str().to_owned(),
        );
        Ok(Self {
            address: format!("{host}:{port}"),
            authority,
            tls,
        })
    }

    /// Returns the URL's `HOST[:PORT]`.
    pub(crate) fn authority(&self) -> &str {
        &self.authority
    }

    /// Opens a connection and completes the TLS and HTTP/1.1 handshakes.
    ///
    /// # Errors
    ///
    /// Returns an error naming the address when TCP, TLS or HTTP setup fails.
    pub(crate) async fn connect(&self) -> anyhow::Result<Connection> {
        let tcp = TcpStream::connect(&self.address)
            .await
            .with_context(|| format!("cannot connect to {}", self.address))?;
        tcp.set_nodelay(true).with_context(|| {
            format!(
                "cannot set TCP_NODELAY on the connection to {}",
                self.address
            )
        })?;
        match &self.tls {
            Some((connector, name)) => {
                let stream = connector
                    .connect(name.clone(), tcp)
                    .await
                    .with_context(|| format!("TLS handshake with {} failed", self.address))?;
                handshake(stream).await
            }
            None => handshake(tcp).await,
        }
    }
}

/// The servers that the connections are spread over, as a TCP load balancer spreads them over
/// nodes: connection i goes to target i mod N.
pub(crate) struct Targets(Vec<Target>);

impl Targets {
    /// Parses each base URL as [`Target::new`] does, with the same trust and server name.
    ///
    /// # Errors
    ///
    /// Returns an error for an empty list or for the first URL that [`Target::new`] rejects.
    pub(crate) fn new(
        urls: &[String],
        trust: Option<Trust<'_>>,
        server_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        if urls.is_empty() {
            bail!("--url is missing; give the base URL of at least one server");
        }
        let targets = urls
            .iter()
            .map(|url| Target::new(url, trust, server_name))
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self(targets))
    }

    /// Returns the target of connection `index`, counted from 0.
    pub(crate) fn for_connection(&self, index: usize) -> &Target {
        &self.0[index % self.0.len()]
    }
}

/// The result of one request on the wire.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No response within the time limit; the connection cannot be reused.
    Timeout,
    /// The connection failed; it cannot be reused.
    Connection(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Timeout => f.write_str("no response within the time limit (--timeout)"),
            SendError::Connection(message) => write!(f, "connection failed: {message}"),
        }
    }
}

/// One keep-alive HTTP/1.1 connection.
pub(crate) struct Connection {
    sender: SendRequest<Full<Bytes>>,
}

impl Connection {
    /// Reports whether the server closed the connection, so the next request needs a new one.
    pub(crate) fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Sends a request and reads the whole response body.
    ///
    /// # Errors
    ///
    /// Returns [`SendError`] when no complete response arrived within `timeout`.
    pub(crate) async fn send(
        &mut self,
        request: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), SendError> {
        let exchange = async {
            self.sender.ready().await?;
            let response = self.sender.send_request(request).await?;
            let status = response.status();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, body))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(error)) => Err(SendError::Connection(error.to_string())),
            Err(_) => Err(SendError::Timeout),
        }
    }
}

async fn handshake<S>(stream: S) -> anyhow::Result<Connection>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP/1.1 handshake failed")?;
    // The connection task ends when the sender is dropped or the peer closes; its error, if
    // any, reaches the next `send` as a closed channel.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { sender })
}

fn client_config(trust: Trust<'_>) -> anyhow::Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("the ring provider supports no TLS version")?;
    let mut config = match trust {
        Trust::CaFile(path) => builder
            .with_root_certificates(root_store(path)?)
            .with_no_client_auth(),
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn root_store(path: &Path) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read CA file {}", path.display()))?;
    for certificate in certificates {
        let certificate =
            certificate.with_context(|| format!("invalid PEM in CA file {}", path.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("invalid CA certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("CA file {} contains no certificate", path.display());
    }
    Ok(roots)
}

/// Accepts any server certificate but still checks the handshake signatures, for `--insecure`.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        certificate: &CertificateDer<'_>,
        signature: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            certificate,
            signature,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_defaults_port_and_authority() {
        let target = Target::new("https://localhost", Some(Trust::Insecure), None).expect("valid");
        assert_eq!(target.address, "localhost:443");
        assert_eq!(target.authority(), "localhost");
        let target = Target::new("http://127.0.0.1:8080", None, None).expect("valid");
        assert_eq!(target.address, "127.0.0.1:8080");
        assert_eq!(target.authority(), "127.0.0.1:8080");
        assert!(target.tls.is_none());
    }

    #[test]
    fn target_rejects_bad_urls() {
        let trust = Some(Trust::Insecure);
        let cases = [
            (
                "https://localhost:8443/kms/xks/v1",
                "must not contain a path",
            ),
            ("ftp://localhost", "must start with https:// or http://"),
            ("localhost:8443", "must start with https:// or http://"),
        ];
        for (url, expected) in cases {
            let error = Target::new(url, trust, None).err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains(expected)),
                "{url}: {error:?}"
            );
        }
        let error = Target::new("https://localhost", None, None)
            .err()
            .map(|e| e.to_string());
        assert!(error.is_some_and(|e| e.contains("--ca-file")));
    }

    #[test]
    fn connections_cycle_over_targets() {
        let urls = [
            "http://127.0.0.1:8001".to_owned(),
            "http://127.0.0.1:8002".to_owned(),
            "http://127.0.0.1:8003".to_owned(),
        ];
        let targets = Targets::new(&urls, None, None).expect("valid");
        let addresses: Vec<&str> = (0..7)
            .map(|index| targets.for_connection(index).address.as_str())
            .collect();
        assert_eq!(
            addresses,
            [
                "127.0.0.1:8001",
                "127.0.0.1:8002",
                "127.0.0.1:8003",
                "127.0.0.1:8001",
                "127.0.0.1:8002",
                "127.0.0.1:8003",
                "127.0.0.1:8001",
            ]
        );
        let single = Targets::new(&urls[1..2], None, None).expect("valid");
        assert_eq!(single.for_connection(5).address, "127.0.0.1:8002");
    }

    #[test]
    fn targets_reject_empty_list_and_invalid_url() {
        let empty = Targets::new(&[], None, None).err().map(|e| e.to_string());
        assert!(empty.is_some_and(|e| e.contains("--url is missing")));
        let urls = ["http://127.0.0.1:8001".to_owned(), String::new()];
        let invalid = Targets::new(&urls, None, None).err().map(|e| e.to_string());
        assert!(
            invalid
                .as_deref()
                .is_some_and(|e| e.contains("invalid --url \"\"")),
            "{invalid:?}"
        );
    }
}
