//! `keyhold demo`: a fresh data directory with one domain, credential and key, served on
//! localhost, with a curl command that encrypts against it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::{LogSection, Settings};
use crate::keystore::{NewDomain, NewKey};

use super::serve::{Server, init_logging, open_key_store, runtime};
use super::{init, output};

const DOMAIN: &str = "demo";
const KEY_ID: &str = "demo-key";
const REGION: &str = "us-east-1";

pub(super) fn run(data_dir: Option<&Path>, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let (dir, fresh) = match data_dir {
        Some(dir) => (dir.to_owned(), false),
        None => (fresh_directory()?, true),
    };
    let result = run_in(&dir, listen);
    if result.is_err() && fresh {
        // A demo that never served leaves nothing behind.
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

fn run_in(dir: &Path, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    init::initialize(dir, &init::RootChoice::File)?;
    let mut settings = Settings::load(dir)?;
    // The demo shows the XKS API alone, so it never clashes with a server on the admin port.
    settings.admin_listen = None;
    let mut key_store = open_key_store(&settings)?;
    let domain = key_store.create_domain(&NewDomain {
        id: DOMAIN.to_owned(),
        display_name: Some("Demo domain".to_owned()),
        ..NewDomain::default()
    })?;
    let (credential, secret) = key_store.create_credential(DOMAIN)?;
    key_store.create_key(&NewKey {
        name: Some("Demo key".to_owned()),
        description: "created by keyhold demo".to_owned(),
        ..NewKey::with_id(DOMAIN, KEY_ID)
    })?;
    drop(key_store);

    init_logging(&LogSection::default())?;
    runtime()?.block_on(async {
        let server = Server::start(&settings, listen).await?;
        let port = server.local_addr()?.port();
        let base = format!("https://localhost:{port}{}", domain.xks_uri_path());
        let ca = dir.join("tls").join("ca.pem");
        let user = format!("{}:{}", credential.access_key_id, secret.expose());
        output::print(&format!(
            "Keyhold demo is serving the XKS API at {base}\n\
             Data directory: {dir}\n\
             \n\
             Encrypt \"Hello World!\" with curl (paste into another terminal):\n\
             \n\
             curl -sS --cacert {ca} \\\n  \
               --aws-sigv4 \"aws:amz:{REGION}:kms-xks-proxy\" \\\n  \
               --user \"{user}\" \\\n  \
               -H \"Content-Type: application/json\" \\\n  \
               -d '{body}' \\\n  \
               {base}/keys/{KEY_ID}/encrypt\n\
             \n\
             Proxy configuration file for the AWS KMS console:\n\
             \n\
             {configuration}\n\
             \n\
             More commands: keyhold --data-dir {dir} --help. Press Ctrl-C to stop.\n",
            dir = dir.display(),
            ca = ca.display(),
            body = encrypt_body(),
            configuration = serde_json::json!({
                "XksProxyUriPath": domain.xks_uri_path(),
                "XksProxyAuthenticationCredential": {
                    "AccessKeyId": credential.access_key_id,
                    "RawSecretAccessKey": secret.expose(),
                },
            }),
        ));
        server.run().await
    })
}

/// The body of the demo's encrypt request: "Hello World!" with AAD and an integrity value.
fn encrypt_body() -> String {
    serde_json::json!({
        "requestMetadata": {
            "awsPrincipalArn": "arn:aws:iam::111122223333:user/demo",
            "kmsKeyArn": "arn:aws:kms:us-east-1:111122223333:key/demo",
            "kmsOperation": "Encrypt",
            "kmsRequestId": "demo-request-1",
        },
        "plaintext": "SGVsbG8gV29ybGQh",
        "additionalAuthenticatedData": "cHJvamVjdD1kZW1v",
        "encryptionAlgorithm": "AES_GCM",
        "ciphertextDataIntegrityValueAlgorithm": "SHA_256",
    })
    .to_string()
}

/// A new directory under the system temporary directory, named with a random suffix.
fn fresh_directory() -> anyhow::Result<PathBuf> {
    let mut suffix = [0u8; 4];
    crate::crypto::fill_random(&mut suffix)?;
    Ok(std::env::temp_dir().join(format!("keyhold-demo-{}", hex::encode(suffix))))
}
