//! TLS for the XKS listener: rustls with the cipher suites the XKS API requires, optional mutual
//! TLS restricted to named clients, and the development certificates `keyhold init` writes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig,
};

/// Failure to set up TLS.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or contains nothing usable.
    #[error("cannot load {what} from {path}: {message}")]
    Load {
        /// What the file should contain.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// rustls rejected the configuration.
    #[error("invalid TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA file could not be used.
    #[error("invalid client CA: {0}")]
    ClientCa(String),
    /// A certificate could not be generated or written.
    #[error("cannot create certificate {path}: {message}")]
    Generate {
        /// The file.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// The ring provider limited to the suites the XKS API names: TLS 1.3 with AES-256-GCM or
/// ChaCha20-Poly1305, and TLS 1.2 ECDHE with AES-256-GCM.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::crypto::ring::cipher_suite;
    CryptoProvider {
        cipher_suites: vec![
            cipher_suite::TLS13_AES_256_GCM_SHA384,
            cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
            cipher_suite::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            cipher_suite::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        ],
        ..rustls::crypto::ring::default_provider()
    }
}

/// Builds the server configuration from PEM files.
///
/// # Errors
///
/// Returns [`TlsError`] naming the file that could not be used.
pub fn server_config(
    certificate: &Path,
    private_key: &Path,
    client_auth: Option<(&Path, &[String])>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let load_error = |what, path: &Path, message: String| TlsError::Load {
        what,
        path: path.to_owned(),
        message,
    };
    let chain = CertificateDer::pem_file_iter(certificate)
        .map_err(|error| load_error("certificates", certificate, error.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| load_error("certificates", certificate, error.to_string()))?;
    if chain.is_empty() {
        return Err(load_error(
            "certificates",
            certificate,
            "no CERTIFICATE block".to_owned(),
        ));
    }
    let key = PrivateKeyDer::from_pem_file(private_key)
        .map_err(|error| load_error("a private key", private_key, error.to_string()))?;

    let provider = Arc::new(crypto_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = match client_auth {
        Some((ca, allowed)) => {
            builder.with_client_cert_verifier(client_verifier(ca, allowed, provider)?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn client_verifier(
    ca: &Path,
    allowed: &[String],
    provider: Arc<CryptoProvider>,
) -> Result<Arc<dyn ClientCertVerifier>, TlsError> {
    let mut roots = RootCertStore::empty();
    let certificates = CertificateDer::pem_file_iter(ca)
        .map_err(|error| TlsError::ClientCa(format!("{}: {error}", ca.display())))?;
    for certificate in certificates {
        let certificate = certificate
            .map_err(|error| TlsError::ClientCa(format!("{}: {error}", ca.display())))?;
        roots
            .add(certificate)
            .map_err(|error| TlsError::ClientCa(format!("{}: {error}", ca.display())))?;
    }
    if roots.is_empty() {
        return Err(TlsError::ClientCa(format!(
            "{} contains no certificate",
            ca.display()
        )));
    }
    let inner = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| TlsError::ClientCa(error.to_string()))?;
    Ok(Arc::new(NamedClientVerifier {
        inner,
        allowed: allowed
            .iter()
            .map(|name| name.to_ascii_lowercase())
            .collect(),
    }))
}

/// Verifies the client chain with webpki, then requires the subject CN or a DNS SAN to be one
/// of the allowed names. A failure aborts the handshake.
#[derive(Debug)]
struct NamedClientVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    allowed: Vec<String>,
}

impl ClientCertVerifier for NamedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        let names = certificate_names(end_entity);
        if names
            .iter()
            .any(|name| self.allowed.contains(&name.to_ascii_lowercase()))
        {
            Ok(verified)
        } else {
            tracing::debug!(?names, "client certificate name is not allowed");
            Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// The subject common names and DNS subject alternative names of a certificate.
pub fn certificate_names(certificate: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, parsed)) = x509_parser::parse_x509_certificate(certificate.as_ref()) else {
        return Vec::new();
    };
    let mut names: Vec<String> = parsed
        .subject()
        .iter_common_name()
        .filter_map(|name| name.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                names.push((*dns).to_owned());
            }
        }
    }
    names
}

/// Writes a local CA (`ca.pem`) and a server certificate for `localhost` and `127.0.0.1`
/// (`server.pem`, `server.key` with mode 0600) into `dir`, valid for one year. The CA's private
/// key is discarded, so nothing else can be signed with it.
///
/// # Errors
///
/// Returns [`TlsError::Generate`] when a file exists or cannot be written.
pub fn write_dev_certificates(dir: &Path) -> Result<(), TlsError> {
    let generate_error = |path: &Path, message: String| TlsError::Generate {
        path: path.to_owned(),
        message,
    };
    let now = time::OffsetDateTime::now_utc();
    let validity = |params: &mut rcgen::CertificateParams| {
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + time::Duration::days(365);
    };

    let ca_key = rcgen::KeyPair::generate().map_err(|e| generate_error(dir, e.to_string()))?;
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "Keyhold local CA");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    validity(&mut ca_params);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key)
        .map_err(|e| generate_error(dir, e.to_string()))?;

    let server_key = rcgen::KeyPair::generate().map_err(|e| generate_error(dir, e.to_string()))?;
    let mut params =
        rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .map_err(|e| generate_error(dir, e.to_string()))?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    validity(&mut params);
    let server = params
        .signed_by(&server_key, &ca)
        .map_err(|e| generate_error(dir, e.to_string()))?;

    write_new_file(&dir.join("ca.pem"), ca.pem().as_bytes(), 0o644)?;
    write_new_file(&dir.join("server.pem"), server.pem().as_bytes(), 0o644)?;
    write_new_file(
        &dir.join("server.key"),
        server_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    Ok(())
}

fn write_new_file(path: &Path, contents: &[u8], mode: u32) -> Result<(), TlsError> {
    crate::files::write_new(path, contents, mode).map_err(|error| TlsError::Generate {
        path: path.to_owned(),
        message: error.to_string(),
    })
}
