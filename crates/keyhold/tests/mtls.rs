//! Mutual TLS. AWS KMS presents a client certificate for `cks.kms.<region>.amazonaws.com`, and
//! with `[tls.client_auth]` configured only a certificate from the configured CA with an allowed
//! subject name completes the handshake.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use common::{Credential, CurlOutput, DataDir, Server, health_request, shared};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

const DOMAIN: &str = "mtls";

/// The client name AWS KMS uses in us-east-1, and the only one the server allows.
const ALLOWED_SUBJECT: &str = "cks.kms.us-east-1.amazonaws.com";

/// The commented `[tls.client_auth]` block of the `keyhold.toml` template.
const TEMPLATE_CLIENT_AUTH: &str = "# [tls.client_auth]\n\
                                    # ca = \"tls/kms-client-ca.pem\"\n\
                                    # allowed_subjects = [\"cks.kms.us-east-1.amazonaws.com\"]";

/// PEM files of one client certificate and its private key.
struct ClientIdentity {
    certificate: PathBuf,
    private_key: PathBuf,
}

struct Fixture {
    // Declared first so the server stops before the data directory is deleted.
    server: Server,
    credential: Credential,
    allowed: ClientIdentity,
    other_ca: ClientIdentity,
    other_subject: ClientIdentity,
    _data: DataDir,
}

static FIXTURE: Mutex<Weak<Fixture>> = Mutex::new(Weak::new());

fn fixture() -> Arc<Fixture> {
    shared(&FIXTURE, || {
        let data = DataDir::init();
        data.create_domain(DOMAIN, &[]);
        let credential = data.create_credential(DOMAIN);
        let dir = data.scratch().join("clients");
        fs::create_dir(&dir).expect("create client certificate directory");

        let client_ca = certificate_authority("Keyhold test client CA");
        let other_ca = certificate_authority("Some other CA");
        fs::write(data.path().join("tls/kms-client-ca.pem"), client_ca.pem())
            .expect("write client CA");
        let allowed = client_certificate(&dir, "allowed", ALLOWED_SUBJECT, &client_ca);
        let other_ca = client_certificate(&dir, "other-ca", ALLOWED_SUBJECT, &other_ca);
        let other_subject = client_certificate(
            &dir,
            "other-subject",
            "cks.kms.eu-west-1.amazonaws.com",
            &client_ca,
        );

        enable_client_auth(&data);
        let server = start_with_client_auth(&data, &allowed);
        Fixture {
            server,
            credential,
            allowed,
            other_ca,
            other_subject,
            _data: data,
        }
    })
}

fn certificate_authority(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().expect("generate CA key");
    CertifiedIssuer::self_signed(params, key).expect("self-sign CA certificate")
}

/// Writes a client certificate with `common_name` as its only name, signed by `issuer`.
fn client_certificate(
    dir: &Path,
    file_stem: &str,
    common_name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> ClientIdentity {
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let key = KeyPair::generate().expect("generate client key");
    let certificate = params
        .signed_by(&key, issuer)
        .expect("sign client certificate");

    let identity = ClientIdentity {
        certificate: dir.join(format!("{file_stem}.pem")),
        private_key: dir.join(format!("{file_stem}.key")),
    };
    fs::write(&identity.certificate, certificate.pem()).expect("write client certificate");
    fs::write(&identity.private_key, key.serialize_pem()).expect("write client key");
    identity
}

/// Replaces the commented `[tls.client_auth]` block of `keyhold.toml` with a live one.
fn enable_client_auth(data: &DataDir) {
    let config_path = data.path().join("keyhold.toml");
    let config = fs::read_to_string(&config_path).expect("read keyhold.toml");
    assert!(
        config.contains(TEMPLATE_CLIENT_AUTH),
        "keyhold.toml no longer has the commented [tls.client_auth] block:\n{config}"
    );
    let config = config.replace(
        TEMPLATE_CLIENT_AUTH,
        &format!(
            "[tls.client_auth]\nca = \"tls/kms-client-ca.pem\"\nallowed_subjects = [\"{ALLOWED_SUBJECT}\"]"
        ),
    );
    fs::write(&config_path, config).expect("write keyhold.toml");
}

/// Starts the server. Its `/ping` probe needs the allowed client certificate.
fn start_with_client_auth(data: &DataDir, allowed: &ClientIdentity) -> Server {
    let ping_args = [
        "--cert".to_owned(),
        allowed.certificate.display().to_string(),
        "--key".to_owned(),
        allowed.private_key.display().to_string(),
    ];
    Server::start_with(data, &[], &ping_args)
}

impl Fixture {
    fn health_with(&self, identity: Option<&ClientIdentity>) -> CurlOutput {
        let path = self.credential.path("/health");
        let mut args = common::sigv4_args(&self.credential);
        if let Some(identity) = identity {
            args.push("--cert".to_owned());
            args.push(identity.certificate.display().to_string());
            args.push("--key".to_owned());
            args.push(identity.private_key.display().to_string());
        }
        args.push(self.server.url(&path));
        self.server
            .curl(&args, Some(health_request().to_string().as_bytes()))
    }
}

fn assert_handshake_failed(output: &CurlOutput, case: &str) {
    assert!(
        !output.exit.success(),
        "{case}: curl must fail, but got HTTP {} {}",
        output.status,
        output.body
    );
    assert_eq!(
        output.status, 0,
        "{case}: no HTTP status may arrive; curl said: {}",
        output.stderr
    );
    // A TLS alert shows that the server aborted the handshake, rather than being unreachable.
    assert!(
        output.stderr.contains("alert"),
        "{case}: curl must report a TLS alert from the server: {}",
        output.stderr
    );
}

#[test]
fn allowed_client_certificate_succeeds() {
    let fixture = fixture();
    let output = fixture.health_with(Some(&fixture.allowed));
    assert!(output.exit.success(), "curl failed: {}", output.stderr);
    assert_eq!(output.status, 200, "health: {}", output.body);
}

#[test]
fn missing_client_certificate_fails_handshake() {
    let fixture = fixture();
    let output = fixture.health_with(None);
    assert_handshake_failed(&output, "no client certificate");
}

#[test]
fn certificate_from_other_ca_fails_handshake() {
    let fixture = fixture();
    let output = fixture.health_with(Some(&fixture.other_ca));
    assert_handshake_failed(&output, "certificate from another CA");
}

#[test]
fn certificate_with_other_subject_fails_handshake() {
    let fixture = fixture();
    let output = fixture.health_with(Some(&fixture.other_subject));
    assert_handshake_failed(&output, "certificate for cks.kms.eu-west-1.amazonaws.com");
}
