//! Admin API client of the CLI. It runs requests either in this process on a local data
//! directory, or with `--server` on a running server's admin listener over HTTPS. Both take the
//! same method, path and JSON body and return the same JSON, so every command has one code path.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use rustls_pki_types::pem::PemObject as _;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::config::Settings;
use crate::control::{ApiRequest, Control, Principal};

use super::serve::{control_plane, open_key_store};

/// Environment variable that contains the admin token for `--server`.
pub(super) const TOKEN_ENV: &str = "KEYHOLD_TOKEN";

/// Maximum size in bytes of an admin API response that the CLI reads.
const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// Address and trust anchor of a remote admin listener.
#[derive(Debug, Clone)]
pub(super) struct RemoteArgs {
    /// Base URL of the admin listener.
    pub(super) url: String,
    /// PEM file of the CA that signed the server certificate. Required, because
    /// [`Remote::new`] rejects a missing one.
    pub(super) ca_cert: Option<PathBuf>,
}

/// Target of admin commands.
pub(super) enum Client {
    /// This process, on the data directory, as the local operator.
    Local {
        /// Control plane on the local data directory.
        control: Box<Control>,
        /// Local CLI user, with the operator role.
        principal: Principal,
    },
    /// A running server's admin listener.
    Remote(Remote),
}

impl Client {
    /// Opens the server named by `remote`, or else the data directory `dir`.
    ///
    /// # Errors
    ///
    /// Returns an error when the settings or the store cannot be loaded, or when `remote` is
    /// invalid.
    pub(super) fn open(dir: &Path, remote: Option<&RemoteArgs>) -> anyhow::Result<Self> {
        match remote {
            Some(remote) => Ok(Self::Remote(Remote::new(remote)?)),
            None => {
                let settings = Settings::load(dir)?;
                let key_store = open_key_store(&settings)?;
                Ok(Self::Local {
                    control: Box::new(control_plane(&settings, key_store)),
                    principal: Principal::local(super::events::principal()),
                })
            }
        }
    }

    /// Sends a request to the admin API and returns the JSON body of a successful response.
    ///
    /// # Errors
    ///
    /// Returns the API's error message and code for a failed request, or the reason the server
    /// could not be reached.
    pub(super) fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Value> {
        let (status, response_body) = match self {
            Self::Local { control, principal } => {
                let (path, query) = path.split_once('?').unwrap_or((path, ""));
                let response = control.dispatch(
                    principal,
                    &ApiRequest {
                        method,
                        path: path.to_owned(),
                        query: query.to_owned(),
                        body: body
                            .map(|body| body.to_string().into_bytes())
                            .unwrap_or_default(),
                    },
                );
                (response.status, response.body)
            }
            Self::Remote(remote) => remote.call(method, path, body)?,
        };

        if status.is_success() {
            return Ok(response_body);
        }
        match (
            response_body["error"]["message"].as_str(),
            response_body["error"]["code"].as_str(),
        ) {
            (Some(message), Some(code)) => bail!("{message} ({code}, HTTP {})", status.as_u16()),
            _ => bail!(
                "the server responded with HTTP {status} without an admin API error body; \
                 check that --server names the admin listener"
            ),
        }
    }
}

/// HTTPS client for one admin listener, which opens one connection per request.
pub(super) struct Remote {
    uri: Uri,
    token: Zeroizing<String>,
    tls: Arc<rustls::ClientConfig>,
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    /// Checks the URL, reads the token from [`TOKEN_ENV`] and the CA file, and builds the TLS
    /// configuration and the runtime.
    fn new(args: &RemoteArgs) -> anyhow::Result<Self> {
        let uri: Uri = args
            .url
            .parse()
            .with_context(|| format!("invalid --server URL {:?}", args.url))?;
        if uri.scheme_str() != Some("https") || uri.host().is_none() {
            bail!(
                "--server {:?} must be an https:// URL of the admin listener, such as https://localhost:9443",
                args.url
            );
        }
        let token = Zeroizing::new(std::env::var(TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!("--server needs an admin token in the environment variable {TOKEN_ENV}")
        })?);

        let Some(ca_cert) = &args.ca_cert else {
            bail!(
                "--server needs --ca-cert FILE (or KEYHOLD_CA_CERT), the CA that signed the \
                 admin listener's certificate; for a data directory made by init that is tls/ca.pem"
            );
        };
        let roots = read_roots(ca_cert)?;

        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("failed to set up TLS")?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("failed to start the async runtime")?;

        Ok(Self {
            uri,
            token,
            tls: Arc::new(tls),
            runtime,
        })
    }

    /// Sends one request and returns the status and the JSON body, or `Value::Null` for an
    /// error response whose body is not JSON.
    fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<(StatusCode, Value)> {
        self.runtime.block_on(async {
            let host = self.uri.host().unwrap_or_default().to_owned();
            // `Uri::host` keeps the brackets of an IPv6 address, which neither a socket
            // address nor a TLS server name accepts.
            let bare_host = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = self.uri.port_u16().unwrap_or(443);
            let target = format!("{host}:{port}");
            let tcp = tokio::net::TcpStream::connect((bare_host.as_str(), port))
                .await
                .with_context(|| format!("cannot connect to {target}; is the server running?"))?;
            let name = ServerName::try_from(bare_host)
                .with_context(|| format!("invalid TLS server name {host:?}"))?;

            let stream = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .with_context(|| format!("TLS handshake with {target} failed"))?;
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream))
                    .await
                    .context("HTTP handshake failed")?;
            tokio::spawn(connection);

            let bytes = body.map(|body| body.to_string()).unwrap_or_default();
            let mut request = Request::builder()
                .method(method)
                .uri(path)
                .header(
                    HOST,
                    self.uri.authority().map_or(host.clone(), |a| a.to_string()),
                )
                .header(
                    AUTHORIZATION,
                    HeaderValue::from_str(&format!("Bearer {}", self.token.as_str())).context(
                        "the token in KEYHOLD_TOKEN has characters a header cannot carry",
                    )?,
                );
            if body.is_some() {
                request = request.header(CONTENT_TYPE, "application/json");
            }
            let request = request
                .body(Full::new(Bytes::from(bytes)))
                .context("failed to build the request")?;
            let response = sender
                .send_request(request)
                .await
                .with_context(|| format!("failed to send the request to {target}"))?;

            let status = response.status();
            let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES)
                .collect()
                .await
                .map_err(|error| anyhow::anyhow!("failed to read the response: {error}"))?
                .to_bytes();
            match serde_json::from_slice(&body) {
                Ok(value) => Ok((status, value)),
                Err(error) if status.is_success() => Err(anyhow::anyhow!(
                    "the server responded with HTTP {status} but the body is not JSON ({error}); \
                     check that --server names the admin listener"
                )),
                Err(_) => Ok((status, Value::Null)),
            }
        })
    }
}

/// Reads the CA certificates of a PEM file into a root store.
fn read_roots(path: &Path) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_pki_types::CertificateDer::pem_file_iter(path)
        .with_context(|| format!("cannot read CA file {}", path.display()))?
    {
        let certificate =
            certificate.with_context(|| format!("invalid PEM in CA file {}", path.display()))?;
        roots
            .add(certificate)
            .with_context(|| format!("invalid CA certificate in {}", path.display()))?;
    }
    Ok(roots)
}
